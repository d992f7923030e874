"""The validate step refuses what cannot work, naming the field, before anything is planned or built.

vLLM 0.33 facts the flag cases rest on (the vllm 0.33.0 wheel's vllm/): the short aliases ``-tp``
(engine/arg_utils.py:1209), ``-pp`` (:1172), ``-dp`` (:1241), ``-pcp`` (:1237), ``-q`` (:992),
``-sc`` (:1866), ``-n`` / ``-r`` (:1177-1178), ``-ep`` (:1305), ``-dpr`` / ``-dpn`` (:1254, :1245), ``-asc``
(entrypoints/common/cli_args.py:453); FlexibleArgumentParser.parse_args
(utils/argparse_utils.py:313-510) turns ``--a_b`` into ``--a-b`` and ``--flag.key value`` into
``--flag '{"key": value}'``; it is an ArgumentParser with argparse's default ``allow_abbrev``, so a
unique prefix names a flag; boolean flags are EnableDisableAction (utils/argparse_utils.py:120-145):
``--no-x``, and ``--disable-x`` for ``--enable-x``. ``--api-key`` is FrontendArgs.api_key
(entrypoints/common/cli_args.py:335). LMCache reads LMCACHE_* after its file and lets them override
it (lmcache/v1/config_base.py:568-572).
"""

from __future__ import annotations

import pytest
from operator_decisions import pool_body, refused, run

from tandem.operator.build.engine import MANAGED_ENV, SERVE_FLAGS
from tandem.operator.naming import POOL_CHILD_SUFFIXES, PoolRef, Role
from tandem.operator.validate import managed_env, managed_flag


@pytest.mark.parametrize(
    "name",
    [
        "PYTHONHASHSEED",
        "LMCACHE_CONFIG_FILE",
        "LMCACHE_CHUNK_SIZE",  # not rendered, but LMCache lets it override the rendered file
        "LMCACHE_PD_PROXY_PORT",
        "VLLM_NIXL_SIDE_CHANNEL_HOST",
        "VLLM_NIXL_SIDE_CHANNEL_PORT",
        "HF_TOKEN",
        "VLLM_API_KEY",
    ],
)
def test_env_naming_a_variable_the_operator_sets_is_refused(name: str) -> None:
    """Before: the operator applied a container with the name twice; the API server answered 500
    "duplicate entries" on every retry and no engine was ever created."""
    message = refused(
        pool_body(engine__env=[{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": name, "value": "1"}])
    )
    assert message.startswith(f"spec.engine.env[1].name: {name} is managed by the operator"), message


def test_env_naming_one_variable_twice_is_refused() -> None:
    env = [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "NCCL_DEBUG", "value": "WARN"}]
    message = refused(pool_body(engine__env=env))
    assert message == "spec.engine.env[1].name: NCCL_DEBUG is already set by spec.engine.env[0]"


def test_every_problem_is_reported_at_once() -> None:
    body = pool_body(
        engine__env=[{"name": "PYTHONHASHSEED", "value": "0"}],
        engine__extraArgs=["--port", "1"],
        decode__extraArgs=["-tp", "2"],
    )
    fields = [problem.split(":", 1)[0] for problem in refused(body).split("; ")]
    assert fields == ["spec.engine.env[0].name", "spec.engine.extraArgs[0]", "spec.decode.extraArgs[0]"]


@pytest.mark.parametrize(
    ("args", "index", "flag"),
    [
        (["--port", "1"], 0, "--port"),
        (["--port=1"], 0, "--port"),
        (["--api-key", "secret"], 0, "--api-key"),
        (["--api_key=secret"], 0, "--api-key"),
        (["--kv-transfer-config", '{"kv_connector":"NixlConnector"}'], 0, "--kv-transfer-config"),
        (["--kv-transfer-config.kv_role", "kv_both"], 0, "--kv-transfer-config"),
        (["--kv_transfer_config.kv_role=kv_both"], 0, "--kv-transfer-config"),
        (["--seed", "1", "-tp", "2"], 2, "--tensor-parallel-size"),
        (["-tp=2"], 0, "--tensor-parallel-size"),
        (["--tensor-parallel=2"], 0, "--tensor-parallel-size"),  # argparse abbreviation
        (["-pp", "2"], 0, "--pipeline-parallel-size"),
        (["-dp", "2"], 0, "--data-parallel-size"),
        (["-ep"], 0, "--enable-expert-parallel"),
        (["--all2all-backend", "naive"], 0, "--all2all-backend"),
        (["-dpr", "4"], 0, "--data-parallel-start-rank"),
        (["--data-parallel-external-lb"], 0, "--data-parallel-external-lb"),
        (["-dpn", "0"], 0, "--data-parallel-rank"),
        (["--api-server-count", "1"], 0, "--api-server-count"),
        (["--headless"], 0, "--headless"),
        (["-qfp8"], 0, "--quantization"),
        (["--max-model-len", "4096"], 0, "--max-model-len"),
        (["--gpu-memory-utilization", "0.5"], 0, "--gpu-memory-utilization"),
        (["--no-enable-prefix-caching"], 0, "--enable-prefix-caching"),
        (["--disable-chunked-prefill"], 0, "--enable-chunked-prefill"),
        (["--enforce-eager"], 0, "--enforce-eager"),
        (["-sc.method", "ngram"], 0, "--speculative-config"),
        (["--host", "127.0.0.1"], 0, "--host"),
        (["--config", "serve.yaml"], 0, "--config"),
        (["--model", "other/model"], 0, "--model"),
        (["--prefill-ms-per-token", "0.1"], 0, "--prefill-ms-per-token"),  # the simulator's timing
    ],
)
def test_extra_args_that_set_a_managed_flag_are_refused(args: list[str], index: int, flag: str) -> None:
    """Before: copied after the operator's flags, the last one won (vLLM's argparse) and the pool
    never became Ready, or silently ran another configuration."""
    for field in ("engine", "prefill", "decode"):
        message = refused(pool_body(**{f"{field}__extraArgs": args}))
        assert message.startswith(f"spec.{field}.extraArgs[{index}]: {args[index]!r} sets {flag}"), message


def test_an_extra_arg_holding_a_space_is_refused() -> None:
    """argparse takes "--max-loras 4" as one positional word, and vLLM stops on it."""
    message = refused(pool_body(engine__extraArgs=["--max-loras 4"]))
    assert message.startswith("spec.engine.extraArgs[0]: '--max-loras 4' holds a space")


def test_flags_and_env_the_operator_leaves_alone_reach_the_engines() -> None:
    extra = [
        "--seed",
        "7",
        "-O3",
        "--max-logprobs",
        "-1",
        "--kv-cache-dtype",
        "fp8",
        "--enable-eplb",
    ]
    body = pool_body(engine__extraArgs=extra, engine__env=[{"name": "NCCL_DEBUG", "value": "INFO"}])
    decision = run(body)
    assert decision.problem is None and decision.objects is not None
    engine = next(o for o in decision.objects if o["metadata"]["name"] == "sim-llama-decode")
    container = engine["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-len(extra) :] == extra
    assert container["env"][-1] == {"name": "NCCL_DEBUG", "value": "INFO"}


@pytest.mark.parametrize("connector", ["lmcache", "nixl"])
@pytest.mark.parametrize("weights", ["hub", "pvc"])
@pytest.mark.parametrize("engine", ["vllm", "simulator"])
def test_every_flag_and_variable_the_builders_render_is_refused_by_validation(
    connector: str, weights: str, engine: str
) -> None:
    """One list: whatever the builders render is what validation refuses (never a second list)."""
    example = "llama-3.1-70b-h100.yaml" if weights == "pvc" else "llama-3.1-8b-h100.yaml"
    body = pool_body(
        example,
        engine__type=engine,
        engine__enforceEager=True,
        engine__speculativeDecoding={"method": "ngram", "numSpeculativeTokens": 3},
        disaggregation__kvTransfer={"connector": connector},
        model__hfTokenSecret={"name": "hf-token"},
    )
    decision = run(body)
    assert decision.objects is not None, decision.problem
    engines = [o for o in decision.objects if o["metadata"]["name"].endswith(("-prefill", "-decode"))]
    containers = [
        c for o in engines if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]
    ]
    assert containers
    for container in containers:
        flags = [word for word in container["args"] if word.startswith("-")]
        assert flags and all(managed_flag(word) is not None for word in flags), flags
        assert all(managed_env(variable["name"]) is not None for variable in container["env"])


def test_managed_lists_are_the_builders_tables() -> None:
    assert managed_flag("--port") in SERVE_FLAGS
    assert managed_env("PYTHONHASHSEED") in MANAGED_ENV
    assert managed_flag("--seed") is None and managed_flag("-1") is None and managed_flag("fp8") is None


def test_lmcache_with_pinned_pipeline_stages_is_refused() -> None:
    """LMCache indexes its port lists by the global worker rank (TP x PP): decoder ranks beyond TP
    raise IndexError (lmcache/v1/storage_backend/pd_backend_async.py:267, worker_id =
    parallel_config.rank in lmcache/integration/vllm/vllm_service_factory.py:149), and a request
    names one receiver host while the stages' workers have other IPs."""
    message = refused(pool_body(decode__pipelineParallel=2))
    assert message.startswith(
        "spec.decode.pipelineParallel: 2 stages with spec.disaggregation.kvTransfer.connector lmcache, "
        "but the LMCache connector needs PP=1"
    )
    nixl = run(pool_body(decode__pipelineParallel=2, disaggregation__kvTransfer={"connector": "nixl"}))
    assert nixl.problem is None and nixl.layout is not None and nixl.layout.decode.pipeline_parallel == 2


def test_a_shared_router_named_like_a_pools_own_objects_is_refused() -> None:
    """A shared router "chat-router" would take over pool chat's own router."""
    message = refused(pool_body(router__shared="chat-router"))
    assert (
        message
        == "spec.router.shared: must not end in '-router': a pool's own objects are named <pool>-router"
    )
    assert run(pool_body(router__shared="chat")).objects is not None


def test_the_suffixes_refused_are_those_of_a_pools_own_objects() -> None:
    pool = PoolRef("p", "ns", "uid")
    names = [pool.router, pool.notify, *(pool.role_workload(role) for role in Role)]
    assert sorted(name.removeprefix("p") for name in names) == sorted(POOL_CHILD_SUFFIXES)


@pytest.mark.parametrize("field", ["promptTokens", "outputTokens"])
def test_a_p90_no_log_normal_reaches_is_refused_naming_the_field_values_and_limit(field: str) -> None:
    """Before, a p90 above 2.27 x the mean was planned for a distribution with a shorter tail."""
    message = refused(pool_body(**{f"workload__{field}": {"mean": 300, "p90": 800}}))
    assert f"spec.workload.{field}" in message
    assert "p90 (800) is 2.67 times mean (300)" in message and "at most 681" in message


def test_the_largest_p90_a_mean_allows_is_planned() -> None:
    decision = run(pool_body(workload__promptTokens={"mean": 300, "p90": 681}))
    assert decision.problem is None

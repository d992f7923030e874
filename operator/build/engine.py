"""Engine pods: vLLM (``vllm serve``) or the simulator (``tandem sim``), shaped alike.

Both engines get the same flags, environment, ports, probes and volumes; the simulator adds the
plan's timing flags (so it behaves like the planned hardware) and asks for no GPUs or weights. What
the pool's KV connector adds comes from its profile (``EngineContext.kv``, operator/build/connectors).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from tandem.api import EngineTiming, EngineType, InferencePoolSpec, tracing
from tandem.api.spec import Dtype
from tandem.api.tracing import ENGINE_SERVICE
from tandem.operator.build.connectors import KV_PROFILES, KvProfile
from tandem.operator.build.managed import Managed
from tandem.operator.build.meta import Manifest
from tandem.operator.build.quantity import with_memory
from tandem.operator.layout import PoolLayout, RoleLayout
from tandem.operator.naming import CONFIG_HASH_ANNOTATION, PoolRef, Role
from tandem.operator.settings import Images
from tandem.planner import pool_model
from tandem.planner.kv_cache import kv_bytes_per_token_all_ranks

HTTP_PORT = 8000
GPU_RESOURCE = "nvidia.com/gpu"
MODEL_DIR = "/model"
CACHE_DIR = "/var/cache/tandem"
# vLLM's helper (in the vllm-openai image) that forms the Ray cluster of a multi-node instance.
MULTI_NODE_SCRIPT = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
SIMULATOR_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
# A model load takes minutes: the startup probe allows 30 of them before liveness takes over.
STARTUP_PROBE = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 180}
READINESS_PROBE = {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3}
LIVENESS_PROBE = {"periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4}
TERMINATION_GRACE_SECONDS = 120
# A replica's DP ranks on several nodes meet at its leader pod (LeaderWorkerSet sets the variable),
# on vLLM's default RPC port (vllm/config/parallel.py:161), which every node must name alike.
LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"
DATA_PARALLEL_RPC_PORT = 29550


@dataclass(frozen=True)
class EngineContext:
    """What every engine pod of a pool is rendered from."""

    pool: PoolRef
    spec: InferencePoolSpec
    layout: PoolLayout
    images: Images

    @property
    def kv(self) -> KvProfile:
        """What the pool's KV connector renders."""
        return KV_PROFILES[self.layout.connector]

    @property
    def simulated(self) -> bool:
        return self.spec.engine.type == EngineType.SIMULATOR

    @property
    def image(self) -> str:
        if self.spec.engine.image:
            return self.spec.engine.image
        return self.images.tandem if self.simulated else self.images.vllm

    @property
    def weights_on_volume(self) -> bool:
        return self.spec.model.source is not None and not self.simulated

    @staticmethod
    def spans_nodes(spec: InferencePoolSpec, role: RoleLayout) -> bool:
        """An instance on several nodes (a LeaderWorkerSet group); a simulated one is one process."""
        return role.nodes_per_replica > 1 and spec.engine.type != EngineType.SIMULATOR

    def multi_node(self, role: RoleLayout) -> bool:
        return self.spans_nodes(self.spec, role)

    def data_parallel_local(self, role: RoleLayout) -> int:
        """DP ranks one pod runs: a node's share, or all of them in one process (one node, or the
        simulator)."""
        return role.data_parallel_per_pod if self.multi_node(role) else role.data_parallel

    def data_parallel_nodes(self, role: RoleLayout) -> bool:
        """A replica's DP ranks on several nodes: headless secondaries join the leader's API server."""
        return role.data_parallel > 1 and self.multi_node(role)

    @property
    def hash_seed(self) -> str:
        """One PYTHONHASHSEED for every engine of the pool: LMCache's chunk keys are hashes."""
        return str(int(hashlib.sha256(self.pool.uid.encode()).hexdigest()[:8], 16))


def http_get(path: str, **timing: int) -> Manifest:
    return {"httpGet": {"path": path, "port": "http"}, **timing}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# A flag's value for one role: a word, True for a bare switch, None or False to leave it out.
FlagValue = Callable[[EngineContext, RoleLayout], str | bool | None]
# An environment variable's value: {"value": ...} or {"valueFrom": ...}, None to leave it out.
EnvValue = Callable[[EngineContext], Manifest | None]


@dataclass(frozen=True, kw_only=True)
class ServeFlag(Managed):
    value: FlagValue
    # A boolean flag of vLLM's (argparse.BooleanOptionalAction): False renders ``--no-<flag>``,
    # which says "off" where the engine's default may be on.
    switch: bool = False

    def render(self, ctx: EngineContext, role: RoleLayout) -> list[str]:
        value = self.value(ctx, role)
        if value is False and self.switch:
            return ["--no-" + self.name.removeprefix("--")]
        if value is None or value is False:
            return []
        return [self.name] if value is True else [self.name, value]


@dataclass(frozen=True, kw_only=True)
class EngineEnv(Managed):
    value: EnvValue

    def render(self, ctx: EngineContext) -> list[Manifest]:
        value = self.value(ctx)
        return [] if value is None else [{"name": self.name, **value}]


def _fp8(ctx: EngineContext) -> bool:
    return ctx.spec.model.dtype == Dtype.FP8


def _optional(value: int | None) -> str | None:
    return None if value is None else str(value)


def _kv_transfer_config(ctx: EngineContext, role: RoleLayout) -> str | None:
    """The connector's ``--kv-transfer-config``: compact JSON, as vLLM parses it."""
    config = ctx.kv.transfer_config(role.role)
    return None if config is None else json.dumps(config, separators=(",", ":"))


def _speculative_config(ctx: EngineContext) -> str | None:
    speculative = ctx.spec.engine.speculative_decoding
    if speculative is None:
        return None
    return json.dumps(speculative.model_dump(exclude_none=True, mode="json"), separators=(",", ":"))


def _traces_endpoint(ctx: EngineContext) -> str | None:
    tracing = ctx.spec.router.tracing
    return None if tracing is None else tracing.endpoint


def _traced(value: str) -> EnvValue:
    return lambda ctx: None if ctx.spec.router.tracing is None else {"value": value}


_PARALLELISM = "the plan, or spec.prefill.{0} and spec.decode.{0}"
_DATA_PARALLEL = "the plan's data-parallel layout (status.plan.<role>.dataParallel)"
_MULTI_NODE_DP = "a DP replica on several nodes: its ranks meet at the leader pod"


def _when_data_parallel(value: Callable[[EngineContext, RoleLayout], str]) -> FlagValue:
    return lambda ctx, role: value(ctx, role) if role.data_parallel > 1 else None


def _when_dp_nodes(value: str) -> FlagValue:
    return lambda ctx, role: value if ctx.data_parallel_nodes(role) else None


# ``vllm serve``'s flags after the model, in order; the simulator accepts the same ones. This table
# is what the builders render and what validation refuses in extraArgs: one list, never two.
SERVE_FLAGS: tuple[ServeFlag, ...] = (
    ServeFlag("--served-model-name", "spec.model.name", value=lambda ctx, role: ctx.spec.model.name),
    ServeFlag(
        "--port",
        f"fixed at {HTTP_PORT}, where the Services, probes and router reach the engines",
        value=lambda ctx, role: str(HTTP_PORT),
    ),
    ServeFlag(
        "--tensor-parallel-size",
        _PARALLELISM.format("tensorParallel"),
        ("-tp",),
        value=lambda ctx, role: str(role.tensor_parallel),
    ),
    ServeFlag(
        "--pipeline-parallel-size",
        _PARALLELISM.format("pipelineParallel"),
        ("-pp",),
        value=lambda ctx, role: str(role.pipeline_parallel),
    ),
    ServeFlag(
        "--data-parallel-size",
        _DATA_PARALLEL,
        ("-dp",),
        value=_when_data_parallel(lambda ctx, role: str(role.data_parallel)),
    ),
    ServeFlag(
        "--data-parallel-size-local",
        f"{_DATA_PARALLEL}: the ranks of one pod",
        ("-dpl",),
        value=_when_data_parallel(lambda ctx, role: str(ctx.data_parallel_local(role))),
    ),
    ServeFlag("--data-parallel-address", _MULTI_NODE_DP, ("-dpa",), value=_when_dp_nodes(LEADER_ADDRESS)),
    ServeFlag(
        "--data-parallel-rpc-port",
        _MULTI_NODE_DP,
        ("-dpp",),
        value=_when_dp_nodes(str(DATA_PARALLEL_RPC_PORT)),
    ),
    ServeFlag(
        "--enable-expert-parallel",
        "the plan's expert parallelism (status.plan.<role>.expertParallel)",
        ("-ep",),
        value=lambda ctx, role: role.expert_parallel,
    ),
    ServeFlag(
        "--all2all-backend",
        "the plan's all-to-all backend, which its timing assumes",
        value=lambda ctx, role: role.all2all_backend,
    ),
    ServeFlag(
        "--max-model-len",
        "spec.model.maxModelLen",
        value=lambda ctx, role: _optional(ctx.layout.max_model_len),
    ),
    ServeFlag(
        "--quantization", "spec.model.dtype", ("-q",), value=lambda ctx, role: "fp8" if _fp8(ctx) else None
    ),
    ServeFlag(
        "--dtype",
        "spec.model.dtype",
        value=lambda ctx, role: None if _fp8(ctx) else str(ctx.spec.model.dtype),
    ),
    ServeFlag(
        "--gpu-memory-utilization",
        "spec.engine.gpuMemoryUtilization (the planner sizes the KV cache with it)",
        value=lambda ctx, role: str(role.gpu_memory_utilization),
    ),
    ServeFlag(
        "--max-num-seqs",
        "the plan's batch per role (maxBatch in status.plan)",
        value=lambda ctx, role: str(role.timing.max_num_seqs),
    ),
    ServeFlag(
        "--max-num-batched-tokens",
        "the plan's token budget per role",
        value=lambda ctx, role: str(role.timing.max_num_batched_tokens),
    ),
    ServeFlag(
        "--enable-prefix-caching",
        "on, but off on the decoders of LMCache pools with prefillers: LMCache never reads, so never "
        "frees, the handed-off chunks a decoder's own prefix cache covers",
        value=lambda ctx, role: ctx.kv.prefix_caching(ctx, role),
        switch=True,
    ),
    # Both roles: decoders prefill short prompts locally, and chunking keeps those from stalling
    # running decodes.
    ServeFlag(
        "--enable-chunked-prefill",
        "always on: local prefills do not stall running decodes",
        value=lambda ctx, role: True,
    ),
    ServeFlag(
        "--enforce-eager", "spec.engine.enforceEager", value=lambda ctx, role: ctx.spec.engine.enforce_eager
    ),
    ServeFlag(
        "--speculative-config",
        "spec.engine.speculativeDecoding",
        ("-sc",),
        value=lambda ctx, role: _speculative_config(ctx),
    ),
    ServeFlag(
        "--kv-transfer-config",
        "spec.disaggregation.kvTransfer (the connector and the role)",
        value=_kv_transfer_config,
    ),
    ServeFlag(
        "--otlp-traces-endpoint",
        "spec.router.tracing.endpoint: the engines' spans join the router's traces",
        value=lambda ctx, role: _traces_endpoint(ctx),
    ),
    ServeFlag(
        "--distributed-executor-backend",
        "the layout: pipeline stages on several nodes run on Ray (DP ranks on vLLM's processes)",
        value=lambda ctx, role: "ray" if ctx.multi_node(role) and role.data_parallel == 1 else None,
    ),
)

# EngineTiming fields that are vLLM flags too, which SERVE_FLAGS already renders.
_VLLM_TIMING_FLAGS = frozenset({"max_num_seqs", "max_num_batched_tokens"})
# The simulator's own flags: one per other EngineTiming field, named after it.
SIMULATOR_FLAGS: tuple[Managed, ...] = (
    *(
        Managed(_flag(name), "the plan's engine timing (simulated engines)")
        for name in EngineTiming.model_fields
        if name not in _VLLM_TIMING_FLAGS
    ),
    Managed("--kv-bytes-per-token", "the model's KV size (simulated engines)"),
    Managed("--use-mla", "the model's attention (simulated engines)"),
)
_PLAIN_HTTP = "the probes and the router speak plain HTTP to port 8000"
_INTERNAL_LB = (
    "a DP replica balances its ranks behind its leader's API servers (vLLM's internal load balancing): "
    "the router sees one endpoint per replica"
)
# vLLM settings the pods rely on at their defaults without rendering them.
RELIED_ON_FLAGS: tuple[Managed, ...] = (
    Managed("--model", "spec.model.name and spec.model.source (the command's positional model)"),
    Managed("--config", "a config file could set any of these flags"),
    Managed("--host", "vLLM's default, every address: the probes and the router reach the pod IP"),
    Managed("--uds", _PLAIN_HTTP),
    Managed("--grpc", _PLAIN_HTTP),
    Managed("--headless", f"rendered on the secondary nodes of a DP replica; {_PLAIN_HTTP}"),
    Managed("--ssl-keyfile", _PLAIN_HTTP),
    Managed("--ssl-certfile", _PLAIN_HTTP),
    Managed(
        "--api-key",
        "the router calls the engines without credentials (spec.router.apiKeySecret protects the pool)",
    ),
    Managed("--data-parallel-start-rank", "rendered on the secondary nodes of a DP replica", ("-dpr",)),
    Managed("--data-parallel-backend", "mp, vLLM's default, which headless secondary nodes need", ("-dpb",)),
    *(
        Managed(name, _INTERNAL_LB, (alias,))
        for name, alias in (
            ("--data-parallel-rank", "-dpn"),
            ("--data-parallel-hybrid-lb", "-dph"),
            ("--data-parallel-external-lb", "-dpe"),
            ("--data-parallel-multi-port-external-lb", "-dpm"),
            ("--api-server-count", "-asc"),
        )
    ),
    Managed("--prefill-context-parallel-size", "the plan sets the GPUs of an engine (TP x PP)", ("-pcp",)),
    Managed("--nnodes", "an engine on several nodes is a LeaderWorkerSet group the operator forms", ("-n",)),
    Managed(
        "--node-rank", "an engine on several nodes is a LeaderWorkerSet group the operator forms", ("-r",)
    ),
)
MANAGED_FLAGS: tuple[Managed, ...] = (*SERVE_FLAGS, *SIMULATOR_FLAGS, *RELIED_ON_FLAGS)


def simulated_model_args(ctx: EngineContext, role: RoleLayout) -> list[str]:
    """The model's KV facts, which vLLM reads from the checkpoint and the simulator takes as flags,
    by the planner's formula (tandem.planner.kv_cache), as the router counts them: a decoder's PD
    buffer of as many chunks as the router admits against, one notification per handoff for MLA."""
    model = pool_model(ctx.spec)
    per_token = kv_bytes_per_token_all_ranks(model, role.tensor_parallel, role.pipeline_parallel)
    args = ["--kv-bytes-per-token", str(per_token)]
    return [*args, "--use-mla"] if model.is_mla else args


def timing_args(timing: EngineTiming) -> list[str]:
    """The simulator's timing flags: one per EngineTiming field, named after it."""
    args: list[str] = []
    for name, value in timing.flags().items():
        if name not in _VLLM_TIMING_FLAGS:
            args += [_flag(name), value]
    return args


def serve_args(ctx: EngineContext, role: RoleLayout) -> list[str]:
    """``vllm serve`` arguments (the simulator accepts the same ones)."""
    args = [MODEL_DIR if ctx.weights_on_volume else ctx.spec.model.name]
    for flag in SERVE_FLAGS:
        args += flag.render(ctx, role)
    if ctx.simulated:
        args += timing_args(role.timing) + simulated_model_args(ctx, role)
    return [*args, *ctx.spec.engine.extra_args, *role.extra_args]


def _hf_token(ctx: EngineContext) -> Manifest | None:
    token = ctx.spec.model.hf_token_secret
    if token is None or ctx.weights_on_volume:
        return None
    return {"valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}}


_CACHE = "the pod's cache volume"
# The engines' environment, in order, before spec.engine.env: the hash seed, the connector's
# (``KvProfile.env``), then the caches. What the builders render and what validation refuses in env.
HASH_SEED_ENV = EngineEnv(
    "PYTHONHASHSEED",
    "one seed per pool, from its uid: LMCache's chunk keys are hashes",
    value=lambda ctx: {"value": ctx.hash_seed},
)
CACHE_ENV: tuple[EngineEnv, ...] = (
    EngineEnv("HF_TOKEN", "spec.model.hfTokenSecret", value=_hf_token),
    EngineEnv("HF_HOME", _CACHE, value=lambda ctx: {"value": f"{CACHE_DIR}/huggingface"}),
    EngineEnv("VLLM_CACHE_ROOT", _CACHE, value=lambda ctx: {"value": f"{CACHE_DIR}/vllm"}),
    EngineEnv("XDG_CACHE_HOME", _CACHE, value=lambda ctx: {"value": CACHE_DIR}),
)
_TRACING = "spec.router.tracing"
TRACING_ENV: tuple[EngineEnv, ...] = (
    # vLLM exports over gRPC unless told otherwise (vllm/tracing/otel.py 94-102); the endpoint is
    # the collector's OTLP/HTTP one, as the router's. The sampler stays the SDK default,
    # parent-based: an engine traces the requests the router sampled.
    EngineEnv(tracing.TRACES_PROTOCOL, _TRACING, value=_traced(tracing.HTTP_PROTOBUF)),
    EngineEnv(tracing.SERVICE_NAME, _TRACING, value=_traced(ENGINE_SERVICE)),
)
RELIED_ON_ENV: tuple[Managed, ...] = (
    Managed(
        "VLLM_API_KEY",
        "the router calls the engines without credentials (spec.router.apiKeySecret protects the pool)",
    ),
)
# Every connector's variables are refused in every pool: a pool may change its connector.
MANAGED_ENV: tuple[Managed, ...] = (
    HASH_SEED_ENV,
    *(variable for profile in KV_PROFILES.values() for variable in profile.env),
    *CACHE_ENV,
    *TRACING_ENV,
    *RELIED_ON_ENV,
)
# Prefixes of variables a connector reads over the configuration the operator renders for it.
MANAGED_ENV_PREFIXES: tuple[Managed, ...] = tuple(
    profile.env_prefix for profile in KV_PROFILES.values() if profile.env_prefix is not None
)


def engine_env(ctx: EngineContext) -> list[Manifest]:
    env = [
        *HASH_SEED_ENV.render(ctx),
        *(variable.render() for variable in ctx.kv.env),
        *(entry for variable in CACHE_ENV for entry in variable.render(ctx)),
        *(entry for variable in TRACING_ENV for entry in variable.render(ctx)),
    ]
    return env + [variable.to_wire() for variable in ctx.spec.engine.env]


def engine_ports(ctx: EngineContext, role: Role) -> list[Manifest]:
    ports = [("http", HTTP_PORT), *ctx.kv.engine_ports(ctx, role)]
    return [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in ports]


def engine_resources(ctx: EngineContext, role: RoleLayout) -> Manifest:
    if ctx.simulated:
        base: dict[str, dict[str, str]] = {k: dict(v) for k, v in SIMULATOR_RESOURCES.items()}
    else:
        gpus = {GPU_RESOURCE: str(role.gpus_per_pod)}
        base = {"requests": dict(gpus), "limits": dict(gpus)}
    for section, values in (role.resources or {}).items():
        base[section] = {**base.get(section, {}), **values}
    # The simulator holds no KV bytes: only a real engine's pod needs the connector's memory.
    return base if ctx.simulated else with_memory(base, ctx.kv.host_memory_bytes(ctx, role))


def _volumes(ctx: EngineContext, role: RoleLayout) -> tuple[list[Manifest], list[Manifest]]:
    volumes: list[Manifest] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{8 * role.gpus_per_pod}Gi"}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    kv_volumes, kv_mounts = ctx.kv.volumes(ctx, role)
    volumes += kv_volumes
    mounts += kv_mounts
    source = ctx.spec.model.source
    if source is not None and ctx.weights_on_volume:
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": source.claim_name, "readOnly": True}}
        )
        mount: Manifest = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
        if source.path.strip("/"):
            mount["subPath"] = source.path.strip("/")
        mounts.append(mount)
    return volumes, mounts


def _restricted() -> Manifest:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_security(images: Images) -> Manifest:
    """Non-root as the images' user where it is known; RuntimeDefault seccomp always."""
    context: Manifest = {"seccompProfile": {"type": "RuntimeDefault"}}
    uid = images.run_as_user
    if uid is not None:
        context = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid, **context}
    return context


def _tolerations(ctx: EngineContext, role: RoleLayout) -> list[Manifest]:
    tolerations = [toleration.to_wire() for toleration in role.tolerations]
    if not ctx.simulated and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append(dict(GPU_TOLERATION))
    return tolerations


def _pod(
    ctx: EngineContext, role: RoleLayout, command: list[str], args: list[str], *, serves: bool
) -> Manifest:
    """An engine pod; ``serves``: it answers HTTP (ports and probes), as all but LWS workers do."""
    volumes, mounts = _volumes(ctx, role)
    container: Manifest = {
        "name": "engine",
        "image": ctx.image,
        "command": command,
        "args": args,
        "env": engine_env(ctx),
        "resources": engine_resources(ctx, role),
        "volumeMounts": mounts,
        "securityContext": _restricted(),
    }
    if serves:
        container |= {
            "ports": engine_ports(ctx, role.role),
            "startupProbe": http_get("/health", **STARTUP_PROBE),
            "readinessProbe": http_get("/health", **READINESS_PROBE),
            "livenessProbe": http_get("/health", **LIVENESS_PROBE),
        }
    spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(ctx.images),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": volumes,
    }
    if role.node_selector:
        spec["nodeSelector"] = dict(role.node_selector)
    tolerations = _tolerations(ctx, role)
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def template_annotations(config_digest: str | None) -> dict[str, str]:
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": "/metrics",
    }
    if config_digest is not None:
        annotations[CONFIG_HASH_ANNOTATION] = config_digest
    return annotations


def _engine_command(ctx: EngineContext) -> list[str]:
    return ["tandem", "sim"] if ctx.simulated else ["vllm", "serve"]


def engine_pod_spec(ctx: EngineContext, role: RoleLayout) -> Manifest:
    """The pod of a single-node instance, or the leader of a multi-node one (it serves HTTP)."""
    command, args = _engine_command(ctx), serve_args(ctx, role)
    if ctx.multi_node(role) and role.data_parallel == 1:
        # The leader forms the Ray cluster of the group, then serves; $(VAR)s are expanded by Kubernetes.
        start = f"bash {MULTI_NODE_SCRIPT} leader --ray_cluster_size=$(LWS_GROUP_SIZE)"
        command, args = ["sh", "-c"], [f"{start} && exec {shlex.join(command + args)}"]
    return _pod(ctx, role, command, args, serves=True)


def worker_pod_spec(ctx: EngineContext, role: RoleLayout) -> Manifest:
    """A non-leader pod of a multi-node instance. Pipeline stages: it joins the leader's Ray cluster.
    DP ranks: it runs its node's ranks headless (no API server), from the first rank of its node
    (LeaderWorkerSet numbers the pods of a group from 0, the leader, in LWS_WORKER_INDEX), and they
    join the leader's (vllm/entrypoints/cli/serve.py, run_headless)."""
    if role.data_parallel == 1:
        join = f"bash {MULTI_NODE_SCRIPT} worker --ray_address=$(LWS_LEADER_ADDRESS)"
        return _pod(ctx, role, ["sh", "-c"], [join], serves=False)
    engine = shlex.join(_engine_command(ctx) + serve_args(ctx, role))
    # $$ keeps Kubernetes' $(VAR) expansion off the shell's arithmetic.
    first_rank = f"$$((LWS_WORKER_INDEX * {role.data_parallel_per_pod}))"
    run = f"exec {engine} --headless --data-parallel-start-rank {first_rank}"
    return _pod(ctx, role, ["sh", "-c"], [run], serves=False)

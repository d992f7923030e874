"""``tandem sim``: run a simulated vLLM engine, with ``vllm serve``'s command line.

It understands the ``vllm serve`` arguments that shape what it simulates (the model, positional or
``--model``; ``--served-model-name``, ``--host``, ``--port``, ``--max-model-len``,
``--max-num-seqs``, ``--max-num-batched-tokens``, ``--kv-transfer-config``,
``--tensor-parallel-size``, ``--pipeline-parallel-size``, ``--data-parallel-size`` (that many
engines behind this one server: tandem.sim.data_parallel), ``--enable-prefix-caching``, ``--seed``,
``--block-size``, ``--enable-prompt-tokens-details``, ``--uvicorn-log-level``), accepts a few it
does not need (``--gpu-memory-utilization``, ``--enable-chunked-prefill``, ``--enable-expert-parallel``,
``--all2all-backend``, ``--data-parallel-address``, ``--data-parallel-rpc-port``; refuses
``--headless``, ``--data-parallel-start-rank`` and a ``--data-parallel-size-local`` other than the DP
size: a simulated replica is one process), and logs and ignores
any other, so one command line shape serves both engines. An ignored ``--flag`` takes the next
word as its value unless that starts with ``-`` or the flag is a switch (``--enable-*``,
``--disable-*``, ``--no-*``, or a known vLLM switch like ``--trust-remote-code``).

Its own flags: ``--speed``, ``--kv-bytes-per-token``, ``--use-mla``, ``--faults JSON``,
``--disable-admin-api``, one flag per ``EngineTiming`` field (``--prefill-ms-per-token`` …), and
``--plan FILE --role ROLE`` to take ``plan[ROLE]["engine_timing"]`` and ``plan[ROLE]["data_parallel"]``
from a planner's plan (flags given explicitly win).

Environment: ``TANDEM_BIND_HOST`` (a wildcard host binds this address instead, for HTTP and ZMQ),
``LMCACHE_CONFIG_FILE``, ``PYTHONHASHSEED`` (LMCache chunk keys), ``VLLM_NIXL_SIDE_CHANNEL_HOST``,
``VLLM_NIXL_SIDE_CHANNEL_PORT``, ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``. (vLLM 0.33 has no
``VLLM_NIXL_ABORT_REQUEST_TIMEOUT``: the NIXL lease is ``kv_connector_extra_config.kv_lease_duration``.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tandem.api.timing import EngineTiming
from tandem.api.tracing import HTTP_PROTOBUF, TRACES_PROTOCOL
from tandem.sim.faults import Faults
from tandem.sim.kv_connectors import simulated
from tandem.sim.settings import (
    DEFAULT_MODEL,
    KVTransferConfig,
    LMCacheConfig,
    NixlSettings,
    SimSettings,
    resolve_bind_host,
)

log = logging.getLogger("tandem.sim")
_SWITCH_PREFIXES = ("--enable-", "--disable-", "--no-")
_VLLM_SWITCHES = frozenset(
    {
        "--trust-remote-code",
        "--enforce-eager",
        "--headless",
        "--skip-tokenizer-init",
        "--fully-sharded-loras",
        "--use-tqdm-on-load",
        "--return-tokens-as-token-ids",
        "--async-scheduling",
    }
)


class SettingsError(ValueError):
    """The command line or environment describes no valid simulator."""


def split_unknown(argv: Sequence[str], known: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Split a command line into what ``known`` options and positionals take, and the rest."""
    kept: list[str] = []
    ignored: list[str] = []
    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        name = word.split("=", 1)[0]
        if not word.startswith("-") or word == "-" or name in known or _is_number(word):
            kept.append(word)
            index += 1
            continue
        ignored.append(word)
        index += 1
        takes_value = "=" not in word and not name.startswith(_SWITCH_PREFIXES) and name not in _VLLM_SWITCHES
        if takes_value and index < len(words) and not words[index].startswith("-"):
            ignored.append(words[index])
            index += 1
    return kept, ignored


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


class _VllmArgumentParser(argparse.ArgumentParser):
    """Collects unknown arguments into ``ignored_args`` instead of failing on them."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        kept, ignored = split_unknown(sys.argv[1:] if args is None else args, self._option_string_actions)
        parsed, extras = super().parse_known_args(kept, namespace)
        parsed.ignored_args = ignored + extras
        return parsed, []


def _timing_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "timing (EngineTiming fields; default: the plan's, else EngineTiming's)"
    )
    for name, field in EngineTiming.model_fields.items():
        kind: type = int if field.annotation is int else float if field.annotation is float else str
        help_text = f"{field.description or name.replace('_', ' ')} (default {field.default})"
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"timing_{name}",
            type=kind,
            metavar=kind.__name__.upper(),
            help=help_text,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_tag", nargs="?", metavar="MODEL", help="model name, as `vllm serve MODEL`")
    parser.add_argument("--model", help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--served-model-name", nargs="+", help="names the API answers to (default: the model)"
    )
    parser.add_argument("--host", help="bind address (default: all; see TANDEM_BIND_HOST)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument(
        "--kv-transfer-config", help="vLLM's KV connector JSON (LMCacheConnectorV1 or NixlConnector)"
    )
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    dp = parser.add_argument_group(
        "data and expert parallelism (vLLM's flags; the ranks run in this one process)"
    )
    dp.add_argument(
        "--data-parallel-size",
        "-dp",
        type=int,
        help="DP ranks: engines of the timing each (default: the plan's, else 1)",
    )
    dp.add_argument("--data-parallel-size-local", "-dpl", type=int, help="must be the DP size: one process")
    dp.add_argument("--data-parallel-address", "-dpa", help="accepted: every rank is local")
    dp.add_argument("--data-parallel-rpc-port", "-dpp", type=int, help="accepted: every rank is local")
    dp.add_argument("--data-parallel-start-rank", "-dpr", type=int, help="refused: no secondary nodes")
    dp.add_argument("--headless", action="store_true", help="refused: the simulator always serves HTTP")
    dp.add_argument(
        "--enable-expert-parallel",
        "-ep",
        action=argparse.BooleanOptionalAction,
        help="accepted: in the plan's timing",
    )
    dp.add_argument("--all2all-backend", help="accepted: in the plan's timing")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, help="accepted; KV capacity is --kv-capacity-tokens"
    )
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, help="always on")
    parser.add_argument("--enable-prompt-tokens-details", action="store_true", help="cached tokens in usage")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument(
        "--seed", type=int, default=0, help="changes every answer; keep it equal across a pool"
    )
    parser.add_argument("--uvicorn-log-level", default="info")
    parser.add_argument("--speed", type=float, default=1.0, help="run this many times faster than modelled")
    parser.add_argument(
        "--kv-bytes-per-token", type=int, default=131072, help="KV bytes per token, all TP ranks"
    )
    parser.add_argument(
        "--use-mla",
        action="store_true",
        help="the model uses MLA attention (DeepSeek): LMCache stores its KV on the first rank only",
    )
    parser.add_argument("--plan", type=Path, help="planner plan JSON: use plan[ROLE]['engine_timing']")
    parser.add_argument("--role", help="the plan role to simulate (prefill, decode, …)")
    parser.add_argument("--faults", default="{}", help="initial faults JSON, e.g. '{\"error_rate\": 0.1}'")
    parser.add_argument("--disable-admin-api", action="store_true", help="no /admin/faults")
    parser.add_argument(
        "--otlp-traces-endpoint",
        metavar="URL",
        help="OTLP/HTTP traces URL: vLLM's llm_request span per request",
    )
    _timing_flags(parser)


def _plan_role(args: argparse.Namespace) -> dict[str, Any]:
    """`plan[ROLE]` of --plan FILE --role ROLE (empty without --plan)."""
    if args.plan is None:
        if args.role:
            raise SettingsError("--role needs --plan")
        return {}
    if not args.role:
        raise SettingsError("--plan needs --role")
    try:
        role = json.loads(args.plan.read_text())[args.role]
        dict(role["engine_timing"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SettingsError(f"--plan {args.plan}: no engine_timing for role {args.role!r} ({exc})") from exc
    if not isinstance(role, dict):
        raise SettingsError(f"--plan {args.plan}: role {args.role!r} is not an object")
    return role


def _engine_timing(args: argparse.Namespace, planned: dict[str, Any]) -> EngineTiming:
    base: dict[str, Any] = dict(planned.get("engine_timing", {}))
    overrides = {name: getattr(args, f"timing_{name}") for name in EngineTiming.model_fields}
    base.update({name: value for name, value in overrides.items() if value is not None})
    return EngineTiming.model_validate(base)


def _data_parallel_size(args: argparse.Namespace, planned: dict[str, Any]) -> int:
    """The DP ranks to run: the flag, else the plan's; all in this process (no secondary nodes)."""
    if args.headless or args.data_parallel_start_rank is not None:
        raise SettingsError(
            "--headless / --data-parallel-start-rank: the simulator runs every DP rank of a replica "
            "in one process that serves HTTP (there are no secondary nodes to start)"
        )
    size = args.data_parallel_size or int(planned.get("data_parallel", 1))
    local = args.data_parallel_size_local
    if local is not None and local != size:
        raise SettingsError(
            f"--data-parallel-size-local {local}: the simulator runs all {size} DP ranks in one process"
        )
    return size


def _traces_endpoint(given: str | None, env: Mapping[str, str]) -> str | None:
    """vLLM traces only when the flag is given (``config/observability.py`` 38); the simulator
    exports over OTLP/HTTP only, where vLLM defaults to gRPC (``tracing/otel.py`` 94-102)."""
    protocol = env.get(TRACES_PROTOCOL, HTTP_PROTOBUF)
    if given and protocol != HTTP_PROTOBUF:
        raise ValueError(f"{TRACES_PROTOCOL}={protocol!r}: the simulator exports traces over {HTTP_PROTOBUF}")
    return given or None


def build_settings(args: argparse.Namespace, env: Mapping[str, str]) -> SimSettings:
    """The settings a parsed command line and an environment describe; raises SettingsError."""
    bind_override = env.get("TANDEM_BIND_HOST") or None
    try:
        kv_transfer = (
            KVTransferConfig.model_validate_json(args.kv_transfer_config) if args.kv_transfer_config else None
        )
        lmcache = None
        if kv_transfer is not None and env.get("LMCACHE_CONFIG_FILE"):
            lmcache = LMCacheConfig.from_file(Path(env["LMCACHE_CONFIG_FILE"]))
            lmcache = lmcache.model_copy(
                update={"pd_peer_host": resolve_bind_host(lmcache.pd_peer_host, bind_override)}
            )
        side_host = env.get("VLLM_NIXL_SIDE_CHANNEL_HOST", "127.0.0.1")
        nixl = NixlSettings(
            side_channel_host=resolve_bind_host(
                "127.0.0.1" if side_host == "localhost" else side_host, bind_override
            ),
            side_channel_port=int(env.get("VLLM_NIXL_SIDE_CHANNEL_PORT", "5600")),
        )
        hash_seed = env.get("PYTHONHASHSEED", "random")
        planned = _plan_role(args)
        settings = SimSettings(
            model=args.model_tag or args.model or DEFAULT_MODEL,
            served_model_name=tuple(args.served_model_name or ()),
            host=resolve_bind_host(args.host, bind_override),
            port=args.port,
            max_model_len=args.max_model_len,
            seed=args.seed,
            speed=args.speed,
            timing=_engine_timing(args, planned),
            block_size=args.block_size,
            enable_prefix_caching=args.enable_prefix_caching,
            tensor_parallel_size=args.tensor_parallel_size,
            pipeline_parallel_size=args.pipeline_parallel_size,
            data_parallel_size=_data_parallel_size(args, planned),
            kv_bytes_per_token=args.kv_bytes_per_token,
            use_mla=args.use_mla,
            kv_transfer_config=kv_transfer,
            lmcache=lmcache,
            lmcache_hash_seed=None if hash_seed == "random" else int(hash_seed),
            nixl=nixl,
            faults=Faults.model_validate_json(args.faults),
            admin_api=not args.disable_admin_api,
            prompt_tokens_details=args.enable_prompt_tokens_details,
            keep_alive_s=float(env.get("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "5")),
            otlp_traces_endpoint=_traces_endpoint(args.otlp_traces_endpoint, env),
        )
        simulated(settings)  # the connector's own checks
    except (ValidationError, ValueError, OSError) as exc:
        raise SettingsError(str(exc)) from exc
    return settings


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.uvicorn_log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.ignored_args:
        log.info("ignoring arguments the simulator does not model: %s", " ".join(args.ignored_args))
    try:
        settings = build_settings(args, os.environ)
    except SettingsError as exc:
        log.error("cannot start: %s", exc)
        return 2
    if settings.kv_transfer_config is not None and settings.lmcache_hash_seed is None:
        log.warning("PYTHONHASHSEED is not set: LMCache chunk keys will match no other engine")
    from tandem.sim.server import serve  # uvicorn and the app load only when serving

    return serve(settings, log_level=args.uvicorn_log_level)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("sim", help="run a simulated vLLM engine (vllm serve's command line)")
    # The top-level parser rejects unknown arguments; a vLLM command line carries many the simulator
    # does not model, so this subcommand's parser collects them instead.
    parser.__class__ = _VllmArgumentParser
    add_arguments(parser)
    parser.set_defaults(run=_run)

"""Engine pods: vLLM (``vllm serve``) or the simulator (``tandem sim``), shaped alike.

Both engines get the same flags, environment, ports, probes and volumes; the simulator adds the
plan's timing flags (so it behaves like the planned hardware) and asks for no GPUs or weights.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass

from tandem.api import EngineTiming, EngineType, InferencePoolSpec, KvConnector
from tandem.api.spec import Dtype
from tandem.operator.build import kv
from tandem.operator.build.meta import Manifest
from tandem.operator.layout import PoolLayout, RoleLayout
from tandem.operator.naming import CONFIG_HASH_ANNOTATION, PoolRef, Role
from tandem.operator.settings import Images

HTTP_PORT = 8000
GPU_RESOURCE = "nvidia.com/gpu"
# vLLM's default; the planner's KV capacity assumes it.
GPU_MEMORY_UTILIZATION = "0.9"
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


@dataclass(frozen=True)
class EngineContext:
    """What every engine pod of a pool is rendered from."""

    pool: PoolRef
    spec: InferencePoolSpec
    layout: PoolLayout
    images: Images

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

    @property
    def hash_seed(self) -> str:
        """One PYTHONHASHSEED for every engine of the pool: LMCache's chunk keys are hashes."""
        return str(int(hashlib.sha256(self.pool.uid.encode()).hexdigest()[:8], 16))


def http_get(path: str, **timing: int) -> Manifest:
    return {"httpGet": {"path": path, "port": "http"}, **timing}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# EngineTiming fields that are vLLM flags too, which serve_args already passes.
_VLLM_TIMING_FLAGS = frozenset({"max_num_seqs", "max_num_batched_tokens"})


def timing_args(timing: EngineTiming) -> list[str]:
    """The simulator's timing flags: one per EngineTiming field, named after it."""
    args: list[str] = []
    for name, value in timing.model_dump().items():
        if name not in _VLLM_TIMING_FLAGS:
            args += [_flag(name), str(value)]
    return args


def serve_args(ctx: EngineContext, role: RoleLayout) -> list[str]:
    """``vllm serve`` arguments (the simulator accepts the same ones)."""
    spec = ctx.spec
    args = [
        MODEL_DIR if ctx.weights_on_volume else spec.model.name,
        "--served-model-name", spec.model.name,
        "--port", str(HTTP_PORT),
        "--tensor-parallel-size", str(role.tensor_parallel),
        "--pipeline-parallel-size", str(role.pipeline_parallel),
    ]  # fmt: skip
    if ctx.layout.max_model_len is not None:
        args += ["--max-model-len", str(ctx.layout.max_model_len)]
    if spec.model.dtype == Dtype.FP8:
        args += ["--quantization", "fp8"]
    else:
        args += ["--dtype", str(spec.model.dtype)]
    args += [
        "--gpu-memory-utilization", GPU_MEMORY_UTILIZATION,
        "--max-num-seqs", str(role.timing.max_num_seqs),
        "--max-num-batched-tokens", str(role.timing.max_num_batched_tokens),
        # Both roles: prefillers reuse shared prefixes; decoders prefill short prompts locally and
        # chunking keeps those from stalling running decodes.
        "--enable-prefix-caching",
        "--enable-chunked-prefill",
        "--kv-transfer-config", kv.kv_transfer_arg(ctx.layout.connector, role.role),
    ]  # fmt: skip
    if ctx.multi_node(role):
        args += ["--distributed-executor-backend", "ray"]
    if ctx.simulated:
        args += timing_args(role.timing)
    return [*args, *spec.engine.extra_args, *role.extra_args]


def engine_env(ctx: EngineContext) -> list[Manifest]:
    env: list[Manifest] = [{"name": "PYTHONHASHSEED", "value": ctx.hash_seed}]
    if ctx.layout.connector is KvConnector.LMCACHE:
        env += [
            {"name": "LMCACHE_CONFIG_FILE", "value": kv.LMCACHE_CONFIG_FILE},
            {"name": "UCX_TLS", "value": kv.UCX_TLS},
        ]
    else:
        pod_ip = {"fieldRef": {"fieldPath": "status.podIP"}}
        env.append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": pod_ip})
    token = ctx.spec.model.hf_token_secret
    if token is not None and not ctx.weights_on_volume:
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}}
        )
    env += [
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_DIR}/vllm"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
    ]
    return env + [variable.to_wire() for variable in ctx.spec.engine.env]


def engine_ports(ctx: EngineContext, role: Role) -> list[Manifest]:
    ports: list[Manifest] = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if ctx.layout.connector is KvConnector.NIXL:
        ports.append({"name": "nixl-side", "containerPort": kv.NIXL_SIDE_CHANNEL_PORT, "protocol": "TCP"})
    elif role is Role.DECODE:
        options = ctx.spec.disaggregation.kv_transfer.lmcache
        for name, port in kv.decoder_port_names(options, ctx.layout.decode.tensor_parallel):
            ports.append({"name": name, "containerPort": port, "protocol": "TCP"})
    return ports


def engine_resources(ctx: EngineContext, role: RoleLayout) -> Manifest:
    if ctx.simulated:
        base: dict[str, dict[str, str]] = {k: dict(v) for k, v in SIMULATOR_RESOURCES.items()}
    else:
        gpus = {GPU_RESOURCE: str(role.gpus_per_pod)}
        base = {"requests": dict(gpus), "limits": dict(gpus)}
    for section, values in (role.resources or {}).items():
        base[section] = {**base.get(section, {}), **values}
    return base


def _volumes(ctx: EngineContext, role: RoleLayout) -> tuple[list[Manifest], list[Manifest]]:
    volumes: list[Manifest] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{8 * role.gpus_per_pod}Gi"}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    if ctx.layout.connector is KvConnector.LMCACHE:
        config_map = {"name": ctx.pool.lmcache_config(role.role)}
        volumes.append({"name": "lmcache-config", "configMap": config_map})
        mounts.append({"name": "lmcache-config", "mountPath": kv.LMCACHE_CONFIG_DIR, "readOnly": True})
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


def engine_pod_spec(ctx: EngineContext, role: RoleLayout) -> Manifest:
    """The pod of a single-node instance, or the leader of a multi-node one (it serves HTTP)."""
    command = ["tandem", "sim"] if ctx.simulated else ["vllm", "serve"]
    args = serve_args(ctx, role)
    if ctx.multi_node(role):
        # The leader forms the Ray cluster of the group, then serves; $(VAR)s are expanded by Kubernetes.
        start = f"bash {MULTI_NODE_SCRIPT} leader --ray_cluster_size=$(LWS_GROUP_SIZE)"
        command, args = ["sh", "-c"], [f"{start} && exec {shlex.join(command + args)}"]
    return _pod(ctx, role, command, args, serves=True)


def worker_pod_spec(ctx: EngineContext, role: RoleLayout) -> Manifest:
    """A non-leader pod of a multi-node instance: it joins the leader's Ray cluster."""
    join = f"bash {MULTI_NODE_SCRIPT} worker --ray_address=$(LWS_LEADER_ADDRESS)"
    return _pod(ctx, role, ["sh", "-c"], [join], serves=False)

"""A container's environment and its ``$(VAR)`` expansion, computed as the kubelet does.

Order (later wins): the base environment, Service link variables, ``envFrom`` sources, ``env``
entries (each value expanded against what came before), then ``TANDEM_BIND_HOST``. ``command`` and
``args`` are expanded against the result. Objects are ``kubernetes_asyncio`` client models.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BIND_HOST_ENV = "TANDEM_BIND_HOST"


class EnvError(ValueError):
    """A referenced ConfigMap, Secret, key or field is missing (Kubernetes: CreateContainerConfigError)."""


@dataclass(frozen=True)
class PodFacts:
    """The values ``fieldRef`` can name, plus what the kubelet knows about the pod's placement."""

    name: str
    namespace: str
    uid: str
    service_account: str
    node_name: str
    pod_ip: str
    host_ip: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


@dataclass(frozen=True)
class ServiceLink:
    """What a Service contributes to Docker-link style variables (``<NAME>_SERVICE_HOST`` ...)."""

    name: str
    cluster_ip: str
    ports: tuple[tuple[str | None, int, str], ...]  # (name, port, protocol)


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is a literal ``$``, unknown references stay as written."""
    out: list[str] = []
    cursor = 0
    checkpoint = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2 : close]
                    out.append(variables.get(name, f"$({name})"))
                    advance = close - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def field_value(path: str, pod: PodFacts) -> str:
    """The value of a downward-API ``fieldPath`` for ``pod``."""
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.serviceAccountName": pod.service_account,
        "spec.nodeName": pod.node_name,
        "status.podIP": pod.pod_ip,
        "status.podIPs": pod.pod_ip,
        "status.hostIP": pod.host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        source = pod.labels if match.group(1) == "labels" else pod.annotations
        return source.get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        source = pod.labels if path == "metadata.labels" else pod.annotations
        return "\n".join(f'{key}="{value}"' for key, value in sorted(source.items()))
    raise EnvError(f"unsupported fieldPath {path!r}")


def _env_name(service: str) -> str:
    return service.upper().replace("-", "_")


def service_link_env(services: Iterable[ServiceLink]) -> dict[str, str]:
    """Docker-link variables for Services with a ClusterIP (as kubelet's ``enableServiceLinks``)."""
    env: dict[str, str] = {}
    for service in services:
        if not service.ports:
            continue
        prefix = _env_name(service.name)
        env[f"{prefix}_SERVICE_HOST"] = service.cluster_ip
        _, first_port, first_protocol = service.ports[0]
        env[f"{prefix}_SERVICE_PORT"] = str(first_port)
        env[f"{prefix}_PORT"] = f"{first_protocol.lower()}://{service.cluster_ip}:{first_port}"
        for port_name, port, protocol in service.ports:
            if port_name:
                env[f"{prefix}_SERVICE_PORT_{_env_name(port_name)}"] = str(port)
            key = f"{prefix}_PORT_{port}_{protocol.upper()}"
            env[key] = f"{protocol.lower()}://{service.cluster_ip}:{port}"
            env[f"{key}_PROTO"] = protocol.lower()
            env[f"{key}_PORT"] = str(port)
            env[f"{key}_ADDR"] = service.cluster_ip
    return env


# A ConfigMap's or Secret's data as text, looked up by (namespace, name); None when absent.
DataLookup = Callable[[str], Mapping[str, str] | None]


def secret_text(data: Mapping[str, str] | None) -> dict[str, str] | None:
    """A Secret's base64 ``data`` decoded to text."""
    if data is None:
        return None
    return {key: base64.b64decode(value).decode(errors="replace") for key, value in data.items()}


def _source(kind: str, name: str, lookup: DataLookup, optional: bool) -> Mapping[str, str]:
    data = lookup(name)
    if data is None:
        if optional:
            return {}
        raise EnvError(f'{kind} "{name}" not found')
    return data


def _key_ref(kind: str, ref: Any, lookup: DataLookup) -> str | None:
    data = _source(kind, ref.name, lookup, bool(ref.optional))
    if ref.key in data:
        return data[ref.key]
    if ref.optional:
        return None
    raise EnvError(f'couldn\'t find key {ref.key} in {kind} "{ref.name}"')


def container_env(
    container: Any,
    pod: PodFacts,
    base: Mapping[str, str],
    config_maps: DataLookup,
    secrets: DataLookup,
) -> dict[str, str]:
    """The environment of ``container`` (a V1Container) in ``pod``."""
    env = dict(base)
    for source in container.env_from or []:
        prefix = source.prefix or ""
        if source.config_map_ref is not None:
            ref = source.config_map_ref
            data = _source("configmap", ref.name, config_maps, bool(ref.optional))
        elif source.secret_ref is not None:
            ref = source.secret_ref
            data = _source("secret", ref.name, secrets, bool(ref.optional))
        else:
            continue
        env.update({prefix + key: value for key, value in data.items()})
    for variable in container.env or []:
        value: str | None
        if variable.value_from is None:
            value = expand(variable.value or "", env)
        elif variable.value_from.field_ref is not None:
            value = field_value(variable.value_from.field_ref.field_path, pod)
        elif variable.value_from.config_map_key_ref is not None:
            value = _key_ref("configmap", variable.value_from.config_map_key_ref, config_maps)
        elif variable.value_from.secret_key_ref is not None:
            value = _key_ref("secret", variable.value_from.secret_key_ref, secrets)
        else:
            raise EnvError(
                f"env {variable.name}: only fieldRef, configMapKeyRef and secretKeyRef are supported"
            )
        if value is not None:
            env[variable.name] = value
    env[BIND_HOST_ENV] = pod.pod_ip
    return env


def container_argv(command: list[str] | None, args: list[str] | None, env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` references expanded from ``env``."""
    return [expand(part, env) for part in [*(command or []), *(args or [])]]

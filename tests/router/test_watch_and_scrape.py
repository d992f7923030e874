"""Watches that survive expired resource versions, and the engine load read from /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from tandem.router.discovery import watch
from tandem.router.monitor import EngineLoad, parse_engine_load


class ScriptedWatch:
    """Stands in for kubernetes_asyncio's Watch: each stream() plays the next script."""

    scripts: list[list[Any]] = []
    resource_versions: list[str | None] = []

    def __init__(self, return_type: str | None = None) -> None:
        del return_type

    async def __aenter__(self) -> ScriptedWatch:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def stream(self, func: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        ScriptedWatch.resource_versions.append(kwargs.get("resource_version"))
        script = ScriptedWatch.scripts.pop(0) if ScriptedWatch.scripts else [asyncio.Event()]
        return self._play(script)

    async def _play(self, script: list[Any]) -> AsyncIterator[dict[str, Any]]:
        for step in script:
            if isinstance(step, Exception):
                raise step
            if isinstance(step, asyncio.Event):
                await step.wait()  # a quiet watch: blocks until the test ends
            yield step


def event(kind: str, name: str, version: str) -> dict[str, Any]:
    return {"type": kind, "raw_object": {"metadata": {"name": name, "resourceVersion": version}}}


async def test_expired_watch_relists_and_keeps_state_in_between(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "Watch", ScriptedWatch)
    monkeypatch.setattr(watch, "BACKOFF_S", (0.0,))
    ScriptedWatch.resource_versions = []
    ScriptedWatch.scripts = [
        [event("ADDED", "b", "11"), ApiException(status=410, reason="Gone")],
        [ApiException(status=500, reason="boom")],
        [event("MODIFIED", "b", "31")],
    ]
    a, b = {"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}
    listings = iter([{"metadata": {"resourceVersion": "10"}, "items": [a]},
                     {"metadata": {"resourceVersion": "30"}, "items": [a, b]}])  # fmt: skip
    seen: list[tuple[str, Any]] = []

    async def list_call(**_: Any) -> dict[str, Any]:
        return next(listings)

    def replace(items: list[dict[str, Any]]) -> None:
        seen.append(("list", [i["metadata"]["name"] for i in items]))

    def apply(kind: str, obj: dict[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["name"]))

    task = asyncio.create_task(watch.follow("test", list_call, replace, apply))
    for _ in range(200):
        if len(seen) >= 4:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # 410: a fresh listing (nothing cleared before it); 500: the watch resumes from where it was.
    assert seen == [("list", ["a"]), ("ADDED", "b"), ("list", ["a", "b"]), ("MODIFIED", "b")]
    assert ScriptedWatch.resource_versions[:3] == ["10", "30", "30"]


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 12345.0
"""


def test_engine_load_sums_engines_and_ignores_other_series() -> None:
    assert parse_engine_load(VLLM_METRICS) == EngineLoad(running=5.0, waiting=7.0, kv_usage=0.25)


def test_missing_gauges_read_as_idle() -> None:
    assert parse_engine_load("# nothing here\n") == EngineLoad()


def test_malformed_exposition_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_engine_load("vllm:num_requests_running{engine= 3\n")

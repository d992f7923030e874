"""The demo from start to Ctrl-C: cluster, chart, pool, two streamed prompts, then wait."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import openai

from tandem.api import DisaggregationMode, InferencePool, InferencePoolStatus
from tandem.devcluster.demo import DemoError, chart, pool, traffic
from tandem.devcluster.demo.clusters import open_cluster

Say = Callable[[str], None]
# Length of the "long" prompt when the plan has no handoff threshold (every prompt goes direct).
_NO_THRESHOLD_TOKENS = 1024


@dataclass(frozen=True)
class DemoOptions:
    once: bool
    namespace: str = "tandem-demo"
    release: str = "tandem"
    ready_timeout_s: float = 300.0
    max_tokens: int = 64


def expected_routes(spec_pool: InferencePool, status: InferencePoolStatus) -> dict[str, str]:
    """The route each prompt must take: the long one is a handoff pair when the pool has a
    threshold, prefillers and disaggregation not turned off."""
    threshold = status.plan.prompt_tokens_threshold if status.plan is not None else None
    prefillers = status.prefill.ready_replicas if status.prefill is not None else 0
    splits = spec_pool.spec.disaggregation.mode != DisaggregationMode.NEVER
    return {"short": "direct", "long": "pd" if splits and threshold is not None and prefillers else "direct"}


def report_line(label: str, result: traffic.StreamResult) -> str:
    return (
        f"{label:>5} prompt: route {result.route:<6} TTFT {result.ttft_s * 1000:7.1f} ms   "
        f"{result.tokens_per_s:6.1f} tokens/s ({result.completion_tokens} tokens)"
    )


def send_prompts(
    base_url: str, spec_pool: InferencePool, status: InferencePoolStatus, options: DemoOptions, say: Say
) -> None:
    """Stream the short and the long prompt; fail when a route differs from the plan's promise."""
    spec = spec_pool.spec
    planned = status.plan.prompt_tokens_threshold if status.plan is not None else None
    threshold = planned if planned is not None else _NO_THRESHOLD_TOKENS
    try:
        prompts = {
            "short": traffic.SHORT_PROMPT,
            "long": traffic.long_prompt(threshold, spec.model.max_model_len, options.max_tokens),
        }
    except ValueError as exc:
        raise DemoError(str(exc)) from exc
    expected = expected_routes(spec_pool, status)
    wrong = []
    for label, prompt in prompts.items():
        try:
            result = traffic.stream_chat(base_url, spec.model.name, prompt, options.max_tokens)
        except (openai.APIError, ValueError) as exc:
            raise DemoError(f"the {label} prompt through {base_url} failed: {exc}") from exc
        say(report_line(label, result))
        if result.route != expected[label]:
            wrong.append(f"the {label} prompt took route {result.route!r}, expected {expected[label]!r}")
    say("plan of pool " + str(spec_pool.metadata["name"]) + ":")
    for line in pool.describe_plan(status.plan):
        say("  " + line)
    if wrong:
        raise DemoError("; ".join(wrong))


def run_demo(options: DemoOptions, say: Say) -> None:
    manifest = pool.load_manifest()
    spec_pool = InferencePool.model_validate(manifest)
    name = str(manifest["metadata"]["name"])
    with ExitStack() as cleanup:
        say("starting a cluster ...")
        cluster = open_cluster(os.environ)
        cleanup.callback(cluster.stop)
        say(f"installing the chart (release {options.release}, namespace {options.namespace}) ...")
        chart.install(cluster.kubeconfig, options.release, options.namespace, cluster.chart_values())
        api = cluster.api_client()
        cleanup.callback(api.close)
        say(f"applying {pool.EXAMPLE_POOL.name} and waiting for pool {name} to be Ready ...")
        pool.apply(api, options.namespace, manifest)
        status = pool.wait_ready(
            api, options.namespace, name, options.ready_timeout_s, lambda line: say("  " + line)
        )
        base_url = cluster.service_url(
            options.namespace, f"{name}-router", spec_pool.spec.router.service.port
        )
        say(f"pool {name} is Ready; router at {base_url}/v1")
        send_prompts(base_url + "/v1", spec_pool, status, options, say)
        if not options.once:
            say(
                f"running: try OPENAI_BASE_URL={base_url}/v1 with any OpenAI client; "
                "Ctrl-C stops and cleans up"
            )
            while True:
                time.sleep(3600)
        say("cleaning up ...")


def _terminate(signum: int, _: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so every process the demo started is stopped.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(options: DemoOptions, say: Say) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run_demo(options, say)
    except KeyboardInterrupt:
        say("stopped; everything the demo started is cleaned up")
        return 0
    except DemoError as exc:
        say(f"demo failed: {exc}")
        return 1
    return 0

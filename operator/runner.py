"""Run the operator: kopf's watches, the controller's workers, liveness and ``/metrics``.

``run_operator`` is the whole operator as one coroutine; the CLI runs it with ``asyncio.run`` and
tests run it in a thread with a stop flag.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from concurrent.futures import Future
from typing import Any

import kopf
from kopf._core.engines.peering import Identity

from tandem.api.tracing import OPERATOR_SERVICE, tracer_provider
from tandem.operator.controller import Controller
from tandem.operator.decide import Planner
from tandem.operator.handlers import build_kopf
from tandem.operator.kube import KubeClient
from tandem.operator.metrics import serve_metrics
from tandem.operator.settings import OperatorSettings

SHUTDOWN_GRACE_SECONDS = 0.25
Flag = asyncio.Event | threading.Event | Future[Any] | None


async def run_operator(
    settings: OperatorSettings,
    planner: Planner,
    *,
    stop_flag: Flag = None,
    ready_flag: Flag = None,
) -> None:
    """Run until ``stop_flag`` is set (or a signal arrives, in the main thread)."""
    api = await KubeClient.connect(settings.kubeconfig)
    endpoint = settings.otlp_traces_endpoint
    spans = None if endpoint is None else tracer_provider(OPERATOR_SERVICE, endpoint, os.environ)
    controller = Controller(settings, planner, api, spans=spans)
    metrics = None
    try:
        await controller.start()
        if settings.metrics_port:
            metrics = await serve_metrics(controller.metrics, settings.bind_host, settings.metrics_port)
        liveness = (
            f"http://{settings.bind_host}:{settings.liveness_port}/healthz"
            if settings.liveness_port
            else None
        )
        running = build_kopf(controller.cache, settings.kubeconfig, controller.observe_crd)
        await kopf.operator(
            registry=running.registry,
            settings=running.settings,
            insights=running.insights,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=True,
            # kopf would derive it from getpass.getuser(), which fails for a uid without a passwd
            # entry (the image runs as 65532).
            identity=Identity(f"tandem-operator@{socket.gethostname()}"),
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if metrics is not None:
            await metrics.cleanup()
        await controller.stop()
        await api.close()
        if spans is not None:
            spans.shutdown()  # flushes the spans still batched
        # aiohttp's advice for a graceful shutdown: TLS connections need a few loop turns to
        # close after their session is, or they are reported unclosed when the loop ends.
        await asyncio.sleep(SHUTDOWN_GRACE_SECONDS)

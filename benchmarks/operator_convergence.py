"""How fast does the operator turn InferencePools into their children, and what does it cost?

Runs a real control plane (etcd, kube-apiserver, kube-controller-manager from $KUBEBUILDER_ASSETS;
no kubelet, so pods stay Pending: the engines and routers need not run) and the operator as its
own process (`tandem operator`), then measures:

1. apply-to-children latency: one pool created at a time; time until every child exists and the
   status is written (observedGeneration current), median and max over --single pools;
2. convergence of --pools pools created at once: time until all of them have every child and a
   written status, as pools/s;
3. the baseline: the same children server-side-applied directly by this script (no operator,
   no watches, no status), in the operator's waves (``plan_sync``: what others refer to, then the
   RoleBindings, then the workloads, each wave at once), as many pools at a time as the operator
   has workers; the ratio operator / baseline is the operator's overhead on top of the API
   server's own cost;
4. the operator's resident memory (VmRSS) idle and after the pools converged, the CPU time it
   spent converging them, and the API writes it made (its /metrics).

Pools are the Llama-3.1-8B example (engine vllm), each under its own name.

    python benchmarks/operator_convergence.py [--pools 200] [--single 5] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import yaml

from tandem.api import GROUP, PLURAL, VERSION
from tandem.api.crd import custom_resource_definition
from tandem.devcluster.assets import find_assets
from tandem.devcluster.controlplane import control_plane
from tandem.devcluster.network import claim_slot
from tandem.devcluster.processes import free_port
from tandem.operator.capabilities import capabilities_from
from tandem.operator.decide import decide
from tandem.operator.drift import stamp
from tandem.operator.kinds import Kind, kind_of
from tandem.operator.kube import KubeClient, NotFoundError
from tandem.operator.naming import MANAGED_BY, MANAGED_BY_LABEL, POOL_LABEL
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images
from tandem.operator.sync_plan import plan_sync

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-h100.yaml"
POOLS_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}"
# Polls of the API while waiting: finer for one pool (latency), coarser for many (less load).
SINGLE_POLL_SECONDS = 0.02
MANY_POLL_SECONDS = 0.25


def pool_body(name: str, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    return body


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def operator_writes(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tandem_operator_api_writes_total{")
        )
    )


async def children_per_pool(api: KubeClient, namespace: str, kinds: Iterable[Kind]) -> Counter[str]:
    """How many children each pool has (by its pool label), over every kind the operator renders."""
    counts: Counter[str] = Counter()
    query = {"labelSelector": f"{MANAGED_BY_LABEL}={MANAGED_BY}"}
    for kind in kinds:
        listing = await api.request("GET", kind.path(namespace), query=query)
        counts.update(item["metadata"]["labels"][POOL_LABEL] for item in listing["items"])
    return counts


async def statused(api: KubeClient, namespace: str) -> set[str]:
    """Pools whose status the operator wrote for their current generation."""
    listing = await api.request("GET", POOLS_PATH.format(ns=namespace))
    return {
        item["metadata"]["name"]
        for item in listing["items"]
        if (item.get("status") or {}).get("observedGeneration") == item["metadata"]["generation"]
    }


async def wait_converged(
    api: KubeClient, namespace: str, names: set[str], expected: int, kinds: list[Kind], poll: float
) -> float:
    started = time.perf_counter()
    while True:
        counts = await children_per_pool(api, namespace, kinds)
        done = {name for name in names if counts[name] >= expected} & await statused(api, namespace)
        if done == names:
            return time.perf_counter() - started
        await asyncio.sleep(poll)


async def create_namespace(api: KubeClient, name: str) -> None:
    await api.request(
        "POST",
        "/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )


@contextlib.asynccontextmanager
async def operator_process(kubeconfig: Path, namespace: str, workers: int) -> AsyncIterator[tuple[int, int]]:
    """`tandem operator` for one namespace; yields (pid, metrics port)."""
    metrics_port = free_port()
    argv = [
        *(sys.executable, "-m", "tandem.cli", "operator", "--kubeconfig", str(kubeconfig)),
        *("--namespace", namespace, "--bind-host", "127.0.0.1", "--liveness-port", "0"),
        *("--metrics-port", str(metrics_port), "--workers", str(workers)),
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                operator_writes(metrics_port)
                break
            await asyncio.sleep(0.1)
        yield process.pid, metrics_port
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def baseline(api: KubeClient, namespace: str, pools: int, connections: int) -> float:
    """Seconds to create the same children directly: pool objects, then SSA of each child."""
    caps = capabilities_from(await api.served_versions("policy"))
    planner = catalog_planner()
    semaphore = asyncio.Semaphore(connections)

    async def one(index: int) -> None:
        async with semaphore:
            created = await api.request(
                "POST", POOLS_PATH.format(ns=namespace), body=pool_body(f"base-{index}", namespace)
            )
            decision = decide(created, caps, Images(), planner)
            assert decision.objects is not None
            stamped = [stamp(o) for o in decision.objects]
            for wave in plan_sync({}, stamped, applied=set(), owner=decision.pool.uid).waves:
                await asyncio.gather(*(api.apply(item.manifest) for item in wave))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(pools)))
    return time.perf_counter() - started


async def measure(args: argparse.Namespace) -> None:
    assets = find_assets()
    slot, lock = claim_slot()
    try:
        with tempfile.TemporaryDirectory(prefix="tandem-bench-") as work:
            async with control_plane(assets, Path(work), slot) as access:
                api = await KubeClient.connect(access.kubeconfig)
                try:
                    await run(api, access.kubeconfig, args)
                finally:
                    await api.close()
    finally:
        os.close(lock)


async def run(api: KubeClient, kubeconfig: Path, args: argparse.Namespace) -> None:
    await api.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=custom_resource_definition()
    )
    for _ in range(100):  # the CRD's REST path appears once it is Established
        with contextlib.suppress(NotFoundError):
            await api.request("GET", f"/apis/{GROUP}/{VERSION}")
            break
        await asyncio.sleep(0.1)
    caps = capabilities_from(await api.served_versions("policy"))
    probe = decide(
        {**pool_body("probe", "x"), "metadata": {"name": "probe", "namespace": "x", "uid": "u"}},
        caps,
        Images(),
        catalog_planner(),
    )
    assert probe.objects is not None
    expected = len(probe.objects)
    kinds = sorted({kind_of(o) for o in probe.objects}, key=lambda k: (k.api_version, k.plural))
    for namespace in ("single", "many", "baseline"):
        await create_namespace(api, namespace)

    print(f"pools: the 8B example (engine vllm), {expected} children each; operator workers: {args.workers}")
    async with operator_process(kubeconfig, "single", args.workers) as (pid, metrics_port):
        latencies = []
        for index in range(args.single):
            name = f"single-{index}"
            await api.request("POST", POOLS_PATH.format(ns="single"), body=pool_body(name, "single"))
            latencies.append(
                await wait_converged(api, "single", {name}, expected, kinds, SINGLE_POLL_SECONDS)
            )
        print(f"apply -> children created + status: median {statistics.median(latencies) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms over {args.single} pools")  # fmt: skip
    async with operator_process(kubeconfig, "many", args.workers) as (pid, metrics_port):
        await asyncio.sleep(1)
        idle_rss, idle_cpu = rss_mib(pid), cpu_seconds(pid)
        names = {f"pool-{index}" for index in range(args.pools)}
        started = time.perf_counter()
        await asyncio.gather(
            *(api.request("POST", POOLS_PATH.format(ns="many"), body=pool_body(n, "many")) for n in names)
        )
        created = time.perf_counter() - started
        converged = created + await wait_converged(api, "many", names, expected, kinds, MANY_POLL_SECONDS)
        writes = operator_writes(metrics_port)
        print(f"{args.pools} pools created in {created:.1f} s; all converged after {converged:.1f} s "
              f"({args.pools / converged:.1f} pools/s); operator API writes: {writes}")  # fmt: skip
        print(
            f"operator RSS: {idle_rss:.0f} MiB idle, {rss_mib(pid):.0f} MiB with {args.pools} pools; "
            f"CPU while converging: {cpu_seconds(pid) - idle_cpu:.1f} s"
        )
    direct = await baseline(api, "baseline", args.pools, args.workers)
    print(
        f"baseline (this script applies the same children itself, {args.workers} at a time): {direct:.1f} s"
    )
    print(f"ratio operator / baseline: {converged / direct:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pools", type=int, default=200)
    parser.add_argument("--single", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()

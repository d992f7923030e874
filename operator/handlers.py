"""kopf's part: watch pools and their children, and hand every event to the object cache; and
watch CRDs, whose events may change what the cluster serves.

kopf looks for the kinds it watches once, at start; after that the operator tells it when a CRD
changed, once the operator has seen the change served (``Reconciler.crd_changed``). kopf's own
rescan, at the CRD's event, comes too early twice over: discovery lists a version some time after
its CRD is Established, and kopf never looks again, so a GIE or LeaderWorkerSet CRD installed while
the operator runs went unwatched (its children's status never reached the pools); and a watch that
starts before the API server routes the kind gets "404 page not found", which kopf makes fatal to
the whole operator (a failed watcher fails its orchestrator: kopf's ``aiotasks.reraise``).

Handlers stay thin: they record the object, and the cache queues its pool; the controller's work
queue does the reconcile. Only event-watching handlers are registered, so kopf keeps no state on
the objects (no finalizers, no last-handled annotations, no ``status.<handler>`` results).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import kubernetes

# kopf's rescan of one API group, and the record of what it watches that the rescan revises: not
# exported by kopf (1.45), and what its own CRD observer calls.
from kopf._cogs.structs.references import Insights
from kopf._core.reactor.observation import process_discovered_resource_event

from tandem.api import GROUP, PLURAL, VERSION
from tandem.operator.capabilities import crd_deleting
from tandem.operator.kinds import CHILD_KINDS
from tandem.operator.kube import Body
from tandem.operator.naming import MANAGED_BY, MANAGED_BY_LABEL
from tandem.operator.object_cache import ObjectCache

# (group, version, plural); version None where the operator renders several (kopf then watches the
# cluster's preferred one, which is the one discovery picks for rendering).
ChildWatch = tuple[str, str | None, str]


def child_watches() -> list[ChildWatch]:
    versions: dict[tuple[str, str], set[str]] = {}
    for kind in CHILD_KINDS:
        versions.setdefault((kind.group, kind.plural), set()).add(kind.version)
    return [
        (group, next(iter(found)) if len(found) == 1 else None, plural)
        for (group, plural), found in versions.items()
    ]


class _NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: event handlers compare nothing, and kopf's default deep-copies every object
    on every event to build one (most of kopf's CPU time with many pools)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = _NoDiffBase()
    # One active replica, no KopfPeering CRD: see docs/operator.md.
    settings.peering.standalone = True
    # The kinds served are scanned at start, then when the operator says: see the module's docstring.
    settings.scanning.disabled = True
    # The controller posts its own Events; kopf's would repeat handler logs.
    settings.posting.enabled = False
    for group, version, plural in child_watches():
        # kopf's selector shorthand: (group, plural) means the preferred version; ("v1", plural) core.
        key = (group or "v1", plural) if version is None or not group else (group, version, plural)
        # Filter on the server: only the operator's children reach the operator.
        settings.watching.label_selectors[key] = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    return settings


def connection_info(kubeconfig: Path, settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """kopf's credentials from one kubeconfig file (kopf's own login reads only $KUBECONFIG)."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)  # type: ignore[no-untyped-call]
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    scheme, _, token = header.rpartition(" ") if header else ("", "", "")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        trust_env=settings.networking.trust_env,
    )


@dataclass
class Kopf:
    """What ``kopf.operator`` runs with."""

    registry: kopf.OperatorRegistry
    settings: kopf.OperatorSettings = field(default_factory=kopf_settings)
    insights: Insights = field(default_factory=Insights)

    async def stop_watching(self, crd: Body) -> None:
        """kopf stops watching the kind of ``crd``, which is being deleted, at once: once its
        objects are gone the API server closes the watch, and kopf's list to restart it would
        answer 404 (fatal to the operator) while discovery still lists the kind."""
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        async with self.insights.revised:
            for resources in (self.insights.watched_resources, self.insights.indexed_resources):
                resources.difference_update({r for r in resources if (r.group, r.plural) == (group, plural)})
            self.insights.revised.notify_all()

    async def rescan(self, event: kopf.RawEvent) -> None:
        """kopf looks again at the kinds of the group of the CRD in ``event``, and starts or stops
        watching them."""
        await process_discovered_resource_event(
            raw_event=event, settings=self.settings, registry=self.registry, insights=self.insights
        )


def build_kopf(
    cache: ObjectCache, kubeconfig: Path | None, observe_crd: Callable[[str | None, Body], Awaitable[None]]
) -> Kopf:
    """Pools and children go to the cache; CRD events to ``observe_crd`` (they may change what the
    cluster serves: ``Controller.observe_crd``), then to kopf's rescan."""
    running = Kopf(kopf.OperatorRegistry())
    registry = running.registry

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig is not None:
            return connection_info(kubeconfig, settings)
        return kopf.login_via_client(settings=settings, **kwargs)

    # Coroutines, so kopf runs them on the event loop: it runs a plain function in its thread pool
    # (kopf/_core/actions/invocation.py), where the cache and the work queue (an asyncio.Queue, not
    # thread-safe) raced the reconcile workers: a pool's trigger that came as its reconcile ended
    # could be lost, and the pool not reconciled again (a spec change never applied).
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def pool_event(event: kopf.RawEvent, **_: Any) -> None:
        cache.observe_pool(event.get("type"), dict(event["object"]))

    async def child_event(event: kopf.RawEvent, **_: Any) -> None:
        cache.observe_child(event.get("type"), dict(event["object"]))

    for group, version, plural in child_watches():
        kopf.on.event(group=group, version=version, plural=plural, id=f"child-{plural}", registry=registry)(
            child_event
        )

    @kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="crds", registry=registry)
    async def crd_event(event: kopf.RawEvent, **_: Any) -> None:
        crd: Body = dict(event["object"])
        deleting = crd_deleting(event.get("type"), crd)
        if deleting:
            spec = crd.get("spec") or {}
            await running.stop_watching(crd)
            cache.forget_kind(str(spec.get("group")), str((spec.get("names") or {}).get("kind")))
        await observe_crd(event.get("type"), crd)
        if not deleting:  # discovery may list a deleted kind a while yet: kopf would watch it again
            await running.rescan(event)

    return running

"""Admission: bounded concurrency, queue order by policy (each policy of the registry, the
adaptive one's mode changes), 429 when the queue is full."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_text import metric_sum

from tandem.api.spec import AdmissionPolicy
from tandem.api.timing import EngineTiming
from tandem.router.admission import ADMISSION, AdmissionContext, AdmissionQueue, GpuTime, Ticket
from tandem.router.admission.adaptive import Adaptive, Mode, next_mode
from tandem.router.admission.cost_optimized import AGING
from tandem.router.endpoints import EndpointRegistry
from tandem.router.errors import QueueFullError
from tandem.router.metrics import RouterMetrics
from tandem.router.pool import PoolConfig
from tandem.router.settings import StaticPoolSettings
from tandem.router.state import RouterState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def queue_of(
    policy: AdmissionPolicy,
    *,
    max_queue: int = 10,
    capacity: object = lambda: 1,
    retry_after_s: int = 1,
    context: AdmissionContext | None = None,
) -> AdmissionQueue:
    context = context or AdmissionContext("p", ttft_s=1.0)
    return AdmissionQueue(
        context.pool,
        ADMISSION[policy].build(context),
        max_queue,
        capacity,  # type: ignore[arg-type]
        retry_after_s=retry_after_s,
        clock=context.clock,
    )


def test_every_policy_of_the_api_is_registered() -> None:
    assert set(ADMISSION) == set(AdmissionPolicy)


async def _admitted_order(policy: AdmissionPolicy, tickets: list[Ticket]) -> list[int]:
    queue = queue_of(policy)
    await queue.acquire(Ticket())  # holds the only slot
    order: list[int] = []

    async def wait(index: int, ticket: Ticket) -> None:
        await queue.acquire(ticket)
        order.append(index)
        queue.release()

    waiters = [asyncio.create_task(wait(i, t)) for i, t in enumerate(tickets)]
    await asyncio.sleep(0)
    assert queue.depth == len(tickets)
    queue.release()
    await asyncio.gather(*waiters)
    return order


@pytest.mark.parametrize(
    ("policy", "tickets", "expected"),
    [
        (AdmissionPolicy.FIFO, [Ticket(priority=5), Ticket(priority=-1), Ticket(priority=0)], [0, 1, 2]),
        (AdmissionPolicy.PRIORITY, [Ticket(priority=5), Ticket(priority=-1), Ticket(priority=0)], [1, 2, 0]),
        (AdmissionPolicy.PRIORITY, [Ticket(priority=1), Ticket(priority=1), Ticket(priority=0)], [2, 0, 1]),
        (AdmissionPolicy.SLO, [Ticket(deadline=9.0), Ticket(deadline=3.0), Ticket(deadline=5.0)], [1, 2, 0]),
        # The least GPU time first...
        (
            AdmissionPolicy.COST_OPTIMIZED,
            [Ticket(arrival=0.0, gpu_s=2.0), Ticket(arrival=0.1, gpu_s=0.1), Ticket(arrival=0.2, gpu_s=0.5)],
            [1, 2, 0],
        ),
        # ... aged: a long request that waited AGING x the difference goes before a short newcomer.
        (
            AdmissionPolicy.COST_OPTIMIZED,
            [Ticket(arrival=0.0, gpu_s=1.0), Ticket(arrival=AGING * 0.9 + 0.01, gpu_s=0.1)],
            [0, 1],
        ),
        (
            AdmissionPolicy.COST_OPTIMIZED,
            [Ticket(arrival=0.0, gpu_s=1.0), Ticket(arrival=AGING * 0.9 - 0.01, gpu_s=0.1)],
            [1, 0],
        ),
        # Adaptive starts in FIFO.
        (AdmissionPolicy.ADAPTIVE, [Ticket(gpu_s=2.0), Ticket(gpu_s=0.1), Ticket(gpu_s=0.5)], [0, 1, 2]),
    ],
)
async def test_waiters_are_admitted_in_policy_order(
    policy: AdmissionPolicy, tickets: list[Ticket], expected: list[int]
) -> None:
    assert await _admitted_order(policy, tickets) == expected


async def test_full_queue_rejects_with_retry_after() -> None:
    queue = queue_of(
        AdmissionPolicy.FIFO, max_queue=1, retry_after_s=3, context=AdmissionContext("pool-a", 1.0)
    )
    await queue.acquire(Ticket())
    waiting = asyncio.create_task(queue.acquire(Ticket()))
    await asyncio.sleep(0)
    with pytest.raises(QueueFullError) as caught:
        await queue.acquire(Ticket())
    assert caught.value.status == 429
    assert caught.value.headers() == {"Retry-After": "3"}
    waiting.cancel()


async def test_cancelled_waiter_leaves_the_queue_and_frees_nothing() -> None:
    queue = queue_of(AdmissionPolicy.FIFO, max_queue=5)
    await queue.acquire(Ticket())
    gone = asyncio.create_task(queue.acquire(Ticket()))
    stays = asyncio.create_task(queue.acquire(Ticket()))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert queue.depth == 1
    queue.release()
    await asyncio.wait_for(stays, 1)
    assert queue.active == 1 and queue.depth == 0


async def test_growing_capacity_admits_waiters() -> None:
    capacity = [1]
    queue = queue_of(AdmissionPolicy.FIFO, max_queue=5, capacity=lambda: capacity[0])
    await queue.acquire(Ticket())
    waiters = [asyncio.create_task(queue.acquire(Ticket())) for _ in range(2)]
    await asyncio.sleep(0)
    capacity[0] = 3  # discovery found more decoders
    queue.wake()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert queue.active == 3


async def test_zero_queue_means_reject_at_capacity() -> None:
    queue = queue_of(AdmissionPolicy.FIFO, max_queue=0, capacity=lambda: 2)
    async with queue.slot(Ticket()), queue.slot(Ticket()):
        with pytest.raises(QueueFullError):
            await queue.acquire(Ticket())
    assert queue.active == 0


@pytest.mark.parametrize(
    ("mode", "delay", "late", "after"),
    [
        (Mode.FIFO, 0.1, 0.0, Mode.FIFO),  # light load
        (Mode.FIFO, 0.49, 0.0, Mode.FIFO),
        (Mode.FIFO, 0.5, 0.0, Mode.SLO),  # delay near the target: earliest deadline first
        (Mode.SLO, 0.3, 0.0, Mode.SLO),  # hysteresis: stays until well below
        (Mode.SLO, 0.2, 0.0, Mode.FIFO),
        (Mode.SLO, 0.9, 0.5, Mode.COST),  # attainment collapsing: shortest first
        (Mode.FIFO, 0.9, 0.6, Mode.COST),
        (Mode.COST, 0.9, 0.3, Mode.COST),  # hysteresis
        (Mode.COST, 0.9, 0.1, Mode.SLO),
        (Mode.COST, 0.1, 0.1, Mode.FIFO),
    ],
)
def test_adaptive_mode_follows_the_queueing_delay_and_the_late_share(
    mode: Mode, delay: float, late: float, after: Mode
) -> None:
    assert next_mode(mode, delay, late) is after


async def test_adaptive_admission_switches_under_overload_and_back_and_orders_by_its_mode() -> None:
    clock, modes = Clock(), []
    context = AdmissionContext("p", ttft_s=1.0, on_mode=lambda pool, mode: modes.append(mode), clock=clock)
    queue = queue_of(AdmissionPolicy.ADAPTIVE, max_queue=100, context=context)
    policy = queue.policy
    assert isinstance(policy, Adaptive)
    await queue.acquire(Ticket(arrival=0.0, deadline=1.0))
    # Overload: requests wait three TTFT targets for their slot, their deadlines long past.
    held: list[asyncio.Task[None]] = []
    for i in range(60):
        held.append(asyncio.create_task(queue.acquire(Ticket(arrival=clock.now, deadline=clock.now + 1.0))))
        await asyncio.sleep(0)
        clock.now += 3.0 if i else 0.0
        queue.release()
        await asyncio.sleep(0)
    await asyncio.gather(*held)
    assert modes[:3] == ["fifo", "slo", "cost-optimized"]
    assert policy.mode == "cost-optimized"
    # In cost-optimized mode the queue orders by GPU time: a short request overtakes a long one.
    order: list[str] = []

    async def wait(name: str, ticket: Ticket) -> None:
        await queue.acquire(ticket)
        order.append(name)

    long = asyncio.create_task(wait("long", Ticket(arrival=clock.now, deadline=clock.now + 1, gpu_s=5.0)))
    short = asyncio.create_task(wait("short", Ticket(arrival=clock.now, deadline=clock.now + 1, gpu_s=0.1)))
    await asyncio.sleep(0)
    queue.release()
    await asyncio.sleep(0)
    queue.release()
    await asyncio.gather(long, short)
    assert order == ["short", "long"]
    queue.release()  # the long one's slot
    # Light load again: requests admitted at once bring it back to FIFO, through EDF.
    for _ in range(60):
        await queue.acquire(Ticket(arrival=clock.now, deadline=clock.now + 1.0))
        queue.release()
    assert modes[-2:] == ["slo", "fifo"]
    assert policy.mode == "fifo"


@pytest.mark.parametrize(
    ("prompt", "requested", "max_model_len", "more_than", "less_than"),
    [
        (1000, 10, None, (100, 10, None), (1000, 100, None)),  # more prompt, more answer: more time
        (1000, None, 4096, (1000, 1000, None), (1000, 4000, None)),  # no limit: the rest of the context
    ],
)
def test_gpu_time_grows_with_the_prompt_and_the_answer(
    prompt: int,
    requested: int | None,
    max_model_len: int | None,
    more_than: tuple[int, int, int | None],
    less_than: tuple[int, int, int | None],
) -> None:
    gpu = GpuTime(EngineTiming(prefill_ms_per_token=0.1), EngineTiming(decode_ms_per_seq=1.0))
    assert gpu.seconds(*more_than) < gpu.seconds(prompt, requested, max_model_len) < gpu.seconds(*less_than)


def test_gpu_time_is_the_prefill_and_the_share_of_the_decode_steps() -> None:
    prefill = EngineTiming(prefill_base_ms=5, prefill_ms_per_token=0.1, prefill_ms_per_token_sq=0)
    decode = EngineTiming(
        decode_step_base_ms=8, decode_ms_per_seq=0.5, decode_ms_per_kilotoken=1, max_num_seqs=8
    )
    # 5 + 0.1 x 1000 ms of prefill; 100 steps of 8/8 + 0.5 + 1 x 1.05 (mean context 1050 tokens) ms
    assert GpuTime(prefill, decode).seconds(1000, 100, None) == pytest.approx((105 + 100 * 2.55) / 1000)


@pytest.mark.parametrize(
    ("policy", "warned"), [(AdmissionPolicy.COST_OPTIMIZED, True), (AdmissionPolicy.FIFO, False)]
)
def test_a_static_pool_says_which_timing_its_gpu_time_comes_from(
    policy: AdmissionPolicy, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    config = StaticPoolSettings(model="m", decode=("http://10.0.0.1:8000",), admission=policy).pool_config(8)
    assert config.gpu_time == GpuTime(EngineTiming(), EngineTiming())
    assert ("EngineTiming's defaults" in caplog.text) is warned


def test_a_pool_leaving_adaptive_admission_leaves_no_mode_on_the_gauge() -> None:
    metrics = RouterMetrics()
    state = RouterState(
        EndpointRegistry(), metrics, max_inflight_per_decode=1, retry_after_s=1, handoff_timeout_s=1
    )

    def modes() -> float:
        return metric_sum(metrics.exposition().decode(), "tandem_router_admission_mode")

    state.set_pool(PoolConfig(name="p", model="m", admission=AdmissionPolicy.ADAPTIVE))
    assert isinstance(state.pools["p"].admission.policy, Adaptive) and modes() == 1
    state.set_pool(PoolConfig(name="p", model="m", admission=AdmissionPolicy.FIFO))
    assert state.pools["p"].admission.policy.mode is None and modes() == 0

"""Faults on demand (``--faults`` and ``/admin/faults``): failures, delays, hangs, an unhealthy
engine, trickling streams, and streams cut mid-way by a dropped connection or a dying process
(the KV-handoff faults are tested with their handoffs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from fake_time import on_fake_time

from tandem.sim.faults import Faults
from tandem.sim.settings import SimSettings
from tandem.sim.testing import metric_value, sim_client, sim_process

BODY = {"prompt": "Hello", "max_tokens": 4}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with sim_client(SimSettings(speed=50)) as client:
        yield client


async def set_faults(client: httpx.AsyncClient, **faults: object) -> dict[str, object]:
    response = await client.post("/admin/faults", json=faults)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


async def test_an_error_rate_of_one_fails_every_request_with_the_chosen_status(
    client: httpx.AsyncClient,
) -> None:
    await set_faults(client, error_rate=1.0, error_status=503)
    response = await client.post("/v1/completions", json=BODY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == 503
    await set_faults(client)
    assert (await client.post("/v1/completions", json=BODY)).status_code == 200
    text = (await client.get("/metrics")).text
    assert metric_value(text, "tandem_sim_faults_injected_total", fault="error") == 1


async def test_fail_next_fails_that_many_requests_then_recovers(client: httpx.AsyncClient) -> None:
    await set_faults(client, fail_next=2)
    statuses = [
        (
            await client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            )
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    assert (await client.get("/admin/faults")).json()["fail_next"] == 0


async def test_an_unhealthy_engine_fails_health_and_requests(client: httpx.AsyncClient) -> None:
    await set_faults(client, unhealthy=True)
    assert (await client.get("/health")).status_code == 503
    assert (await client.post("/v1/completions", json=BODY)).status_code == 503
    await set_faults(client)
    assert (await client.get("/health")).status_code == 200


@on_fake_time  # the event loop's time is faked: durations are exact, whatever the load
async def test_a_delay_holds_each_request() -> None:
    async with sim_client(SimSettings(speed=50)) as client:
        await set_faults(client, delay_ms=200)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await client.post("/v1/completions", json=BODY)).status_code == 200
        assert 0.2 <= loop.time() - started < 0.21  # the delay, and the 4 tokens modelled at speed 50


@on_fake_time
async def test_a_hang_holds_requests_until_it_is_cleared() -> None:
    async with sim_client(SimSettings(speed=50)) as client:
        await set_faults(client, hang=True)
        pending = asyncio.create_task(client.post("/v1/completions", json=BODY))
        await asyncio.sleep(600)
        assert not pending.done()
        await set_faults(client)
        assert (await asyncio.wait_for(pending, 5)).status_code == 200


@on_fake_time
async def test_trickle_spaces_every_chunk_of_a_stream() -> None:
    async with sim_client(SimSettings(speed=50)) as client:
        await set_faults(client, trickle_ms=40)
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.post("/v1/completions", json={**BODY, "max_tokens": 6, "stream": True})
        chunks = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert chunks[-1] == "data: [DONE]" and len(chunks) >= 2  # text made meanwhile shares a chunk
        assert loop.time() - started >= 0.04 * len(chunks)  # each chunk waited its 40 ms
        text = (await client.get("/metrics")).text
        assert metric_value(text, "tandem_sim_faults_injected_total", fault="trickle") == 1


@pytest.mark.parametrize(
    "faults", [Faults(trickle_ms=1), Faults(close_after_chunks=0), Faults(exit_after_chunks=0)]
)
def test_the_stream_faults_shape_streams(faults: Faults) -> None:
    assert faults.shapes_streams  # a stream of these goes through the fault wrapper (sim/app.py)


def test_request_faults_leave_streams_alone() -> None:
    assert not Faults(error_rate=0.5, fail_next=1, delay_ms=10, unhealthy=True).shapes_streams


async def test_bad_fault_settings_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/admin/faults", json={"error_rate": 2})
    assert response.status_code == 400
    assert (await client.post("/admin/faults", json={"explode": True})).status_code == 400


async def test_the_admin_api_can_be_turned_off() -> None:
    async with sim_client(SimSettings(admin_api=False)) as client:
        assert (await client.post("/admin/faults", json={})).status_code == 404


@pytest.mark.slow
def test_streams_are_cut_mid_way_by_a_dropped_connection_or_a_dying_process() -> None:
    with sim_process(
        "--speed", "20", "--faults", json.dumps(Faults(close_after_chunks=3).model_dump())
    ) as sim:
        client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
        received = []
        with pytest.raises((openai.APIError, httpx.TransportError)):
            for chunk in client.completions.create(
                model="tandem/sim-model", prompt="Hi", max_tokens=20, stream=True
            ):
                received.append(chunk)
        assert len(received) == 3
        assert httpx.get(f"{sim.url}/health").status_code == 200  # the server lives on

        httpx.post(f"{sim.url}/admin/faults", json={"exit_after_chunks": 2}).raise_for_status()
        body = {**BODY, "max_tokens": 20, "stream": True}
        with (
            pytest.raises(httpx.TransportError),
            httpx.stream("POST", f"{sim.url}/v1/completions", json=body) as response,
        ):
            for _ in response.iter_lines():
                pass
        assert sim.process.wait(timeout=10) == 1

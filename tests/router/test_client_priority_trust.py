"""The admission headers (`x-tandem-priority`, `x-tandem-ttft-ms`) count only from clients the
pool trusts (`trustClientPriority`) or whose API key carries the `priority` grant, and only with
finite, bounded values. Before, `x-tandem-priority: -1000000` or `x-tandem-ttft-ms: -1e300` from
any client jumped the queue, and `nan` was accepted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_text import metric_sum
from router_support import MODEL, Addresses, Engine, engines_running, free_port, router_client

from tandem.api.spec import AdmissionPolicy
from tandem.router import client_hints
from tandem.router.auth import ApiKeys, Caller, load_api_keys
from tandem.router.errors import BadRequestError, UnauthorizedError
from tandem.router.settings import RouterSettings, StaticPoolSettings

BODY = {"model": MODEL, "prompt": "Say hello.", "max_tokens": 2}
KEYS = "# batch\nplain-key\n# the front end may jump the queue\nvip-key   priority\n"


# The key file


def test_a_file_of_bare_keys_reads_as_before(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated monthly\nfirst-key\n\n  second-key  \n")
    assert load_api_keys(keys) == ((b"first-key", Caller()), (b"second-key", Caller()))


def test_a_key_may_carry_the_priority_grant(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEYS + "plain-key priority\n")  # listed twice: the grants of both lines
    check = ApiKeys(load_api_keys(keys)).check
    assert check(b"Bearer vip-key") == Caller(may_set_priority=True)
    assert check(b"Bearer plain-key") == Caller(may_set_priority=True)
    with pytest.raises(UnauthorizedError):
        check(b"Bearer priority")  # a grant is not a key


def test_an_unknown_grant_fails_the_load_without_quoting_the_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("plain-key\nsecret-half other-half\n")
    with pytest.raises(ValueError, match="line 2: unknown grant") as error:
        load_api_keys(keys)
    assert "half" not in str(error.value)


# The values


@pytest.mark.parametrize(
    "value", [b"nan", b"inf", b"-1e300", b"1e3", b"1_000", b"0x10", b"", b"1000001", b"1.5"]
)
def test_a_priority_must_be_a_bounded_integer(value: bytes) -> None:
    with pytest.raises(BadRequestError, match="x-tandem-priority"):
        client_hints.priority(value, "x-tandem-priority")


@pytest.mark.parametrize(
    "value", [b"nan", b"inf", b"-1e300", b"1e300", b"-5", b"0", b"3600001", b"1_000", b""]
)
def test_a_ttft_target_must_be_finite_positive_and_bounded(value: bytes) -> None:
    with pytest.raises(BadRequestError, match="x-tandem-ttft-ms"):
        client_hints.ttft_ms(value, "x-tandem-ttft-ms")


def test_believed_values_within_bounds() -> None:
    assert [client_hints.priority(v, "p") for v in (None, b"-1000000", b" 7 ", b"+3")] == [
        0,
        -1_000_000,
        7,
        3,
    ]
    assert [client_hints.ttft_ms(v, "t") for v in (None, b"250", b"0.5", b"3600000")] == [
        None,
        250,
        0.5,
        3.6e6,
    ]


# Through the router: who is served first once a slot frees up


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with engines_running([(Addresses().take(), ([], {}))]) as engines:
        yield engines[0]


def settings_for(engine: Engine, keys: Path, admission: AdmissionPolicy, *, trusted: bool) -> RouterSettings:
    static = StaticPoolSettings(
        model=MODEL, decode=(engine.url,), admission=admission, trust_client_priority=trusted
    )
    return RouterSettings(
        host="127.0.0.1",
        port=free_port(),
        notify_port=free_port(),
        static=static,
        api_keys_file=keys,
        max_inflight_per_decode=1,  # one request runs; the others queue
        scrape_interval_s=0,
    )


async def queued(http: httpx.AsyncClient, depth: int) -> None:
    """Poll /metrics until `depth` requests wait: the router signals nothing a client could await."""
    async with asyncio.timeout(20):
        while True:
            if metric_sum((await http.get("/metrics")).text, "tandem_router_queue_depth") == depth:
                return
            await asyncio.sleep(0.01)


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("admission", "pool_trusts", "key", "header", "value", "first"),
    [
        # any client's header, before the fix: served first
        (AdmissionPolicy.PRIORITY, False, "plain-key", "x-tandem-priority", "-1000000", "waited"),
        (AdmissionPolicy.SLO, False, "plain-key", "x-tandem-ttft-ms", "-1e300", "waited"),
        # a key with the grant, or a pool that trusts its clients
        (AdmissionPolicy.PRIORITY, False, "vip-key", "x-tandem-priority", "-1000000", "jumped"),
        (AdmissionPolicy.SLO, True, "plain-key", "x-tandem-ttft-ms", "1", "jumped"),
    ],
)
async def test_only_trusted_clients_jump_the_queue(
    engine: Engine,
    tmp_path: Path,
    admission: AdmissionPolicy,
    pool_trusts: bool,
    key: str,
    header: str,
    value: str,
    first: str,
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEYS)
    done: list[str] = []

    async def ask(http: httpx.AsyncClient, name: str, headers: dict[str, str]) -> None:
        answer = await http.post("/v1/completions", json=BODY, headers=headers)
        assert answer.status_code == 200, answer.text
        done.append(name)

    async with router_client(settings_for(engine, keys, admission, trusted=pool_trusts)) as http:
        long = {**BODY, "max_tokens": 20000, "stream": True}
        async with http.stream("POST", "/v1/completions", json=long, headers=bearer("plain-key")) as held:
            lines = held.aiter_lines()  # kept: dropped, it would close the stream
            await anext(lines)  # running: it holds the only slot
            waited = asyncio.create_task(ask(http, "waited", bearer("plain-key")))
            await queued(http, 1)
            jumped = asyncio.create_task(ask(http, "jumped", bearer(key, **{header: value})))
            await queued(http, 2)
        # The stream is closed: its slot goes to the head of the queue, and the other waits for it.
        await asyncio.gather(waited, jumped)
    assert done[0] == first


@pytest.mark.slow
@pytest.mark.parametrize(
    ("header", "value"),
    [("x-tandem-ttft-ms", "nan"), ("x-tandem-ttft-ms", "-1e300"), ("x-tandem-priority", "-99999999")],
)
async def test_a_trusted_client_still_gets_400_for_a_value_out_of_bounds(
    engine: Engine, tmp_path: Path, header: str, value: str
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEYS)
    settings = settings_for(engine, keys, AdmissionPolicy.SLO, trusted=True)
    async with router_client(settings) as http:
        answer = await http.post("/v1/completions", json=BODY, headers=bearer("plain-key", **{header: value}))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_header" and header in error["message"]


@pytest.mark.slow
async def test_an_untrusted_clients_headers_are_ignored_not_refused(engine: Engine, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEYS)
    settings = settings_for(engine, keys, AdmissionPolicy.PRIORITY, trusted=False)
    async with router_client(settings) as http:
        headers = bearer("plain-key", **{"x-tandem-priority": "nan", "x-tandem-ttft-ms": "soon"})
        answer = await http.post("/v1/completions", json=BODY, headers=headers)
    assert answer.status_code == 200

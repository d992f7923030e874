"""Property: whatever a client sends, the router answers 2xx or 4xx with an OpenAI-style error
body -- never a 5xx, never a crash, never no answer (unless the client left first).

The router's real ASGI app runs in-process, its lifespan included, with a real simulator behind it
on a loopback socket, so every example goes the whole way: headers, body reading, parsing, keys,
admission hints, the route decision and the engine's own answer relayed back. Examples are drawn
from near-valid completion and chat requests with wrong, hostile or missing parts (the inputs that
reach deepest), arbitrary JSON, raw bytes, odd methods and paths, and bodies cut into several
ASGI messages or abandoned half way. Bounded (MAX_EXAMPLES, derandomized) so it is quick in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_support import MODEL, free_port

from tandem.api.spec import AdmissionPolicy, BalancePolicy
from tandem.router.app import RouterApp, create_app
from tandem.router.client_request import MAX_JSON_DEPTH
from tandem.router.settings import RouterSettings, StaticPoolSettings
from tandem.sim.app import create_app as create_sim
from tandem.sim.settings import SimSettings

MAX_EXAMPLES = 500
KEYS = "plain-key\nvip-key priority\n"

# What the app is driven with


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    parts: list[bytes]  # the body, one ASGI message each
    leaves: bool  # the client disconnects before the last part


@dataclass
class Answer:
    status: int | None  # None: no answer was started
    headers: dict[bytes, bytes]
    body: bytes
    complete: bool


async def drive(app: RouterApp, request: Request) -> Answer:
    """One request through the ASGI app, as uvicorn would hand it over."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": request.headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    parts = list(request.parts)
    answered = asyncio.Event()
    answer = Answer(None, {}, b"", complete=False)

    async def receive() -> dict[str, Any]:
        if parts and not (request.leaves and len(parts) == 1):
            body = parts.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(parts)}
        if not request.leaves:
            await answered.wait()  # uvicorn: nothing more until the response is done
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert answer.status is None, "a second response start"
            answer.status, answer.headers = message["status"], dict(message.get("headers", []))
        else:
            assert answer.status is not None and not answer.complete, message["type"]
            answer.body += message.get("body", b"")
            if not message.get("more_body", False):
                answer.complete = True
                answered.set()

    await asyncio.wait_for(app(scope, receive, send), 60)
    return answer


# The system under test: router app and simulator on one background loop


class Running:
    """An event loop in a thread running the simulator (on a socket) and the router app (driven
    in-process); the sync hypothesis test hands requests over to it."""

    def __init__(self, keys: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self.app = self.call(self._start(keys))

    def call(self, work: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout=120)

    async def _start(self, keys: Path) -> RouterApp:
        port = free_port()
        sim = SimSettings(host="127.0.0.1", port=port, max_model_len=256, speed=1000)
        engine = uvicorn.Server(uvicorn.Config(create_sim(sim), port=port, log_level="error", lifespan="on"))
        await self._stack.enter_async_context(_serving(engine))
        router = RouterSettings(
            host="127.0.0.1",
            port=free_port(),
            notify_port=free_port(),
            static=StaticPoolSettings(
                model=MODEL,
                decode=(f"http://127.0.0.1:{port}",),
                balance=BalancePolicy.PREFIX,
                admission=AdmissionPolicy.SLO,
            ),
            api_keys_file=keys,
            scrape_interval_s=0,
            max_body_bytes=64 * 1024,
        )
        app = create_app(router)
        await self._stack.enter_async_context(_lifespan(app))
        return app

    def close(self) -> None:
        self.call(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


@contextlib.asynccontextmanager
async def _serving(server: uvicorn.Server) -> AsyncIterator[None]:
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(60):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def _lifespan(app: RouterApp) -> AsyncIterator[None]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(KEYS)
    system = Running(keys)
    try:
        yield system
    finally:
        system.close()


# What clients send

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_text = st.text(max_size=80) | st.sampled_from(["Say hello.", "", "x" * 600, "\x00\ud7ff\U0001f600"])
_token_ids = st.lists(st.integers(min_value=-5, max_value=70_000) | st.booleans(), min_size=0, max_size=20)
_content = (
    _text
    | st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": _text | _json}),
        max_size=3,
    )
    | _json
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "nobody"]) | _json},
    optional={"content": _content, "name": _text},
)
_count = st.integers(min_value=1, max_value=8) | st.sampled_from([0, -1, 10**12, 2**70, 1.5, "4", True, None])
_fields = {  # what a client may put in, valid or not
    "model": st.sampled_from([MODEL, "other-model", "", 7, None, ["x"]]),
    "stream": st.booleans() | _json_scalars,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | _json_scalars}) | _json,
    "n": st.sampled_from([1, 2, 0, -3, "1", True]),
    "max_tokens": _count,
    "user": _text | _json,
    "temperature": st.floats() | _json_scalars,
    "stop": _text | st.lists(_text, max_size=3),
    "kv_transfer_params": _json,
    "logprobs": st.booleans() | _json_scalars,
    "seed": st.integers() | _json_scalars,
}
_completion_fields = {
    **_fields,
    "prompt": _text | _token_ids | st.lists(_text, max_size=3) | _json,
    "echo": st.booleans() | _json_scalars,
    "best_of": _count,
}
_chat_fields = {
    **_fields,
    "messages": st.lists(_message, max_size=4) | _json,
    "max_completion_tokens": _count,
    "tools": st.lists(_json, max_size=2),
    "response_format": _json,
    "chat_template_kwargs": _json,
}


def _near_valid(base: dict[str, object], fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A valid request with a few fields set to anything, or dropped: the inputs that go deepest."""
    names = sorted(fields)
    changes = st.dictionaries(st.sampled_from(names), st.none(), max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({name: fields[name] | st.just(_DROP) for name in chosen})
    )
    return changes.map(lambda changed: {k: v for k, v in {**base, **changed}.items() if v is not _DROP})


_DROP = object()
_completion = _near_valid({"model": MODEL, "prompt": "Say hello.", "max_tokens": 3}, _completion_fields)
_chat = _near_valid(
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}, _chat_fields
)
_deep = st.integers(min_value=MAX_JSON_DEPTH - 2, max_value=3000).map(
    lambda depth: b'{"prompt": "x", "pad": ' + b"[" * depth + b"]" * depth + b"}"
)


def _encode(value: object) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity included: JSON they are not


_other_bodies = st.one_of(
    _json.map(_encode),
    _deep,
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"null", b"[]", b'{"prompt": "x"', b"\xff\xfe{}", b'{"prompt": "a"}' * 2]),
)
_bodies = {  # mostly the route's own kind of request: those get furthest
    "/v1/completions": st.one_of(*[_completion.map(_encode)] * 3, _other_bodies),
    "/v1/chat/completions": st.one_of(*[_chat.map(_encode)] * 3, _other_bodies),
}
_header_value = st.binary(max_size=40).map(lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F))
_keys = st.sampled_from(
    [b"Bearer plain-key"] * 12 + [b"Bearer vip-key"] * 4 + [b"bearer vip-key", b"Bearer no", b"Basic x", None]
)
_authorization = st.one_of(*[_keys] * 7, _header_value.map(lambda value: b"Bearer " + value))
_hints = st.sampled_from(
    [b"0", b"-1000000", b"1000001", b"nan", b"-inf", b"1e300", b"-1e300", b"1.5", b"12", b"", b" 3 "]
)
_headers = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([b"x-tandem-priority", b"x-tandem-ttft-ms"]), _hints | _header_value),
        st.tuples(st.just(b"content-length"), st.sampled_from([b"0", b"5", b"-1", b"abc", b"99999999999"])),
        st.tuples(st.sampled_from([b"x-session-id", b"x-request-id", b"content-type"]), _header_value),
    ),
    max_size=5,
)
_routes = st.sampled_from(
    [("POST", "/v1/completions")] * 6
    + [("POST", "/v1/chat/completions")] * 6
    + [("GET", "/v1/models"), ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")]
    + [("GET", "/v1/completions"), ("PUT", "/v1/chat/completions"), ("POST", "/v2/x"), ("DELETE", "/")]
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method, path = draw(_routes)
    body = draw(_bodies.get(path, _other_bodies))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=2)))
    parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    key = draw(_authorization)
    headers = [(b"authorization", key)] if key is not None else []
    headers += draw(_headers)
    return Request(method, path, headers, parts, leaves=draw(st.sampled_from([False] * 9 + [True])))


def assert_openai_error(answer: Answer) -> None:
    assert answer.headers.get(b"content-type") == b"application/json", answer
    error = json.loads(answer.body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert {"param", "code"} <= error.keys()


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,  # a loaded 2-core machine; the app's own bound is drive()'s 60 s
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=requests())
def test_every_request_gets_a_2xx_or_an_openai_4xx(running: Running, request: Request) -> None:
    answer: Answer = running.call(drive(running.app, request))
    if request.leaves:
        assert answer.status is None or answer.status < 500
        return
    assert answer.status is not None and answer.complete, answer
    assert 200 <= answer.status < 500, (answer.status, answer.body[:500])
    if answer.status >= 400:
        assert_openai_error(answer)
    elif answer.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        assert answer.body.endswith(b"data: [DONE]\n\n"), answer.body[-300:]
        assert b'data: {"error"' not in answer.body, answer.body[-500:]

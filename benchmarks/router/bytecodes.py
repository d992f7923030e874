"""Python bytecodes the router executes per request: a figure that machine noise cannot move.

On a shared VM the router benchmark's req/s moves by a third between rounds (run.py pairs
rounds to cope); the bytecodes the router's thread runs to serve one request do not move at all.
They are not CPU time (system calls, C code and the interpreter's speed per opcode are left out),
but a change to the router's Python shows in them exactly, and per function.

    .venv/bin/python benchmarks/router/bytecodes.py                      # this tree
    .venv/bin/python benchmarks/router/bytecodes.py --compare 646c814    # and another revision
    .venv/bin/python benchmarks/router/bytecodes.py --top 25             # the costliest functions

Each tree is measured in a child process: Tandem's router in static mode (its own server, as
`tandem router` runs it, on uvloop) in the traced main thread; a canned engine (one completion; a
chat stream of five events, each its own write, as run.py's backend sends them) and a client
(one keep-alive connection, one request at a time) in untraced threads. After a warm-up, every
opcode of the main thread is counted (`sys.settrace` with `f_trace_opcodes`) and divided by the
requests served. It also counts the objects the requests left in reference cycles (the collector
off while they ran, then `gc.collect()`): the request path should leave none, as refcounting frees
it at once; a cycle per request is garbage for the cycle collector, whose passes over a large heap
show up as tail latency (a scope that held a bound method of its own cycle cost 60-80 ms p99).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from run import comparison_tree, free_port  # this folder's: the script runs from it

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODEL = "bench-model"
COMPLETION = json.dumps(
    {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "text": " Hello there", "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    },
    separators=(",", ":"),
).encode()
KINDS = {
    "completion": ("/v1/completions", {"model": MODEL, "prompt": "Say hello", "max_tokens": 16}),
    "stream": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "stream": True},
    ),
}


def _chat_event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    event["choices"] = [choice]
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = [
    _chat_event({"role": "assistant", "content": ""}),
    _chat_event({"content": " Hello"}),
    _chat_event({"content": " there"}),
    _chat_event({}, "length"),
    b"data: [DONE]\n\n",
]


# --- the child: one tree's router, traced ---------------------------------------------------------


def _engine(listener: socket.socket) -> None:
    """The canned engine, one thread per connection: a completion at once; a stream's events each
    in its own chunked write, a moment apart, so that the router reads them one by one."""

    def serve(conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lengths = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                length = lengths[0] if lengths else 0
                if head.startswith(b"GET "):  # the router's health probes and metric scrapes
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n")
                    continue
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                if b'"stream":true' not in body.replace(b" ", b""):
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(COMPLETION), COMPLETION)
                    )
                    continue
                conn.sendall(STREAM_HEAD)
                for event in EVENTS:
                    time.sleep(0.002)
                    conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                conn.sendall(b"0\r\n\r\n")

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _request(conn: socket.socket, path: str, body: bytes) -> None:
    conn.sendall(
        b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (path.encode(), len(body), body)
    )
    data = b""
    while True:
        data += conn.recv(65536)
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"the router answered {data[:300]!r}")
        lower = head.lower()
        if b"content-length:" in lower:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                return
        elif rest.endswith(b"0\r\n\r\n"):
            return


def child(kind: str, requests: int, warmup: int, top: int) -> None:
    import uvicorn

    from tandem.router.app import create_app
    from tandem.router.cli import register, settings_from_args

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_engine, args=(listener,), daemon=True).start()
    port = free_port()
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "router",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--notify-port", str(free_port()),
            "--static-decode", f"http://127.0.0.1:{listener.getsockname()[1]}",
            "--served-model", MODEL,
            "--log-level", "warning",
        ]
    )  # fmt: skip
    settings = settings_from_args(args, {})
    app = create_app(settings)
    try:
        from tandem.router.server import server_config
    except ImportError:  # before the router had its own server: uvicorn's, as `tandem router` ran it
        config: Any = uvicorn.Config(
            app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="on",
            access_log=False, proxy_headers=False, server_header=False, log_level="warning",
        )  # fmt: skip
    else:
        config = server_config(app, settings, log_level="warning")
    server = uvicorn.Server(config)

    counts: collections.Counter[CodeType] = collections.Counter()
    generated: dict[CodeType, str] = {}  # dataclasses' __init__s, by their class
    counting = threading.Event()
    done = threading.Event()
    garbage: list[int] = []

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode" and counting.is_set():
            counts[frame.f_code] += 1
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        code = frame.f_code
        if code.co_filename == "<string>" and code not in generated and "self" in frame.f_locals:
            generated[code] = f"{type(frame.f_locals['self']).__qualname__}.{code.co_name}"
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return local

    def client() -> None:
        path, payload = KINDS[kind]
        body = json.dumps(payload).encode()
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            for _ in range(warmup):
                _request(conn, path, body)
            time.sleep(0.2)
            gc.collect()
            gc.disable()  # what the requests leave for the cycle collector, counted below
            counting.set()
            for _ in range(requests):
                _request(conn, path, body)
            counting.clear()
            garbage.append(gc.collect())
            gc.enable()
        done.set()
        server.should_exit = True

    threading.Thread(target=client, daemon=True).start()
    sys.settrace(tracer)
    server.run()
    sys.settrace(None)
    if not done.is_set():
        raise SystemExit("the client did not finish")
    total = sum(counts.values())
    functions = [
        {"function": generated.get(code) or f"{_where(code)}:{code.co_name}", "bytecodes": n / requests}
        for code, n in counts.most_common(top)
    ]
    report = {"per_request": total / requests, "garbage_per_request": garbage[0] / requests}
    print(json.dumps({**report, "top": functions}))


def _where(code: CodeType) -> str:
    path = Path(code.co_filename)
    if path.is_relative_to(REPO):
        return str(path.relative_to(REPO))
    parts = path.parts
    for anchor in ("tandem", "site-packages", "lib"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return code.co_filename


# --- the parent: each tree in a child --------------------------------------------------------------


def measure(tree: Path | None, kind: str, requests: int, warmup: int, top: int) -> dict[str, Any]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind]
    command += ["--requests", str(requests), "--warmup", str(warmup), "--top", str(top)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{kind} on {tree or 'this tree'} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--compare", action="append", default=[], metavar="REV|DIR")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--top", type=int, default=0, help="also list the N costliest functions")
    parser.add_argument("--child", choices=sorted(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests, args.warmup, args.top)
        return
    work = Path(tempfile.gettempdir()) / "tandem-router-bench"
    trees: dict[str, Path | None] = {"tandem": None}
    trees.update({f"tandem@{Path(s).name or s}": comparison_tree(work, s) for s in args.compare})
    results = {name: {kind: measure(tree, kind, args.requests, args.warmup, args.top) for kind in KINDS}
               for name, tree in trees.items()}  # fmt: skip
    print(f"Python bytecodes per request ({args.requests} requests after {args.warmup}, one at a time)")
    print(f"{'tree':<22}{'completion':>12}{'stream':>10}   cyclic garbage per request")
    for name, figures in results.items():
        completion, stream = figures["completion"], figures["stream"]
        print(
            f"{name:<22}{completion['per_request']:>12.0f}{stream['per_request']:>10.0f}   "
            f"{completion['garbage_per_request']:.2f} and {stream['garbage_per_request']:.2f} objects"
        )
    for name in list(trees)[1:]:
        ratios = [results["tandem"][k]["per_request"] / results[name][k]["per_request"] for k in KINDS]
        print(f"tandem / {name}: completion {ratios[0]:.3f}, stream {ratios[1]:.3f}")
    if args.top:
        for name, figures in results.items():
            for kind in KINDS:
                print(f"\n{name}, {kind}: the {args.top} costliest functions, bytecodes per request")
                for row in figures[kind]["top"]:
                    print(f"  {row['bytecodes']:>8.1f}  {row['function']}")


if __name__ == "__main__":
    main()

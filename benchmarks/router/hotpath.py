"""Where the router's time goes: a summary of a py-spy raw profile (collapsed stacks).

    python benchmarks/router/hotpath.py PROFILE.txt [--top 15]

Each sample is charged to its innermost Python frame (native frames under it -- C extensions,
system calls -- count as that frame's own time), and that frame's package; samples with no Python
frame at all are the event loop's own native work (libuv polling, uvloop's C transports).
Inclusive shares list the router's own functions: the fraction of samples they were on the stack.
Samples that end in the C library are listed by its function: the system calls' share.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
_PACKAGES = {
    "router": "tandem router",
    "uvicorn": "uvicorn (HTTP server)",
    "aiohttp": "aiohttp (HTTP client)",
    "yarl": "yarl/multidict (URLs, headers)",
    "multidict": "yarl/multidict (URLs, headers)",
    "asyncio": "asyncio (Python parts)",
    "prometheus_client": "prometheus_client",
    "msgspec": "msgspec",
}


def parse(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def _split(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match["name"], match["file"]) if match else (frame, "")


def _package(file: str) -> str:
    top = file.split("/", 1)[0]
    return _PACKAGES.get(top, top if "/" in file else "other Python")


def summarise(stacks: Counter[tuple[str, ...]], top: int) -> str:
    total = sum(stacks.values())
    by_function: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    syscalls: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaf, library = _split(stack[-1])
        if library.startswith("libc.so"):
            syscalls[leaf] += count
        owner = None
        for frame in reversed(stack):
            name, file = _split(frame)
            if file.endswith(".py") or file.startswith("<frozen"):
                owner = (name, file)
                break
        if owner is None:
            by_package["event loop, native (libuv, uvloop transports)"] += count
        else:
            by_function[f"{owner[0]} ({owner[1]})"] += count
            by_package[_package(owner[1])] += count
        seen = {name for name, file in map(_split, stack) if file.startswith("router/")}
        for name in seen:
            inclusive[name] += count
    lines = [f"{total} samples (python frames with their native callees)", "", "by package (self):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_package.most_common()]
    lines += ["", f"top {top} functions (self):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    lines += ["", "in the C library (system calls, mostly), by function:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in syscalls.most_common(6)]
    lines += ["", f"top {top} router functions (inclusive):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarise(parse(args.profile), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests on an event loop whose time is faked (looptime's loop): sleeps and timeouts pass at once
and ``loop.time()`` moves exactly by them, however loaded the machine is. For code that keeps time
by its event loop, such as the simulator's engine.

The loop is made and closed here; looptime's pytest plugin is off (pyproject.toml), as it would make
loops for tests that never close them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import looptime

_P = ParamSpec("_P")


def on_fake_time(test: Callable[_P, Coroutine[Any, Any, None]]) -> Callable[_P, None]:
    """An async test run to its end on a fresh fake-time loop, whose time starts at 0."""

    @functools.wraps(test)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
        with asyncio.Runner(loop_factory=looptime.new_event_loop) as runner:
            runner.run(test(*args, **kwargs))

    return run

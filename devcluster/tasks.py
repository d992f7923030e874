"""Background asyncio tasks whose unexpected errors are logged rather than lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def log_failure(task: asyncio.Task[Any]) -> None:
    """Done-callback: a task that died of an unexpected error says so in the log."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def background(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Start ``work`` as a task that logs its failure."""
    task = asyncio.create_task(work, name=name)
    task.add_done_callback(log_failure)
    return task

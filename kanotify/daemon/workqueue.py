"""The listener's work queue: keyed, coalescing, run by one worker in arrival order.

Modelled on kube-proxy's ``BoundedFrequencyRunner``: whoever notices
something (the FIFO, a signal, a timer, the health checks) records it here and
returns at once; one worker drains the queue.  Each piece of work has a key:

* a new piece whose key is not queued goes to the end;
* one whose key is queued is merged with the queued one (``merge``), which
  keeps its place -- a backlog for one instance coalesces to its newest state
  without overtaking what was read before it;  ``merge`` may also answer
  "drop the new one" (one pending repair does for all);
* work that must never coalesce (a handed-over command, a note) gets a key of
  its own (:func:`unique`).

Nothing here knows the work's meaning, sockets or threads: :meth:`submit` and
:meth:`pop` are plain calls, and :meth:`serve` awaits an injected ``execute``
(the listener's runs the work in its one engine thread; a test's runs it
inline).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

W = TypeVar("W")

log = logging.getLogger("kanotify.listen")


def unique() -> Hashable:
    """A key that nothing else has: the work never coalesces."""
    return object()


class WorkQueue(Generic[W]):
    """Work by key, oldest first.

    ``merge(queued, new)`` says what one key's queued work becomes when ``new``
    arrives for it: the merged work (it keeps the queued one's place), or
    ``None`` to drop ``new``.
    """

    def __init__(self, merge: Callable[[W, W], W | None]) -> None:
        self._merge = merge
        self._items: dict[Hashable, W] = {}
        self._wake = asyncio.Event()  # bound to a loop only when awaited
        #: a piece of work is being executed (taken off the queue, not finished)
        self.running = False

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def submit(self, key: Hashable, work: W) -> None:
        """Queue ``work`` under ``key`` (merged into a queued one of the same key); in the loop's thread."""
        queued = self._items.get(key)
        if queued is not None:
            merged = self._merge(queued, work)
            if merged is None:
                return
            work = merged
        self._items[key] = work  # an existing key keeps its place
        self._wake.set()

    def pop(self) -> W | None:
        """The oldest work, taken off the queue (None: empty)."""
        if not self._items:
            return None
        return self._items.pop(next(iter(self._items)))

    def wake(self) -> None:
        """Let :meth:`serve` look again (a stop wants ``idle`` called once it is drained)."""
        self._wake.set()

    async def serve(
        self,
        execute: Callable[[W], Awaitable[None]],
        *,
        failed: Callable[[W], None],
        after_each: Callable[[], None],
        idle: Callable[[], None],
    ) -> None:
        """Run the queue's work one at a time, forever (cancel the task to end it).

        ``failed(work)`` after ``execute`` raised (logged; the queue goes on);
        ``after_each()`` after each piece; ``idle()`` whenever the queue is
        empty after a wake-up.
        """
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (work := self.pop()) is not None:
                self.running = True
                try:
                    await execute(work)
                except Exception:  # noqa: BLE001 - one bad run must not end the listener
                    log.exception("kanotify listen: a run failed unexpectedly")
                    failed(work)
                finally:
                    self.running = False
                after_each()
            idle()


__all__ = ["WorkQueue", "unique"]

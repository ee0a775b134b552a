"""The listener's ``/metrics`` server kept up: started, moved on a reload, bound again after a failure.

A port the listener cannot bind never stops it -- the listener is the failover
path: it runs without metrics, says so once (``on_failure``: stderr, syslog,
the journal) and tries again every :data:`METRICS_RETRY` s.  The server itself
(:mod:`kanotify.metrics.server`, prometheus_client) is imported only by a
listener that serves metrics.  Everything here runs in the loop's thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

from .worker import say

if TYPE_CHECKING:
    from ..config.values import ListenAddress
    from ..metrics.facts import Facts
    from ..metrics.server import MetricsServer

#: seconds between tries to bind settings.metrics after it failed (the port may be held a while longer)
METRICS_RETRY = 10.0


class MetricsKeeper:
    """Serves ``facts()`` (called in the server's thread) at the address :meth:`serve` is given."""

    def __init__(self, loop: asyncio.AbstractEventLoop, facts: Callable[[], Facts],
                 on_failure: Callable[[str], None]) -> None:
        self.loop = loop
        self.facts = facts
        self.on_failure = on_failure
        self.server: MetricsServer | None = None
        self._retry: asyncio.TimerHandle | None = None

    def serve(self, address: ListenAddress | None) -> None:
        """Serve ``/metrics`` at ``address`` (None: not at all)."""
        server = self.server
        if server is not None and server.address == address:
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if server is not None:
            server.stop()
            self.server = None
        if address is None:
            return
        from ..metrics.server import MetricsServer  # prometheus_client: only for a listener that serves metrics

        self._start(MetricsServer(address, self.facts), first=True)

    def close(self) -> None:
        self.serve(None)

    def _start(self, server: MetricsServer, first: bool = False) -> None:
        self._retry = None
        try:
            server.start()
        except OSError as exc:
            if first:  # loudly, once: the listener goes on without metrics
                self.on_failure(f"metrics: cannot serve {server.url}: {exc.strerror or exc}; running WITHOUT "
                                f"metrics, trying again every {METRICS_RETRY:g}s")
            self._retry = self.loop.call_later(METRICS_RETRY, self._start, server)
            return
        self.server = server
        say(f"metrics: serving {server.url}" + ("" if first else " (after all)"))


__all__ = ["METRICS_RETRY", "MetricsKeeper"]

"""What the address and link backends share: one rtnetlink socket, opened, asked and closed alike.

:class:`RtnetlinkBackend` opens the socket (in ``netns`` when given; a failure
names the namespace), sends one request at a time with transient errnos retried
(:func:`~kanotify.backends.retry.call_with_retry`) and every error prefixed by
what was being done, and closes it once.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from ..errors import ApplyError
from .netlink import framing as nl
from .netlink.nlsock import NetlinkSocket
from .retry import call_with_retry


class RtnetlinkBackend:
    """A backend's rtnetlink socket in this network namespace (or in ``netns``).

    ``kind`` names the backend in the "closed" error ("the link backend is closed");
    ``rcvbuf`` is the socket's receive buffer (None: :class:`NetlinkSocket`'s default).
    """

    kind = "rtnetlink"

    def __init__(self, netns: str | None = None, *, rcvbuf: int | None = None) -> None:
        self.netns = netns
        try:
            self._sock: NetlinkSocket | None = (
                NetlinkSocket(nl.NETLINK_ROUTE, "rtnetlink", netns=netns) if rcvbuf is None
                else NetlinkSocket(nl.NETLINK_ROUTE, "rtnetlink", rcvbuf=rcvbuf, netns=netns))
        except ApplyError as exc:
            where = f"network namespace {netns}" if netns else "rtnetlink"
            raise ApplyError(f"cannot open {where}: {os.strerror(exc.errno or 0)}", exc.errno) from exc

    def close(self) -> None:
        """Close the netlink socket."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _request(self, build: Callable[[int], bytes], what: str, *, retry: bool = True) -> list[nl.Message]:
        """One request (``build(seq)``), transient errnos retried; ApplyError("what: reason", errno).

        ``retry=False`` where the error is an answer (a device or link lookup's ENODEV), not "not there yet".
        """
        if self._sock is None:
            raise ApplyError(f"{what}: the {self.kind} backend is closed", errno.EBADF)
        sock = self._sock

        def once() -> list[nl.Message]:
            seq = sock.next_seq()
            try:
                return sock.request(build(seq), seq)
            except ApplyError as exc:
                raise ApplyError(f"{what}: {os.strerror(exc.errno or 0)}", exc.errno) from None

        return call_with_retry(once, what=what) if retry else once()


__all__ = ["RtnetlinkBackend"]

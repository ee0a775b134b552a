"""A netlink socket that sends one request and reads its answer: the I/O under the IPVS and address backends.

:mod:`kanotify.backends.netlink.framing` frames messages (pure); this module owns a
socket: opened in a network namespace when asked (:func:`~kanotify.backends.netns.call_in`),
with ``NETLINK_CAP_ACK``/``NETLINK_EXT_ACK`` so refusals carry the kernel's
text, a receive buffer big enough for a batch's replies, and a timeout on
every wait.  :meth:`NetlinkSocket.request` sends one request (an ACKed write
or a dump) and returns its replies, or raises
:class:`~kanotify.errors.ApplyError` with the kernel's errno.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from ...errors import ApplyError
from . import framing as nl
from ..netns import call_in

SO_RCVBUFFORCE = 33
#: as a plain int: ``flags & socket.MSG_TRUNC`` is an IntFlag operation in Python, on every receive
_MSG_TRUNC = int(socket.MSG_TRUNC)


class NetlinkSocket:
    """A netlink socket of ``protocol`` (``NETLINK_ROUTE``, ``NETLINK_GENERIC``), in ``netns`` when given.

    ``name`` starts every error message ("IPVS netlink", "rtnetlink").
    ``requests`` counts round trips, for benchmarks and tests.
    """

    def __init__(
        self, protocol: int, name: str, *, timeout: float = 5.0, rcvbuf: int = 4 << 20, netns: str | None = None
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._seq = 0
        self.requests = 0
        self.sock = _open_socket(protocol, name, netns)
        try:
            self._configure(rcvbuf)
        except BaseException:
            self.sock.close()
            raise

    def _configure(self, rcvbuf: int) -> None:
        sock = self.sock
        for option in (nl.NETLINK_CAP_ACK, nl.NETLINK_EXT_ACK):
            try:
                sock.setsockopt(nl.SOL_NETLINK, option, 1)
            except OSError:
                pass  # old kernels: errors are just longer / have no text
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)  # root
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, 0))
        # Non-blocking, the timeout kept by hand (_wait): with a socket timeout, Python polls and
        # reads the clock before every send and receive -- three syscalls for one.  The kernel
        # answers a netlink request while it is sent, so the answer is nearly always there.
        sock.setblocking(False)

    def next_seq(self) -> int:
        self._seq = (self._seq % 0x7FFFFFFF) + 1
        return self._seq

    def close(self) -> None:
        self.sock.close()

    def _recv(self) -> list[nl.Message]:
        return list(nl.iter_messages(self._recv_raw()))

    def _recv_raw(self) -> bytes:
        deadline = None
        while True:
            try:
                data, _anc, flags, _addr = self.sock.recvmsg(1 << 16)
                break
            except BlockingIOError:
                deadline = self._wait(deadline, readable=True)
            except OSError as exc:  # ENOBUFS: replies were dropped (receive buffer full)
                raise ApplyError(f"{self.name}: receive: {exc.strerror}", exc.errno) from None
        if flags & _MSG_TRUNC:
            raise nl.DecodeError("netlink message larger than the 64 KiB receive buffer")
        return data

    def _send(self, data: bytes) -> None:
        deadline = None
        while True:
            try:
                self.sock.send(data)  # a netlink message goes whole or not at all
                return
            except BlockingIOError:
                deadline = self._wait(deadline, readable=False)
            except OSError as exc:
                raise ApplyError(f"{self.name}: send: {exc.strerror}", exc.errno) from None

    def _wait(self, deadline: float | None, *, readable: bool) -> float:
        """Wait until the socket can be read (or written), up to ``timeout`` after the first wait; the deadline."""
        import select  # only when the kernel has not answered yet

        now = time.monotonic()
        deadline = now + self.timeout if deadline is None else deadline
        if now >= deadline:
            raise ApplyError(f"{self.name}: no answer from the kernel within {self.timeout:g}s", errno.ETIMEDOUT)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN if readable else select.POLLOUT)
        poller.poll(max(1, int((deadline - now) * 1000 + 0.999)))
        return deadline

    def request(self, data: bytes, seq: int) -> list[nl.Message]:
        """Send one request (ACK or DUMP) and return its reply messages.

        Raises :class:`ApplyError` with the kernel's errno (and extended-ack
        text) when the kernel refuses it.
        """
        return [nl.message_at(buf, offset) for buf, offset, _length in self.request_raw(data, seq)]

    def request_raw(self, data: bytes, seq: int) -> list[tuple[bytes, int, int]]:
        """:meth:`request`, its replies left where they were received: (buffer, offset, length) each.

        For a reader of thousands of replies that decodes them in place
        (``IpvsBackend.reals``): no :class:`~kanotify.backends.netlink.framing.Message`
        and no payload copy per reply.
        """
        self.requests += 1
        self._send(data)
        replies: list[tuple[bytes, int, int]] = []
        while True:
            buf = self._recv_raw()
            for offset, length, mtype, _flags, mseq in nl.iter_headers(buf):
                if mseq != seq:
                    continue  # a late answer to an earlier, timed-out request
                if mtype == nl.NLMSG_ERROR:
                    code, text = nl.parse_error(nl.message_at(buf, offset))
                    if code:
                        raise ApplyError(text or os.strerror(code), code)
                    return replies
                if mtype == nl.NLMSG_DONE:
                    code = nl.done_error(nl.message_at(buf, offset))
                    if code > 0:
                        raise ApplyError(os.strerror(code), code)
                    return replies
                if mtype in (nl.NLMSG_NOOP, nl.NLMSG_OVERRUN):
                    continue
                replies.append((buf, offset, length))


def _open_socket(protocol: int, name: str, netns: str | None) -> socket.socket:
    def make() -> socket.socket:
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        except OSError as exc:
            raise ApplyError(f"{name}: cannot open a netlink socket: {exc.strerror}", exc.errno) from None

    return call_in(netns, make)


__all__ = ["NetlinkSocket"]

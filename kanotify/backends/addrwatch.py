"""The kernel's address events: which managed VIPs were removed, as it happens.

The listener repairs drift at once when a managed VIP disappears (``ip addr
del`` by hand, a network manager flushing the device): it subscribes to the
rtnetlink address groups and reads ``RTM_DELADDR`` messages, in the
network namespace it runs in (device names are looked up there too).
Standard library only.

If the kernel drops events (the socket's receive buffer overflowed:
``ENOBUFS``), :meth:`AddressWatch.read` says so with ``lost=True``: the
listener then repairs anyway, since a removal may be among them.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from .netlink import framing as nl
from .netlink import rtaddr


@dataclass(frozen=True)
class Removed:
    """An address the kernel removed: the device's name (as of now) and the address with its prefix."""

    dev: str
    address: str  # "192.0.2.100/24"


class AddressWatch:
    """A non-blocking rtnetlink socket subscribed to IPv4 and IPv6 address events."""

    def __init__(self, rcvbuf: int = 1 << 20) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                             nl.NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((0, rtaddr.RTMGRP_IPV4_IFADDR | rtaddr.RTMGRP_IPV6_IFADDR))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> tuple[list[Removed], bool]:
        """(addresses removed since the last read, whether events were lost)."""
        removed: list[Removed] = []
        lost = False
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return removed, lost
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    lost = True
                    continue
                raise
            try:
                messages = list(nl.iter_messages(data))
            except nl.DecodeError:
                lost = True
                continue
            for msg in messages:
                if msg.type != rtaddr.RTM_DELADDR:
                    continue
                found = rtaddr.decode(msg.payload)
                if found is None:
                    continue
                try:
                    dev = socket.if_indextoname(found.index)
                except OSError:
                    # The device itself is gone (``ip link del``), every address with it.  An IPv4
                    # address names its device in its label ("kav0", "eth0:0"): a deleted [bgp]
                    # dummy link is drift that kanotify repairs (it creates the link again).
                    if not found.label:
                        continue
                    dev = found.label.split(":", 1)[0]
                removed.append(Removed(dev, found.interface.with_prefixlen))

    def close(self) -> None:
        self.sock.close()


__all__ = ["AddressWatch", "Removed"]

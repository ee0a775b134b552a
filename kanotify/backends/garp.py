"""Announce a freshly bound VIP: gratuitous ARP (IPv4) and unsolicited NA (IPv6).

When a VIP moves to this host, switches and neighbours still send to the old
owner's MAC until they learn the new one.  Gratuitous ARP tells them: an ARP
packet whose sender and target IP are both the VIP, from this device's MAC, to
the broadcast address.  Devices differ in which form they accept (Linux, with
``arp_accept``, takes a request, or a reply whose target MAC equals the sender
MAC), so the announcements alternate request and reply, as kube-vip does.
IPv6 uses an unsolicited neighbour advertisement to all-nodes with the Override
flag, so neighbours replace a cached entry.

Only the first announcement is sent while the caller waits (so a device that
is down or has no MAC is reported as this action's error).  The others are sent
``interval`` seconds apart by a detached grandchild process (double fork,
``setsid``, every inherited file descriptor closed, so it holds no kanotify
lock and survives keepalived killing the notify script's process group).
Before each repeat it checks, over its own netlink socket, that the VIP is
still bound on the device, so a quick failover does not keep advertising a
VIP this host no longer holds.

Pure standard library: no pyroute2 on this path.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import os
import socket
import struct
import threading
import time
from typing import Protocol

from ..actions import Action, SendGarp
from ..errors import ApplyError
from ..model import Vip
from .netlink import framing as nl
from .netlink import rtaddr
from .base import OneAtATime

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
SIOCGIFHWADDR = 0x8927
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

ND_NEIGHBOR_ADVERT = 136
ND_NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2
ALL_NODES = "ff02::1"

# rtnetlink, for the "still bound?" check of the detached sender


def hw_address(dev: str) -> tuple[int, bytes]:
    """(ARPHRD type, MAC) of ``dev`` in this process's network namespace.

    ``ioctl(SIOCGIFHWADDR)`` rather than ``/sys/class/net``: sysfs shows the
    namespace it was mounted in, the ioctl the one of the socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH14s", dev.encode()[:15], 0, b"")
        result = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, ifreq)
    family = struct.unpack_from("H", result, 16)[0]
    return family, result[18:24]


def arp_frame(mac: bytes, ip: bytes, reply: bool) -> bytes:
    """A broadcast gratuitous ARP Ethernet frame for IPv4 address ``ip`` (4 bytes).

    Request form: target MAC zero (RFC 5227 announcement).  Reply form: target
    MAC = sender MAC, which is what Linux requires to treat a reply as
    gratuitous.
    """
    op = ARPOP_REPLY if reply else ARPOP_REQUEST
    tha = mac if reply else ZERO_MAC
    ethernet = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", ARPHRD_ETHER, 0x0800, 6, 4, op) + mac + ip + tha + ip
    return ethernet + arp


def na_message(mac: bytes, target: bytes) -> bytes:
    """An ICMPv6 unsolicited neighbour advertisement (checksum left to the kernel).

    Flags: Override only (not Solicited: nobody asked; not Router).  Option:
    target link-layer address = our MAC.
    """
    header = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, ND_NA_FLAG_OVERRIDE)
    option = struct.pack("!BB", ND_OPT_TARGET_LINKADDR, 1) + mac
    return header + target + option


class _Announcer:
    """Sends announcements for one VIP on its device; opened per use, cheap."""

    def __init__(self, vip: Vip) -> None:
        self.vip = vip
        self.dev = vip.dev
        self.ip = vip.address.ip.packed
        kind, self.mac = hw_address(self.dev)
        if kind != ARPHRD_ETHER:
            raise ApplyError(
                f"{self._what()}: device {self.dev} is not Ethernet (ARPHRD {kind}), "
                "nothing to announce; set garp = false for this vip",
                errno.EOPNOTSUPP,
            )
        self.ifindex = socket.if_nametoindex(self.dev)
        if vip.family == 4:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        else:
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            # RFC 4861: receivers drop ND messages whose hop limit is not 255.
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            try:
                # Source = the VIP itself (bound NODAD, so usable at once).
                self.sock.bind((str(vip.address.ip), 0, 0, self.ifindex))
            except OSError:
                pass  # not (yet) bound: the kernel picks a source on the device

    def _what(self) -> str:
        kind = "gratuitous ARP" if self.vip.family == 4 else "unsolicited NA"
        return f"send {kind} for {self.vip.address.ip} on {self.dev}"

    def send(self, seq: int) -> None:
        """Announcement number ``seq``: even numbers are ARP requests, odd ones replies."""
        if self.vip.family == 4:
            self.sock.sendto(arp_frame(self.mac, self.ip, reply=seq % 2 == 1), (self.dev, ETH_P_ARP))
        else:
            self.sock.sendto(na_message(self.mac, self.ip), (ALL_NODES, 0, 0, self.ifindex))

    def close(self) -> None:
        self.sock.close()


class Repeater(Protocol):
    """Sends announcements 1..count-1 of a VIP, ``interval`` seconds apart, after the first one was sent."""

    def repeat(self, vip: Vip, count: int, interval: float) -> None: ...


class ThreadRepeater:
    """Repeats from a thread of this process: for the listener, which outlives its transitions.

    A one-shot run must not wait for the repeats (and keepalived may kill it),
    so it detaches a process; a resident listener has no reason to fork its
    (threaded, large) self for that.  One daemon thread, a heap of due sends;
    before each, the VIP must still be bound (a quick failover must not keep
    advertising an address this host gave up).
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Vip, int, int, float]] = []  # (when, tiebreak, vip, seq, count, interval)
        self._cv = threading.Condition()
        self._n = 0
        self._thread: threading.Thread | None = None

    def repeat(self, vip: Vip, count: int, interval: float) -> None:
        with self._cv:
            if count > 1:
                self._n += 1
                heapq.heappush(self._due, (time.monotonic() + interval, self._n, vip, 1, count, interval))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kanotify-garp", daemon=True)
                self._thread.start()
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._due)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cv.wait(None if not self._due else max(0.0, self._due[0][0] - time.monotonic()))
                _when, _n, vip, seq, count, interval = heapq.heappop(self._due)
            try:
                if not still_bound(vip):
                    continue
                announcer = _Announcer(vip)
                try:
                    announcer.send(seq)
                finally:
                    announcer.close()
            except Exception:  # noqa: BLE001 - a repeat that cannot be sent is not worth more
                continue
            if seq + 1 < count:
                with self._cv:
                    self._n += 1
                    heapq.heappush(self._due, (time.monotonic() + interval, self._n, vip, seq + 1, count, interval))


class GarpBackend(OneAtATime):
    """Applies :class:`SendGarp`; holds no state between actions.

    The first announcement is sent before :meth:`apply` returns; the repeats
    come from a detached process (``detach=True``, the default for one-shot
    runs), from ``repeater`` (the listener's :class:`ThreadRepeater`), or,
    with ``detach=False``, from the calling process before returning (tests
    that want them all).
    """

    def __init__(self, detach: bool = True, repeater: Repeater | None = None) -> None:
        self.detach = detach
        self.repeater = repeater
        self.sent = 0  # announcements sent synchronously, for tests
        self.last_first_packet_s: float | None = None
        self.last_detached_pid: int | None = None  # the process sending the repeats

    def apply(self, action: Action) -> None:
        """Send the first announcement now, the rest from a detached process."""
        if not isinstance(action, SendGarp):
            raise ApplyError(f"the garp backend cannot apply {type(action).__name__}: {action}")
        vip = action.vip
        if vip.dev == "lo":
            raise ApplyError(f"{action}: refusing to announce on lo (loopback has no neighbours)")
        if action.count < 1:
            return
        started = time.monotonic()
        announcer = self._open(action)
        try:
            try:
                announcer.send(0)
            except OSError as exc:
                raise ApplyError(f"{action}: {_reason(exc, vip.dev)}", exc.errno) from exc
            self.sent += 1
            self.last_first_packet_s = time.monotonic() - started
            if action.count > 1:
                if self.repeater is not None:
                    self.repeater.repeat(vip, action.count, action.interval)
                elif self.detach:
                    self.last_detached_pid = _spawn_detached(vip, action.count, action.interval)
                else:
                    for seq in range(1, action.count):
                        time.sleep(action.interval)
                        announcer.send(seq)
                        self.sent += 1
        finally:
            announcer.close()

    def close(self) -> None:
        """Nothing to release: sockets are opened per action."""

    @staticmethod
    def _open(action: SendGarp) -> _Announcer:
        try:
            return _Announcer(action.vip)
        except OSError as exc:
            raise ApplyError(f"{action}: {_reason(exc, action.vip.dev)}", exc.errno) from exc


def _reason(exc: OSError, dev: str) -> str:
    code = exc.errno or 0
    if code == errno.ENODEV or (code == errno.ENXIO):
        return f"device {dev} does not exist"
    if code == errno.ENETDOWN:
        return f"device {dev} is down"
    if code in (errno.EPERM, errno.EACCES):
        return "raw sockets need root (CAP_NET_RAW)"
    return os.strerror(code)


# --------------------------------------------------------------------------- detached repeats


def _spawn_detached(vip: Vip, count: int, interval: float) -> int | None:
    """Double fork: the grandchild sends announcements 1..count-1 and exits by itself.

    Returns the grandchild's pid (``None`` if it could not be learned).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                data = pipe.read()
        finally:
            os.waitpid(pid, 0)  # the intermediate child exits at once
        return int(data) if data.strip().isdigit() else None
    try:
        os.close(read_fd)
        os.setsid()  # out of keepalived's process group: a STOP kill does not reach it
        grandchild = os.fork()
        if grandchild:
            os.write(write_fd, str(grandchild).encode())
            os._exit(0)
        _close_inherited_fds()  # releases any flock() the parent holds through a shared fd
        for seq in range(1, count):
            time.sleep(interval)
            if not still_bound(vip):
                break
            announcer = _Announcer(vip)
            try:
                announcer.send(seq)
            finally:
                announcer.close()
    except BaseException:  # noqa: BLE001 - nobody to report to; never return into the caller's code
        pass
    os._exit(0)


def _close_inherited_fds() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def still_bound(vip: Vip) -> bool:
    """Is ``vip`` (address/prefix) still on its device?  One rtnetlink address dump, stdlib only."""
    try:
        ifindex = socket.if_nametoindex(vip.dev)
    except OSError:
        return False
    family = socket.AF_INET if vip.family == 4 else socket.AF_INET6
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_ROUTE) as sock:
        sock.settimeout(2.0)
        sock.send(rtaddr.getaddr_request(family, seq=1))
        while True:
            try:
                messages = list(nl.iter_messages(sock.recv(65536)))
            except nl.DecodeError:
                return False
            for msg in messages:
                if msg.type in (nl.NLMSG_DONE, nl.NLMSG_ERROR):
                    return False
                if msg.type == rtaddr.RTM_NEWADDR:
                    found = rtaddr.decode(msg.payload)
                    if found is not None and found.index == ifindex and found.interface == vip.address:
                        return True


__all__ = ["GarpBackend", "Repeater", "ThreadRepeater", "arp_frame", "na_message", "hw_address", "still_bound"]

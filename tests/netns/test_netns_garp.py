"""GarpBackend against a real kernel: the peer on the other end of the veth learns the VIP.

The peer namespace ``b`` captures with AF_PACKET sockets (field by field) and
its own kernel's neighbour table is the judge of whether the announcements
are accepted.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
import time

import pytest

from kanotify.actions import SendGarp
from kanotify.backends.garp import ETH_P_ARP, ETH_P_IPV6, GarpBackend, _Announcer
from kanotify.errors import ApplyError
from kanotify.model import Vip
from netns_support import Netns, Pair, drain, ethertype_socket, process_gone, recv_until, wait_for

pytestmark = pytest.mark.root

VIP4 = Vip(ipaddress.ip_interface("192.0.2.100/24"), "eth0", "eth0:0")
VIP6 = Vip(ipaddress.ip_interface("2001:db8::100/64"), "eth0")


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _is_garp_for(ip: str):  # type: ignore[no-untyped-def]
    packed = socket.inet_aton(ip)
    return lambda f: len(f) >= 42 and f[12:14] == b"\x08\x06" and f[28:32] == packed and f[38:42] == packed


def _parse_arp(frame: bytes) -> dict[str, object]:
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    return {
        "dst": frame[0:6],
        "src": frame[6:12],
        "htype": htype,
        "ptype": ptype,
        "hlen": hlen,
        "plen": plen,
        "op": op,
        "sha": frame[22:28],
        "spa": socket.inet_ntoa(frame[28:32]),
        "tha": frame[32:38],
        "tpa": socket.inet_ntoa(frame[38:42]),
    }


def _neigh_mac(ns: Netns, ip: str) -> str | None:
    for entry in ns.ip_json("neigh", "show", "dev", "eth0"):
        if entry.get("dst") == ip and "lladdr" in entry:
            return entry["lladdr"]
    return None


def _prepare_v4(pair: Pair, arp_accept: bool = True) -> None:
    pair.a.ip("addr", "add", "192.0.2.100/24", "dev", "eth0", "label", "eth0:0")
    if arp_accept:
        # Linux creates no entry for an unknown address from unsolicited ARP unless arp_accept is on.
        pair.b.set_sysctls({"net.ipv4.conf.all.arp_accept": 1, "net.ipv4.conf.eth0.arp_accept": 1})


def _send(action: SendGarp, detach: bool = False) -> tuple[int, float | None, int | None]:
    backend = GarpBackend(detach=detach)
    backend.apply(action)
    return backend.sent, backend.last_first_packet_s, backend.last_detached_pid


def test_gratuitous_arp_request_and_reply_fields(pair: Pair) -> None:
    _prepare_v4(pair)
    mac_a = _mac(pair.a.mac())
    with ethertype_socket(pair.b, ETH_P_ARP) as capture:
        sent, first, _ = pair.a.run(_send, SendGarp(VIP4, count=2, interval=0.01))
        assert sent == 2
        frames = [recv_until(capture, _is_garp_for("192.0.2.100")) for _ in range(2)]
    assert all(frames), "the peer did not receive two gratuitous ARPs"
    request, reply = (_parse_arp(f) for f in frames)  # type: ignore[arg-type]
    for arp in (request, reply):
        assert arp["dst"] == b"\xff" * 6  # broadcast
        assert arp["src"] == mac_a and arp["sha"] == mac_a
        assert (arp["htype"], arp["ptype"], arp["hlen"], arp["plen"]) == (1, 0x0800, 6, 4)
        assert arp["spa"] == arp["tpa"] == "192.0.2.100"
    assert request["op"] == 1 and request["tha"] == b"\x00" * 6
    assert reply["op"] == 2 and reply["tha"] == mac_a  # Linux wants tha == sha in a gratuitous reply
    print(f"GARP first-packet latency (apply -> first frame sent): {first * 1000:.2f} ms")


@pytest.mark.parametrize("form", ["request", "reply"])
def test_peer_learns_the_vip_at_the_senders_mac(pair: Pair, form: str) -> None:
    _prepare_v4(pair)
    mac_a = pair.a.mac()
    assert _neigh_mac(pair.b, "192.0.2.100") is None

    def announce_once() -> None:
        announcer = _Announcer(VIP4)
        try:
            announcer.send(0 if form == "request" else 1)
        finally:
            announcer.close()

    pair.a.run(announce_once)
    learned = wait_for(lambda: _neigh_mac(pair.b, "192.0.2.100"), what="the peer's neighbour entry")
    assert learned == mac_a


def test_peer_overrides_a_stale_entry(pair: Pair) -> None:
    """The point of GARP at failover: neighbours still pointing at the old master's MAC move over.

    This works with the peer's defaults (arp_accept=0): an existing entry is updated.
    """
    _prepare_v4(pair, arp_accept=False)
    pair.b.ip("neigh", "add", "192.0.2.100", "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
    pair.a.run(_send, SendGarp(VIP4, count=1))
    mac_a = pair.a.mac()
    assert wait_for(lambda: _neigh_mac(pair.b, "192.0.2.100") == mac_a, what="the entry to move to a's MAC")


def test_repeats_come_from_a_detached_process_that_holds_no_lock(pair: Pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _prepare_v4(pair)
    lock_path = str(tmp_path / "lock")

    def apply_under_lock() -> tuple[float, int | None, bool]:
        with open(lock_path, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # like the engine's run lock
            backend = GarpBackend()
            t0 = time.monotonic()
            backend.apply(SendGarp(VIP4, count=3, interval=0.5))
            returned_after = time.monotonic() - t0
        # our lock fd is closed: if the detached sender had inherited it, the lock would still be held
        with open(lock_path, "w") as again:
            try:
                fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free = True
            except BlockingIOError:
                free = False
        return returned_after, backend.last_detached_pid, free

    with ethertype_socket(pair.b, ETH_P_ARP) as capture:
        returned_after, pid, lock_free = pair.a.run(apply_under_lock)
        # the process that called apply() has exited; the repeats keep coming
        assert pid is not None and not process_gone(pid)
        assert lock_free, "the detached GARP sender kept the caller's lock"
        assert returned_after < 0.5, "apply() waited for the repeats"
        frames = [recv_until(capture, _is_garp_for("192.0.2.100")) for _ in range(3)]
        assert all(frames), f"expected 3 announcements, got {sum(1 for f in frames if f)}"
        assert [_parse_arp(f)["op"] for f in frames] == [1, 2, 1]  # type: ignore[arg-type]
        wait_for(lambda: process_gone(pid), what="the detached sender to exit by itself")
        assert not [f for f in drain(capture) if _is_garp_for("192.0.2.100")(f)]


def test_repeats_stop_when_the_vip_is_gone(pair: Pair) -> None:
    """After a quick failover the old master must not keep advertising the VIP."""
    _prepare_v4(pair)

    def announce_then_release() -> int | None:
        backend = GarpBackend()
        backend.apply(SendGarp(VIP4, count=4, interval=0.3))
        import subprocess

        subprocess.run(["ip", "addr", "del", "192.0.2.100/24", "dev", "eth0"], check=True)
        return backend.last_detached_pid

    with ethertype_socket(pair.b, ETH_P_ARP) as capture:
        pid = pair.a.run(announce_then_release)
        assert pid is not None
        wait_for(lambda: process_gone(pid), what="the detached sender to exit")
        frames = [f for f in drain(capture) if _is_garp_for("192.0.2.100")(f)]
    assert len(frames) == 1  # only the synchronous first one


def test_unsolicited_na_with_override(pair: Pair) -> None:
    pair.a.ip("addr", "add", "2001:db8::100/64", "dev", "eth0", "nodad")
    mac_a = _mac(pair.a.mac())
    # b believes the VIP is at another MAC (the old master): only an NA with the
    # Override flag makes its kernel replace that.
    pair.b.ip("neigh", "add", "2001:db8::100", "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
    target = ipaddress.ip_address("2001:db8::100").packed

    def is_na(frame: bytes) -> bool:
        return len(frame) >= 14 + 40 + 24 and frame[14 + 6] == 58 and frame[54] == 136 and frame[62:78] == target

    with ethertype_socket(pair.b, ETH_P_IPV6) as capture:
        sent, first, _ = pair.a.run(_send, SendGarp(VIP6, count=1))
        frame = recv_until(capture, is_na)
    assert sent == 1 and frame is not None, "no neighbour advertisement reached the peer"
    assert frame[0:6] == b"\x33\x33\x00\x00\x00\x01" and frame[6:12] == mac_a  # to all-nodes, from a
    ipv6 = frame[14:54]
    assert ipv6[7] == 255  # hop limit, or receivers drop it
    assert ipv6[8:24] == target  # from the VIP itself
    assert ipv6[24:40] == ipaddress.ip_address("ff02::1").packed
    icmp = frame[54:]
    flags = icmp[4]
    assert flags & 0x20, "Override flag not set"
    assert not flags & 0x40 and not flags & 0x80  # not Solicited, not Router
    assert icmp[24:26] == b"\x02\x01" and icmp[26:32] == mac_a  # target link-layer address option
    learned = wait_for(
        lambda: _neigh_mac(pair.b, "2001:db8::100") == pair.a.mac(), what="the peer to take a's MAC"
    )
    assert learned
    print(f"NA first-packet latency: {first * 1000:.2f} ms")


def test_never_on_lo_and_clear_errors(pair: Pair) -> None:
    def attempt(vip: Vip) -> BaseException | None:
        return GarpBackend().apply_many([SendGarp(vip, count=3)])[0]

    lo = pair.a.run(attempt, Vip(ipaddress.ip_interface("192.0.2.100/32"), "lo", "lo:0"))
    assert isinstance(lo, ApplyError) and "lo" in str(lo)
    missing = pair.a.run(attempt, Vip(ipaddress.ip_interface("192.0.2.100/24"), "eth9"))
    assert isinstance(missing, ApplyError) and "device eth9 does not exist" in str(missing)
    assert missing.errno == errno.ENODEV
    pair.a.ip("link", "set", "eth0", "down")
    down = pair.a.run(attempt, VIP4)
    assert isinstance(down, ApplyError) and "eth0 is down" in str(down)

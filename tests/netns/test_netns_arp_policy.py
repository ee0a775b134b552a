"""The real-server role, proven both ways: VIP on lo /32 plus arp_ignore=1 / arp_announce=2.

Namespace ``a`` is a real server holding the VIP on ``lo``; ``b`` is its LAN
neighbour.  With the kanotify sysctls applied, ``a`` must neither answer ARP
for the VIP nor leak the VIP as the source of its own ARP requests.  With the
kernel defaults it does both -- the classic "real server steals the VIP" bug --
which shows the test can tell the difference.

"No answer" is proven without a timeout: ``b`` sends the request for the VIP
and then a control request for ``a``'s own address.  ``a`` handles the two in
order, so once the control reply is in, a reply for the VIP would already
have arrived.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from kanotify.actions import BindVip, SetSysctl
from kanotify.backends.address import AddressBackend
from kanotify.backends.garp import ETH_P_ARP
from kanotify.backends.sysctl import SysctlBackend
from kanotify.model import Vip
from netns_support import Pair, ethertype_socket, recv_until

pytestmark = pytest.mark.root

VIP = "192.0.2.100"
LO_VIP = Vip(ipaddress.ip_interface(f"{VIP}/32"), "lo", "lo:0")
POLICY = {
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
    "net.ipv4.conf.lo.arp_ignore": "1",
    "net.ipv4.conf.lo.arp_announce": "2",
}


def _real_server(policy: bool) -> None:
    """Inside ``a``: the config's sysctls (or not), then the VIP on lo -- through the backends."""
    if policy:
        errors = SysctlBackend().apply_many([SetSysctl(k, v) for k, v in POLICY.items()])
        assert errors == [None] * len(POLICY)
    backend = AddressBackend()
    try:
        backend.apply(BindVip(LO_VIP))
    finally:
        backend.close()


def _request(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
    arp += src_mac + socket.inet_aton(src_ip) + b"\x00" * 6 + socket.inet_aton(target_ip)
    return b"\xff" * 6 + src_mac + struct.pack("!H", ETH_P_ARP) + arp


def _replies_until_control(pair: Pair) -> list[str]:
    """Ask ``a`` who has the VIP, then who has 192.0.2.1; return the IPs ``a`` answered for."""
    mac_a = bytes.fromhex(pair.a.mac().replace(":", ""))
    mac_b = bytes.fromhex(pair.b.mac().replace(":", ""))

    def is_reply_from_a(frame: bytes) -> bool:
        return len(frame) >= 42 and frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02" and frame[22:28] == mac_a

    answered: list[str] = []
    with ethertype_socket(pair.b, ETH_P_ARP) as sock:
        sock.sendto(_request(mac_b, "192.0.2.2", VIP), ("eth0", ETH_P_ARP))
        sock.sendto(_request(mac_b, "192.0.2.2", "192.0.2.1"), ("eth0", ETH_P_ARP))
        while "192.0.2.1" not in answered:
            frame = recv_until(sock, is_reply_from_a)
            assert frame is not None, "a never answered the control request for its own address"
            answered.append(socket.inet_ntoa(frame[28:32]))
    return answered


@pytest.mark.parametrize("policy", [True, False], ids=["kanotify-sysctls", "kernel-defaults"])
def test_arp_for_the_vip_on_lo(pair: Pair, policy: bool) -> None:
    pair.a.run(_real_server, policy)
    assert any(e["local"] == VIP and e["prefixlen"] == 32 for e in pair.a.addresses("lo"))
    if policy:
        assert pair.a.sysctl("net/ipv4/conf/all/arp_ignore") == "1"
        assert pair.a.sysctl("net/ipv4/conf/all/arp_announce") == "2"
    answered = _replies_until_control(pair)
    if policy:
        assert answered == ["192.0.2.1"], "the real server answered ARP for the VIP on lo"
    else:
        assert answered == [VIP, "192.0.2.1"], "with the defaults the kernel should answer for the VIP"


@pytest.mark.parametrize("policy", [True, False], ids=["kanotify-sysctls", "kernel-defaults"])
def test_arp_requests_do_not_leak_the_vip_as_source(pair: Pair, policy: bool) -> None:
    """A reply sent *from* the VIP (as DR real servers do) must not announce it in ARP requests."""
    pair.a.run(_real_server, policy)
    unknown = "192.0.2.50"  # nobody has it: a must ask

    def send_from_vip() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((VIP, 0))
            udp.sendto(b"reply", (unknown, 9))

    with ethertype_socket(pair.b, ETH_P_ARP) as sock:
        pair.a.run(send_from_vip)
        packed = socket.inet_aton(unknown)
        frame = recv_until(sock, lambda f: len(f) >= 42 and f[20:22] == b"\x00\x01" and f[38:42] == packed)
    assert frame is not None, "a sent no ARP request for the unknown neighbour"
    sender_ip = socket.inet_ntoa(frame[28:32])
    if policy:
        assert sender_ip == "192.0.2.1"  # arp_announce=2: the best local address on eth0
    else:
        assert sender_ip == VIP  # the default leaks the VIP into the neighbours' caches

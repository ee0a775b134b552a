"""IPVS observe against the kernel: one dump at a time per socket, narrowed observes, flow control.

Why ``IpvsBackend.observe`` reads real servers one service after the other: the kernel
refuses a second dump on a socket while the first one's NLMSG_DONE is unread (EBUSY),
which this file pins down, so a pipelined observe cannot be built on one socket.
"""

from __future__ import annotations

import errno

from ipvs_guest_support import ip, ipvsadm
from kanotify.backends.netlink import ipvs_msg as m
from kanotify.backends.netlink import framing as nl
from kanotify.backends.ipvs import IpvsBackend
from kanotify.model import ServiceKey

PORTS = range(7000, 7040)


def load(services: int = len(PORTS), reals: int = 3) -> list[ServiceKey]:
    keys = []
    for port in PORTS[:services]:
        ipvsadm("-A", "-t", f"198.51.100.1:{port}", "-s", "wrr")
        for j in range(reals):
            ipvsadm("-a", "-t", f"198.51.100.1:{port}", "-r", f"203.0.113.{j + 1}:{port}", "-g", "-w", str(j + 1))
        keys.append(ServiceKey.inet("tcp", ip("198.51.100.1"), port))
    return keys


def test_a_second_dump_on_one_socket_is_refused_until_the_first_is_read(ipvs: IpvsBackend) -> None:
    keys = load(services=2)
    sock = ipvs.socket
    seqs = [sock.next_seq() for _ in keys]
    requests = [
        m.genlmsg(sock.family, m.IPVS_CMD_GET_DEST, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq,
                  nl.nla(m.IPVS_CMD_ATTR_SERVICE, m.service_key_attrs(key)))
        for seq, key in zip(seqs, keys)
    ]
    sock.sock.sendall(b"".join(requests))  # both dumps in flight at once
    dests: dict[int, int] = {seq: 0 for seq in seqs}
    outcome: dict[int, object] = {}
    while len(outcome) < len(seqs):
        for msg in nl.iter_messages(sock.sock.recv(1 << 16)):
            if msg.type == nl.NLMSG_ERROR:
                outcome[msg.seq] = nl.parse_error(msg)[0]
            elif msg.type == nl.NLMSG_DONE:
                outcome[msg.seq] = "done"
            else:
                dests[msg.seq] += 1
    assert outcome == {seqs[0]: "done", seqs[1]: errno.EBUSY}
    assert dests == {seqs[0]: 3, seqs[1]: 0}
    # the socket is fine afterwards: the refused dump, asked again, is answered in full
    assert len(ipvs.reals(keys[1])) == 3


def test_a_narrowed_observe_equals_the_full_one_cut_down(ipvs: IpvsBackend) -> None:
    keys = load()
    full = ipvs.observe()
    assert len(full) == len(PORTS)
    missing = ServiceKey.inet("tcp", ip("198.51.100.1"), 9)
    for only in ({keys[3]}, {keys[0], keys[5], missing}, set(keys[:30]), set()):
        assert ipvs.observe(only) == {k: v for k, v in full.items() if k in only}, only
    assert ipvs.observe({missing}) == {}  # a service that does not exist is just absent


def test_a_receive_buffer_smaller_than_the_dump_loses_nothing() -> None:
    """Dumps are flow-controlled: the kernel fills the next part only once the reader made room."""
    ipvsadm("-C")
    try:
        load(reals=30)
        with IpvsBackend() as roomy, IpvsBackend(rcvbuf=4096) as tight:
            assert tight.observe() == roomy.observe()
            assert all(len(s.reals) == 30 for s in tight.observe().values())
    finally:
        ipvsadm("-C")


def test_the_bulk_decode_reads_the_kernels_own_replies_as_one_by_one_does(ipvs: IpvsBackend) -> None:
    """decode_dests reads by offsets learned from the first reply: on this kernel's layout it must agree
    with the attribute-by-attribute decode for every forwarding method, both families and thresholds."""
    keys = load(services=3, reals=4)
    ipvsadm("-a", "-t", "198.51.100.1:7000", "-r", "203.0.113.9:7000", "-m", "-w", "0", "-x", "900", "-y", "100")
    ipvsadm("-a", "-t", "198.51.100.1:7001", "-r", "203.0.113.9:7001", "-i", "-w", "65535")
    ipvsadm("-A", "-t", "[2001:db8::1]:80", "-s", "rr")
    for j, method in enumerate(("-g", "-i", "-m")):
        ipvsadm("-a", "-t", "[2001:db8::1]:80", "-r", f"[2001:db8::{j + 10}]:8080", method, "-w", str(j), "-x", "7")
    keys.append(ServiceKey.inet("tcp", ip("2001:db8::1"), 80))
    sock = ipvs.socket
    m._LAYOUTS.clear()
    for _round in range(2):  # the first learns the layout, the second reads every reply by it
        for key in keys:
            replies = sock.dump_raw(m.IPVS_CMD_GET_DEST, m.service_nest(key))
            expected = {}
            for buf, offset, length in replies:
                real, stats = m.dest_from_payload(buf[offset + 16 : offset + length], key.family)
                expected[real.key] = (real, stats)
            assert len(expected) >= 3
            assert m.decode_dests(replies, key.family) == expected, key
            assert ipvs.reals(key) == expected
    assert m._LAYOUTS and None not in m._LAYOUTS.values()  # the kernel's replies are plain

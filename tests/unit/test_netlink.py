"""Netlink framing (kanotify.backends.netlink.framing) and GARP's rtnetlink address check, pure.

pyroute2 is the independent oracle: what it encodes, kanotify reads; what
kanotify encodes, it reads.  No socket, no kernel.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time

import pytest
from pyroute2.netlink import nlmsg as pr_nlmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from kanotify.backends.netlink import nlsock, rtaddr
from kanotify.backends.netlink import framing as nl
from kanotify.errors import ApplyError


def test_header_and_padding() -> None:
    data = nl.nlmsg(0x1234, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 7, b"abcde")
    assert len(data) == 24  # 16 + 5, padded to 4
    parsed = pr_nlmsg(data)
    parsed.decode()
    header = parsed["header"]
    assert (header["length"], header["type"], header["flags"], header["sequence_number"], header["pid"]) == (
        21, 0x1234, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 7, 0
    )
    (msg,) = nl.iter_messages(data)
    assert msg == nl.Message(0x1234, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 7, b"abcde")


def test_attributes_pad_and_mask_flags() -> None:
    data = nl.nla(1, b"x") + nl.nla(2 | nl.NLA_F_NESTED, nl.nla(3, b"")) + nl.nla(4 | nl.NLA_F_NET_BYTEORDER, b"\0\x50")
    assert len(nl.nla(1, b"x")) == 8
    attrs = nl.parse_attrs(data)
    assert attrs == {1: b"x", 2: struct.pack("=HH", 4, 3), 4: b"\0\x50"}
    assert nl.parse_attrs(attrs[2]) == {3: b""}


def test_malformed_attribute_ends_the_level() -> None:
    data = nl.nla(1, b"abcd") + struct.pack("=HH", 2, 9) + nl.nla(3, b"zz")
    assert nl.parse_attrs(data) == {1: b"abcd"}


def test_several_messages_in_one_buffer() -> None:
    data = b"".join(nl.nlmsg(0x20, nl.NLM_F_MULTI, seq, bytes(seq)) for seq in range(1, 6))
    msgs = list(nl.iter_messages(data))
    assert [(msg.seq, msg.payload) for msg in msgs] == [(seq, bytes(seq)) for seq in range(1, 6)]


def test_truncated_buffer_is_an_error() -> None:
    data = nl.nlmsg(0x20, nl.NLM_F_REQUEST, 1, b"\1" * 12)
    with pytest.raises(nl.DecodeError):
        list(nl.iter_messages(data[:-4]))
    with pytest.raises(nl.DecodeError):  # a length below the header's own
        list(nl.iter_messages(struct.pack("=IHHII", 8, 1, 0, 0, 0)))


def test_error_with_extended_ack_text() -> None:
    original = nl.nlmsg(0x20, nl.NLM_F_REQUEST, 5, b"")[:16]
    payload = struct.pack("=i", -errno.EINVAL) + original + nl.nla(nl.NLMSGERR_ATTR_MSG, b"Attribute failed policy validation\0")
    data = nl.nlmsg(nl.NLMSG_ERROR, nl.NLM_F_CAPPED | nl.NLM_F_ACK_TLVS, 5, payload)
    (msg,) = nl.iter_messages(data)
    assert nl.parse_error(msg) == (errno.EINVAL, "Attribute failed policy validation")


def test_error_echoing_the_whole_request() -> None:
    """Without NETLINK_CAP_ACK the request is echoed in full; the text follows it (padded)."""
    original = nl.nlmsg(0x20, nl.NLM_F_REQUEST, 5, b"abcdefg")  # 23 bytes, padded to 24
    length = struct.unpack_from("=I", original)[0]
    payload = struct.pack("=i", -errno.ENODEV) + original + nl.nla(nl.NLMSGERR_ATTR_MSG, b"no device\0")
    (msg,) = nl.iter_messages(nl.nlmsg(nl.NLMSG_ERROR, nl.NLM_F_ACK_TLVS, 5, payload))
    assert length == 23
    assert nl.parse_error(msg) == (errno.ENODEV, "no device")


def test_ack_is_errno_zero() -> None:
    data = nl.nlmsg(nl.NLMSG_ERROR, nl.NLM_F_CAPPED, 5, struct.pack("=i", 0) + b"\0" * 16)
    (msg,) = nl.iter_messages(data)
    assert nl.parse_error(msg) == (0, "")


def test_done_carries_the_dump_errno() -> None:
    assert nl.done_error(nl.Message(nl.NLMSG_DONE, nl.NLM_F_MULTI, 1, struct.pack("=i", 0))) == 0
    assert nl.done_error(nl.Message(nl.NLMSG_DONE, nl.NLM_F_MULTI, 1, struct.pack("=i", -errno.EMSGSIZE))) == errno.EMSGSIZE
    assert nl.done_error(nl.Message(nl.NLMSG_DONE, 0, 1, b"")) == 0


# --------------------------------------------------------------------------- rtnetlink addresses (GARP's check, the address watch)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_getaddr_request_reads_back_in_pyroute2(family: int) -> None:
    msg = ifaddrmsg(rtaddr.getaddr_request(family, seq=3))
    msg.decode()
    assert msg["header"]["type"] == 22  # RTM_GETADDR
    assert msg["header"]["flags"] == nl.NLM_F_REQUEST | nl.NLM_F_DUMP
    assert msg["header"]["sequence_number"] == 3
    assert (msg["family"], msg["prefixlen"], msg["index"]) == (family, 0, 0)


def _newaddr(family: int, prefixlen: int, index: int, attrs: list[tuple[str, object]]) -> bytes:
    msg = ifaddrmsg()
    msg["header"]["type"] = 20  # RTM_NEWADDR
    msg["header"]["flags"] = nl.NLM_F_MULTI
    msg["family"], msg["prefixlen"], msg["index"] = family, prefixlen, index
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _matches(data: bytes, index: int, want: str, prefixlen: int) -> bool:
    (msg,) = nl.iter_messages(data)
    found = rtaddr.decode(msg.payload)
    return found is not None and found.index == index and found.interface == ipaddress.ip_interface(
        f"{want}/{prefixlen}")


def test_address_match_reads_pyroute2_encoded_replies() -> None:
    v4 = _newaddr(socket.AF_INET, 24, 3, [("IFA_ADDRESS", "192.0.2.100"), ("IFA_LOCAL", "192.0.2.100"),
                                          ("IFA_LABEL", "eth0:0"), ("IFA_FLAGS", 0x80)])
    assert _matches(v4, 3, "192.0.2.100", 24)
    assert not _matches(v4, 4, "192.0.2.100", 24)  # another device
    assert not _matches(v4, 3, "192.0.2.100", 32)  # another prefix: another VIP
    assert not _matches(v4, 3, "192.0.2.101", 24)
    # point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours: ours is the one bound
    ptp = _newaddr(socket.AF_INET, 32, 3, [("IFA_ADDRESS", "198.51.100.1"), ("IFA_LOCAL", "192.0.2.100")])
    assert _matches(ptp, 3, "192.0.2.100", 32) and not _matches(ptp, 3, "198.51.100.1", 32)
    (label,) = nl.iter_messages(v4)
    assert rtaddr.decode(label.payload).label == "eth0:0"  # type: ignore[union-attr]
    v6 = _newaddr(socket.AF_INET6, 64, 5, [("IFA_ADDRESS", "2001:db8::100"), ("IFA_FLAGS", 0x2)])
    assert _matches(v6, 5, "2001:db8::100", 64)
    assert not _matches(v6, 5, "2001:db8::1", 64)


def test_a_short_or_foreign_payload_is_not_an_address() -> None:
    assert rtaddr.decode(b"\2\x18") is None
    assert rtaddr.decode(rtaddr.IFADDRMSG.pack(17, 0, 0, 0, 1)) is None  # AF_PACKET: not ours


# --------------------------------------------------------------------------- the address backend's requests


@pytest.mark.parametrize("msg_type", [rtaddr.RTM_NEWADDR, rtaddr.RTM_DELADDR])
def test_address_requests_read_back_in_pyroute2(msg_type: int) -> None:
    packed = socket.inet_pton(socket.AF_INET, "192.0.2.100")
    v4 = ifaddrmsg(rtaddr.address_request(msg_type, 9, 4, packed, 24, 3, label="eth0:0"))
    v4.decode()
    create = rtaddr.NLM_F_CREATE | rtaddr.NLM_F_EXCL if msg_type == rtaddr.RTM_NEWADDR else 0
    assert (v4["header"]["type"], v4["header"]["flags"], v4["header"]["sequence_number"]) == (
        msg_type, nl.NLM_F_REQUEST | nl.NLM_F_ACK | create, 9)
    assert (v4["family"], v4["prefixlen"], v4["index"]) == (socket.AF_INET, 24, 3)
    assert (v4.get_attr("IFA_LOCAL"), v4.get_attr("IFA_ADDRESS"), v4.get_attr("IFA_LABEL")) == (
        "192.0.2.100", "192.0.2.100", "eth0:0")
    v6 = ifaddrmsg(rtaddr.address_request(msg_type, 1, 6, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), 64, 5,
                                          flags=0x02))
    v6.decode()
    assert (v6["family"], v6["prefixlen"], v6["flags"], v6.get_attr("IFA_FLAGS")) == (socket.AF_INET6, 64, 2, 2)
    assert v6.get_attr("IFA_ADDRESS") == "2001:db8::1" and v6.get_attr("IFA_LOCAL") is None


def test_decode_reads_the_32_bit_flags_and_a_dump_can_name_its_device() -> None:
    (v4,) = nl.iter_messages(_newaddr(socket.AF_INET, 24, 3, [
        ("IFA_LOCAL", "192.0.2.100"), ("IFA_LABEL", "eth0:0"), ("IFA_FLAGS", 0x180)]))
    assert rtaddr.decode(v4.payload).flags == 0x180  # type: ignore[union-attr]
    msg = ifaddrmsg(rtaddr.getaddr_request(socket.AF_UNSPEC, seq=2, index=7))
    msg.decode()
    assert (msg["family"], msg["index"]) == (socket.AF_UNSPEC, 7)


# --------------------------------------------------------------------------- one request, its answer


class ScriptedNetlink:
    """Stands in for the kernel end of a netlink socket: each recvmsg returns the next scripted buffer."""

    def __init__(self, buffers: list[bytes]) -> None:
        self.buffers = list(buffers)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recvmsg(self, size: int) -> tuple[bytes, list, int, None]:
        return self.buffers.pop(0), [], 0, None


def scripted(buffers: list[bytes]) -> nlsock.NetlinkSocket:
    sock = object.__new__(nlsock.NetlinkSocket)  # no kernel socket: the framing is what is tested
    sock.name, sock.timeout, sock.requests, sock._seq = "test netlink", 1.0, 0, 0
    sock.sock = ScriptedNetlink(buffers)  # type: ignore[assignment]
    return sock


def done(seq: int, code: int = 0) -> bytes:
    return nl.nlmsg(nl.NLMSG_DONE, nl.NLM_F_MULTI, seq, struct.pack("=i", -code))


def test_a_dump_over_several_buffers_skips_late_answers_and_control_messages() -> None:
    parts = [nl.nlmsg(0x20, nl.NLM_F_MULTI, 5, bytes([n]) * (n + 1)) for n in range(4)]
    buffers = [nl.nlmsg(0x20, nl.NLM_F_MULTI, 4, b"late") + parts[0] + parts[1],
               nl.nlmsg(nl.NLMSG_NOOP, 0, 5, b"") + parts[2],
               parts[3] + done(5)]
    raw = scripted(list(buffers)).request_raw(b"request", 5)
    assert [buf[off:off + length] for buf, off, length in raw] == [p[:16 + n + 1] for n, p in enumerate(parts)]
    messages = scripted(list(buffers)).request(b"request", 5)
    assert messages == [next(nl.iter_messages(p)) for p in parts]


def test_a_refusal_or_a_failed_dump_is_an_error_with_the_kernels_errno() -> None:
    refusal = nl.nlmsg(nl.NLMSG_ERROR, 0, 3, struct.pack("=i", -errno.EPERM) + bytes(16))
    for buffers, code in (([refusal], errno.EPERM), ([nl.nlmsg(0x20, nl.NLM_F_MULTI, 3, b"x") + done(3, errno.EINTR)],
                                                    errno.EINTR)):
        for method in ("request", "request_raw"):
            with pytest.raises(ApplyError) as caught:
                getattr(scripted(list(buffers)), method)(b"request", 3)
            assert caught.value.errno == code
    ack = nl.nlmsg(nl.NLMSG_ERROR, 0, 3, struct.pack("=i", 0) + bytes(16))
    assert scripted([ack]).request(b"request", 3) == []


def test_the_kernel_answers_at_once_and_silence_is_a_timeout() -> None:
    """The socket is non-blocking; a receive with nothing queued waits up to the timeout, then fails."""
    from kanotify.backends.netlink import ipvs_msg as m

    sock = nlsock.NetlinkSocket(nl.NETLINK_GENERIC, "test netlink", timeout=0.2)
    try:
        assert sock.sock.gettimeout() == 0.0
        seq = sock.next_seq()
        (reply,) = sock.request(m.getfamily_request("nlctrl", seq), seq)  # the kernel's own family
        assert m.family_id(reply.payload) == m.GENL_ID_CTRL
        started = time.monotonic()
        with pytest.raises(ApplyError) as caught:
            sock._recv_raw()
        assert caught.value.errno == errno.ETIMEDOUT and "within 0.2s" in str(caught.value)
        assert 0.15 <= time.monotonic() - started < 2
    finally:
        sock.close()

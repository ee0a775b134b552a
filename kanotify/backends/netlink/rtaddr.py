"""rtnetlink address messages (``struct ifaddrmsg`` + attributes): the few kanotify reads itself.

Pure and standard library only.  Three users: the address backend
(:mod:`kanotify.backends.address`) binds, removes and lists VIPs with them
(``import pyroute2`` cost ~85 ms natively and ~400 ms in a UML guest, most of a
VIP failover's start-up, for these few messages); GARP's detached sender asks
"is this VIP still bound?" with one address dump; and the listener's address
watch (:mod:`kanotify.backends.addrwatch`) reads the kernel's address events
to repair a VIP removed behind its back.  As ``ip addr add`` does, an IPv4
address is sent with both ``IFA_LOCAL`` and ``IFA_ADDRESS`` and no broadcast.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from . import framing as nl

RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
#: multicast groups of address events (``RTMGRP_*``, the bind() bit mask)
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, ifindex
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_FLAGS = 8  # u32: the flags beyond the header's 8 bits (IFA_F_NOPREFIXROUTE, ...)

NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass(frozen=True)
class AddrMessage:
    """One address as an RTM_NEWADDR/RTM_DELADDR message has it (``flags``: ``IFA_F_*``, 32 bits)."""

    index: int
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    label: str | None
    flags: int = 0


def getaddr_request(family: int, seq: int, index: int = 0) -> bytes:
    """RTM_GETADDR dump request for the addresses of one family (``AF_UNSPEC``: all).

    ``index`` asks for one device's only; the kernel honours it on a socket
    with ``NETLINK_GET_STRICT_CHK`` (Linux >= 4.20), others send every device's.
    """
    return nl.nlmsg(RTM_GETADDR, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq, IFADDRMSG.pack(family, 0, 0, 0, index))


def address_request(
    msg_type: int, seq: int, version: int, packed: bytes, prefixlen: int, index: int,
    *, label: str | None = None, flags: int = 0,
) -> bytes:
    """RTM_NEWADDR (create, exclusive) or RTM_DELADDR for one address, asking for an ACK."""
    attrs = nl.nla(IFA_LOCAL, packed) + nl.nla(IFA_ADDRESS, packed) if version == 4 else nl.nla(IFA_ADDRESS, packed)
    if label:
        attrs += nl.nla(IFA_LABEL, label.encode() + b"\0")
    if flags:
        attrs += nl.nla(IFA_FLAGS, struct.pack("=I", flags))
    request = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    if msg_type == RTM_NEWADDR:
        request |= NLM_F_CREATE | NLM_F_EXCL
    payload = IFADDRMSG.pack(_FAMILY[version], prefixlen, flags & 0xFF, 0, index) + attrs
    return nl.nlmsg(msg_type, request, seq, payload)


def decode(payload: bytes) -> AddrMessage | None:
    """The address of an RTM_NEWADDR/RTM_DELADDR payload; None if it is not one kanotify reads."""
    if len(payload) < IFADDRMSG.size:
        return None
    family, prefixlen, flags, _scope, index = IFADDRMSG.unpack_from(payload, 0)
    attrs = nl.parse_attrs(payload, IFADDRMSG.size)
    if family == socket.AF_INET:
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        size = 4
    elif family == socket.AF_INET6:
        raw = attrs.get(IFA_ADDRESS)
        size = 16
    else:
        return None
    if raw is None or len(raw) < size:
        return None
    try:
        interface = ipaddress.ip_interface((ipaddress.ip_address(raw[:size]), prefixlen))
    except ValueError:
        return None
    label = attrs.get(IFA_LABEL)
    extended = attrs.get(IFA_FLAGS)
    if extended is not None and len(extended) >= 4:
        (flags,) = struct.unpack_from("=I", extended, 0)
    text = label.split(b"\0", 1)[0].decode(errors="replace") if label else None
    return AddrMessage(index, interface, text, flags)


__all__ = ["AddrMessage", "RTMGRP_IPV4_IFADDR", "RTMGRP_IPV6_IFADDR", "RTM_DELADDR", "RTM_NEWADDR",
           "address_request", "decode", "getaddr_request"]

"""rtnetlink address messages (``struct ifaddrmsg`` + attributes): the few kanotify reads itself.

Pure and standard library only.  Two users: GARP's detached sender asks
"is this VIP still bound?" with one address dump (it runs without pyroute2),
and the listener's address watch (:mod:`kanotify.backends.addrwatch`) reads
the kernel's address events to repair a VIP removed behind its back.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from . import netlink as nl

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


@dataclass(frozen=True)
class AddrMessage:
    """One address as an RTM_NEWADDR/RTM_DELADDR message has it."""

    index: int
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    label: str | None


def getaddr_request(family: int, seq: int) -> bytes:
    """RTM_GETADDR dump request for the addresses of one family (``struct ifaddrmsg``, all zero but it)."""
    return nl.nlmsg(RTM_GETADDR, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq, IFADDRMSG.pack(family, 0, 0, 0, 0))


def decode(payload: bytes) -> AddrMessage | None:
    """The address of an RTM_NEWADDR/RTM_DELADDR payload; None if it is not one kanotify reads."""
    if len(payload) < IFADDRMSG.size:
        return None
    family, prefixlen, _flags, _scope, index = IFADDRMSG.unpack_from(payload, 0)
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
    return AddrMessage(index, interface, label.split(b"\0", 1)[0].decode(errors="replace") if label else None)


__all__ = ["AddrMessage", "RTMGRP_IPV4_IFADDR", "RTMGRP_IPV6_IFADDR", "RTM_DELADDR", "RTM_NEWADDR",
           "decode", "getaddr_request"]

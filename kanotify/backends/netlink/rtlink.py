"""rtnetlink link messages (``struct ifinfomsg`` + attributes): the few kanotify sends itself.

Pure and standard library only, like :mod:`.rtaddr`.  One user: the link
backend (:mod:`kanotify.backends.link`), which reads one link by name and
creates the ``[bgp]`` dummy link (``ip link add kav0 type dummy``) up and
without ARP, or turns an existing one up and ARP off.  Links are never deleted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import framing as nl

RTM_NEWLINK = 16
RTM_GETLINK = 18

IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1

IFF_UP = 0x1
IFF_NOARP = 0x80

NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400


@dataclass(frozen=True)
class LinkMessage:
    """One link as an RTM_NEWLINK message has it (``kind``: ``IFLA_INFO_KIND``, "" for none)."""

    index: int
    name: str
    flags: int
    kind: str


def _name_attr(name: str) -> bytes:
    return nl.nla(IFLA_IFNAME, name.encode() + b"\0")


def getlink_request(seq: int, name: str) -> bytes:
    """RTM_GETLINK for one link by name (the kernel answers ENODEV when there is none)."""
    payload = IFINFOMSG.pack(0, 0, 0, 0, 0) + _name_attr(name)
    return nl.nlmsg(RTM_GETLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq, payload)


def new_dummy_request(seq: int, name: str, flags: int, change: int) -> bytes:
    """RTM_NEWLINK creating (exclusive) a dummy link ``name`` with ``flags`` set under the mask ``change``."""
    linkinfo = nl.nla(IFLA_INFO_KIND, b"dummy\0")
    payload = (IFINFOMSG.pack(0, 0, 0, flags, change) + _name_attr(name)
               + nl.nla(IFLA_LINKINFO | nl.NLA_F_NESTED, linkinfo))
    request = nl.NLM_F_REQUEST | nl.NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return nl.nlmsg(RTM_NEWLINK, request, seq, payload)


def set_flags_request(seq: int, index: int, flags: int, change: int) -> bytes:
    """RTM_NEWLINK changing only the flags under ``change`` of link ``index`` (``ip link set up arp off``)."""
    payload = IFINFOMSG.pack(0, 0, index, flags, change)
    return nl.nlmsg(RTM_NEWLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq, payload)


def decode(payload: bytes) -> LinkMessage | None:
    """The link of an RTM_NEWLINK payload; None if it is too short or has no name."""
    if len(payload) < IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(payload, 0)
    attrs = nl.parse_attrs(payload, IFINFOMSG.size)
    raw = attrs.get(IFLA_IFNAME)
    if raw is None:
        return None
    kind = ""
    info = attrs.get(IFLA_LINKINFO)
    if info is not None:
        text = nl.parse_attrs(info).get(IFLA_INFO_KIND)
        if text is not None:
            kind = text.split(b"\0", 1)[0].decode(errors="replace")
    return LinkMessage(index, raw.split(b"\0", 1)[0].decode(errors="replace"), flags, kind)


__all__ = ["IFF_NOARP", "IFF_UP", "LinkMessage", "RTM_NEWLINK", "decode", "getlink_request",
           "new_dummy_request", "set_flags_request"]

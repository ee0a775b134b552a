"""The IPVS sync daemon messages and their value type, without a kernel.

Three independent checks of the encoding: the kernel's own attribute policy
(``ip_vs_daemon_policy`` in ``net/netfilter/ipvs/ip_vs_ctl.c``, validated the
way ``nla_parse`` does, but strictly: exact lengths), pyroute2's genl message
classes (the outer message and the nesting; pyroute2 0.9.7 decodes the daemon
attribute only as hex, so the attribute types come from a small subclass that
follows ``include/uapi/linux/ip_vs.h``), and replies captured from Linux 7.2
in the UML guest.  The kernel itself is in ``tests/kernel/guest/``.
"""

from __future__ import annotations

import doctest
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink import genlmsg, nla
from pyroute2.netlink.generic import ipvs as pr

from kanotify import model
from kanotify.backends.netlink import ipvs_msg as m
from kanotify.backends.netlink import framing as nl
from kanotify.model import SyncDaemon

ip = ipaddress.ip_address
FAMILY = 0x1E  # the IPVS family id the guest's kernel handed out (any id works)
FLAGS = nl.NLM_F_REQUEST | nl.NLM_F_ACK

# --------------------------------------------------------------------------- the kernel's policy

#: ip_vs_daemon_policy (Linux 7.2): attribute -> (policy type, length).  For
#: NLA_NUL_STRING the length is the longest string without its NUL.
POLICY = {
    m.IPVS_DAEMON_ATTR_STATE: ("u32", 4),
    m.IPVS_DAEMON_ATTR_MCAST_IFN: ("nul_string", 15),  # IP_VS_IFNAME_MAXLEN - 1
    m.IPVS_DAEMON_ATTR_SYNC_ID: ("u32", 4),
    m.IPVS_DAEMON_ATTR_SYNC_MAXLEN: ("u16", 2),
    m.IPVS_DAEMON_ATTR_MCAST_GROUP: ("u32", 4),
    m.IPVS_DAEMON_ATTR_MCAST_GROUP6: ("min_len", 16),  # { .len = sizeof(struct in6_addr) }
    m.IPVS_DAEMON_ATTR_MCAST_PORT: ("u16", 2),
    m.IPVS_DAEMON_ATTR_MCAST_TTL: ("u8", 1),
}


def raw_attrs(data: bytes) -> list[tuple[int, bytes]]:
    """Every attribute of one level, in order, flags and all (parse_attrs keeps only the last of each)."""
    out, offset = [], 0
    while offset + 4 <= len(data):
        length, atype = struct.unpack_from("=HH", data, offset)
        assert length >= 4, f"malformed attribute at {offset}"
        out.append((atype, data[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    assert offset == len(data), "trailing bytes after the last attribute"
    return out


def policy_violations(inner: bytes) -> list[str]:
    """What the kernel's policy would refuse in these daemon attributes (strict: exact lengths)."""
    problems = []
    seen = set()
    for atype, data in raw_attrs(inner):
        if atype & (nl.NLA_F_NESTED | nl.NLA_F_NET_BYTEORDER):
            problems.append(f"attribute {atype:#x} carries flags")
        atype &= nl.NLA_TYPE_MASK
        if atype in seen:
            problems.append(f"attribute {atype} twice")
        seen.add(atype)
        if atype not in POLICY:
            problems.append(f"attribute {atype} is not in the policy")
            continue
        kind, length = POLICY[atype]
        if kind == "nul_string":
            if b"\0" not in data[: length + 1]:
                problems.append(f"attribute {atype}: no NUL within {length + 1} bytes")
            elif len(data.rstrip(b"\0")) > length or data.index(b"\0") != len(data) - 1:
                problems.append(f"attribute {atype}: {data!r} is not one string of at most {length} bytes")
        elif kind == "min_len":
            if len(data) != length:  # the kernel takes >= 16; kanotify sends exactly an in6_addr
                problems.append(f"attribute {atype}: {len(data)} bytes, expected {length}")
        elif len(data) != length:
            problems.append(f"attribute {atype} ({kind}): {len(data)} bytes, expected {length}")
    return problems


def daemon_inner(request: bytes) -> bytes:
    (msg,) = nl.iter_messages(request)
    cmd, attrs = m.genl_attrs(msg.payload)
    assert list(attrs) == [m.IPVS_CMD_ATTR_DAEMON]
    return attrs[m.IPVS_CMD_ATTR_DAEMON]


DAEMONS = [
    SyncDaemon("master", "eth0", 51),
    SyncDaemon("backup", "eth0", 51),
    SyncDaemon("master", "eth0", 0, maxlen=1),
    SyncDaemon("backup", "bond0.100", 255, 65507, ip("239.255.0.1"), 65535, 255),
    SyncDaemon("master", "abcdefghijklmno", 7, 1400, ip("ff02::81"), 9000, 5),  # a 15-character name
    SyncDaemon("backup", "eth1", 1, 65487, ip("ff05::1:3"), 1, 1),
]


@pytest.mark.parametrize("daemon", DAEMONS, ids=str)
def test_start_request_satisfies_the_kernel_policy(daemon: SyncDaemon) -> None:
    inner = daemon_inner(m.daemon_start_request(FAMILY, 1, daemon, FLAGS))
    assert policy_violations(inner) == []
    types = [atype for atype, _data in raw_attrs(inner)]
    # ip_vs_genl_new_daemon refuses (EINVAL) a start without state, interface and sync id
    assert {m.IPVS_DAEMON_ATTR_STATE, m.IPVS_DAEMON_ATTR_MCAST_IFN, m.IPVS_DAEMON_ATTR_SYNC_ID} <= set(types)
    # exactly one group attribute, of the group's family
    groups = {m.IPVS_DAEMON_ATTR_MCAST_GROUP, m.IPVS_DAEMON_ATTR_MCAST_GROUP6} & set(types)
    assert groups == {m.IPVS_DAEMON_ATTR_MCAST_GROUP if daemon.family == 4 else m.IPVS_DAEMON_ATTR_MCAST_GROUP6}
    assert (m.IPVS_DAEMON_ATTR_SYNC_MAXLEN in types) == (daemon.maxlen is not None)


@pytest.mark.parametrize("state", ["master", "backup"])
def test_stop_request_carries_the_state_only(state: str) -> None:
    inner = daemon_inner(m.daemon_stop_request(FAMILY, 1, state, FLAGS))
    assert policy_violations(inner) == []
    assert raw_attrs(inner) == [(m.IPVS_DAEMON_ATTR_STATE, struct.pack("=I", 1 if state == "master" else 2))]


def test_byte_orders() -> None:
    """Port: u16 in HOST order (the kernel's nla_get_u16); group: an in_addr in network order."""
    daemon = SyncDaemon("master", "eth0", 51, 1400, ip("239.1.2.3"), 0x1234, 3)
    attrs = dict(raw_attrs(daemon_inner(m.daemon_start_request(FAMILY, 1, daemon, FLAGS))))
    assert attrs[m.IPVS_DAEMON_ATTR_MCAST_PORT] == struct.pack("=H", 0x1234)
    assert attrs[m.IPVS_DAEMON_ATTR_MCAST_GROUP] == bytes([239, 1, 2, 3])
    assert attrs[m.IPVS_DAEMON_ATTR_SYNC_MAXLEN] == struct.pack("=H", 1400)
    assert attrs[m.IPVS_DAEMON_ATTR_MCAST_TTL] == b"\x03"
    assert attrs[m.IPVS_DAEMON_ATTR_MCAST_IFN] == b"eth0\0"
    assert attrs[m.IPVS_DAEMON_ATTR_SYNC_ID] == struct.pack("=I", 51)


def test_the_policy_checker_catches_what_the_kernel_refuses() -> None:
    """The checker itself, on what the guest kernel answered with 'Attribute failed policy validation'."""
    assert policy_violations(nl.nla(m.IPVS_DAEMON_ATTR_MCAST_IFN, b"abcdefghijklmnop\0"))  # 16 characters
    assert policy_violations(nl.nla(m.IPVS_DAEMON_ATTR_MCAST_IFN, b"eth0"))  # no NUL
    assert policy_violations(nl.nla(m.IPVS_DAEMON_ATTR_STATE, b"\x01"))  # u8 for a u32
    assert policy_violations(nl.nla(m.IPVS_DAEMON_ATTR_MCAST_GROUP, b"\xef\x01"))
    assert policy_violations(nl.nla(m.IPVS_DAEMON_ATTR_MCAST_GROUP6, b"\xff\x02\0\0"))
    assert policy_violations(nl.nla(9, b""))


# --------------------------------------------------------------------------- pyroute2 as the oracle


class daemonmsg(genlmsg):
    """pyroute2's IPVS message with the daemon attribute spelled out (include/uapi/linux/ip_vs.h).

    A sibling of ``pr.ipvsmsg``, not a subclass: pyroute2 compiles ``nla_map``
    once per class hierarchy, so a subclass's map is ignored once the parent's
    has been used.
    """

    prefix = "IPVS_CMD_ATTR_"
    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "hex"),
        ("IPVS_CMD_ATTR_DEST", "hex"),
        ("IPVS_CMD_ATTR_DAEMON", "daemon"),
    )

    class daemon(nla):
        prefix = "IPVS_DAEMON_ATTR_"
        nla_map = (
            ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
            ("IPVS_DAEMON_ATTR_STATE", "uint32"),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
            ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
            ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP", "ip4addr"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "ip6addr"),
            ("IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
        )


def test_outer_message_and_nesting_in_pyroute2() -> None:
    """pyroute2's own ipvsmsg: header, command, version, and one nested daemon attribute."""
    daemon = DAEMONS[3]
    data = m.daemon_start_request(FAMILY, 77, daemon, FLAGS)
    msg = pr.ipvsmsg(data)
    msg.decode()
    assert msg["header"]["type"] == FAMILY
    assert msg["header"]["flags"] == FLAGS
    assert msg["header"]["sequence_number"] == 77
    assert msg["header"]["length"] == len(data)
    assert (msg["cmd"], msg["version"]) == (pr.IPVS_CMD_NEW_DAEMON, 1)
    assert [name for name, _v in msg["attrs"]] == ["IPVS_CMD_ATTR_DAEMON"]
    hexed = msg.get("IPVS_CMD_ATTR_DAEMON").replace(":", "")
    assert bytes.fromhex(hexed) == m.daemon_attrs(daemon)
    stop = pr.ipvsmsg(m.daemon_stop_request(FAMILY, 78, "backup", nl.NLM_F_REQUEST))
    stop.decode()
    assert stop["cmd"] == pr.IPVS_CMD_DEL_DAEMON
    # the command numbers agree with pyroute2's
    assert (m.IPVS_CMD_NEW_DAEMON, m.IPVS_CMD_DEL_DAEMON, m.IPVS_CMD_GET_DAEMON) == (
        pr.IPVS_CMD_NEW_DAEMON, pr.IPVS_CMD_DEL_DAEMON, pr.IPVS_CMD_GET_DAEMON
    )


@pytest.mark.parametrize("daemon", DAEMONS, ids=str)
def test_attributes_read_back_in_pyroute2(daemon: SyncDaemon) -> None:
    msg = daemonmsg(m.daemon_start_request(FAMILY, 1, daemon, FLAGS))
    msg.decode()
    attrs = msg.get("IPVS_CMD_ATTR_DAEMON")
    assert attrs.get("IPVS_DAEMON_ATTR_STATE") == {"master": 1, "backup": 2}[daemon.state]
    assert attrs.get("IPVS_DAEMON_ATTR_MCAST_IFN") == daemon.interface
    assert attrs.get("IPVS_DAEMON_ATTR_SYNC_ID") == daemon.sync_id
    assert attrs.get("IPVS_DAEMON_ATTR_SYNC_MAXLEN") == daemon.maxlen
    group = attrs.get("IPVS_DAEMON_ATTR_MCAST_GROUP") or attrs.get("IPVS_DAEMON_ATTR_MCAST_GROUP6")
    assert ip(group) == daemon.group
    assert attrs.get("IPVS_DAEMON_ATTR_MCAST_PORT") == daemon.port
    assert attrs.get("IPVS_DAEMON_ATTR_MCAST_TTL") == daemon.ttl


def pyroute2_reply(fields: list[tuple[str, object]], seq: int = 4) -> bytes:
    """A dump part as the kernel sends it (NEW_DAEMON, NLM_F_MULTI), encoded by pyroute2."""
    out = daemonmsg()
    out["cmd"] = pr.IPVS_CMD_NEW_DAEMON
    out["version"] = 1
    out["header"]["type"] = FAMILY
    out["header"]["flags"] = nl.NLM_F_MULTI
    out["header"]["sequence_number"] = seq
    out["attrs"] = [("IPVS_CMD_ATTR_DAEMON", {"attrs": fields})]
    out.encode()
    return bytes(out.data)


def test_pyroute2_encoded_reply_decodes() -> None:
    data = pyroute2_reply([
        ("IPVS_DAEMON_ATTR_STATE", 2),
        ("IPVS_DAEMON_ATTR_MCAST_IFN", "eth0"),
        ("IPVS_DAEMON_ATTR_SYNC_ID", 9),
        ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", 1024),
        ("IPVS_DAEMON_ATTR_MCAST_PORT", 7777),
        ("IPVS_DAEMON_ATTR_MCAST_TTL", 2),
        ("IPVS_DAEMON_ATTR_MCAST_GROUP", "239.0.0.9"),
    ])
    (msg,) = nl.iter_messages(data)
    daemon = m.daemon_from_payload(msg.payload)
    assert daemon == SyncDaemon("backup", "eth0", 9, 1024, ip("239.0.0.9"), 7777, 2)
    assert daemon.maxlen == 1024


# --------------------------------------------------------------------------- replies of the real kernel

#: One recv of an IPVS_CMD_GET_DAEMON dump, Linux 7.2 (UML guest), after
#: ``ipvsadm --start-daemon master --mcast-interface eth0 --syncid 51`` and
#: ``ipvsadm --start-daemon backup --mcast-interface jumbo0 --syncid 7 --mcast-group ff02::81
#: --mcast-port 9000 --mcast-ttl 5`` (jumbo0: MTU 9000).  ``ipvsadm -L --daemon`` showed
#: ``maxlen=1472`` and ``maxlen=8952``.
CAPTURED = bytes.fromhex(
    "540000001e000200020000000f03000009010000400003000800010001000000090002006574683000000000"
    "080003003300000006000400c00500000600070090220000050008000100000008000500e0000051"
    "600000001e000200020000000f030000090100004c00030008000100020000000b0002006a756d626f3000"
    "00080003000700000006000400f82200000600070028230000050008000500000014000600ff02000000000000"
    "0000000000000081"
)
CAPTURED_DONE = bytes.fromhex("1400000003000200020000000f03000000000000")


def test_captured_dump_decodes() -> None:
    msgs = list(nl.iter_messages(CAPTURED + CAPTURED_DONE))
    assert [(x.type, x.flags, x.seq) for x in msgs] == [(FAMILY, nl.NLM_F_MULTI, 2)] * 2 + [(nl.NLMSG_DONE, nl.NLM_F_MULTI, 2)]
    assert nl.done_error(msgs[2]) == 0
    master, backup = (m.daemon_from_payload(x.payload) for x in msgs[:2])
    # exactly what the kernel reports, maxlen included ...
    assert (master.state, master.interface, master.sync_id, master.maxlen) == ("master", "eth0", 51, 1472)
    assert (master.group, master.port, master.ttl) == (ip("224.0.0.81"), 8848, 1)
    assert (backup.state, backup.interface, backup.sync_id, backup.maxlen) == ("backup", "jumbo0", 7, 8952)
    assert (backup.group, backup.port, backup.ttl) == (ip("ff02::81"), 9000, 5)
    # ... and equal to what was started, the kernel's computed maxlen notwithstanding
    assert master == SyncDaemon("master", "eth0", 51)
    assert backup == SyncDaemon("backup", "jumbo0", 7, group=ip("ff02::81"), port=9000, ttl=5)
    assert str(master) == "master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
    assert str(backup) == "backup sync daemon (mcast=jumbo0, syncid=7, maxlen=8952, group=ff02::81, port=9000, ttl=5)"


def test_captured_dump_in_pyroute2() -> None:
    """The oracle reads the same capture the same way."""
    msg = daemonmsg(CAPTURED[:0x54])
    msg.decode()
    attrs = msg.get("IPVS_CMD_ATTR_DAEMON")
    assert (msg["cmd"], attrs.get("IPVS_DAEMON_ATTR_MCAST_IFN"), attrs.get("IPVS_DAEMON_ATTR_SYNC_MAXLEN")) == (
        pr.IPVS_CMD_NEW_DAEMON, "eth0", 1472
    )
    assert attrs.get("IPVS_DAEMON_ATTR_MCAST_PORT") == 8848
    assert attrs.get("IPVS_DAEMON_ATTR_MCAST_GROUP") == "224.0.0.81"


def test_old_kernel_reply_gets_the_defaults() -> None:
    """Before Linux 4.3 a dump carried state, interface and sync id only."""
    inner = (
        nl.nla(m.IPVS_DAEMON_ATTR_STATE, struct.pack("=I", 1))
        + nl.nla(m.IPVS_DAEMON_ATTR_MCAST_IFN, b"eth0\0")
        + nl.nla(m.IPVS_DAEMON_ATTR_SYNC_ID, struct.pack("=I", 3))
    )
    payload = struct.pack("=BBH", m.IPVS_CMD_NEW_DAEMON, 1, 0) + nl.nla(m.IPVS_CMD_ATTR_DAEMON, inner)
    daemon = m.daemon_from_payload(payload)
    assert daemon == SyncDaemon("master", "eth0", 3)
    assert daemon.maxlen is None


@pytest.mark.parametrize(
    ("inner", "match"),
    [
        (nl.nla(m.IPVS_DAEMON_ATTR_STATE, struct.pack("=I", 3)) + nl.nla(2, b"eth0\0"), "unknown state 3"),
        (nl.nla(m.IPVS_DAEMON_ATTR_STATE, struct.pack("=I", 1)), "without an interface"),
        # the kernel keeps a sync id above 255 from a raw netlink client (ipvsadm refuses it)
        (nl.nla(1, struct.pack("=I", 1)) + nl.nla(2, b"eth0\0") + nl.nla(3, struct.pack("=I", 511)), "sync_id 511"),
    ],
)
def test_unreadable_replies_are_decode_errors(inner: bytes, match: str) -> None:
    payload = struct.pack("=BBH", m.IPVS_CMD_NEW_DAEMON, 1, 0) + nl.nla(m.IPVS_CMD_ATTR_DAEMON, inner)
    with pytest.raises(nl.DecodeError, match=match):
        m.daemon_from_payload(payload)
    with pytest.raises(nl.DecodeError, match="without IPVS_CMD_ATTR_DAEMON"):
        m.daemon_from_payload(struct.pack("=BBH", m.IPVS_CMD_NEW_DAEMON, 1, 0))


# --------------------------------------------------------------------------- round trips


@st.composite
def daemons(draw: st.DrawFn) -> SyncDaemon:
    state = draw(st.sampled_from(model.SYNC_STATES))
    family = draw(st.sampled_from([4, 6]))
    if family == 4:
        group: model.IPAddress = ipaddress.IPv4Address(draw(st.integers(0xE0000000, 0xEFFFFFFF)))
    else:
        group = ipaddress.IPv6Address((0xFF << 120) | draw(st.integers(0, 2**120 - 1)))
    high = 65535 - (28 if family == 4 else 48)
    low = 1 if state == "master" else 1024
    name = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="/"), min_size=1, max_size=15))
    return SyncDaemon(
        state=state,
        interface=name,
        sync_id=draw(st.integers(0, 255)),
        maxlen=draw(st.none() | st.integers(low, high)),
        group=group,
        port=draw(st.integers(1, 65535)),
        ttl=draw(st.integers(1, 255)),
    )


def _as_reply(request: bytes) -> bytes:
    """A start request turned into the dump part the kernel answers with (same attributes)."""
    (msg,) = nl.iter_messages(request)
    return struct.pack("=BBH", m.IPVS_CMD_NEW_DAEMON, 1, 0) + msg.payload[4:]


@settings(max_examples=300, deadline=None)
@given(daemons())
def test_round_trip_is_exact(daemon: SyncDaemon) -> None:
    request = m.daemon_start_request(FAMILY, 1, daemon, FLAGS)
    assert policy_violations(daemon_inner(request)) == []
    back = m.daemon_from_payload(_as_reply(request))
    assert back == daemon
    assert back.maxlen == daemon.maxlen  # exact, not only "equal as configuration"


@settings(max_examples=100, deadline=None)
@given(daemons())
def test_pyroute2_agrees_on_every_daemon(daemon: SyncDaemon) -> None:
    msg = daemonmsg(m.daemon_start_request(FAMILY, 1, daemon, FLAGS))
    msg.decode()
    attrs = msg.get("IPVS_CMD_ATTR_DAEMON")
    assert "UNKNOWN" not in [name for name, _v in attrs["attrs"]]
    assert attrs.get("IPVS_DAEMON_ATTR_MCAST_IFN") == daemon.interface
    assert attrs.get("IPVS_DAEMON_ATTR_MCAST_PORT") == daemon.port


# --------------------------------------------------------------------------- the value type


def test_docstring_example() -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(SyncDaemon, "SyncDaemon", globs={"SyncDaemon": SyncDaemon}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 3


def test_defaults_are_the_kernels() -> None:
    daemon = SyncDaemon("backup", "eth0")
    assert (daemon.sync_id, daemon.maxlen, daemon.group, daemon.port, daemon.ttl) == (0, None, ip("224.0.0.81"), 8848, 1)
    assert daemon.family == 4 and daemon.header_len == 28
    assert SyncDaemon("backup", "eth0", group=ip("ff02::81")).header_len == 48


def test_equality_compares_maxlen_only_when_both_set() -> None:
    default = SyncDaemon("master", "eth0", 51)
    reported = SyncDaemon("master", "eth0", 51, maxlen=1472)
    assert default == reported and hash(default) == hash(reported)
    assert SyncDaemon("master", "eth0", 51, maxlen=1400) != reported  # the user set another maxlen
    assert SyncDaemon("master", "eth0", 51, maxlen=1400) == default
    for other in (
        SyncDaemon("backup", "eth0", 51),
        SyncDaemon("master", "eth1", 51),
        SyncDaemon("master", "eth0", 52),
        SyncDaemon("master", "eth0", 51, group=ip("239.0.0.1")),
        SyncDaemon("master", "eth0", 51, group=ip("ff02::81")),
        SyncDaemon("master", "eth0", 51, port=8849),
        SyncDaemon("master", "eth0", 51, ttl=2),
    ):
        assert other != default
    assert default != "master sync daemon"
    assert {default, reported} == {default}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state": "fault"}, "state 'fault': expected master or backup"),
        ({"interface": ""}, "interface '': expected a device name of 1..15"),
        ({"interface": "abcdefghijklmnop"}, "interface 'abcdefghijklmnop'"),  # 16: the kernel's policy refuses it
        ({"interface": "eth 0"}, "interface 'eth 0'"),
        ({"sync_id": 256}, "sync_id 256: expected 0..255"),
        ({"sync_id": -1}, "sync_id -1"),
        ({"group": ip("192.0.2.1")}, "group 192.0.2.1: expected a multicast address"),
        ({"group": ip("2001:db8::1")}, "group 2001:db8::1: expected a multicast address"),
        ({"port": 0}, "port 0: expected 1..65535"),  # the kernel would run it on 8848
        ({"ttl": 0}, "ttl 0: expected 1..255"),  # the kernel would use 1
        ({"ttl": 256}, "ttl 256"),
        ({"maxlen": 0}, r"maxlen 0: expected 1\.\.65507"),
        ({"maxlen": 65508}, r"maxlen 65508: expected 1\.\.65507"),  # the kernel clamps to 65535 - 28
        ({"state": "backup", "maxlen": 1023}, r"maxlen 1023: expected 1024\.\.65507"),  # clamped up to 1024
        ({"maxlen": 65488, "group": ip("ff02::81")}, r"maxlen 65488: expected 1\.\.65487"),
    ],
)
def test_values_the_kernel_would_change_are_refused(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"state": "master", "interface": "eth0", "sync_id": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        SyncDaemon(**args)  # type: ignore[arg-type]


def test_stop_of_an_unknown_state_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="sync daemon state 'both'"):
        m.daemon_stop_request(FAMILY, 1, "both", FLAGS)

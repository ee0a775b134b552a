"""Tunnels to real servers (``forward = "tun"`` with ``tun_type``/``tun_port``/``tun_flags``), without a kernel.

The wire format is pinned here against the kernel's layout (``include/uapi/linux/ip_vs.h``,
``ip_vs_genl_parse_dest``/``ip_vs_genl_fill_dest``) and against pyroute2 where pyroute2 is right;
the guest tests (``tests/kernel/guest/test_guest_ipvs_tunnels.py``) prove it on a real kernel.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink.generic import ipvs as pr

from kanotify.actions import AddReal, EditReal
from kanotify.backends.memory import MemoryBackend
from kanotify.backends.netlink import framing as nl
from kanotify.backends.netlink import ipvs_msg as m
from kanotify.config.schema import parse_config
from kanotify.errors import ApplyError, ConfigError
from kanotify.keepalived.conf import parse_text
from kanotify.keepalived.importer import import_conf, render
from kanotify.model import FORWARDS, TUN_FLAGS, TUN_TYPES, RealServer, RealServerStats, ServiceKey, State
from kanotify.plan import desired_for, plan

ip = ipaddress.ip_address
FAMILY = 0x1234
KEY = ServiceKey.inet("tcp", ip("192.0.2.10"), 80)
GUE = RealServer(ip("198.51.100.1"), 80, "tun", 1, tun_type="gue", tun_port=6080, tun_flags="csum")
GRE = RealServer(ip("198.51.100.2"), 80, "tun", 2, tun_type="gre", tun_flags="csum")
IPIP = RealServer(ip("198.51.100.3"), 80, "tun", 3)


def _dest_attrs(data: bytes) -> dict[int, bytes]:
    (msg,) = nl.iter_messages(data)
    _cmd, attrs = m.genl_attrs(msg.payload)
    return nl.parse_attrs(attrs[m.IPVS_CMD_ATTR_DEST])


# --------------------------------------------------------------------------- the codec


def test_kernel_constants_are_the_uapi_ones() -> None:
    """include/uapi/linux/ip_vs.h: the dest attribute enum, IP_VS_CONN_F_TUNNEL_TYPE_*, IP_VS_TUNNEL_ENCAP_FLAG_*."""
    assert (m.IPVS_DEST_ATTR_TUN_TYPE, m.IPVS_DEST_ATTR_TUN_PORT, m.IPVS_DEST_ATTR_TUN_FLAGS) == (13, 14, 15)
    assert dict(m.TUN_TYPE_CODES) == {"ipip": 0, "gue": 1, "gre": 2}
    assert dict(m.TUN_FLAG_CODES) == {"nocsum": 0, "csum": 1, "remcsum": 2}
    assert set(m.TUN_TYPE_CODES) == set(TUN_TYPES) and set(m.TUN_FLAG_CODES) == set(TUN_FLAGS)
    # pyroute2 numbers the attributes alike (its nla_map is positional)
    names = [name for name, _t in pr.ipvsmsg.dest.nla_map]
    assert [names.index(f"IPVS_DEST_ATTR_TUN_{n}") for n in ("TYPE", "PORT", "FLAGS")] == [13, 14, 15]


@pytest.mark.parametrize("real", [GUE, GRE, replace(GUE, tun_flags="remcsum", tun_port=1), replace(GRE, tun_flags="nocsum")],
                         ids=str)
def test_tunnel_attributes_by_bytes_and_in_pyroute2(real: RealServer) -> None:
    """Type u8, flags u16 (host order) as pyroute2 reads them; the port by bytes: network order (the kernel's
    ``nla_get_be16``), which pyroute2 0.9 declares ``uint16`` and so reads byte-swapped."""
    data = m.dest_request(FAMILY, m.IPVS_CMD_NEW_DEST, 5, KEY, real, nl.NLM_F_REQUEST)
    attrs = _dest_attrs(data)
    assert attrs[m.IPVS_DEST_ATTR_TUN_TYPE] == bytes([m.TUN_TYPE_CODES[real.tun_type]])
    assert attrs[m.IPVS_DEST_ATTR_TUN_PORT] == real.tun_port.to_bytes(2, "big")
    assert attrs[m.IPVS_DEST_ATTR_TUN_FLAGS] == struct.pack("=H", m.TUN_FLAG_CODES[real.tun_flags])
    dest = pr.ipvsmsg(data)
    dest.decode()
    parsed = dest.get("IPVS_CMD_ATTR_DEST")
    assert parsed.get("IPVS_DEST_ATTR_TUN_TYPE") == m.TUN_TYPE_CODES[real.tun_type]
    assert parsed.get("IPVS_DEST_ATTR_TUN_FLAGS") == m.TUN_FLAG_CODES[real.tun_flags]
    assert parsed.get("IPVS_DEST_ATTR_TUN_PORT") == struct.unpack("=H", real.tun_port.to_bytes(2, "big"))[0]
    assert parsed.get("IPVS_DEST_ATTR_WEIGHT") == real.weight  # the rest of the message is intact
    assert parsed.get("IPVS_DEST_ATTR_L_THRESH") == real.l_threshold
    assert "UNKNOWN" not in [name for name, _v in parsed["attrs"]]


@pytest.mark.parametrize("real", [IPIP, RealServer(ip("198.51.100.4"), 80, "dr"), RealServer(ip("198.51.100.4"), 81, "nat")],
                         ids=str)
def test_plain_ipip_and_other_forwards_send_no_tunnel_attribute(real: RealServer) -> None:
    """The kernel zeroes the request before parsing: absent is ipip/0/nocsum, and a pre-5.2 kernel takes it."""
    data = m.dest_request(FAMILY, m.IPVS_CMD_SET_DEST, 5, KEY, real, nl.NLM_F_REQUEST)
    assert not {m.IPVS_DEST_ATTR_TUN_TYPE, m.IPVS_DEST_ATTR_TUN_PORT, m.IPVS_DEST_ATTR_TUN_FLAGS} & set(_dest_attrs(data))


def test_a_gue_tunnel_without_a_port_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="tunnel port 0"):
        m.dest_attrs(replace(GUE, tun_port=0))
    with pytest.raises(ValueError, match="unknown tunnel"):
        m.dest_attrs(replace(GUE, tun_type="vxlan"))


TUNNELS = st.one_of(
    st.just(("ipip", 0, "nocsum")),
    st.tuples(st.just("gue"), st.integers(1, 65535), st.sampled_from(TUN_FLAGS)),
    st.tuples(st.just("gre"), st.just(0), st.sampled_from(("nocsum", "csum"))),
)


@st.composite
def tunnelled(draw: st.DrawFn) -> RealServer:
    family = draw(st.sampled_from([4, 6]))
    address = ipaddress.ip_address(draw(st.integers(1, 2**32 - 1 if family == 4 else 2**128 - 1)))
    if family == 6:
        address = ipaddress.IPv6Address(int(address))
    return RealServer(address, draw(st.integers(0, 65535)), draw(st.sampled_from(FORWARDS)),
                      draw(st.integers(0, 65535)), 0, 0, *draw(TUNNELS))


@settings(max_examples=200, deadline=None)
@given(tunnelled())
def test_round_trip_with_tunnels(real: RealServer) -> None:
    data = m.dest_request(FAMILY, m.IPVS_CMD_NEW_DEST, 1, ServiceKey.mark(1, real.address.version), real,
                          nl.NLM_F_REQUEST)
    (msg,) = nl.iter_messages(data)
    assert m.dest_from_payload(msg.payload, real.address.version) == (real, RealServerStats())


def kernel_reply(real: RealServer, seq: int = 7, tunnel: tuple[str, ...] = ("type", "port", "flags")) -> bytes:
    """A dest dump reply laid out as Linux 7.2's ip_vs_genl_fill_dest writes it (nla_put_u8 / _be16 / _u16)."""
    u32 = struct.Struct("=I").pack
    tun = {
        "type": nl.nla(m.IPVS_DEST_ATTR_TUN_TYPE, bytes([m.TUN_TYPE_CODES[real.tun_type]])),
        "port": nl.nla(m.IPVS_DEST_ATTR_TUN_PORT, struct.pack("!H", real.tun_port)),
        "flags": nl.nla(m.IPVS_DEST_ATTR_TUN_FLAGS, struct.pack("=H", m.TUN_FLAG_CODES[real.tun_flags])),
    }
    parts = [
        nl.nla(m.IPVS_DEST_ATTR_ADDR, real.address.packed.ljust(16, b"\0")),
        nl.nla(m.IPVS_DEST_ATTR_PORT, struct.pack("!H", real.port)),
        nl.nla(m.IPVS_DEST_ATTR_FWD_METHOD, u32(m.FORWARD_CODES[real.forward])),
        nl.nla(m.IPVS_DEST_ATTR_WEIGHT, u32(real.weight)),
        *(tun[name] for name in tunnel),
        nl.nla(m.IPVS_DEST_ATTR_U_THRESH, u32(real.u_threshold)),
        nl.nla(m.IPVS_DEST_ATTR_L_THRESH, u32(real.l_threshold)),
        nl.nla(m.IPVS_DEST_ATTR_ACTIVE_CONNS, u32(2)),
        nl.nla(m.IPVS_DEST_ATTR_INACT_CONNS, u32(1)),
        nl.nla(m.IPVS_DEST_ATTR_PERSIST_CONNS, u32(0)),
        nl.nla(m.IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", 2 if real.address.version == 4 else 10)),
    ]
    return nl.nlmsg(FAMILY, nl.NLM_F_MULTI, seq, struct.pack("=BBH", m.IPVS_CMD_NEW_DEST, 1, 0)
                    + nl.nla(m.IPVS_CMD_ATTR_DEST, b"".join(parts)))


def _bulk(buffer: bytes, memo: m.RealsMemo | None = None) -> dict:
    return m.decode_dests([(buffer, off, length) for off, length, *_ in nl.iter_headers(buffer)], 4, memo)


@pytest.mark.parametrize("tunnel", [("type", "port", "flags"), (), ("type", "port")], ids=["7.2", "5.1", "5.2"])
def test_bulk_decode_reads_the_tunnel_as_parsing_one_by_one_does(tunnel: tuple[str, ...],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Read by offsets once learned (Linux 5.3+ and pre-5.2 layouts), or one by one (5.2's partial one)."""
    monkeypatch.setattr(m, "_LAYOUTS", {})
    reals = [GUE, GRE, IPIP, replace(GUE, address=ip("198.51.100.9"), tun_port=0x1234, tun_flags="remcsum")]
    if not tunnel:  # a kernel without tunnel attributes forwards plain IPIP
        reals = [replace(r, tun_type="ipip", tun_port=0, tun_flags="nocsum") for r in reals]
    buffer = b"".join(kernel_reply(r, tunnel=tunnel) for r in reals)
    expected = {r.key: (r, RealServerStats(2, 1)) for r in reals}
    if tunnel == ("type", "port"):  # no flags attribute: nocsum
        expected = {k: (replace(r, tun_flags="nocsum"), s) for k, (r, s) in expected.items()}
    memo: m.RealsMemo = {}
    assert _bulk(buffer) == expected  # learns the layout from the first reply
    assert _bulk(buffer, memo) == expected  # by offsets
    assert _bulk(buffer, memo) == expected  # from the memo
    assert (m._LAYOUTS[len(kernel_reply(GUE, tunnel=tunnel))] is None) == (tunnel == ("type", "port"))


def test_decode_of_unknown_tunnel_values_shows_them() -> None:
    attrs = _dest_attrs(m.dest_request(FAMILY, m.IPVS_CMD_NEW_DEST, 1, KEY, GUE, nl.NLM_F_REQUEST))
    attrs[m.IPVS_DEST_ATTR_TUN_TYPE] = b"\x07"
    attrs[m.IPVS_DEST_ATTR_TUN_FLAGS] = struct.pack("=H", 3)
    real, _stats = m.decode_dest(attrs, 4)
    assert (real.tun_type, real.tun_flags) == ("tun-7", "flags-0x3")
    assert real != GUE


# --------------------------------------------------------------------------- the model's text


def test_text_of_a_tunnelled_real_server() -> None:
    assert str(GUE) == "198.51.100.1:80 tun gue port 6080 csum weight 1"
    assert str(GRE) == "198.51.100.2:80 tun gre csum weight 2"
    assert str(IPIP) == "198.51.100.3:80 tun weight 3"
    edit = EditReal(KEY, replace(GUE, tun_type="ipip", tun_port=0, tun_flags="nocsum"), GUE)
    assert str(edit) == ("edit real server 198.51.100.1:80 of tcp 192.0.2.10:80: tun_type ipip -> gue, "
                         "tun_port 0 -> 6080, tun_flags nocsum -> csum")


# --------------------------------------------------------------------------- config

BASE = '''[[instance]]
name = "VI_1"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.10"
  port = 80
    [[instance.service.real]]
    address = "198.51.100.1"
'''


def _problems(extra: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra, "t.toml")
    return [(p.path, p.message) for p in info.value.problems]


@pytest.mark.parametrize("extra, path, words", [
    ('tun_type = "gue"\n', "tun_type", 'only for forward = "tun" (this real server\'s forward is "dr")'),
    ('forward = "nat"\ntun_port = 6080\n', "tun_port", "only for forward"),
    ('forward = "tun"\ntun_type = "gue"\n', "tun_port", 'missing required key for tun_type = "gue"'),
    ('forward = "tun"\ntun_type = "gue"\ntun_port = 0\n', "tun_port", "expected an integer 1..65535, got 0"),
    ('forward = "tun"\ntun_type = "gue"\ntun_port = 65536\n', "tun_port", "expected an integer 1..65535"),
    ('forward = "tun"\ntun_port = 6080\n', "tun_port", 'only for tun_type = "gue" (this tunnel is "ipip")'),
    ('forward = "tun"\ntun_type = "gre"\ntun_port = 6080\n', "tun_port", 'only for tun_type = "gue"'),
    ('forward = "tun"\ntun_flags = "csum"\n', "tun_flags", "ipip tunnels have no checksum option"),
    ('forward = "tun"\ntun_type = "gre"\ntun_flags = "remcsum"\n', "tun_flags", "remote checksum offload is gue's"),
    ('forward = "tun"\ntun_type = "vxlan"\n', "tun_type", 'expected one of ipip, gue, gre, got "vxlan"'),
    ('forward = "tun"\ntun_type = "gue"\ntun_port = 1\ntun_flags = ["csum"]\n', "tun_flags", "expected one of"),
])
def test_tunnel_config_errors_name_the_key(extra: str, path: str, words: str) -> None:
    problems = _problems(extra)
    assert len(problems) == 1, problems
    where, message = problems[0]
    assert where == f"instance[0].service[0].real[0].{path}"
    assert words in message


def test_tunnel_config_values() -> None:
    config = parse_config(BASE + 'forward = "tun"\ntun_type = "gue"\ntun_port = 6080\ntun_flags = "remcsum"\n', "t")
    (real,) = config.instances[0].services[0].reals
    assert (real.forward, real.tun_type, real.tun_port, real.tun_flags) == ("tun", "gue", 6080, "remcsum")
    (gre,) = parse_config(BASE + 'forward = "tun"\ntun_type = "gre"\ntun_flags = "csum"\n', "t").instances[0].services[0].reals
    assert (gre.tun_type, gre.tun_port, gre.tun_flags) == ("gre", 0, "csum")
    (dr,) = parse_config(BASE, "t").instances[0].services[0].reals
    assert (dr.tun_type, dr.tun_port, dr.tun_flags) == ("ipip", 0, "nocsum")


# --------------------------------------------------------------------------- planner and twin

CONFIG = BASE.replace('name = "VI_1"', 'name = "VI_1"\n  [[instance.vip]]\n  address = "192.0.2.10/32"\n  dev = "lo"') + \
    'forward = "tun"\n{tunnel}'


def _converge(backend: MemoryBackend, tunnel: str) -> list[str]:
    """Plan and apply ``tunnel``'s config twice; the text of the first run's changes (the second must be none)."""
    desired = desired_for(parse_config(CONFIG.format(tunnel=tunnel), "t"), {"VI_1": State.MASTER})
    first = plan(desired, backend.observe(desired.scope))
    for action in first.changes:
        backend.apply(action)
    writes = len(backend.writes)
    again = plan(desired, backend.observe(desired.scope))
    assert again.changes == ()
    assert len(backend.writes) == writes
    return [str(a) for a in first.changes if a.domain == "ipvs"]


def test_a_tunnel_change_is_an_in_place_edit_that_keeps_the_counters() -> None:
    backend = MemoryBackend(devices={"lo"})
    assert _converge(backend, "") == ["add ipvs service tcp 192.0.2.10:80 scheduler wlc",
                                      "add real server 198.51.100.1:80 tun weight 1 to tcp 192.0.2.10:80"]
    backend.services[KEY].reals[(ip("198.51.100.1"), 80)] = (
        backend.services[KEY].reals[(ip("198.51.100.1"), 80)][0], RealServerStats(5, 6))
    steps = [
        ('tun_type = "gue"\ntun_port = 6080\n', "tun_type ipip -> gue, tun_port 0 -> 6080"),
        ('tun_type = "gue"\ntun_port = 6081\ntun_flags = "remcsum"\n', "tun_port 6080 -> 6081, tun_flags nocsum -> remcsum"),
        ('tun_type = "gre"\ntun_flags = "csum"\n', "tun_type gue -> gre, tun_port 6081 -> 0, tun_flags remcsum -> csum"),
        ("", "tun_type gre -> ipip, tun_flags csum -> nocsum"),
    ]
    for tunnel, diff in steps:
        assert _converge(backend, tunnel) == [f"edit real server 198.51.100.1:80 of tcp 192.0.2.10:80: {diff}"]
        assert backend.services[KEY].reals[(ip("198.51.100.1"), 80)][1] == RealServerStats(5, 6)


def test_the_twin_refuses_a_gue_tunnel_without_a_port_as_the_kernel_does() -> None:
    backend = MemoryBackend(devices={"lo"})
    _converge(backend, "")
    bad = replace(GUE, tun_port=0)
    for action in (AddReal(KEY, bad), EditReal(KEY, RealServer(ip("198.51.100.1"), 80, "tun"), bad)):
        with pytest.raises(ApplyError, match="Invalid argument") as info:
            backend.apply(action)
        assert info.value.errno == 22


# --------------------------------------------------------------------------- keepalived import

KEEPALIVED = """
virtual_server 192.0.2.10 80 {{
    lvs_sched rr
    lvs_method {vs}
    protocol TCP
    real_server 198.51.100.1 80 {{
{rs}
    }}
}}
"""


def _import(vs: str, rs: str = "") -> tuple[RealServer, list[str]]:
    result = import_conf(parse_text(KEEPALIVED.format(vs=vs, rs=rs), "keepalived.conf"))
    (svc,) = result.services
    (real,) = svc.reals
    text = render(result)
    assert parse_config(text, "imported.toml").instances[0].services[0].reals == (real.real,)  # it loads back
    return real.real, [n.reason for n in real.notes + svc.notes]


@pytest.mark.parametrize("vs, rs, tunnel", [
    ("TUN type gue port 6080", "", ("gue", 6080, "nocsum")),
    ("TUN port 6080 csum type gue", "", ("gue", 6080, "csum")),  # any order
    ("TUN type gue port 6080 remcsum", "", ("gue", 6080, "remcsum")),
    ("TUN type gre csum", "", ("gre", 0, "csum")),
    ("TUN type ipip", "", ("ipip", 0, "nocsum")),
    ("TUN type gue port 6080", "lvs_method TUN", ("ipip", 0, "nocsum")),  # the real server's own line: its defaults
    ("TUN type gue port 6080", "lvs_method TUN type gre", ("gre", 0, "nocsum")),
    ("TUN type gue port 6080", "lvs_method TUN type gre remcsum", ("gue", 6080, "nocsum")),  # rejected: inherited
    ("DR", "lvs_method TUN type gue port 7 csum", ("gue", 7, "csum")),
])
def test_import_of_keepalived_tunnels(vs: str, rs: str, tunnel: tuple[str, int, str]) -> None:
    real, _notes = _import(vs, rs)
    assert (real.forward, real.tun_type, real.tun_port, real.tun_flags) == ("tun", *tunnel)


@pytest.mark.parametrize("vs, why", [
    ("TUN type gue", "gue tunnels require port, otherwise cannot have port"),
    ("TUN type gre port 5", "gue tunnels require port, otherwise cannot have port"),
    ("TUN type ipip csum", "ipip tunnels do not support checksum option"),
    ("TUN type gre remcsum", "gre tunnels do not support remote checksum option"),
    ("TUN type vxlan", "unknown tunnel type vxlan"),
    ("TUN type gue port 0", "invalid gue tunnel port 0"),
    ("TUN type gue port", "missing port for the gue tunnel"),
    ("TUN type", "missing tunnel type"),
    ("TUN type gue port 5 bogus", "invalid tunnel option bogus"),
])
def test_import_notes_what_keepalived_rejects(vs: str, why: str) -> None:
    real, notes = _import(vs)
    assert (real.forward, real.tunnel) == ("tun", "")  # keepalived keeps its plain IPIP default
    assert any(why in n for n in notes), notes


def test_import_notes_tunnel_options_without_tun() -> None:
    real, notes = _import("DR type gue port 5")
    assert (real.forward, real.tunnel) == ("dr", "")
    assert any("with TUN only" in n for n in notes)


# --------------------------------------------------------------------------- status


def test_status_shows_the_tunnel_and_a_changed_one_as_drift(tmp_path: Path) -> None:
    from kanotify.engine import Engine
    from kanotify.run import RunKind
    from kanotify.status import collect_status, format_status

    settings = f'[settings]\nstate_dir = "{tmp_path}/run"\njournal = "{tmp_path}/journal.jsonl"\nsyslog = false\n'
    text = settings + CONFIG.format(tunnel='tun_type = "gue"\ntun_port = 6080\ntun_flags = "csum"\n')
    config = parse_config(text, "t.toml")
    backend = MemoryBackend(devices={"lo"})
    Engine(config, backend_factory=lambda: backend).transition(
        ["VI_1"], State.MASTER, argv=["kanotify", "master"], kind=RunKind.MASTER)
    report = collect_status(config, lambda: backend)
    assert report["drift"] == []
    assert "-> 198.51.100.1:80 tun gue port 6080 csum weight 1 active 0" in format_status(report)
    backend.services[KEY].reals[GUE.key] = (replace(GUE, tun_flags="nocsum"), RealServerStats())  # by hand
    report = collect_status(config, lambda: backend)
    assert report["drift"] == ["edit real server 198.51.100.1:80 of tcp 192.0.2.10:80: tun_flags nocsum -> csum"]

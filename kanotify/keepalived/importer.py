"""``kanotify import KEEPALIVED_CONF``: keepalived's ``virtual_server`` blocks as kanotify TOML.

Each ``virtual_server`` (``IP PORT``, ``fwmark N``, ``group NAME`` -- a group
expands into one service per address, range entry and fwmark, each with the
group's real servers) becomes an ``[[instance.service]]`` with its real
servers, in one ``[[instance]]`` whose services are wanted in ``master``.
keepalived's own rules are applied so the result is the IPVS table keepalived
itself would load: no protocol means UDP, no scheduler ``wlc``, no forwarding
method NAT, a real server's port is the service's with DR and TUN, a real
server without ``weight`` gets the virtual server's ``weight``, a service
without real servers is not created, and so on.

Health checkers (``TCP_CHECK``, ``HTTP_GET``, ``SSL_GET``, ``MISC_CHECK``)
become ``[check]`` tables with keepalived's cascade resolved (checker, real
server, virtual server, keepalived 2.2.7's defaults), so the check behaves as
keepalived's did; the same check for every real server of a service is written
once as ``[instance.service.check]`` (the mapping: :mod:`kanotify.keepalived.checkers`).

keepalived's IPVS sync daemon (the global ``lvs_sync_daemon``, or the legacy
``lvs_sync_daemon_interface`` of a ``vrrp_instance``) becomes the
``[sync_daemon]`` table when it follows the imported instance: the line
keepalived 2.2.7 uses (the first), its sync id resolved as keepalived resolves
it, checked by kanotify's config loader on its own first
(:mod:`kanotify.keepalived.sync_import`).  A sync daemon of another instance is
a comment saying how to import it.

Nothing is dropped silently: every keyword that kanotify's config cannot hold
becomes a comment ``# not imported: KEYWORD ARGS (FILE:LINE): why``, with the
TOML it would become where there is one.

Each keyword is handled by one entry of a table (:data:`VS_KEYWORDS`,
:data:`RS_KEYWORDS`, :data:`~kanotify.keepalived.checkers.CHECKER_KEYWORDS`); a
keyword in no table is reported as unknown to keepalived 2.2.7 (which ignores it too).

This module reads the blocks, orchestrates and writes the TOML; what it returns
(:class:`~kanotify.keepalived.imported.ImportResult`) is defined in
:mod:`kanotify.keepalived.imported`.  The TOML produced always passes
``kanotify check``: :func:`render` is checked against the config loader by
:func:`import_file` before it is returned.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError, KanotifyError, Problem
from ..model import HASH_SCHEDULERS, IPAddress, RealServer, ServiceKey, VirtualService, scheduler_flags
from .checkers import CASCADE, CHECKERS, canonical, cascade_option, checks_of, table_lines
from .conf import KeepalivedConf, Statement, Where, read_config
from .imported import (CheckerOption, ImportedReal, ImportedService, ImportResult, Note, RSBlock, VSBlock, clean,
                       note_at, parse_ip, toml_str, uint_in)
from .quorum_import import QUORUM_KEYWORDS, service_quorum
from .sync_import import import_sync_daemon

#: keepalived's lvs_schedulers (check_parser.c)
KEEPALIVED_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos")
DEFAULT_SCHEDULER = "wlc"  # IPVS_DEF_SCHED
DEFAULT_PERSISTENCE = 360  # IPVS_SVC_PERSISTENT_TIMEOUT
MAX_PERSISTENCE = 86400 * 31
MAX_GROUP_RANGE = 256  # addresses per virtual_server_group entry that import expands
FORWARDS = {"DR": "dr", "NAT": "nat", "TUN": "tun"}
#: keepalived's tunnel when ``lvs_method TUN`` names none: plain IPIP
IPIP = ("ipip", 0, "nocsum")


def _tunnel(s: Statement) -> tuple[tuple[str, int, str] | None, str]:
    """The options after ``lvs_method TUN`` as keepalived's svr_forwarding_handler reads them
    (``type ipip|gue|gre``, ``port N``, ``nocsum|csum|remcsum``, in any order, the last one winning):
    ``((type, port, flags), "")``, or ``(None, why keepalived rejects them)``."""
    kind, port, csum = IPIP
    words = s.args[1:]
    i = 0
    while i < len(words):
        word, value = words[i], words[i + 1] if i + 1 < len(words) else None
        if word == "type":
            if value not in ("ipip", "gue", "gre"):
                return None, "missing tunnel type" if value is None else f"unknown tunnel type {value}"
            kind, i = value, i + 2
        elif word == "port":
            number = uint_in(value, 1, 65535)
            if number is None:
                return None, "missing port for the gue tunnel" if value is None else f"invalid gue tunnel port {value}"
            port, i = number, i + 2
        elif word in ("nocsum", "csum", "remcsum"):
            csum, i = word, i + 1
        else:
            return None, f"invalid tunnel option {word}"
    if (kind == "gue") != (port != 0):
        return None, "gue tunnels require port, otherwise cannot have port"
    if kind == "ipip" and csum != "nocsum":
        return None, "ipip tunnels do not support checksum option"
    if kind == "gre" and csum == "remcsum":
        return None, "gre tunnels do not support remote checksum option"
    return (kind, port, csum), ""


def _method_tunnel(s: Statement, forward: str, notes: list[Note]) -> tuple[str, int, str] | None:
    """The tunnel an ``lvs_method`` line sets (None: it sets none), with a note where keepalived rejects it."""
    if forward != "tun":
        if len(s.args) > 1:
            notes.append(note_at(s, "tunnel options mean something with TUN only; kanotify ignores them"))
        return None
    tunnel, why = _tunnel(s)
    if tunnel is None:
        notes.append(note_at(s, f"keepalived rejects the tunnel options ({why}) and keeps the tunnel it had"))
    return tunnel


# -- virtual_server keywords: one function per keyword


def _vs_sched(vs: VSBlock, s: Statement) -> None:
    name = s.arg(0)
    if name in KEEPALIVED_SCHEDULERS:
        vs.scheduler = name
    else:
        vs.notes.append(note_at(s, f"keepalived ignores the unknown scheduler {name!r} (its list: "
                                 f"{' '.join(KEEPALIVED_SCHEDULERS)})"))


def _vs_method(vs: VSBlock, s: Statement) -> None:
    forward = FORWARDS.get(s.arg(0) or "")
    if forward is None:
        vs.notes.append(note_at(s, "keepalived knows DR, NAT and TUN only; it ignores this line"))
        return
    vs.forward = forward
    vs.tunnel = _method_tunnel(s, forward, vs.notes) or vs.tunnel


def _vs_protocol(vs: VSBlock, s: Statement) -> None:
    name = (s.arg(0) or "").lower()
    if name in ("tcp", "udp", "sctp"):
        vs.protocol = name
    else:
        vs.notes.append(note_at(s, "keepalived knows TCP, UDP and SCTP only; it ignores this line"))


def _vs_persistence(vs: VSBlock, s: Statement) -> None:
    if not s.args:
        vs.persistence = DEFAULT_PERSISTENCE  # keepalived: no value = 6 minutes
        return
    value = uint_in(s.arg(0), 1, MAX_PERSISTENCE)
    if value is None:
        vs.notes.append(note_at(s, f"keepalived rejects it (expected 1..{MAX_PERSISTENCE} seconds)"))
    else:
        vs.persistence = value


def _vs_granularity(vs: VSBlock, s: Statement) -> None:
    vs.granularity = s.arg(0)
    vs.granularity_where = s.where
    if vs.persistence is None:
        vs.persistence = DEFAULT_PERSISTENCE  # keepalived turns persistence on for a granularity


def _vs_family(vs: VSBlock, s: Statement) -> None:
    if s.arg(0) == "inet":
        vs.family = 4
    elif s.arg(0) == "inet6":
        vs.family = 6
    else:
        vs.notes.append(note_at(s, "keepalived knows inet and inet6 only; it ignores this line"))


def _vs_weight(vs: VSBlock, s: Statement) -> None:
    value = uint_in(s.arg(0), 1, 65535)
    if value is None:
        vs.notes.append(note_at(s, "keepalived rejects it (expected 1..65535)"))
    else:
        vs.weight = value


def _vs_flag(flag: str | None, schedulers: tuple[str, ...] = ()) -> Callable[[VSBlock, Statement], None]:
    def handle(vs: VSBlock, s: Statement) -> None:
        if flag is None:
            vs.notes.append(note_at(s, "kanotify's config has no such service flag"))
        elif schedulers and vs.scheduler not in schedulers:
            # keepalived looks at the scheduler set so far (check_parser.c lbflags_handler)
            vs.notes.append(note_at(s, f"keepalived ignores it: only with lvs_sched {' or '.join(schedulers)} "
                                     "given before it"))
        else:
            vs.flags.add(flag)
    return handle


def _vs_cascade(vs: VSBlock, s: Statement) -> None:
    cascade_option(vs.cascade, vs.notes, s, "virtual_server")


def _vs_hashed(vs: VSBlock, s: Statement) -> None:
    vs.notes.append(note_at(s, "the kernel sets the hashed flag on every service itself; nothing to configure"))


def _reason(text: str) -> Callable[[VSBlock, Statement], None]:
    def handle(vs: VSBlock, s: Statement) -> None:
        vs.notes.append(note_at(s, text))
    return handle


#: virtual_server keywords (keepalived 2.2.7 check_parser.c), by canonical name
VS_KEYWORDS: dict[str, Callable[[VSBlock, Statement], None]] = {
    "lvs_sched": _vs_sched,
    "lvs_method": _vs_method,
    "protocol": _vs_protocol,
    "persistence_timeout": _vs_persistence,
    "persistence_granularity": _vs_granularity,
    "ip_family": _vs_family,
    "weight": _vs_weight,
    "ops": _vs_flag("one-packet"),
    "sh-port": _vs_flag("sh-port", ("sh",)),
    "sh-fallback": _vs_flag("sh-fallback", ("sh",)),
    "mh-port": _vs_flag("mh-port", ("mh",)),  # the same kernel bit as sh-port (IP_VS_SVC_F_SCHED2)
    "mh-fallback": _vs_flag("mh-fallback", ("mh",)),  # IP_VS_SVC_F_SCHED1
    "flag-1": _vs_flag("sh-fallback"),
    "flag-2": _vs_flag("sh-port"),
    "flag-3": _vs_flag(None),
    "hashed": _vs_hashed,
    **{name: _vs_cascade for name in CASCADE},
    **QUORUM_KEYWORDS,  # quorum, hysteresis, sorry_server*, quorum_up/down, omega
    "ha_suspend": _reason("kanotify loads a service only in the states it lists (states = [...]) instead"),
    "smtp_alert": _reason("kanotify sends no mail; its journal and syslog record every change"),
    "snmp_name": _reason("kanotify has no SNMP agent"),
    "persistence_engine": _reason("kanotify's config has no persistence engine (e.g. sip)"),
}


# -- real_server keywords


def _rs_weight(vs: VSBlock, rs: RSBlock, s: Statement) -> None:
    value = uint_in(s.arg(0), 0, 65535)
    if value is None:
        rs.notes.append(note_at(s, "keepalived rejects it (expected 0..65535)"))
    else:
        rs.weight = value


def _rs_method(vs: VSBlock, rs: RSBlock, s: Statement) -> None:
    forward = FORWARDS.get(s.arg(0) or "")
    if forward is None:
        rs.notes.append(note_at(s, "keepalived knows DR, NAT and TUN only; it ignores this line"))
        return
    rs.forward = forward
    rs.tunnel = _method_tunnel(s, forward, rs.notes) or rs.tunnel


def _rs_threshold(attr: str) -> Callable[[VSBlock, RSBlock, Statement], None]:
    def handle(vs: VSBlock, rs: RSBlock, s: Statement) -> None:
        value = uint_in(s.arg(0), 0, 2**32 - 1)
        if value is None:
            rs.notes.append(note_at(s, "keepalived rejects it (expected an unsigned integer)"))
        elif value > 65535:
            rs.notes.append(note_at(s, "kanotify's thresholds go up to 65535"))
        else:
            setattr(rs, attr, value)
    return handle


def _rs_cascade(vs: VSBlock, rs: RSBlock, s: Statement) -> None:
    cascade_option(rs.cascade, rs.notes, s, "real_server")


def _rs_reason(text: str) -> Callable[[VSBlock, RSBlock, Statement], None]:
    def handle(vs: VSBlock, rs: RSBlock, s: Statement) -> None:
        rs.notes.append(note_at(s, text))
    return handle


def _rs_checker(vs: VSBlock, rs: RSBlock, s: Statement) -> None:
    rs.checkers.append(s)


#: real_server keywords (keepalived 2.2.7), by canonical name; checkers are in :data:`CHECKERS`
RS_KEYWORDS: dict[str, Callable[[VSBlock, RSBlock, Statement], None]] = {
    "weight": _rs_weight,
    "lvs_method": _rs_method,
    "uthreshold": _rs_threshold("upper"),
    "lthreshold": _rs_threshold("lower"),
    **{name: _rs_cascade for name in CASCADE},
    "notify_up": _rs_reason("kanotify runs no script when a real server comes up (a hook plugin can)"),
    "notify_down": _rs_reason("kanotify runs no script when a real server goes down (a hook plugin can)"),
    "smtp_alert": _rs_reason("kanotify sends no mail; its journal and syslog record every change"),
    "snmp_name": _rs_reason("kanotify has no SNMP agent"),
    "track_file": _rs_reason("kanotify does not weight real servers by file contents"),
    **{name: _rs_checker for name in CHECKERS},
}


# --------------------------------------------------------------------------- import


def import_conf(conf: KeepalivedConf, instance: str | None = None) -> ImportResult:
    """Map every ``virtual_server`` of *conf* to kanotify services (see the module docstring)."""
    name = instance or _first_instance(conf) or "VI_1"
    groups = {s.arg(0): s for s in conf.top("virtual_server_group") if s.arg(0)}
    services: list[ImportedService] = []
    notes: list[Note] = []
    seen: dict[ServiceKey, Where] = {}
    track_files = {s.arg(0) or "": s for s in conf.top("track_file") + conf.top("vrrp_track_file") if s.arg(0)}
    for stmt in conf.top("virtual_server"):
        vs = _read_vs(stmt)
        vs.track_files = track_files  # FILE_CHECK's track_file names these
        made, skipped = _expand(vs, groups)
        notes.extend(skipped)
        for svc in made:
            key = svc.service.key
            if key in seen:
                notes.append(Note(svc.where, svc.title, f"the same IPVS service as the virtual_server at {seen[key]}; "
                                                        "keepalived would fail to add it twice"))
                continue
            seen[key] = svc.where
            services.append(svc)
    sync_daemon, sync_notes = import_sync_daemon(conf, name)
    notes.extend(sync_notes)
    return ImportResult(conf.path, name, tuple(services), tuple(notes), tuple(str(m) for m in conf.messages),
                        sync_daemon)


def _first_instance(conf: KeepalivedConf) -> str | None:
    from ..config.schema import _NAME_RE

    for stmt in conf.top("vrrp_instance"):
        if stmt.arg(0) and _NAME_RE.match(stmt.arg(0) or ""):
            return stmt.arg(0)
    return None


def _read_vs(stmt: Statement) -> VSBlock:
    vs = VSBlock(stmt)
    for s in stmt.block or ():
        key = canonical(s.keyword)
        if key == "real_server":
            rs = _read_rs(vs, s)
            if rs is not None:
                vs.reals.append(rs)
            continue
        handler = VS_KEYWORDS.get(key)
        if handler is None:
            vs.notes.append(note_at(s, "not a virtual_server keyword keepalived 2.2.7 knows (it ignores it)"))
        else:
            handler(vs, s)
    return vs


def _read_rs(vs: VSBlock, stmt: Statement) -> RSBlock | None:
    address = parse_ip(stmt.arg(0))
    port_word = stmt.arg(1, "0") or "0"
    port = uint_in(port_word, 0, 65535)
    if address is None or port is None:
        vs.notes.append(note_at(stmt, "keepalived skips a real server with an invalid address or port"))
        return None
    rs = RSBlock(stmt, address, port)
    for s in stmt.block or ():
        handler = RS_KEYWORDS.get(canonical(s.keyword))
        if handler is None:
            rs.notes.append(note_at(s, "not a real_server keyword keepalived 2.2.7 knows (it ignores it)"))
        else:
            handler(vs, rs, s)
    return rs




@dataclass(frozen=True)
class _Target:
    key: ServiceKey
    port: int  # the service's port (0 for fwmark)
    title: str


def _expand(vs: VSBlock, groups: dict[str | None, Statement]) -> tuple[list[ImportedService], list[Note]]:
    """The services one virtual_server block makes (several for a group), or why none."""
    stmt = vs.stmt
    title = " ".join(stmt.words)
    if not vs.reals:
        return [], [Note(stmt.where, title, "it has no real servers: keepalived ignores it too")]
    targets: list[_Target] = []
    skipped: list[Note] = []
    kind = stmt.arg(0)
    if kind == "group":
        group = groups.get(stmt.arg(1))
        if group is None:
            return [], [Note(stmt.where, title, f"there is no virtual_server_group {stmt.arg(1)!r}")]
        for entry in group.block or ():
            found, why = _group_entry(vs, entry)
            if why:
                skipped.append(note_at(entry, why))
            targets.extend(found)
    elif kind == "fwmark":
        mark = uint_in(stmt.arg(1), 1, 2**32 - 1)
        if mark is None:
            return [], [Note(stmt.where, title, "kanotify needs a fwmark 1..4294967295")]
        targets.append(_Target(ServiceKey.mark(mark, _fwmark_family(vs, None)), 0, title))
    else:
        address = parse_ip(kind)
        port = uint_in(stmt.arg(1, "0"), 0, 65535)
        if address is None or port is None:
            return [], [Note(stmt.where, title, "keepalived skips a virtual_server with an invalid address or port")]
        protocol = _protocol(vs)
        targets.append(_Target(ServiceKey.inet(protocol, address, port), port, title))
    services = []
    for i, target in enumerate(targets):
        svc = _service(vs, target, first=i == 0)
        if isinstance(svc, Note):
            skipped.append(svc)
        else:
            services.append(svc)
    return services, skipped


def _protocol(vs: VSBlock) -> str:
    return vs.protocol or "udp"  # keepalived: "no protocol set - defaulting to UDP"


def _fwmark_family(vs: VSBlock, given: int | None) -> int:
    """keepalived's vs_end_handler: ip_family, else the first non-tunnelled real server's, else IPv4."""
    if given:
        return given
    if vs.family:
        return vs.family
    families = {rs.address.version for rs in vs.reals if (rs.forward or vs.forward) != "tun"}
    if len(families) == 1:
        return families.pop()
    all_families = {rs.address.version for rs in vs.reals}
    return all_families.pop() if len(all_families) == 1 else 4


def _group_entry(vs: VSBlock, entry: Statement) -> tuple[list[_Target], str | None]:
    if entry.keyword == "fwmark":
        mark = uint_in(entry.arg(0), 1, 2**32 - 1)
        if mark is None:
            return [], "kanotify needs a fwmark 1..4294967295"
        family = {"inet": 4, "inet6": 6}.get(entry.arg(1) or "")
        title = f"{' '.join(vs.stmt.words)}: fwmark {mark}"
        return [_Target(ServiceKey.mark(mark, _fwmark_family(vs, family)), 0, title)], None
    port = uint_in(entry.arg(0, "0"), 0, 65535)
    if port is None:
        return [], "keepalived skips an entry with an invalid port"
    addresses = _range(entry.keyword)
    if isinstance(addresses, str):
        return [], addresses
    protocol = _protocol(vs)
    title = f"{' '.join(vs.stmt.words)}: {entry.keyword} {port}"
    return [_Target(ServiceKey.inet(protocol, a, port), port, f"{title} -> {a}" if len(addresses) > 1 else title)
            for a in addresses], None


def _range(word: str) -> list[IPAddress] | str:
    """A virtual_server_group address: ``A``, ``A-N`` (last octet / group), ``A-B``, ``A/MASK``."""
    try:
        if "/" in word:
            net = ipaddress.ip_network(word, strict=True)
            if net.num_addresses > MAX_GROUP_RANGE:
                return f"more than {MAX_GROUP_RANGE} addresses: import expands ranges into one service each"
            return list(net)
        if "-" in word:
            first_text, end = word.split("-", 1)
            first = ipaddress.ip_address(first_text)
            if ("." in end and first.version == 4) or (":" in end and first.version == 6):
                last = ipaddress.ip_address(end)
            elif first.version == 4:
                last = ipaddress.ip_address((int(first) & ~0xFF) | int(end))
            else:
                last = ipaddress.ip_address((int(first) & ~0xFFFF) | int(end, 16))
            if int(last) < int(first):
                return "the range ends before it starts: keepalived skips it"
            if int(last) - int(first) + 1 > MAX_GROUP_RANGE:
                return f"more than {MAX_GROUP_RANGE} addresses: import expands ranges into one service each"
            return [ipaddress.ip_address(n) for n in range(int(first), int(last) + 1)]
        return [ipaddress.ip_address(word)]
    except ValueError as exc:
        return f"keepalived skips an invalid address ({exc})"


def _granularity(vs: VSBlock, family: int) -> tuple[int | None, Note | None]:
    if vs.granularity is None:
        return None, None
    full = 32 if family == 4 else 128
    where = vs.granularity_where or vs.stmt.where
    bad = Note(where, f"persistence_granularity {vs.granularity}", "")
    if family == 6:
        value = uint_in(vs.granularity, 1, 128)
        if value is None:
            return None, Note(bad.where, bad.keyword, "keepalived expects an IPv6 prefix length 1..128")
    else:
        try:
            value = ipaddress.IPv4Network(f"0.0.0.0/{vs.granularity}").prefixlen
        except ValueError:
            return None, Note(bad.where, bad.keyword, "not a contiguous IPv4 netmask: kanotify takes a prefix length")
    return (None if value == full else value), None


def _service(vs: VSBlock, target: _Target, first: bool) -> ImportedService | Note:
    key = target.key
    notes: list[Note] = list(vs.notes) if first else []
    comments: list[str] = []
    scheduler = vs.scheduler or DEFAULT_SCHEDULER
    if vs.scheduler is None:
        comments.append(f"no lvs_sched: keepalived's default {DEFAULT_SCHEDULER}")
    if not key.is_fwmark and vs.protocol is None:
        comments.append("no protocol: keepalived defaults to UDP")
    if key.is_fwmark and vs.protocol is not None and first:
        comments.append("keepalived ignores protocol for a fwmark service")
    forward_default = vs.forward or "nat"
    if vs.forward is None and any(rs.forward is None for rs in vs.reals):
        comments.append("no lvs_method: keepalived's default NAT")
    flags = set(vs.flags)
    if "one-packet" in flags and not (key.is_fwmark or key.protocol == "udp"):
        flags.discard("one-packet")
        comments.append("ops dropped: keepalived allows one-packet scheduling only for UDP (or fwmark)")
    netmask, bad = _granularity(vs, key.family)
    if bad is not None and first:
        notes.append(bad)
    persistence = vs.persistence or 0
    if not key.is_fwmark and key.port == 0 and not persistence:
        persistence = DEFAULT_PERSISTENCE
        comments.append(f"port 0 (every port): keepalived makes it persistent ({DEFAULT_PERSISTENCE} s): "
                        "\"zero port only valid for persistent services\"")
    # keepalived's mh-port and flag-2 are one kernel bit: kanotify's config names it as the scheduler does
    service = VirtualService(key, scheduler, persistence, netmask, scheduler_flags(scheduler, frozenset(flags)))
    reals: list[ImportedReal] = []
    checkers: list[Where] = []
    used: set[Where] = set()  # the lines the checks took values from
    seen: dict[tuple[IPAddress, int], Where] = {}
    configured: dict[tuple[IPAddress, int], Where] = {}
    for rs in vs.reals:
        rnotes: list[Note] = list(rs.notes) if first else []
        forward = rs.forward or forward_default
        if rs.address.version != key.family:
            if first:
                why = ("kanotify's config needs real servers of the service's address family (keepalived allows "
                       "mixing only with TUN)" if forward == "tun" else
                       "its address family differs from the service's: keepalived skips it")
                notes.append(note_at(rs.stmt, why))
            continue
        if (rs.address, rs.port) in configured:
            if first:
                notes.append(note_at(rs.stmt, f"a duplicate of the real server at {configured[(rs.address, rs.port)]}: "
                                            "keepalived removes it"))
            continue
        configured[(rs.address, rs.port)] = rs.stmt.where
        if forward == "nat":
            port = rs.port or target.port
            if rs.port == 0 and target.port and first:
                rnotes.append(note_at(rs.stmt, f"no port with NAT: keepalived would send port 0; kanotify uses the "
                                             f"service's port {target.port}"))
        else:
            port = target.port  # keepalived: DR and TUN use the service's port (0 for fwmark)
            if rs.port and rs.port != port and first:
                rnotes.append(note_at(rs.stmt, f"port {rs.port}: with {forward.upper()} keepalived uses the service's "
                                             f"port ({port}); only NAT rewrites ports"))
        if (rs.address, port) in seen:
            if first:
                notes.append(note_at(rs.stmt, f"the same IPVS destination as the real server at "
                                            f"{seen[(rs.address, port)]}"))
            continue
        seen[(rs.address, port)] = rs.stmt.where
        lower = rs.lower if rs.upper and rs.lower <= rs.upper else 0
        if lower != rs.lower and first:
            rnotes.append(note_at(rs.stmt, "lthreshold without a uthreshold above it: the kernel refuses that "
                                         "(ERANGE), kanotify's config too"))
        weight = rs.weight if rs.weight is not None else vs.weight
        drain = weight == 0 and scheduler in HASH_SCHEDULERS
        if drain:
            weight = 1
            if first:
                rnotes.append(note_at(rs.stmt, f"weight 0 with lvs_sched {scheduler}: kanotify adds it at weight 1 "
                                             "and drains it (drain = true); added at 0 it would get no slots in "
                                             "the table and directors would disagree"))
        tunnel = (rs.tunnel or vs.tunnel or IPIP) if forward == "tun" else IPIP
        real = RealServer(rs.address, port, forward, weight, rs.upper, lower, *tunnel)
        found, cnotes, runs, sources = checks_of(vs, rs, real)
        checkers.extend(runs)
        if first:
            used |= sources
            rnotes.extend(cnotes)
            rnotes.extend(_unused(rs.cascade, sources))
        reals.append(ImportedReal(real, rs.stmt.where, tuple(rnotes), found[0] if found else None,
                                  drain=drain, more_checks=tuple(found[1:])))
    if first:
        notes.extend(_unused(vs.cascade, used))
    if not reals:
        return Note(vs.stmt.where, target.title, "none of its real servers can be used: keepalived ignores it")
    if not first:
        comments.append(f"one of the services of {' '.join(vs.stmt.words)} ({vs.stmt.where}): its keepalived "
                        "options not imported are listed under the first")
    quorum, qnotes = service_quorum(vs, key, target.port, {r.real.key for r in reals}, first)
    notes.extend(qnotes)
    return ImportedService(service, tuple(reals), vs.stmt.where, target.title, tuple(notes), tuple(comments),
                           tuple(checkers), quorum)


def _unused(options: dict[str, CheckerOption], used: set[Where]) -> list[Note]:
    """Checker options of a virtual_server or real_server that no check below took."""
    return [Note(o.where, f"{o.written} {o.value}", "only health checkers use it, and none below it takes it (there "
                                                    "is none, or each gives its own)")
            for o in options.values() if o.where not in used]


# --------------------------------------------------------------------------- TOML


def render(result: ImportResult) -> str:
    """The TOML text for *result*, ``# not imported`` comments included."""
    out = [
        f"# kanotify config imported from {clean(result.path)} by `kanotify import`.",
        f"# {len(result.services)} IPVS service(s), wanted while {result.instance} is MASTER. "
        "Check it with: kanotify --config FILE check",
    ]
    checked = sum(1 for s in result.services for r in s.reals if r.check is not None)
    if checked:
        out.append(f"# {checked} real server(s) health-checked as keepalived checked them; the checks run in "
                   "kanotify listen.")
    count = len(result.notes) + sum(len(s.notes) + sum(len(r.notes) for r in s.reals) for s in result.services)
    if count:
        out.append(f"# {count} keepalived keyword(s) could not be imported: see the '# not imported' lines.")
    for problem in result.problems:
        out.append(f"# keepalived.conf problem: {clean(problem)}")
    top_notes = [n for n in result.notes if n.proposal]
    other_notes = [n for n in result.notes if not n.proposal]
    for note in other_notes:
        out.extend(note.lines())
    for note in top_notes:
        out.append("")
        out.extend(note.lines())
    if result.sync_daemon is not None:
        out.append("")
        out.extend(result.sync_daemon.toml())
    out += ["", "[[instance]]", f"name = {toml_str(result.instance)}"]
    for svc in result.services:
        out.append("")
        out.append(f"  # {clean(svc.title)} ({svc.where})")
        for comment in svc.comments:
            out.append(f"  # {clean(comment)}")
        out.append("  [[instance.service]]")
        key = svc.service.key
        if key.is_fwmark:
            out.append(f"  fwmark = {key.fwmark}")
            if key.family == 6:
                out.append('  family = "inet6"')
        else:
            out.append(f"  protocol = {toml_str(key.protocol)}")
            out.append(f"  address = {toml_str(str(key.address))}")
            out.append(f"  port = {key.port}")
        out.append(f"  scheduler = {toml_str(svc.service.scheduler)}")
        if svc.service.persistence:
            out.append(f"  persistence = {svc.service.persistence}")
        if svc.service.netmask is not None:
            out.append(f"  persistence_netmask = {svc.service.netmask}")
        if svc.service.flags:
            out.append(f"  flags = [{', '.join(toml_str(f) for f in sorted(svc.service.flags))}]")
        out.append('  states = ["master"]')
        for note in svc.notes:
            out.extend(note.lines("  "))
        if svc.quorum is not None:
            out.extend(svc.quorum.toml())
        shared = svc.shared_check
        if shared is not None:
            out.append("")
            out.extend(table_lines("[instance.service.check]", [r.check for r in svc.reals if r.check], "    "))
        for imported in svc.reals:
            real = imported.real
            out.append("")
            out.append(f"    [[instance.service.real]]    # {imported.where}")
            out.append(f"    address = {toml_str(str(real.address))}")
            out.append(f"    port = {real.port}")
            out.append(f"    forward = {toml_str(real.forward)}")
            if real.tun_type != "ipip":
                out.append(f"    tun_type = {toml_str(real.tun_type)}")
            if real.tun_port:
                out.append(f"    tun_port = {real.tun_port}")
            if real.tun_flags != "nocsum":
                out.append(f"    tun_flags = {toml_str(real.tun_flags)}")
            out.append(f"    weight = {real.weight}")
            if imported.drain:
                out.append("    drain = true")
            if real.u_threshold:
                out.append(f"    upper_threshold = {real.u_threshold}")
            if real.l_threshold:
                out.append(f"    lower_threshold = {real.l_threshold}")
            for note in imported.notes:
                out.extend(note.lines("    "))
            if imported.check is not None and shared is None and imported.more_checks:
                for one in (imported.check, *imported.more_checks):  # several checkers: all must pass
                    out.extend(table_lines("[[instance.service.real.check]]", [one], "      "))
            elif imported.check is not None and shared is None:
                out.extend(table_lines("[instance.service.real.check]", [imported.check], "      "))
    return "\n".join(out) + "\n"


def import_file(path: str, instance: str | None = None, config_id: str | None = None) -> tuple[ImportResult, str]:
    """Read, import and render *path*; the TOML is validated by kanotify's own loader first."""
    conf = read_config(path, config_id)
    if not conf.readable:
        raise ConfigError([Problem(path, "", m.text) for m in conf.messages] or [Problem(path, "", "cannot read")])
    result = import_conf(conf, instance)
    text = render(result)
    from ..config.schema import parse_config

    try:
        parse_config(text, f"<import of {path}>")
    except ConfigError as exc:  # a bug in the mapping, never the user's fault: say so loudly
        raise KanotifyError("import produced a config that kanotify check rejects (a bug, please report): "
                            + "; ".join(str(p) for p in exc.problems)) from None
    return result, text

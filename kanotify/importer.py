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

Nothing is dropped silently: every keyword that kanotify's config cannot hold
becomes a comment ``# not imported: KEYWORD ARGS (FILE:LINE): why``.  Health
checkers and the sync daemon are such keywords today; their comments carry the
TOML they would become (cascaded options resolved), so when kanotify's config
gains ``[check]`` and ``[sync_daemon]`` the mapping changes in one place each:
:func:`_checker_note` and :func:`_sync_daemon_notes`.

Each keyword is handled by one entry of a table (:data:`VS_KEYWORDS`,
:data:`RS_KEYWORDS`, :data:`CHECKER_OPTIONS`); a keyword in no table is
reported as unknown to keepalived 2.2.7 (which ignores it too).

The TOML produced always passes ``kanotify check``: :func:`render` is checked
against the config loader by :func:`import_file` before it is returned.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from .errors import ConfigError, KanotifyError, Problem
from .keepalived_conf import ALIASES, CHECKER_ALIASES, KeepalivedConf, Statement, Where, read_config, split_script
from .model import IPAddress, RealServer, ServiceKey, ServiceSpec, State, VirtualService

#: keepalived's lvs_schedulers (check_parser.c)
KEEPALIVED_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos")
DEFAULT_SCHEDULER = "wlc"  # IPVS_DEF_SCHED
DEFAULT_PERSISTENCE = 360  # IPVS_SVC_PERSISTENT_TIMEOUT
MAX_PERSISTENCE = 86400 * 31
MAX_GROUP_RANGE = 256  # addresses per virtual_server_group entry that import expands
FORWARDS = {"DR": "dr", "NAT": "nat", "TUN": "tun"}
HEALTH = "health checks: kanotify listen checks real servers once the [check] config exists"

#: keepalived's checker defaults (check_api.c, check_data.c)
CHECK_DEFAULTS = {"delay_loop": "60", "connect_timeout": "5", "retry": "1", "delay_before_retry": "1"}
#: options that cascade virtual_server -> real_server -> checker
CASCADE = ("delay_loop", "connect_timeout", "retry", "delay_before_retry", "warmup", "alpha", "inhibit_on_failure")
#: keepalived checker -> kanotify check type (spec.md "Health checks"); None: kanotify has no such check
CHECKERS: dict[str, str | None] = {
    "TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https", "MISC_CHECK": "command",
    "SMTP_CHECK": None, "DNS_CHECK": None, "UDP_CHECK": None, "PING_CHECK": None, "FILE_CHECK": None,
    "BFD_CHECK": None,
}


@dataclass(frozen=True)
class Note:
    """A keyword that was not imported, where it is, why, and what it would become."""

    where: Where
    keyword: str  # the words as written, e.g. "delay_loop 6"
    reason: str
    proposal: tuple[str, ...] = ()  # TOML lines it would be (printed commented out)

    def lines(self, indent: str = "") -> list[str]:
        head = f"{indent}# not imported: {_clean(self.keyword)} ({self.where}): {_clean(self.reason)}"
        return [head] + [f"{indent}#   {line}" for line in self.proposal]


@dataclass(frozen=True)
class ImportedReal:
    """One real server of an imported service."""

    real: RealServer
    where: Where
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class ImportedService:
    """One IPVS service kanotify would manage, from one virtual_server block (or group entry)."""

    service: VirtualService
    reals: tuple[ImportedReal, ...]
    where: Where
    title: str
    notes: tuple[Note, ...] = ()
    comments: tuple[str, ...] = ()  # keepalived defaults applied, and the like

    @property
    def spec(self) -> ServiceSpec:
        return ServiceSpec(self.service, tuple(r.real for r in self.reals), frozenset({State.MASTER}))


@dataclass(frozen=True)
class ImportResult:
    """Everything ``import`` found in one keepalived.conf."""

    path: str
    instance: str
    services: tuple[ImportedService, ...] = ()
    notes: tuple[Note, ...] = ()
    problems: tuple[str, ...] = ()  # what keepalived would complain about while reading

    @property
    def keys(self) -> frozenset[ServiceKey]:
        return frozenset(s.service.key for s in self.services)


# --------------------------------------------------------------------------- virtual_server state


@dataclass
class _Option:
    value: str
    where: Where
    written: str  # keyword as written (legacy names show as such)


@dataclass
class _VS:
    stmt: Statement
    protocol: str | None = None
    scheduler: str | None = None
    forward: str | None = None
    persistence: int | None = None
    granularity: str | None = None
    granularity_where: Where | None = None
    family: int | None = None  # ip_family
    weight: int = 1
    flags: set[str] = field(default_factory=set)
    cascade: dict[str, _Option] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    reals: list["_RS"] = field(default_factory=list)


@dataclass
class _RS:
    stmt: Statement
    address: IPAddress
    port: int
    weight: int | None = None
    forward: str | None = None
    upper: int = 0
    lower: int = 0
    cascade: dict[str, _Option] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    checkers: list[Statement] = field(default_factory=list)


def _note(stmt: Statement, reason: str, proposal: tuple[str, ...] = ()) -> Note:
    return Note(stmt.where, " ".join(stmt.words), reason, proposal)


def _uint(word: str | None, lo: int, hi: int) -> int | None:
    if word is None or not re.fullmatch(r"[0-9]+", word):
        return None
    value = int(word)
    return value if lo <= value <= hi else None


# -- virtual_server keywords: one function per keyword


def _vs_sched(vs: _VS, s: Statement) -> None:
    name = s.arg(0)
    if name in KEEPALIVED_SCHEDULERS:
        vs.scheduler = name
    else:
        vs.notes.append(_note(s, f"keepalived ignores the unknown scheduler {name!r} (its list: "
                                 f"{' '.join(KEEPALIVED_SCHEDULERS)})"))


def _vs_method(vs: _VS, s: Statement) -> None:
    forward = FORWARDS.get(s.arg(0) or "")
    if forward is None:
        vs.notes.append(_note(s, "keepalived knows DR, NAT and TUN only; it ignores this line"))
        return
    vs.forward = forward
    if len(s.args) > 1:
        vs.notes.append(_note(s, "tunnel options (type gue/gre, port, csum): kanotify configures plain IPIP tunnels"))


def _vs_protocol(vs: _VS, s: Statement) -> None:
    name = (s.arg(0) or "").lower()
    if name in ("tcp", "udp", "sctp"):
        vs.protocol = name
    else:
        vs.notes.append(_note(s, "keepalived knows TCP, UDP and SCTP only; it ignores this line"))


def _vs_persistence(vs: _VS, s: Statement) -> None:
    if not s.args:
        vs.persistence = DEFAULT_PERSISTENCE  # keepalived: no value = 6 minutes
        return
    value = _uint(s.arg(0), 1, MAX_PERSISTENCE)
    if value is None:
        vs.notes.append(_note(s, f"keepalived rejects it (expected 1..{MAX_PERSISTENCE} seconds)"))
    else:
        vs.persistence = value


def _vs_granularity(vs: _VS, s: Statement) -> None:
    vs.granularity = s.arg(0)
    vs.granularity_where = s.where
    if vs.persistence is None:
        vs.persistence = DEFAULT_PERSISTENCE  # keepalived turns persistence on for a granularity


def _vs_family(vs: _VS, s: Statement) -> None:
    if s.arg(0) == "inet":
        vs.family = 4
    elif s.arg(0) == "inet6":
        vs.family = 6
    else:
        vs.notes.append(_note(s, "keepalived knows inet and inet6 only; it ignores this line"))


def _vs_weight(vs: _VS, s: Statement) -> None:
    value = _uint(s.arg(0), 1, 65535)
    if value is None:
        vs.notes.append(_note(s, "keepalived rejects it (expected 1..65535)"))
    else:
        vs.weight = value


def _vs_flag(flag: str | None, schedulers: tuple[str, ...] = ()) -> Callable[[_VS, Statement], None]:
    def handle(vs: _VS, s: Statement) -> None:
        if flag is None:
            vs.notes.append(_note(s, "kanotify's config has no such service flag"))
        elif schedulers and vs.scheduler not in schedulers:
            # keepalived looks at the scheduler set so far (check_parser.c lbflags_handler)
            vs.notes.append(_note(s, f"keepalived ignores it: only with lvs_sched {' or '.join(schedulers)} "
                                     "given before it"))
        else:
            vs.flags.add(flag)
    return handle


def _vs_cascade(vs: _VS, s: Statement) -> None:
    vs.cascade[_canonical(s.keyword)] = _Option(s.arg(0, "") or "", s.where, s.keyword)
    vs.notes.append(_note(s, HEALTH))


def _vs_hashed(vs: _VS, s: Statement) -> None:
    vs.notes.append(_note(s, "the kernel sets the hashed flag on every service itself; nothing to configure"))


def _reason(text: str) -> Callable[[_VS, Statement], None]:
    def handle(vs: _VS, s: Statement) -> None:
        vs.notes.append(_note(s, text))
    return handle


#: virtual_server keywords (keepalived 2.2.7 check_parser.c), by canonical name
VS_KEYWORDS: dict[str, Callable[[_VS, Statement], None]] = {
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
    "mh-port": _vs_flag("sh-port", ("mh",)),  # the same kernel bit (IP_VS_SVC_F_SCHED2)
    "mh-fallback": _vs_flag("sh-fallback", ("mh",)),  # IP_VS_SVC_F_SCHED1
    "flag-1": _vs_flag("sh-fallback"),
    "flag-2": _vs_flag("sh-port"),
    "flag-3": _vs_flag(None),
    "hashed": _vs_hashed,
    **{name: _vs_cascade for name in CASCADE},
    "sorry_server": _reason("kanotify has no sorry server (a real server used only when all others are down)"),
    "sorry_server_inhibit": _reason("kanotify has no sorry server"),
    "sorry_server_lvs_method": _reason("kanotify has no sorry server"),
    "quorum": _reason("kanotify has no service quorum"),
    "quorum_up": _reason("kanotify has no service quorum scripts (a hook plugin can do it)"),
    "quorum_down": _reason("kanotify has no service quorum scripts (a hook plugin can do it)"),
    "hysteresis": _reason("kanotify has no service quorum"),
    "omega": _reason("kanotify has no service quorum scripts"),
    "ha_suspend": _reason("kanotify loads a service only in the states it lists (states = [...]) instead"),
    "virtualhost": _reason(HEALTH),
    "smtp_alert": _reason("kanotify sends no mail; its journal and syslog record every change"),
    "snmp_name": _reason("kanotify has no SNMP agent"),
    "persistence_engine": _reason("kanotify's config has no persistence engine (e.g. sip)"),
}


# -- real_server keywords


def _rs_weight(vs: _VS, rs: _RS, s: Statement) -> None:
    value = _uint(s.arg(0), 0, 65535)
    if value is None:
        rs.notes.append(_note(s, "keepalived rejects it (expected 0..65535)"))
    else:
        rs.weight = value


def _rs_method(vs: _VS, rs: _RS, s: Statement) -> None:
    forward = FORWARDS.get(s.arg(0) or "")
    if forward is None:
        rs.notes.append(_note(s, "keepalived knows DR, NAT and TUN only; it ignores this line"))
        return
    rs.forward = forward
    if len(s.args) > 1:
        rs.notes.append(_note(s, "tunnel options (type gue/gre, port, csum): kanotify configures plain IPIP tunnels"))


def _rs_threshold(attr: str) -> Callable[[_VS, _RS, Statement], None]:
    def handle(vs: _VS, rs: _RS, s: Statement) -> None:
        value = _uint(s.arg(0), 0, 2**32 - 1)
        if value is None:
            rs.notes.append(_note(s, "keepalived rejects it (expected an unsigned integer)"))
        elif value > 65535:
            rs.notes.append(_note(s, "kanotify's thresholds go up to 65535"))
        else:
            setattr(rs, attr, value)
    return handle


def _rs_cascade(vs: _VS, rs: _RS, s: Statement) -> None:
    rs.cascade[_canonical(s.keyword)] = _Option(s.arg(0, "") or "", s.where, s.keyword)
    rs.notes.append(_note(s, HEALTH))


def _rs_reason(text: str) -> Callable[[_VS, _RS, Statement], None]:
    def handle(vs: _VS, rs: _RS, s: Statement) -> None:
        rs.notes.append(_note(s, text))
    return handle


def _rs_checker(vs: _VS, rs: _RS, s: Statement) -> None:
    rs.checkers.append(s)


#: real_server keywords (keepalived 2.2.7), by canonical name; checkers are in :data:`CHECKERS`
RS_KEYWORDS: dict[str, Callable[[_VS, _RS, Statement], None]] = {
    "weight": _rs_weight,
    "lvs_method": _rs_method,
    "uthreshold": _rs_threshold("upper"),
    "lthreshold": _rs_threshold("lower"),
    **{name: _rs_cascade for name in CASCADE},
    "notify_up": _rs_reason("kanotify runs no script when a real server comes up (a hook plugin can)"),
    "notify_down": _rs_reason("kanotify runs no script when a real server goes down (a hook plugin can)"),
    "smtp_alert": _rs_reason("kanotify sends no mail; its journal and syslog record every change"),
    "virtualhost": _rs_reason(HEALTH),
    "snmp_name": _rs_reason("kanotify has no SNMP agent"),
    "track_file": _rs_reason("kanotify does not weight real servers by file contents"),
    **{name: _rs_checker for name in CHECKERS},
}

#: checker options -> the key of kanotify's future [check] table (None: no equivalent)
CHECKER_OPTIONS: dict[str, str | None] = {
    "connect_timeout": "timeout", "retry": "retry", "delay_before_retry": "retry_delay", "delay_loop": "interval",
    "connect_port": "port", "misc_timeout": "timeout", "misc_path": "command", "virtualhost": "host",
    "warmup": None, "alpha": None, "connect_ip": None, "bindto": None, "bind_port": None, "bind_if": None,
    "fwmark": None, "log_all_failures": None, "misc_dynamic": None, "user": None, "http_protocol": None,
    "enable_sni": None, "fast_recovery": None,
}


def _canonical(keyword: str, in_http: bool = False) -> str:
    if in_http and keyword in CHECKER_ALIASES:
        return CHECKER_ALIASES[keyword]
    return ALIASES.get(keyword, keyword)


# --------------------------------------------------------------------------- health checkers


def _checker_note(vs: _VS, rs: _RS, s: Statement, port: int) -> list[Note]:
    """A checker as a note whose proposal is the ``[instance.service.real.check]`` it would be.

    The one place to change when kanotify's config gains ``[check]``.
    """
    kind = CHECKERS.get(s.keyword)
    http = s.keyword in ("HTTP_GET", "SSL_GET")
    own: dict[str, _Option] = {}
    extra: list[Note] = []
    urls: list[Statement] = []
    for o in s.block or ():
        name = _canonical(o.keyword, http)
        if name == "url" and http:
            urls.append(o)
        elif name in CHECKER_OPTIONS or name in CASCADE:
            own[name] = _Option(" ".join(o.args), o.where, o.keyword)
            if name not in CASCADE and CHECKER_OPTIONS.get(name) is None:
                extra.append(_note(o, "kanotify's checks have no such option"))
        else:
            extra.append(_note(o, f"not a {s.keyword} option keepalived 2.2.7 knows (it ignores it)"))
    if kind is None:
        return [_note(s, f"{HEALTH}; kanotify has no {s.keyword} equivalent (tcp, http, https, command)")] + extra

    def pick(name: str) -> tuple[str, str]:
        for level, opts in (("", own), ("real_server ", rs.cascade), ("virtual_server ", vs.cascade)):
            if name in opts:
                o = opts[name]
                return o.value, f"{level}{o.written} ({o.where})"
        return CHECK_DEFAULTS.get(name, ""), "keepalived's default"

    lines = ["[instance.service.real.check]", f'type = "{kind}"']
    check_port = own["connect_port"].value if "connect_port" in own else str(port)
    lines.append(f"port = {check_port}")
    if http:
        if urls:
            url = urls[0]
            path = url.child("path")
            if path is not None and path.args:
                lines.append(f"path = {_toml_str(path.args[0])}")
            status = url.child("status_code")
            if status is not None and status.args:
                codes = _status_list(status.args)
                if codes == list(range(200, 300)):
                    lines.append("# status 200-299: kanotify's default")
                else:
                    lines.append(f"status = [{', '.join(str(c) for c in codes)}]")
            for o in url.block or ():
                if o.keyword not in ("path", "status_code", "virtualhost"):
                    extra.append(_note(o, "kanotify's http checks compare status codes only"))
            host = url.child("virtualhost")
            if host is not None and host.args:
                lines.append(f"host = {_toml_str(host.args[0])}")
            for more in urls[1:]:
                extra.append(_note(more, "kanotify checks one url per real server"))
        if "virtualhost" in own:
            lines.append(f"host = {_toml_str(own['virtualhost'].value)}")
    if s.keyword == "MISC_CHECK":
        argv = split_script(own["misc_path"].value) if "misc_path" in own else None
        if argv:
            lines.append(f"command = [{', '.join(_toml_str(a) for a in argv)}]")
        if "misc_timeout" in own:
            mt = own["misc_timeout"]
            lines.append(f"timeout = {mt.value}    # misc_timeout ({mt.where})")
        else:
            value, origin = pick("delay_loop")  # keepalived: misc_timeout defaults to delay_loop
            lines.append(f"timeout = {value}    # no misc_timeout: delay_loop, {origin}")
    for option, key in (("delay_loop", "interval"), ("connect_timeout", "timeout"), ("retry", "retry"),
                        ("delay_before_retry", "retry_delay")):
        if option == "connect_timeout" and s.keyword == "MISC_CHECK":
            continue
        value, origin = pick(option)
        lines.append(f"{key} = {value}    # {origin}")
    inhibit, origin = pick("inhibit_on_failure")
    if origin != "keepalived's default":
        lines.append(f'on_failure = "{"remove" if inhibit in ("off", "false", "no") else "drain"}"    # {origin}')
    return [_note(s, f"{HEALTH}; it would be:", tuple(lines))] + extra


def _status_list(words: tuple[str, ...]) -> list[int]:
    """keepalived's status_code words (``200``, ``200-299``, comma lists) as codes."""
    codes: list[int] = []
    for word in " ".join(words).replace(",", " ").split():
        m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", word)
        if m:
            codes.extend(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return codes


# --------------------------------------------------------------------------- import


def import_conf(conf: KeepalivedConf, instance: str | None = None) -> ImportResult:
    """Map every ``virtual_server`` of *conf* to kanotify services (see the module docstring)."""
    name = instance or _first_instance(conf) or "VI_1"
    groups = {s.arg(0): s for s in conf.top("virtual_server_group") if s.arg(0)}
    services: list[ImportedService] = []
    notes: list[Note] = []
    seen: dict[ServiceKey, Where] = {}
    for stmt in conf.top("virtual_server"):
        vs = _read_vs(stmt)
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
    notes.extend(_sync_daemon_notes(conf, name))
    return ImportResult(conf.path, name, tuple(services), tuple(notes), tuple(str(m) for m in conf.messages))


def _first_instance(conf: KeepalivedConf) -> str | None:
    from .config import _NAME_RE

    for stmt in conf.top("vrrp_instance"):
        if stmt.arg(0) and _NAME_RE.match(stmt.arg(0) or ""):
            return stmt.arg(0)
    return None


def _read_vs(stmt: Statement) -> _VS:
    vs = _VS(stmt)
    for s in stmt.block or ():
        key = _canonical(s.keyword)
        if key == "real_server":
            rs = _read_rs(vs, s)
            if rs is not None:
                vs.reals.append(rs)
            continue
        handler = VS_KEYWORDS.get(key)
        if handler is None:
            vs.notes.append(_note(s, "not a virtual_server keyword keepalived 2.2.7 knows (it ignores it)"))
        else:
            handler(vs, s)
    return vs


def _read_rs(vs: _VS, stmt: Statement) -> _RS | None:
    address = _ip(stmt.arg(0))
    port_word = stmt.arg(1, "0") or "0"
    port = _uint(port_word, 0, 65535)
    if address is None or port is None:
        vs.notes.append(_note(stmt, "keepalived skips a real server with an invalid address or port"))
        return None
    rs = _RS(stmt, address, port)
    for s in stmt.block or ():
        handler = RS_KEYWORDS.get(_canonical(s.keyword))
        if handler is None:
            rs.notes.append(_note(s, "not a real_server keyword keepalived 2.2.7 knows (it ignores it)"))
        else:
            handler(vs, rs, s)
    return rs


def _ip(word: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address(word or "")
    except ValueError:
        return None


@dataclass(frozen=True)
class _Target:
    key: ServiceKey
    port: int  # the service's port (0 for fwmark)
    title: str


def _expand(vs: _VS, groups: dict[str | None, Statement]) -> tuple[list[ImportedService], list[Note]]:
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
                skipped.append(_note(entry, why))
            targets.extend(found)
    elif kind == "fwmark":
        mark = _uint(stmt.arg(1), 1, 2**32 - 1)
        if mark is None:
            return [], [Note(stmt.where, title, "kanotify needs a fwmark 1..4294967295")]
        targets.append(_Target(ServiceKey.mark(mark, _fwmark_family(vs, None)), 0, title))
    else:
        address = _ip(kind)
        port = _uint(stmt.arg(1, "0"), 0, 65535)
        if address is None or port is None:
            return [], [Note(stmt.where, title, "keepalived skips a virtual_server with an invalid address or port")]
        if port == 0:
            return [], [Note(stmt.where, title, "a port-0 (all ports, persistent) service: kanotify's config needs "
                                                "a port 1..65535 or a fwmark")]
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


def _protocol(vs: _VS) -> str:
    return vs.protocol or "udp"  # keepalived: "no protocol set - defaulting to UDP"


def _fwmark_family(vs: _VS, given: int | None) -> int:
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


def _group_entry(vs: _VS, entry: Statement) -> tuple[list[_Target], str | None]:
    if entry.keyword == "fwmark":
        mark = _uint(entry.arg(0), 1, 2**32 - 1)
        if mark is None:
            return [], "kanotify needs a fwmark 1..4294967295"
        family = {"inet": 4, "inet6": 6}.get(entry.arg(1) or "")
        title = f"{' '.join(vs.stmt.words)}: fwmark {mark}"
        return [_Target(ServiceKey.mark(mark, _fwmark_family(vs, family)), 0, title)], None
    port = _uint(entry.arg(0, "0"), 0, 65535)
    if port is None:
        return [], "keepalived skips an entry with an invalid port"
    if port == 0:
        return [], "a port-0 (all ports, persistent) entry: kanotify's config needs a port 1..65535"
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


def _granularity(vs: _VS, family: int) -> tuple[int | None, Note | None]:
    if vs.granularity is None:
        return None, None
    full = 32 if family == 4 else 128
    where = vs.granularity_where or vs.stmt.where
    bad = Note(where, f"persistence_granularity {vs.granularity}", "")
    if family == 6:
        value = _uint(vs.granularity, 1, 128)
        if value is None:
            return None, Note(bad.where, bad.keyword, "keepalived expects an IPv6 prefix length 1..128")
    else:
        try:
            value = ipaddress.IPv4Network(f"0.0.0.0/{vs.granularity}").prefixlen
        except ValueError:
            return None, Note(bad.where, bad.keyword, "not a contiguous IPv4 netmask: kanotify takes a prefix length")
    return (None if value == full else value), None


def _service(vs: _VS, target: _Target, first: bool) -> ImportedService | Note:
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
    service = VirtualService(key, scheduler, vs.persistence or 0, netmask, frozenset(flags))
    reals: list[ImportedReal] = []
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
                notes.append(_note(rs.stmt, why))
            continue
        if (rs.address, rs.port) in configured:
            if first:
                notes.append(_note(rs.stmt, f"a duplicate of the real server at {configured[(rs.address, rs.port)]}: "
                                            "keepalived removes it"))
            continue
        configured[(rs.address, rs.port)] = rs.stmt.where
        if forward == "nat":
            port = rs.port or target.port
            if rs.port == 0 and target.port and first:
                rnotes.append(_note(rs.stmt, f"no port with NAT: keepalived would send port 0; kanotify uses the "
                                             f"service's port {target.port}"))
        else:
            port = target.port  # keepalived: DR and TUN use the service's port (0 for fwmark)
            if rs.port and rs.port != port and first:
                rnotes.append(_note(rs.stmt, f"port {rs.port}: with {forward.upper()} keepalived uses the service's "
                                             f"port ({port}); only NAT rewrites ports"))
        if (rs.address, port) in seen:
            if first:
                notes.append(_note(rs.stmt, f"the same IPVS destination as the real server at "
                                            f"{seen[(rs.address, port)]}"))
            continue
        seen[(rs.address, port)] = rs.stmt.where
        lower = rs.lower if rs.upper and rs.lower <= rs.upper else 0
        if lower != rs.lower and first:
            rnotes.append(_note(rs.stmt, "lthreshold without a uthreshold above it: the kernel refuses that "
                                         "(ERANGE), kanotify's config too"))
        weight = rs.weight if rs.weight is not None else vs.weight
        real = RealServer(rs.address, port, forward, weight, rs.upper, lower)
        if first:
            for checker in rs.checkers:
                check_port = rs.port or target.port
                rnotes.extend(_checker_note(vs, rs, checker, check_port))
        reals.append(ImportedReal(real, rs.stmt.where, tuple(rnotes)))
    if not reals:
        return Note(vs.stmt.where, target.title, "none of its real servers can be used: keepalived ignores it")
    if not first:
        comments.append(f"one of the services of {' '.join(vs.stmt.words)} ({vs.stmt.where}): its keepalived "
                        "options not imported are listed under the first")
    return ImportedService(service, tuple(reals), vs.stmt.where, target.title, tuple(notes), tuple(comments))


# --------------------------------------------------------------------------- sync daemon


def _sync_daemon_notes(conf: KeepalivedConf, instance: str) -> list[Note]:
    """``lvs_sync_daemon`` (and the legacy ``lvs_sync_daemon_interface``) as the [sync_daemon] they would be.

    The one place to change when kanotify's config gains ``[sync_daemon]`` (issue 13).
    """
    notes: list[Note] = []
    vrids: dict[str | None, str | None] = {}
    for block in conf.top("vrrp_instance"):
        vrid = block.child("virtual_router_id")
        vrids[block.arg(0)] = vrid.arg(0) if vrid is not None else None
    for s in conf.global_("lvs_sync_daemon"):
        words = list(s.args)
        if not words:
            continue
        opts: dict[str, str] = {}
        positional: list[str] = []
        i = 1
        while i < len(words):
            if words[i] in ("inst", "id", "maxlen", "port", "ttl", "group") and i + 1 < len(words):
                opts[words[i]] = words[i + 1]
                i += 2
            else:
                positional.append(words[i])
                i += 1
        inst = opts.get("inst") or (positional[0] if positional else None) or instance
        sync_id = opts.get("id") or (positional[1] if len(positional) > 1 else None) or vrids.get(inst)
        lines = ["[sync_daemon]", f"interface = {_toml_str(words[0])}", f"instance = {_toml_str(inst)}"]
        if sync_id is not None:
            lines.append(f"sync_id = {sync_id}")
        for key in ("maxlen", "port", "ttl"):
            if key in opts:
                lines.append(f"{key} = {opts[key]}")
        if "group" in opts:
            lines.append(f"group = {_toml_str(opts['group'])}")
        notes.append(_note(s, "the [sync_daemon] table is not in kanotify's config yet (issue 13); it would be:",
                           tuple(lines)))
    for vrrp in conf.top("vrrp_instance"):
        for s in vrrp.children("lvs_sync_daemon_interface"):
            lines = ["[sync_daemon]", f"interface = {_toml_str(s.arg(0) or '')}", f"instance = {_toml_str(vrrp.arg(0))}"]
            legacy_id = vrids.get(vrrp.arg(0))
            if legacy_id is not None:
                lines.append(f"sync_id = {legacy_id}")
            notes.append(_note(s, "legacy form of lvs_sync_daemon; the [sync_daemon] table is not in kanotify's "
                                  "config yet (issue 13); it would be:", tuple(lines)))
    return notes


# --------------------------------------------------------------------------- TOML


def _clean(text: str) -> str:
    """One comment line: control characters spelled out."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _toml_str(text: str | None) -> str:
    return json.dumps(text or "")  # a JSON string is a valid TOML basic string


def render(result: ImportResult) -> str:
    """The TOML text for *result*, ``# not imported`` comments included."""
    out = [
        f"# kanotify config imported from {_clean(result.path)} by `kanotify import`.",
        f"# {len(result.services)} IPVS service(s), wanted while {result.instance} is MASTER. "
        "Check it with: kanotify --config FILE check",
    ]
    count = len(result.notes) + sum(len(s.notes) + sum(len(r.notes) for r in s.reals) for s in result.services)
    if count:
        out.append(f"# {count} keepalived keyword(s) could not be imported: see the '# not imported' lines.")
    for problem in result.problems:
        out.append(f"# keepalived.conf problem: {_clean(problem)}")
    top_notes = [n for n in result.notes if n.proposal]
    other_notes = [n for n in result.notes if not n.proposal]
    for note in other_notes:
        out.extend(note.lines())
    for note in top_notes:
        out.append("")
        out.extend(note.lines())
    out += ["", "[[instance]]", f"name = {_toml_str(result.instance)}"]
    for svc in result.services:
        out.append("")
        out.append(f"  # {_clean(svc.title)} ({svc.where})")
        for comment in svc.comments:
            out.append(f"  # {_clean(comment)}")
        out.append("  [[instance.service]]")
        key = svc.service.key
        if key.is_fwmark:
            out.append(f"  fwmark = {key.fwmark}")
            if key.family == 6:
                out.append('  family = "inet6"')
        else:
            out.append(f"  protocol = {_toml_str(key.protocol)}")
            out.append(f"  address = {_toml_str(str(key.address))}")
            out.append(f"  port = {key.port}")
        out.append(f"  scheduler = {_toml_str(svc.service.scheduler)}")
        if svc.service.persistence:
            out.append(f"  persistence = {svc.service.persistence}")
        if svc.service.netmask is not None:
            out.append(f"  persistence_netmask = {svc.service.netmask}")
        if svc.service.flags:
            out.append(f"  flags = [{', '.join(_toml_str(f) for f in sorted(svc.service.flags))}]")
        out.append('  states = ["master"]')
        for note in svc.notes:
            out.extend(note.lines("  "))
        for imported in svc.reals:
            real = imported.real
            out.append("")
            out.append(f"    [[instance.service.real]]    # {imported.where}")
            out.append(f"    address = {_toml_str(str(real.address))}")
            out.append(f"    port = {real.port}")
            out.append(f"    forward = {_toml_str(real.forward)}")
            out.append(f"    weight = {real.weight}")
            if real.u_threshold:
                out.append(f"    upper_threshold = {real.u_threshold}")
            if real.l_threshold:
                out.append(f"    lower_threshold = {real.l_threshold}")
            for note in imported.notes:
                out.extend(note.lines("    "))
    return "\n".join(out) + "\n"


def import_file(path: str, instance: str | None = None, config_id: str | None = None) -> tuple[ImportResult, str]:
    """Read, import and render *path*; the TOML is validated by kanotify's own loader first."""
    conf = read_config(path, config_id)
    if not conf.readable:
        raise ConfigError([Problem(path, "", m.text) for m in conf.messages] or [Problem(path, "", "cannot read")])
    result = import_conf(conf, instance)
    text = render(result)
    from .config import parse_config

    try:
        parse_config(text, f"<import of {path}>")
    except ConfigError as exc:  # a bug in the mapping, never the user's fault: say so loudly
        raise KanotifyError("import produced a config that kanotify check rejects (a bug, please report): "
                            + "; ".join(str(p) for p in exc.problems)) from None
    return result, text


def cmd_import(g: Any, path: str, instance: str | None, config_id: str | None) -> NoReturn:
    """``kanotify import KEEPALIVED_CONF [--instance NAME] [--config-id ID]``."""
    from .commands import Exit, out
    from .config import _NAME_RE
    from .errors import EXIT_OK, UsageError

    if instance is not None and not _NAME_RE.match(instance):
        raise UsageError(f"--instance {instance!r}: expected a name of letters, digits and _.:@+- (at most 64)")
    result, text = import_file(path, instance, config_id)
    if g.json:
        notes = [n for n in result.notes] + [n for s in result.services for n in s.notes] + [
            n for s in result.services for r in s.reals for n in r.notes]
        out(json.dumps({
            "source": result.path,
            "instance": result.instance,
            "services": [str(s.service) for s in result.services],
            "not_imported": [{"keyword": n.keyword, "where": str(n.where), "reason": n.reason} for n in notes],
            "problems": list(result.problems),
            "toml": text,
        }, indent=2))
    else:
        out(text.rstrip("\n"))
    raise Exit(EXIT_OK)

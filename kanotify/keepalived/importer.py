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
once as ``[instance.service.check]`` (:func:`_map_checker`, :func:`render`).

keepalived's IPVS sync daemon (the global ``lvs_sync_daemon``, or the legacy
``lvs_sync_daemon_interface`` of a ``vrrp_instance``) becomes the
``[sync_daemon]`` table when it follows the imported instance: the line
keepalived 2.2.7 uses (the first), its sync id resolved as keepalived resolves
it, checked by kanotify's config loader on its own first (:func:`_sync_daemon`).
A sync daemon of another instance is a comment saying how to import it.

Nothing is dropped silently: every keyword that kanotify's config cannot hold
becomes a comment ``# not imported: KEYWORD ARGS (FILE:LINE): why``, with the
TOML it would become where there is one.

Each keyword is handled by one entry of a table (:data:`VS_KEYWORDS`,
:data:`RS_KEYWORDS`, :data:`CHECKER_KEYWORDS`); a keyword in no table is
reported as unknown to keepalived 2.2.7 (which ignores it too).

The TOML produced always passes ``kanotify check``: :func:`render` is checked
against the config loader by :func:`import_file` before it is returned.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable

from ..errors import ConfigError, KanotifyError, Problem
from ..model import IPAddress, RealServer, ServiceKey, ServiceSpec, State, VirtualService
from .conf import (ALIASES, CHECKER_ALIASES, KeepalivedConf, Statement, Where, read_config, script_argv,
                   split_script)

#: keepalived's lvs_schedulers (check_parser.c)
KEEPALIVED_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos")
DEFAULT_SCHEDULER = "wlc"  # IPVS_DEF_SCHED
DEFAULT_PERSISTENCE = 360  # IPVS_SVC_PERSISTENT_TIMEOUT
MAX_PERSISTENCE = 86400 * 31
MAX_GROUP_RANGE = 256  # addresses per virtual_server_group entry that import expands
FORWARDS = {"DR": "dr", "NAT": "nat", "TUN": "tun"}

#: keepalived 2.2.7's checker defaults where nothing is given: alloc_vs (check_data.c) for the
#: virtual_server's, queue_checker (check_api.c) and the checkers' own handlers for the rest
DEFAULT_DELAY_LOOP = "60"  # KEEPALIVED_DEFAULT_DELAY
DEFAULT_CONNECT_TIMEOUT = "5"  # alloc_vs: connection_to = 5 * TIMER_HZ
#: checker -> its default (retry, delay_before_retry): queue_checker's 1 and 1 s, except MISC_CHECK
#: (misc_check_handler: default_retry 0) and HTTP_GET/SSL_GET (http_get_handler: 3 s)
CHECKER_DEFAULTS = {"TCP_CHECK": ("1", "1"), "HTTP_GET": ("1", "3"), "SSL_GET": ("1", "3"), "MISC_CHECK": ("0", "1")}
#: options of health checkers that a virtual_server and a real_server may give for all their checkers
CASCADE = ("delay_loop", "connect_timeout", "retry", "delay_before_retry", "warmup", "alpha", "inhibit_on_failure",
           "virtualhost")
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
    check: "ImportedCheck | None" = None  # from its keepalived checkers


@dataclass(frozen=True)
class ImportedService:
    """One IPVS service kanotify would manage, from one virtual_server block (or group entry)."""

    service: VirtualService
    reals: tuple[ImportedReal, ...]
    where: Where
    title: str
    notes: tuple[Note, ...] = ()
    comments: tuple[str, ...] = ()  # keepalived defaults applied, and the like
    checkers: tuple[Where, ...] = ()  # every health checker keepalived runs on its real servers

    @property
    def spec(self) -> ServiceSpec:
        return ServiceSpec(self.service, tuple(r.real for r in self.reals), frozenset({State.MASTER}))

    @property
    def shared_check(self) -> "ImportedCheck | None":
        """The check every real server has the same of (written once, as ``[instance.service.check]``)."""
        checks = [r.check for r in self.reals]
        first = checks[0] if checks else None
        if first is None or any(c is None or c.table != first.table for c in checks):
            return None
        return first


@dataclass(frozen=True)
class ImportResult:
    """Everything ``import`` found in one keepalived.conf."""

    path: str
    instance: str
    services: tuple[ImportedService, ...] = ()
    notes: tuple[Note, ...] = ()
    problems: tuple[str, ...] = ()  # what keepalived would complain about while reading
    sync_daemon: "ImportedSyncDaemon | None" = None  # from lvs_sync_daemon, when it follows this instance

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
    _cascade(vs.cascade, vs.notes, s, "virtual_server")


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
    _cascade(rs.cascade, rs.notes, s, "real_server")


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
    "snmp_name": _rs_reason("kanotify has no SNMP agent"),
    "track_file": _rs_reason("kanotify does not weight real servers by file contents"),
    **{name: _rs_checker for name in CHECKERS},
}

def _canonical(keyword: str, in_http: bool = False) -> str:
    if in_http and keyword in CHECKER_ALIASES:
        return CHECKER_ALIASES[keyword]
    return ALIASES.get(keyword, keyword)


# --------------------------------------------------------------------------- health checkers

#: the keywords keepalived 2.2.7 knows in each checker block (install_checker_common_keywords + the checker's own)
_COMMON = ("retry", "delay_before_retry", "warmup", "delay_loop", "alpha", "log_all_failures")
_CONNECTION = ("connect_ip", "connect_port", "bindto", "bind_port", "bind_if", "connect_timeout", "fwmark")
_HTTP = ("nb_get_retry", "virtualhost", "http_protocol", "enable_sni", "fast_recovery", "url")
CHECKER_KEYWORDS: dict[str, tuple[str, ...]] = {
    "TCP_CHECK": _COMMON + _CONNECTION,
    "HTTP_GET": _COMMON + _CONNECTION + _HTTP,
    "SSL_GET": _COMMON + _CONNECTION + _HTTP,
    "MISC_CHECK": _COMMON + ("misc_path", "misc_timeout", "misc_dynamic", "user"),
}
#: the keywords of an HTTP_GET/SSL_GET ``url`` block
URL_KEYWORDS = ("path", "digest", "status_code", "virtualhost", "regex", "regex_no_match", "regex_options",
                "regex_min_offset", "regex_max_offset", "regex_stack")
_CONTENTS = "kanotify compares status codes only, not the page's contents"
#: checker options kanotify's checks have no equivalent for: what kanotify does instead
CHECKER_UNSUPPORTED = {
    "warmup": "kanotify has no warmup (keepalived delays a first check by a random time up to it; kanotify spreads "
              "the first checks over at most 5 s)",
    "log_all_failures": "kanotify journals each UP/DOWN change; kanotify status shows the last error",
    "bindto": "kanotify's checks use the source address the kernel picks",
    "bind_port": "kanotify's checks use a source port the kernel picks",
    "bind_if": "kanotify's checks do not bind to an interface",
    "fwmark": "kanotify's checks do not mark their packets (SO_MARK)",
    "http_protocol": "kanotify's http checks send HTTP/1.0 requests with Connection: close",
    "enable_sni": "kanotify's https checks always send the host as the TLS server name",
    "fast_recovery": "kanotify checks a DOWN real server again every interval",
    "digest": "kanotify compares status codes only, not the page's MD5 digest",
    **{name: _CONTENTS for name in URL_KEYWORDS if name.startswith("regex")},
}
#: keepalived's check_true_false()
_BOOL = {"true": "on", "on": "on", "yes": "on", "false": "off", "off": "off", "no": "off"}
#: kanotify's limits (config.py check_table), which keepalived's values may exceed
_LIMITS = {"interval": 86400, "timeout": 3600, "retry": 100, "retry_delay": 3600}
_SHELLS = ("sh", "bash", "dash", "ash", "ksh", "mksh", "zsh")
#: words a shell would interpret: operators, redirections, pipes, command substitution, $VAR
_SHELL_WORD = re.compile(r"\|\|?|&&?|;;?|[0-9]*(?:>>?|<<?|>&|<&)[0-9]*-?|\(|\)")
_SHELL_PART = re.compile(r"[|`]|^[<>]|^[0-9]>|;$|\$[A-Za-z_{(0-9?#@*!$-]")


@dataclass(frozen=True)
class CheckLine:
    """One key of an imported ``[check]`` table: its TOML value and where keepalived took it from."""

    key: str
    value: str  # TOML
    origin: str = ""


@dataclass(frozen=True)
class ImportedCheck:
    """The kanotify check one keepalived checker becomes, for one real server.

    ``port`` is written only when it differs from the real server's, so two
    real servers with equal :attr:`table` can share one service-level check.
    """

    checker: str  # TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK
    where: Where
    lines: tuple[CheckLine, ...]
    comments: tuple[str, ...] = ()

    @property
    def table(self) -> tuple[tuple[str, str], ...]:
        """The keys and their values: what real servers must share for one ``[instance.service.check]``."""
        return tuple((line.key, line.value) for line in self.lines)


@dataclass(frozen=True)
class _Mapped:
    """What one keepalived checker became."""

    check: ImportedCheck | None  # None: not imported
    notes: list[Note]
    runs: bool  # keepalived runs it (it skips a HTTP_GET without url, a MISC_CHECK without misc_path)
    sources: frozenset[Where] = frozenset()  # the lines its values came from


def _seconds(word: str | None, positive: bool) -> str | None:
    """keepalived's read_timer(): seconds to the microsecond, as TOML number text."""
    if word is None or not re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", word):
        return None
    value = Decimal(word).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    if positive and value <= 0:
        return None
    return format(value.normalize(), "f")


def _option_value(name: str, s: Statement, level: str) -> tuple[str | None, str]:
    """A cascaded checker option as keepalived reads it at *level*: (value, "") or (None, why it is ignored).

    *level* is ``virtual_server``, ``real_server`` or the checker's keyword.
    """
    word = s.arg(0)
    if name in ("delay_loop", "connect_timeout"):
        return _seconds(word, positive=True), "expected a number of seconds > 0"
    if name in ("delay_before_retry", "warmup"):
        return _seconds(word, positive=False), "expected a number of seconds"
    if name == "retry":
        lo = 1 if level in ("virtual_server", "real_server") else 0  # check_parser.c: 1.. there, 0.. in a checker
        value = _uint(word, lo, 2**32 - 1)
        return (None if value is None else str(value)), f"expected an integer {lo}..4294967295"
    if name in ("alpha", "inhibit_on_failure"):
        if level == "virtual_server" or not s.args:
            return "on", ""  # the virtual_server forms take no value (vs_alpha_handler, vs_inhibit_handler)
        return _BOOL.get(word or ""), "expected on/off, true/false or yes/no"
    if name == "virtualhost":
        return word, "the host name is missing"
    raise ValueError(f"not a cascaded checker option: {name}")


def _cascade(options: dict[str, _Option], notes: list[Note], s: Statement, level: str) -> None:
    """Keep a ``virtual_server`` or ``real_server`` checker option for the checkers below it."""
    name = _canonical(s.keyword)
    if name in CHECKER_UNSUPPORTED:
        notes.append(_note(s, CHECKER_UNSUPPORTED[name]))
        return
    value, why = _option_value(name, s, level)
    if value is None:
        notes.append(_note(s, f"keepalived ignores it: {why}"))
        return
    if level == "virtual_server" and name in ("alpha", "inhibit_on_failure") and s.args:
        notes.append(_note(s, f"keepalived's virtual_server {name} takes no value: it turns {name} on"))
    _keep(options, notes, name, _Option(value, s.where, s.keyword))


def _keep(options: dict[str, _Option], notes: list[Note], name: str, option: _Option) -> None:
    earlier = options.get(name)
    if earlier is not None:  # keepalived's handlers overwrite: the last one counts
        notes.append(Note(earlier.where, f"{earlier.written} {earlier.value}",
                          f"{option.written} is given again at {option.where}: keepalived uses the last"))
    options[name] = option


def _checks(vs: _VS, rs: _RS, real: RealServer) -> tuple[ImportedCheck | None, list[Note], list[Where], set[Where]]:
    """The check of one real server from its keepalived checkers.

    Returns the check (the first checker kanotify can run), the notes, where
    each checker keepalived runs is, and the lines the values came from.
    kanotify has one check per real server; keepalived counts a real server
    UP only while all its checkers pass.
    """
    used: ImportedCheck | None = None
    notes: list[Note] = []
    runs: list[Where] = []
    sources: set[Where] = set()
    for s in rs.checkers:
        mapped = _map_checker(vs, rs, s, real)
        sources |= mapped.sources
        if mapped.runs:
            runs.append(s.where)
        if mapped.check is not None and used is not None:
            notes.append(_note(s, f"kanotify has one check per real server and uses the {used.checker} at "
                                  f"{used.where}; keepalived ran this one too (UP only while every checker passed)"))
        elif mapped.check is not None:
            used = mapped.check
        notes.extend(mapped.notes)
    return used, notes, runs, sources


def _map_checker(vs: _VS, rs: _RS, s: Statement, real: RealServer) -> _Mapped:
    """One keepalived checker of *rs* as the kanotify check of *real*, the real server it was imported as.

    Every value is resolved as keepalived 2.2.7 does (check_data.c
    check_check_config): the checker's own, else the real_server's, else the
    virtual_server's, else keepalived's default -- written out even where it
    equals kanotify's default, with where it came from.
    """
    from ..config import _check_host, _check_url_path

    kind = CHECKERS.get(s.keyword)
    if kind is None:
        return _Mapped(None, [_note(s, f"kanotify has no {s.keyword} equivalent (its checks: tcp, http, https, "
                                       "command)")], True)
    http = kind in ("http", "https")
    known = CHECKER_KEYWORDS[s.keyword]
    own: dict[str, _Option] = {}
    raw: dict[str, Statement] = {}
    notes: list[Note] = []
    urls: list[Statement] = []
    for o in s.block or ():
        name = _canonical(o.keyword, http)
        if o.keyword not in known:
            notes.append(_note(o, f"not a {s.keyword} option keepalived 2.2.7 knows (it ignores it)"))
        elif name == "url":
            urls.append(o)
        elif name in CHECKER_UNSUPPORTED:
            notes.append(_note(o, CHECKER_UNSUPPORTED[name]))
        elif name in CASCADE:
            value, why = _option_value(name, o, s.keyword)
            if value is None:
                notes.append(_note(o, f"keepalived ignores it: {why}"))
            else:
                _keep(own, notes, name, _Option(value, o.where, o.keyword))
        elif name in ("connect_port", "misc_timeout"):
            lo, hi = (1, 65535) if name == "connect_port" else (0, (2**32 - 1) // 1000000)
            number = _uint(o.arg(0), lo, hi)
            if number is None:
                notes.append(_note(o, f"keepalived ignores it: expected an integer {lo}..{hi}"))
            else:
                _keep(own, notes, name, _Option(str(number), o.where, o.keyword))
        else:  # connect_ip, misc_path, misc_dynamic, user: read from the statement below
            if name in raw:
                notes.append(_note(raw[name], f"{o.keyword} is given again at {o.where}: keepalived uses the last"))
            raw[name] = o
    sources: set[Where] = set()
    blockers: list[str] = []
    comments: list[str] = []

    def pick(name: str) -> tuple[str | None, str]:
        for level, options in (("", own), ("real_server ", rs.cascade), ("virtual_server ", vs.cascade)):
            if name in options:
                option = options[name]
                sources.add(option.where)
                return option.value, f"{level}{option.written} ({option.where})"
        return None, ""

    lines = [CheckLine("type", _toml_str(kind))]
    if kind != "command":
        if "connect_ip" in raw:
            blockers.append(f"it checks {raw['connect_ip'].arg(0)} (connect_ip, {raw['connect_ip'].where}); "
                            "kanotify checks the real server's own address")
        port, port_origin = rs.port, f"the port of real_server ({rs.stmt.where})"
        if "connect_port" in own:
            port, port_origin = int(own["connect_port"].value), f"connect_port ({own['connect_port'].where})"
            sources.add(own["connect_port"].where)
        if port == 0 and real.port == 0:
            blockers.append("no port to check: a fwmark real server has none and keepalived's checker would "
                            "connect to port 0 (give connect_port)")
        elif port == 0:
            comments.append(f"no connect_port and no port on the real_server: keepalived 2.2.7 connects to port 0 "
                            f"(which fails); kanotify checks the real server's port {real.port}")
        elif port != real.port:
            lines.append(CheckLine("port", str(port), port_origin))
        elif "connect_port" in own:
            comments.append(f"{port_origin}: the real server's port, kanotify's default")
    if http:
        url = _url(urls, notes)
        if url is None:
            return _Mapped(None, [_note(s, f"keepalived skips a {s.keyword} without a url with a path: it runs "
                                           "no check")] + notes, False)
        path = [p for p in url.children("path") if p.args][-1]
        sources.add(path.where)
        if _check_url_path(path.args[0]):
            blockers.append(f"path {path.args[0]!r} ({path.where}): kanotify's checks need a path starting with /")
        lines.append(CheckLine("path", _toml_str(path.args[0]), f"url path ({path.where})"))
        given = url.children("status_code")
        codes, bad = _status_codes(given)
        for stmt, word in bad:
            notes.append(_note(stmt, f"keepalived skips the status code {word!r} (expected 100..599 or a range "
                                     "like 200-299)"))
        sources.update(stmt.where for stmt in given)
        if codes and codes != list(range(200, 300)):
            lines.append(CheckLine("status", f"[{', '.join(map(str, codes))}]",
                                   f"status_code ({', '.join(str(g.where) for g in given)})"))
        elif given:
            comments.append(f"status_code 200-299 ({', '.join(str(g.where) for g in given)}): kanotify's default")
        url_host = url.children("virtualhost")
        if url_host and url_host[-1].args:
            host: str | None = url_host[-1].args[0]
            host_origin = f"url virtualhost ({url_host[-1].where})"
            sources.add(url_host[-1].where)
        else:
            host, host_origin = pick("virtualhost")
        if host is not None and _check_host(host):
            notes.append(Note(s.where, f"virtualhost {host}", "kanotify's Host header takes a host name without "
                                                               "spaces, / or @: the real server's address is sent"))
        elif host is not None:
            lines.append(CheckLine("host", _toml_str(host), host_origin))
        if kind == "https":
            lines.append(CheckLine("verify", "false", "keepalived's SSL_GET does not verify the certificate"))
    timeout: tuple[str | None, str]
    if kind == "command":
        if "misc_path" not in raw:
            return _Mapped(None, [_note(s, "keepalived skips a MISC_CHECK without misc_path: it runs no check")]
                           + notes, False)
        misc = raw["misc_path"]
        argv, ignored = script_argv(misc)
        if argv is None:
            return _Mapped(None, [_note(misc, "keepalived cannot parse this command (an unclosed quote?) and skips "
                                              "the MISC_CHECK")] + notes, False)
        sources.add(misc.where)
        if ignored:
            comments.append(f"misc_path ({misc.where}): keepalived runs only its first word (quote the whole "
                            f"command); {' '.join(ignored)} ignored")
        command, why = _command(argv, split_script(misc.text) or [])
        if command is None:
            blockers.append(f"misc_path ({misc.where}): {why}")
            command = argv
        elif why:
            comments.append(why)
        lines.append(CheckLine("command", f"[{', '.join(_toml_str(w) for w in command)}]", f"misc_path ({misc.where})"))
        if "user" in raw:
            user = raw["user"].arg(0) or ""
            notes.append(_note(raw["user"], "kanotify runs the command as root, as its listener runs" + (
                "" if user == "root" else f", not as {user}: make sure only root can change {argv[0]}")))
        if "misc_dynamic" in raw:
            blockers.append(f"misc_dynamic ({raw['misc_dynamic'].where}): keepalived counts exit codes 2-255 as UP "
                            "with weight code-2; kanotify counts only exit 0 as UP and would take these real servers "
                            "DOWN (make the script exit 0 when up, drop misc_dynamic, then use this check)")
        mt = own.get("misc_timeout")
        if mt is not None and mt.value != "0":
            sources.add(mt.where)
            timeout = mt.value, f"misc_timeout ({mt.where})"
        else:  # check_misc.c: no misc_timeout (or 0) -> the virtual_server's own delay_loop
            vs_loop = vs.cascade.get("delay_loop")
            given_zero = f"misc_timeout 0 ({mt.where})" if mt is not None else "no misc_timeout"
            if vs_loop is not None:
                sources.add(vs_loop.where)
                timeout = vs_loop.value, f"{given_zero}: keepalived uses virtual_server delay_loop ({vs_loop.where})"
            else:
                timeout = DEFAULT_DELAY_LOOP, f"{given_zero}: keepalived uses the virtual_server's delay_loop, " \
                                              f"default {DEFAULT_DELAY_LOOP}"
            if mt is not None:
                sources.add(mt.where)
    else:
        value, origin = pick("connect_timeout")
        timeout = (value, origin) if value is not None else (DEFAULT_CONNECT_TIMEOUT, "keepalived's default")
    default_retry, default_delay = CHECKER_DEFAULTS[s.keyword]
    special = f"keepalived's {s.keyword} default"
    for key, (value, origin), default in (
        ("interval", pick("delay_loop"), (DEFAULT_DELAY_LOOP, "keepalived's default")),
        ("timeout", timeout, (None, "")),
        ("retry", pick("retry"), (default_retry, special if default_retry != "1" else "keepalived's default")),
        ("retry_delay", pick("delay_before_retry"), (default_delay, special if default_delay != "1" else
                                                     "keepalived's default")),
    ):
        if value is None:
            value, origin = default
        assert value is not None
        if Decimal(value) > _LIMITS[key]:
            value, origin = str(_LIMITS[key]), f"{origin}: {value}, above kanotify's maximum {_LIMITS[key]}"
        lines.append(CheckLine(key, value, origin))
    inhibit, origin = pick("inhibit_on_failure")
    if inhibit is None:
        lines.append(CheckLine("on_failure", '"remove"', "no inhibit_on_failure: keepalived removes a failed real "
                                                         "server"))
    else:
        lines.append(CheckLine("on_failure", '"drain"' if inhibit == "on" else '"remove"', origin))
    alpha, origin = pick("alpha")
    if alpha is not None:
        lines.append(CheckLine("initial", '"down"' if alpha == "on" else '"up"', origin))
    check = ImportedCheck(s.keyword, s.where, tuple(lines), tuple(comments))
    if blockers:
        head = _note(s, "; ".join(blockers) + "; it would be:",
                     tuple(_table_lines("[instance.service.real.check]", [check])))
        return _Mapped(None, [head] + notes, True, frozenset(sources))
    return _Mapped(check, notes, True, frozenset(sources))


def _url(urls: list[Statement], notes: list[Note]) -> Statement | None:
    """The url kanotify checks (the first one keepalived keeps); notes for the others."""
    kept = []
    for url in urls:
        for o in url.block or ():
            if o.keyword not in URL_KEYWORDS:
                notes.append(_note(o, "not a url option keepalived 2.2.7 knows (it ignores it)"))
            elif o.keyword in CHECKER_UNSUPPORTED:
                notes.append(_note(o, CHECKER_UNSUPPORTED[o.keyword]))
        paths = [p for p in url.children("path") if p.args]
        for earlier in paths[:-1]:
            notes.append(_note(earlier, f"path is given again at {paths[-1].where}: keepalived uses the last"))
        if not paths:
            notes.append(_note(url, "keepalived ignores a url without a path"))
        else:
            kept.append(url)
    for more in kept[1:]:
        notes.append(_note(more, f"kanotify checks one url per real server (the first, {kept[0].where}); keepalived "
                                 "also fetched this one, and the real server was UP only while every url passed"))
    return kept[0] if kept else None


def _status_codes(given: list[Statement]) -> tuple[list[int], list[tuple[Statement, str]]]:
    """keepalived's status_code words (``200``, ``200-299``) as codes, and the words it skips (check_http.c)."""
    codes: set[int] = set()
    bad: list[tuple[Statement, str]] = []
    for stmt in given:
        for word in stmt.args:
            m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", word)
            lo = int(m.group(1)) if m else 0
            hi = int(m.group(2) or lo) if m else 0
            if not 100 <= lo <= hi <= 599:
                bad.append((stmt, word))
            else:
                codes.update(range(lo, hi + 1))
    return sorted(codes), bad


def _command(argv: list[str], line: list[str]) -> tuple[list[str] | None, str]:
    """keepalived's misc_path argv as a kanotify command: (command, a comment) or (None, why it cannot be one).

    keepalived execs misc_path directly, without a shell (notify.c
    system_call_script), so shell syntax in it was never interpreted; the one
    exception is a command starting ``</``, a file test keepalived hands to
    system(), i.e. ``/bin/sh -c``.
    """
    first = argv[0]
    written = line[1] if len(line) > 1 else " ".join(argv)
    if first.startswith("<") and first[1:].lstrip(" \t").startswith("/"):
        text = " ".join([first] + [f"'{word}'" for word in argv[1:]])  # cmd_str(): the others single-quoted
        return ["/bin/sh", "-c", text], "keepalived runs a misc_path starting with </ (a file test) with /bin/sh -c"
    if not (os.path.basename(first) in _SHELLS and argv[1:2] == ["-c"]):
        for word in argv[1:]:
            if _SHELL_WORD.fullmatch(word) or _SHELL_PART.search(word):
                return None, (f"{word!r} is shell syntax, but keepalived runs misc_path without a shell, so {first} "
                              f"got it as an argument; kanotify runs commands without a shell too. If a shell was "
                              f"meant: command = [\"/bin/sh\", \"-c\", {_toml_str(written)}]")
    if "/" not in first:
        return None, f"{first} is not a path: keepalived searches PATH for it, kanotify runs a command by its " \
                     "absolute path only"
    if not os.path.isabs(first):
        return None, f"{first} is a relative path: kanotify runs a command by its absolute path only"
    if any(not word or "\0" in word for word in argv):
        return None, "an empty argument or a NUL byte: kanotify's command words are non-empty strings"
    return argv, ""


def _table_lines(header: str, checks: list[ImportedCheck], indent: str = "") -> list[str]:
    """The TOML of a ``[check]`` table that *checks* (all with the same :attr:`~ImportedCheck.table`) share."""
    first = checks[0]
    out = [f"{indent}{header}    # {first.checker} ({', '.join(str(c.where) for c in checks)})"]
    seen: list[str] = []
    for comment in (c for check in checks for c in check.comments):
        if comment not in seen:
            seen.append(comment)
            out.append(f"{indent}# {_clean(comment)}")
    for i, line in enumerate(first.lines):
        origin = _merged([check.lines[i].origin for check in checks])
        out.append(f"{indent}{line.key} = {line.value}" + (f"    # {_clean(origin)}" if origin else ""))
    return out


def _merged(origins: list[str]) -> str:
    """Origins of one key across real servers: ``retry (k.conf:34)`` and ``retry (k.conf:43)`` -> one entry."""
    groups: dict[str, list[str]] = {}
    for text in origins:
        if not text:
            continue
        m = re.fullmatch(r"(.*) \(([^()]*)\)", text)
        head, place = (m.group(1), m.group(2)) if m else (text, "")
        places = groups.setdefault(head, [])
        if place and place not in places:
            places.append(place)
    return "; ".join(f"{head} ({', '.join(places)})" if places else head for head, places in groups.items())


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
    sync_daemon, sync_notes = _sync_daemon(conf, name)
    notes.extend(sync_notes)
    return ImportResult(conf.path, name, tuple(services), tuple(notes), tuple(str(m) for m in conf.messages),
                        sync_daemon)


def _first_instance(conf: KeepalivedConf) -> str | None:
    from ..config import _NAME_RE

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
        check, cnotes, runs, sources = _checks(vs, rs, real)
        checkers.extend(runs)
        if first:
            used |= sources
            rnotes.extend(cnotes)
            rnotes.extend(_unused(rs.cascade, sources))
        reals.append(ImportedReal(real, rs.stmt.where, tuple(rnotes), check))
    if first:
        notes.extend(_unused(vs.cascade, used))
    if not reals:
        return Note(vs.stmt.where, target.title, "none of its real servers can be used: keepalived ignores it")
    if not first:
        comments.append(f"one of the services of {' '.join(vs.stmt.words)} ({vs.stmt.where}): its keepalived "
                        "options not imported are listed under the first")
    return ImportedService(service, tuple(reals), vs.stmt.where, target.title, tuple(notes), tuple(comments),
                           tuple(checkers))


def _unused(options: dict[str, _Option], used: set[Where]) -> list[Note]:
    """Checker options of a virtual_server or real_server that no check below took."""
    return [Note(o.where, f"{o.written} {o.value}", "only health checkers use it, and none below it takes it (there "
                                                    "is none, or each gives its own)")
            for o in options.values() if o.where not in used]


# --------------------------------------------------------------------------- sync daemon

#: lvs_sync_daemon's options with a value (global_parser.c lvs_syncd_handler), other than ``inst``:
#: option -> ([sync_daemon] key, keepalived's range; the group is an address)
SYNC_OPTIONS = {"id": ("sync_id", 0, 255), "maxlen": ("maxlen", 1, 65535 - 20 - 8), "port": ("port", 1, 65535),
                "ttl": ("ttl", 1, 255), "group": ("group", 0, 0)}
#: what keepalived passes the kernel for an option not given (nothing: the kernel's default, kanotify's too)
SYNC_KERNEL_DEFAULTS = {"maxlen": "from the MTU", "port": "8848", "ttl": "1", "group": "224.0.0.81"}


@dataclass(frozen=True)
class ImportedSyncDaemon:
    """The ``[sync_daemon]`` table keepalived's sync daemon line became: its keys, each with its origin."""

    where: Where
    keyword: str  # lvs_sync_daemon or lvs_sync_daemon_interface
    lines: tuple[CheckLine, ...]
    comments: tuple[str, ...] = ()

    @property
    def table(self) -> dict[str, Any]:
        """The table as the config loader reads it (``--json``)."""
        import tomllib

        return tomllib.loads("\n".join(f"{line.key} = {line.value}" for line in self.lines))

    def toml(self) -> list[str]:
        """The TOML lines: the comments, then the table, each key with where it came from."""
        out = [f"# {_clean(comment)}" for comment in self.comments]
        out.append(f"[sync_daemon]    # {self.keyword} ({self.where})")
        out += [f"{line.key} = {line.value}" + (f"    # {_clean(line.origin)}" if line.origin else "")
                for line in self.lines]
        return out


@dataclass
class _Syncd:
    """One sync daemon line as keepalived reads it: a line that sets the interface claims the daemon."""

    stmt: Statement
    interface: str
    instance: str | None  # None: no VRRP instance (only the global form can lack one)
    lines: dict[str, CheckLine] = field(default_factory=dict)  # sync_id, maxlen, port, ttl, group as given
    notes: list[Note] = field(default_factory=list)

    @property
    def legacy(self) -> bool:
        return self.stmt.keyword == "lvs_sync_daemon_interface"


def _read_lvs_sync_daemon(s: Statement) -> _Syncd | Note:
    """``lvs_sync_daemon IFACE [inst NAME] [id N] [maxlen N] [port N] [ttl N] [group IP]`` as keepalived 2.2.7 reads it.

    The older form ``lvs_sync_daemon IFACE INSTANCE [SYNC_ID]`` is understood at those
    positions.  A :class:`Note` when keepalived ignores the whole line (no interface,
    or a name of 16 bytes or more): then a later line can still give the daemon.
    """
    words = s.args
    if not words:
        return _note(s, "keepalived ignores it: lvs_sync_daemon requires an interface")
    if len(words[0].encode("utf-8", "surrogateescape")) >= 16:  # IP_VS_IFNAME_MAXLEN
        return _note(s, "keepalived ignores it: the interface name is 16 bytes or longer")
    sd = _Syncd(s, words[0], None)

    def ignored(what: str, why: str) -> None:
        sd.notes.append(Note(s.where, f"{s.keyword} ... {what}", why))

    i = 1  # keepalived's strvec index minus one
    while i < len(words):
        word, value = words[i], (words[i + 1] if i + 1 < len(words) else None)
        if word == "inst":
            if sd.instance is not None:
                ignored(f"inst {value or ''}", f"keepalived keeps the instance given first ({sd.instance})")
            else:
                sd.instance = value or ""  # keepalived reads "" past the end, and finds no such instance
            i += 2
        elif word in SYNC_OPTIONS:
            if value is None:
                ignored(word, "no value after it: keepalived ignores it")
            else:
                _sync_option(sd, word, value, ignored)
            i += 2
        elif i == 1:  # the older positional form: the instance, then the sync id
            sd.instance = word
            sd.lines["instance"] = CheckLine("instance", _toml_str(word), "the word after the interface (keepalived's "
                                             "older form lvs_sync_daemon IFACE INSTANCE [SYNC_ID])")
            i += 1
        elif i == 2:
            number = _uint(word, 0, 255)
            if number is None:
                ignored(word, "keepalived ignores an invalid sync id (expected 0..255) and uses the default")
            else:
                sd.lines["sync_id"] = CheckLine("sync_id", str(number), "the word after the instance (keepalived's "
                                                "older form; it asks for id N)")
            i += 1
        else:
            ignored(word, "keepalived ignores an unknown lvs_sync_daemon option")
            i += 1
    return sd


def _sync_option(sd: _Syncd, word: str, value: str, ignored: Callable[[str, str], None]) -> None:
    """One ``id``/``maxlen``/``port``/``ttl``/``group`` option with its value; the last valid one counts."""
    key, lo, hi = SYNC_OPTIONS[word]
    origin = ""
    if key == "group":
        # inet_stosockaddr(): the family from a ':', anything from a '-' or '/' on dropped, then inet_pton
        text = re.split(r"[-/]", value, maxsplit=1)[0]
        address = _ip(text)
        if address is None or address.version != (6 if ":" in value else 4) or not address.is_multicast:
            # keepalived leaves the group unset (AF_UNSPEC), forgetting one given before: the kernel's default
            earlier = sd.lines.pop("group", None)
            why = "an invalid address" if address is None else "not multicast"
            ignored(f"group {value}", f"keepalived ignores a group that is {why}" +
                    (f" and forgets the group {earlier.value} given before it" if earlier else ""))
            return
        result = _toml_str(str(address))
        if text != value:
            origin = f"group {value}: keepalived takes the address before the {value[len(text)]}"
    else:
        number = _uint(value, lo, hi)
        if number is None:
            ignored(f"{word} {value}", f"keepalived ignores it (expected {lo}..{hi})" +
                    (" and uses the default sync id" if key == "sync_id" else ""))
            return
        result = str(number)
    if key in sd.lines:
        ignored(f"{word} {sd.lines[key].value}", f"{word} is given again: keepalived uses the last")
    sd.lines[key] = CheckLine(key, result, origin)


def _sync_candidates(conf: KeepalivedConf) -> list[_Syncd | Note]:
    """Every sync daemon line in keepalived's parse order (the global form and the per-instance legacy one)."""
    found: list[_Syncd | Note] = []
    for top in conf.statements:
        if top.is_("global_defs"):
            found.extend(_read_lvs_sync_daemon(s) for s in top.children("lvs_sync_daemon"))
        elif top.is_("vrrp_instance"):
            for s in top.children("lvs_sync_daemon_interface"):
                # vrrp_parser.c vrrp_lvs_syncd_handler: the interface word only, no check of its length
                sd = _Syncd(s, s.arg(0) or "", top.arg(0) or "")
                sd.lines["instance"] = CheckLine("instance", _toml_str(top.arg(0)), f"the vrrp_instance it is in "
                                                 f"({top.where})")
                if len(s.args) > 1:
                    sd.notes.append(Note(s.where, " ".join(s.words), "keepalived ignores the words after the "
                                                                      "interface"))
                found.append(sd)
    return found


def _sync_daemon(conf: KeepalivedConf, instance: str) -> tuple[ImportedSyncDaemon | None, list[Note]]:
    """keepalived's sync daemon as the ``[sync_daemon]`` of *instance*, and notes for what is not imported.

    keepalived 2.2.7 uses the first line that gives an interface (global_parser.c
    lvs_syncd_handler, vrrp_parser.c: "has already been specified - ignoring")
    and ties it to its VRRP instance (vrrp.c vrrp_complete_init): the sync id not
    given is the instance's ``virtual_router_id``, except for the legacy
    ``lvs_sync_daemon_interface``, which keeps 0.  The table is written only when
    that instance is the one imported; kanotify's config loader checks it first.
    """
    notes: list[Note] = []
    chosen: _Syncd | None = None
    for found in _sync_candidates(conf):
        if isinstance(found, Note):
            notes.append(found)
        elif chosen is not None:
            notes.append(_note(found.stmt, f"keepalived takes the sync daemon from the first line, the "
                                           f"{chosen.stmt.keyword} at {chosen.stmt.where}, and ignores this one "
                                           "(\"has already been specified\")"))
        else:
            chosen = found
            notes.extend(found.notes)
    if chosen is None:
        return None, notes
    s, name = chosen.stmt, chosen.instance
    vrrp = {block.arg(0): block for block in conf.top("vrrp_instance")}
    if name is None:
        notes.append(_note(s, "no VRRP instance (inst NAME): keepalived's checker process runs the master and the "
                              "backup daemon at once, whatever the VRRP state (check_daemon.c); kanotify's "
                              f"[sync_daemon] follows one instance's state: add inst {instance} to import it"))
        return None, notes
    if name not in vrrp:
        notes.append(_note(s, f"there is no vrrp_instance {name!r}: keepalived drops the sync daemon (\"Unable to "
                              "find vrrp instance\")"))
        return None, notes
    lines = [CheckLine("interface", _toml_str(chosen.interface)),
             chosen.lines.get("instance", CheckLine("instance", _toml_str(name)))]
    if "sync_id" in chosen.lines:
        lines.append(chosen.lines["sync_id"])
    elif chosen.legacy:
        lines.append(CheckLine("sync_id", "0", "lvs_sync_daemon_interface gives none: keepalived's default 0 (only "
                                               "lvs_sync_daemon ... inst NAME defaults to the virtual_router_id)"))
    else:
        vrids = [v for v in vrrp[name].children("virtual_router_id") if _uint(v.arg(0), 1, 255) is not None]
        if not vrids:
            notes.append(_note(s, f"no id, and vrrp_instance {name} has no virtual_router_id 1..255 to default to "
                                  "(keepalived's VRRP refuses such an instance)"))
            return None, notes
        vrid = vrids[-1]  # keepalived's handler overwrites: the last one counts
        lines.append(CheckLine("sync_id", str(_uint(vrid.arg(0), 1, 255)),
                               f"no valid id: keepalived's default, the virtual_router_id of {name} ({vrid.where})"))
    lines += [chosen.lines[key] for key in ("maxlen", "port", "ttl", "group") if key in chosen.lines]
    missing = [key for key in SYNC_KERNEL_DEFAULTS if key not in chosen.lines]
    comments = [f"IPVS sync daemons: they follow {name}'s VRRP state, as keepalived's {s.keyword} made them run.",
                f"Delete {s.keyword} from keepalived.conf when kanotify runs them (two drivers restart each "
                "other's daemons)."]
    if missing:
        comments.append(f"No {', '.join(missing)}: the kernel's default, as keepalived left it (and kanotify): "
                        + ", ".join(f"{key} {SYNC_KERNEL_DEFAULTS[key]}" for key in missing) + ".")
    table = ImportedSyncDaemon(s.where, s.keyword, tuple(lines), tuple(comments))
    if name != instance:
        from ..config import _NAME_RE

        how = (f"import with --instance {name} to get it as [sync_daemon]" if _NAME_RE.match(name) else
               f"{name!r} is not a kanotify instance name (letters, digits and _.:@+-, at most 64)")
        notes.append(_note(s, f"it follows vrrp_instance {name}, and this import is for {instance}: {how}; it "
                              "would be:", tuple(table.toml()[len(comments):])))
        return None, notes
    return _checked_sync_daemon(table, notes)


def _checked_sync_daemon(table: ImportedSyncDaemon, notes: list[Note]) -> tuple[ImportedSyncDaemon | None, list[Note]]:
    """*table* as kanotify's config loader takes it, or not imported with the loader's own words.

    A refused ``maxlen`` alone is left out (it bounds the size of a sync message,
    the kernel then derives one from the MTU); any other refused value would run
    a daemon that does not talk to the other director's, so the table stays a comment.
    """
    problems = _sync_problems(table)
    if [p.path for p in problems] == ["sync_daemon.maxlen"]:
        value = next(line.value for line in table.lines if line.key == "maxlen")
        notes.append(Note(table.where, f"{table.keyword} ... maxlen {value}", f"kanotify's config refuses it: "
                          f"{problems[0].path}: {problems[0].message}; the [sync_daemon] leaves it out (the kernel "
                          "derives one from the MTU when the daemon starts)"))
        table = ImportedSyncDaemon(table.where, table.keyword, tuple(line for line in table.lines
                                                                     if line.key != "maxlen"), table.comments)
        problems = _sync_problems(table)
    if problems:
        notes.append(Note(table.where, table.keyword, "kanotify's config refuses it: " + "; ".join(
            f"{p.path}: {p.message}" for p in problems) + "; it would be:", tuple(table.toml()[len(table.comments):])))
        return None, notes
    return table, notes


def _sync_problems(table: ImportedSyncDaemon) -> list[Problem]:
    """What kanotify's config loader says about *table* on its own (with its one instance)."""
    from ..config import build_config

    try:
        build_config({"instance": [{"name": table.table["instance"]}], "sync_daemon": table.table}, "<sync_daemon>")
    except ConfigError as exc:
        return exc.problems
    return []


# --------------------------------------------------------------------------- TOML


def _clean(text: str) -> str:
    """One comment line: control characters spelled out."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _toml_str(text: str | None) -> str:
    # a JSON string is a TOML basic string, once DEL is escaped too (non-ASCII stays as it is: TOML has no
    # surrogate pairs for \u escapes of characters beyond the BMP)
    return json.dumps(text or "", ensure_ascii=False).replace("\x7f", "\\u007f")


def render(result: ImportResult) -> str:
    """The TOML text for *result*, ``# not imported`` comments included."""
    out = [
        f"# kanotify config imported from {_clean(result.path)} by `kanotify import`.",
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
        out.append(f"# keepalived.conf problem: {_clean(problem)}")
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
        shared = svc.shared_check
        if shared is not None:
            out.append("")
            out.extend(_table_lines("[instance.service.check]", [r.check for r in svc.reals if r.check], "    "))
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
            if imported.check is not None and shared is None:
                out.extend(_table_lines("[instance.service.real.check]", [imported.check], "      "))
    return "\n".join(out) + "\n"


def import_file(path: str, instance: str | None = None, config_id: str | None = None) -> tuple[ImportResult, str]:
    """Read, import and render *path*; the TOML is validated by kanotify's own loader first."""
    conf = read_config(path, config_id)
    if not conf.readable:
        raise ConfigError([Problem(path, "", m.text) for m in conf.messages] or [Problem(path, "", "cannot read")])
    result = import_conf(conf, instance)
    text = render(result)
    from ..config import parse_config

    try:
        parse_config(text, f"<import of {path}>")
    except ConfigError as exc:  # a bug in the mapping, never the user's fault: say so loudly
        raise KanotifyError("import produced a config that kanotify check rejects (a bug, please report): "
                            + "; ".join(str(p) for p in exc.problems)) from None
    return result, text


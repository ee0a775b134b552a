"""TOML config -> validated, frozen value objects; every problem reported at once.

The loader below is the only place that reads the config file.  It never
touches the system: a config that fails validation raises
:class:`~kanotify.errors.ConfigError` carrying one :class:`~kanotify.errors.Problem`
per mistake (file, key path like ``instance[0].service[1].real[0].port``, what
was expected, and the line when it can be found), and the CLI exits 78.
Validation is complete before anything is returned: an operator fixing a file
sees all of its mistakes in one run, not one per run.

``docs/config.md`` is the operator's reference: every key, its type, its
default and the checks across the file.  This module holds the kanotify schema
(the reader below); the value types it returns live in :mod:`kanotify.config.values`,
the generic machinery it is written with in :mod:`kanotify.config.tomlcheck`, and
line numbers for problems come from :mod:`kanotify.config.tomllines`.

>>> cfg = parse_config('[[instance]]\\nname = "VI_1"\\n[[instance.vip]]\\naddress = "192.0.2.1"\\ndev = "lo"\\n')
>>> str(cfg.instances[0].vips[0].vip), cfg.instances[0].vips[0].garp
('192.0.2.1/32 dev lo', False)
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ConfigError, Problem
from ..model import (
    CHECK_TYPES,
    PORT_CHECKS,
    FORWARDS,
    HASH_SCHEDULERS,
    ON_FAILURE,
    PROTOCOLS,
    SCHEDULERS,
    SERVICE_FLAGS,
    SYNC_DEFAULT_GROUP,
    SYNC_DEFAULT_PORT,
    SYNC_DEFAULT_TTL,
    SYNC_MODES,
    Group,
    HealthCheck,
    Instance,
    IPAddress,
    IPInterface,
    RealServer,
    ServiceKey,
    ServiceSpec,
    State,
    SyncDaemonSpec,
    VirtualService,
    Vip,
    VipSpec,
    format_hostport,
    normalize_sysctl,
)
from .bgp import read_bgp
from .quorum import read_quorum
from .hashsched import hash_scheduler_reals
from .tunnel import real_tunnel
from .values import Config, HookSettings, Settings, ip_or_none
from .checkkeys import (_BROKEN, CHECK_KEY_TYPES_MORE, CHECK_KEYS_MORE, _CheckKeys, check_keys_more, check_tables,
                        health_checks)
from .tomlcheck import (
    Problems,
    Table,
    field_keys,
    got,
    join,
    literal,
    one_of,
    quote_key,
    read_fields,
)

if TYPE_CHECKING:
    import tomllib

#: ipvsadm's and keepalived's ceiling for a persistence timeout (31 days).
MAX_PERSISTENCE = 86400 * 31

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,63}\Z")
_HOOK_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_SYSCTL_RE = re.compile(r"[a-z][a-z0-9_]*(\.[A-Za-z0-9_/:@+-]+)+\Z")
_PREFIX_RE = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")
_STATE_NAMES = tuple(s.value for s in State)
_IFNAMSIZ = 15  # bytes, without the trailing NUL


# --------------------------------------------------------------------------- entry points


def load_config(path: str) -> Config:
    """Read and validate the config file at *path*.

    An unreadable file is a :class:`ConfigError` too (one problem naming the
    OS error), so the CLI has a single failure path for "no usable config".
    """
    raw, _ = read_config_file(path)
    return parse_config_bytes(raw, path)


def read_config_file(path: str) -> tuple[bytes, os.stat_result]:
    """The bytes of the file at *path* and the status of the file they were read from."""
    try:
        with open(path, "rb") as fh:
            return fh.read(), os.fstat(fh.fileno())
    except (OSError, ValueError) as exc:  # ValueError: NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([Problem(path, "", f"cannot read the config file: {reason}")]) from None


def parse_config_bytes(raw: bytes, filename: str) -> Config:
    """Decode (UTF-8, a byte order mark allowed), parse and validate a config file's bytes."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"expected UTF-8 text, got an invalid byte at offset {exc.start}"
        raise ConfigError([Problem(filename, "", message, line)]) from None
    return parse_config(text, filename)


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Parse and validate config *text*; *filename* only labels the problems."""
    import tomllib  # here: a config served from the cache is never parsed

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, text, filename)]) from None
    except RecursionError:
        problem = Problem(filename, "", "invalid TOML: values are nested too deeply")
        raise ConfigError([problem]) from None
    return build_config(data, filename, text)


def build_config(data: Mapping[str, Any], filename: str = "<config>", text: str | None = None) -> Config:
    """Validate already-parsed TOML *data* (what ``tomllib`` returns).

    Separate from :func:`parse_config` so tests and tools holding a dict need
    no TOML writer.  *text*, when given, is only used to find line numbers.
    """
    problems = Problems()
    config = _ConfigReader(problems, filename).read(data)
    if problems.items or config is None:
        from .tomllines import LineIndex  # error path only

        lines = LineIndex(text) if text is not None else None
        raise ConfigError(
            [
                Problem(filename, path, message, lines.find(path) if lines else None)
                for path, message in problems.items
            ]
            or [Problem(filename, "", "invalid config")]
        )
    return config


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str, filename: str) -> Problem:
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        line = int(match.group(1))
        message = f"{message[: match.start()]} (column {match.group(2)})"
    else:
        line = max(1, len(text.splitlines()))
        message = re.sub(r"\s*\(at end of document\)$", " (at end of file)", message)
    return Problem(filename, "", f"invalid TOML: {message}", line)


# --------------------------------------------------------------------------- value checks


def _check_name(value: str) -> str | None:
    if not _NAME_RE.match(value):
        return (
            "expected a name of 1..64 letters, digits or _.:@+- starting with a letter or digit, "
            f"got {literal(value)}"
        )
    return None


def _check_dev(value: str) -> str | None:
    """The kernel's dev_valid_name(): up to 15 bytes, no '/', ':' or whitespace."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > _IFNAMSIZ or value in (".", "..") or not value.isprintable() or any(
        c in "/:" or c.isspace() for c in value
    ):
        return (
            "expected an interface name (1..15 bytes, no '/', ':' or whitespace, not '.' or '..'), "
            f"got {literal(value)}"
        )
    return None




def _unicast_error(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return f"expected a unicast address, got the unspecified address {address}"
    if address.is_multicast:
        return f"expected a unicast address, got the multicast address {address}"
    return None


def _parse_address(value: str) -> IPAddress | str:
    """A unicast address without prefix, or the error message."""
    address = ip_or_none(value)
    if address is None:
        what = "an IP address without /prefix" if "/" in value else "an IPv4 or IPv6 address"
        return f"expected {what}, got {literal(value)}"
    return _unicast_error(address) or address


def _parse_interface(value: str) -> IPInterface | str:
    """``ADDR`` or ``ADDR/N`` (no netmask notation), or the error message."""
    text, slash, prefix = value.partition("/")
    address = ip_or_none(text)
    if address is None:
        return f"expected an IPv4 or IPv6 address with optional /prefix, got {literal(value)}"
    error = _unicast_error(address)
    if error:
        return error
    full = address.max_prefixlen
    if not slash:
        return ipaddress.ip_interface((address, full))
    if not _PREFIX_RE.match(prefix):
        return f"expected a prefix length 1..{full} after '/', got {literal(value)}"
    length = int(prefix)
    if not 1 <= length <= full:
        return f"expected a prefix length 1..{full} for an IPv{address.version} address, got /{length}"
    return ipaddress.ip_interface((address, length))


def _states(t: Table, name: str = "states") -> frozenset[State] | None:
    """``states = [...]``; without the key: master only."""
    if not t.has(name):
        return frozenset({State.MASTER})
    names = t.words(name, _STATE_NAMES, "a non-empty array of states (master, backup, fault, stop)", nonempty=True)
    return None if names is None else frozenset(State(n) for n in names)


# --------------------------------------------------------------------------- the file


_TOP_KEYS = ("settings", "sysctl", "instance", "group", "hooks", "sync_daemon", "bgp")
_SETTINGS_KEYS = field_keys(Settings)
_INSTANCE_KEYS = ("name", "vip", "service")
_VIP_KEYS = ("address", "dev", "label", "states", "garp")
_SERVICE_KEYS = (
    "protocol", "address", "port", "fwmark", "family", "scheduler", "persistence",
    "persistence_netmask", "flags", "states", "real", "check", "quorum", "hysteresis", "quorum_withdraw",
    "sorry_server",
)
_REAL_KEYS = ("address", "port", "forward", "weight", "drain", "upper_threshold", "lower_threshold", "check",
              "tun_type", "tun_port", "tun_flags")
_CHECK_KEYS = ("type", "port", "path", "status", "host", "command", "interval", "timeout", "retry",
               "retry_delay", "on_failure", "verify", "initial", *CHECK_KEYS_MORE)
#: keys that mean something for some check types only
_CHECK_KEY_TYPES = {
    "path": ("http", "https"), "status": ("http", "https"), "host": ("http", "https"),
    "verify": ("https",), "command": ("command",), **CHECK_KEY_TYPES_MORE,
}
_GROUP_KEYS = ("name", "instances")
_SYNC_DAEMON_KEYS = ("interface", "instance", "mode", "sync_id", "maxlen", "group", "port", "ttl")
#: a backup daemon's smallest maxlen: the one [sync_daemon] serves both states
_SYNC_MAXLEN_MIN = 1024
_HOOK_RESERVED = field_keys(HookSettings)  # every other key is the plugin's


def _family_problems(merged: Mapping[str, tuple[object, str]], server: RealServer) -> list[tuple[str, str]]:
    """A check's ``address`` and ``source`` must be of one family (the real server's when no ``address``)."""
    address = merged.get("address")
    version = address[0].version if address is not None else server.address.version  # type: ignore[attr-defined]
    source = merged.get("source")
    if source is not None and source[0].version != version:  # type: ignore[attr-defined]
        whose = f"the check's address {address[0]}" if address is not None else f"the real server {server.address}"
        return [(source[1], f"expected an IPv{version} source address like {whose}, got {source[0]}")]
    return []


def _check_url_path(value: str) -> str | None:
    if not value.startswith("/") or any(c.isspace() or ord(c) < 32 for c in value):
        return f'expected a URL path starting with "/" without spaces, got {literal(value)}'
    return None


def _scheduler_flag_problem(flag: str, scheduler: str) -> str:
    """Why ``flag`` (sh-* or mh-*) is wrong with ``scheduler``: each scheduler has its own (ipvsadm's) names."""
    if scheduler in HASH_SCHEDULERS:
        return (f"expected {literal(scheduler + flag[2:])} with scheduler {scheduler} (ipvsadm's name; the same "
                f"kernel bit as {literal(flag)}), got {literal(flag)}")
    return f"expected scheduler {flag[:2]} for flag {literal(flag)}, got scheduler {literal(scheduler)}"


def _check_host(value: str) -> str | None:
    if any(c.isspace() or ord(c) < 32 or c in "/@" for c in value) or len(value) > 255:
        return f"expected a host name (no spaces, / or @, at most 255 characters), got {literal(value)}"
    return None


@dataclass(frozen=True)
class _ServiceId:
    """What the real servers of a service need to know, even when its key is invalid."""

    key: ServiceKey | None  # None: some part of it has a problem
    family: int | None
    port: int | None  # 0 for fwmark services
    fwmark: bool
    name: str  # for messages: "192.0.2.100" or "fwmark 5"


class _ConfigReader:
    """Walks the parsed TOML once, building value objects and recording problems.

    Builders return ``None`` for an entry with a problem; the cross-checks
    (duplicates across the whole file) only see entries that are themselves
    valid, so one mistake is reported once, not again as a follow-on.
    """

    def __init__(self, problems: Problems, filename: str):
        self.problems = problems
        self.filename = filename
        self.vips: dict[tuple[str, str], str] = {}  # Vip.key -> path of first declaration
        self.v6_addrs: dict[tuple[IPAddress, str], tuple[str, int]] = {}
        self.services: dict[ServiceKey, str] = {}
        #: every instance name written in the file, valid entry or not
        self.instance_names: set[str] = set()
        #: parsed addresses by their text: the same few real servers recur in every service
        self.addresses: dict[str, IPAddress | str] = {}

    def read(self, data: Mapping[str, Any]) -> Config | None:
        top = Table(self.problems, "", data, _TOP_KEYS)
        settings = self.settings(top)
        sysctls = self.sysctls(top)
        instances = self.instances(top)
        groups = self.groups(top)
        hooks = self.hooks(top)
        sync_daemon = self.sync_daemon(top)
        bgp = read_bgp(self.problems, top, _check_dev)
        top.done()
        if self.problems.items or settings is None:
            return None
        return Config(
            path=self.filename,
            settings=settings,
            sysctls=sysctls,
            instances=instances,
            groups=groups,
            hooks=MappingProxyType(hooks),
            sync_daemon=sync_daemon,
            bgp=bgp,
        )

    def address(self, text: str) -> IPAddress | str:
        """:func:`_parse_address`, once per distinct text."""
        parsed = self.addresses.get(text)
        if parsed is None:
            parsed = self.addresses[text] = _parse_address(text)
        return parsed

    # -- [settings]

    def settings(self, top: Table) -> Settings | None:
        data = top.table("settings", "settings")
        if data is None:
            return Settings()
        t = Table(self.problems, "settings", data, _SETTINGS_KEYS)
        mark = self.problems.mark()
        values = read_fields(t, Settings)
        t.done()
        if values is None or self.problems.since(mark):
            return None
        return Settings(**values)

    # -- [sysctl]

    def sysctls(self, top: Table) -> tuple[tuple[str, str], ...]:
        data = top.table("sysctl", "sysctl")
        if data is None:
            return ()
        result = []
        for key, value in data.items():
            where = join("sysctl", key)
            ok = True
            if isinstance(value, dict):
                # `net.ipv4.x = 1` unquoted is a nested table in TOML.
                self.problems.add(where, "expected an integer or a string, got table "
                                         '(quote dotted names: "net.ipv4.conf.all.arp_ignore" = 1)')
                continue
            if not _SYSCTL_RE.match(key):
                self.problems.add(
                    where,
                    "expected a dotted sysctl name like \"net.ipv4.conf.all.arp_ignore\" "
                    "(letters, digits, _/:@+- between dots; '/' for a dot inside an interface name)",
                )
                ok = False
            elif any(part.strip("/") == "" for part in key.split(".")):
                self.problems.add(where, "expected a sysctl name: a component made only of '/' would name '.' or '..'")
                ok = False
            text = self.sysctl_value(where, value)
            if ok and text is not None:
                result.append((key, text))
        return tuple(result)

    def sysctl_value(self, where: str, value: Any) -> str | None:
        what = "an integer or a non-empty single-line string"
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            if "\n" in value or "\r" in value:
                self.problems.add(where, f"expected {what}, got a multi-line string")
                return None
            text = normalize_sysctl(value)
            if text:
                return text
            self.problems.add(where, f"expected {what}, got an empty string")
            return None
        self.problems.add(where, f"expected {what}, {got(value)}")
        return None

    # -- [[instance]]

    def instances(self, top: Table) -> tuple[Instance, ...]:
        if top.data.get("instance", []) == []:
            self.problems.add("instance", "expected at least one [[instance]] table")
        result: list[Instance] = []
        names: dict[str, str] = {}
        for path, data in top.tables("instance", "instance"):
            if isinstance(data.get("name"), str):
                self.instance_names.add(data["name"])
            inst = self.instance(path, data)
            if inst is None:
                continue
            if inst.name in names:
                self.problems.add(
                    join(path, "name"), f"duplicate instance name {literal(inst.name)} (also {names[inst.name]})"
                )
                continue
            names[inst.name] = path
            result.append(inst)
        return tuple(result)

    def instance(self, path: str, data: dict[str, Any]) -> Instance | None:
        t = Table(self.problems, path, data, _INSTANCE_KEYS)
        mark = self.problems.mark()
        name = t.text("name", "an instance name", required=True, check=_check_name)
        vips = [self.vip(p, d) for p, d in t.tables("vip", "instance.vip")]
        services = [self.service(p, d) for p, d in t.tables("service", "instance.service")]
        t.done()
        if self.problems.since(mark) or name is None:
            return None
        return Instance(
            name=name,
            vips=tuple(v for v in vips if v is not None),
            services=tuple(s for s in services if s is not None),
        )

    # -- [[instance.vip]]

    def vip(self, path: str, data: dict[str, Any]) -> VipSpec | None:
        t = Table(self.problems, path, data, _VIP_KEYS)
        mark = self.problems.mark()
        address = None
        text = t.text("address", "an IPv4 or IPv6 address with optional /prefix", required=True)
        if text is not None:
            parsed = _parse_interface(text)
            if isinstance(parsed, str):
                t.problem("address", parsed)
            else:
                address = parsed
        dev = t.text("dev", "an interface name", required=True, check=_check_dev)
        label = t.text("label", "a label starting with the interface name")
        states = _states(t)
        garp = t.boolean("garp", None)
        t.done()

        if address is not None and dev == "lo" and address.network.prefixlen != address.max_prefixlen:
            t.problem(
                "address",
                f"expected a /{address.max_prefixlen} address on lo (a wider prefix makes the host "
                f"answer for the whole subnet), got {address.with_prefixlen}",
            )
        if label is not None:
            if address is not None and address.version == 6:
                t.problem("label", "expected no label: IPv6 addresses have no labels in Linux")
            elif dev is not None and not label.startswith(dev):
                t.problem("label", f"expected a label starting with the interface name {literal(dev)}, "
                                   f"got {literal(label)}")
            elif len(label.encode("utf-8", "surrogatepass")) > _IFNAMSIZ or not label.isprintable() or any(
                c.isspace() for c in label
            ):
                t.problem("label", f"expected a label of at most 15 bytes without whitespace, got {literal(label)}")
        if garp and dev == "lo":
            t.problem("garp", "expected false or no garp key: gratuitous ARP is never sent on lo")

        if self.problems.since(mark) or address is None or dev is None or states is None:
            return None
        vip = Vip(address, dev, label)
        if vip.key in self.vips:
            self.problems.add(path, f"duplicate VIP {address.with_prefixlen} dev {dev} (also {self.vips[vip.key]})")
            return None
        self.vips[vip.key] = path
        if address.version == 6:
            # The kernel keys IPv6 addresses by address alone on a device.
            other = self.v6_addrs.get((address.ip, dev))
            if other is not None:
                self.problems.add(
                    path,
                    f"duplicate VIP {address.ip} on {dev}: Linux binds an IPv6 address once per device, "
                    f"also declared as /{other[1]} at {other[0]}",
                )
                return None
            self.v6_addrs[(address.ip, dev)] = (path, address.network.prefixlen)
        return VipSpec(vip, states, dev != "lo" if garp is None else garp)

    # -- [[instance.service]]

    def service(self, path: str, data: dict[str, Any]) -> ServiceSpec | None:
        t = Table(self.problems, path, data, _SERVICE_KEYS)
        mark = self.problems.mark()
        sid = self.service_id(t)
        key = sid.key
        scheduler = t.choice("scheduler", SCHEDULERS, default="wlc")
        persistence = t.integer("persistence", 0, MAX_PERSISTENCE, default=0)
        netmask = None
        if t.has("persistence_netmask"):
            full = 128 if sid.family == 6 else 32
            # the kernel refuses an IPv6 persistence netmask of /0 (EINVAL); IPv4 /0 is fine
            netmask = t.integer("persistence_netmask", 1 if sid.family == 6 else 0, full)
            if persistence == 0:
                t.problem("persistence_netmask", "expected persistence > 0 first: the netmask only groups "
                                                 "clients of a persistent service")
            if netmask == full:
                netmask = None  # what the kernel reports back for "per client"
        if not sid.fwmark and sid.port == 0 and persistence == 0:
            t.problem("port", "expected a port 1..65535, or persistence > 0: a port-0 service takes every port of "
                              "its address and must be persistent (as keepalived and ipvsadm -p)")
        flags = t.words("flags", SERVICE_FLAGS, f"an array of flags ({', '.join(SERVICE_FLAGS)})")
        for i, flag in enumerate(flags or ()):
            if flag[:3] in ("sh-", "mh-") and scheduler is not None and scheduler != flag[:2]:
                self.problems.add(f"{t.at('flags')}[{i}]", _scheduler_flag_problem(flag, scheduler))
        states = _states(t)
        service_check = check_tables(self, t, "instance.service.check")
        reals: list[RealServer | None] = []
        checks: list[tuple[tuple[IPAddress, int], HealthCheck]] = []
        seen: dict[tuple[IPAddress, int], str] = {}
        drained: list[tuple[tuple[IPAddress, int], int]] = []
        hash_scheduler_reals(self.problems, path, data, scheduler)
        for rpath, rdata in t.tables("real", "instance.service.real"):
            real = self.real(rpath, rdata, sid)
            if real is not None and rdata.get("drain") is True:
                drained.append((real.key, real.weight))  # added at its weight, then drained (docs/ipvs.md)
                real = replace(real, weight=0)
            real_check = check_tables(self, Table(self.problems, rpath, rdata, _REAL_KEYS),
                                      "instance.service.real.check")
            if real is not None:
                first = seen.setdefault(real.key, rpath)
                if first is not rpath:
                    hostport = format_hostport(real.address, real.port)
                    self.problems.add(rpath, f"duplicate real server {hostport} (also {first})")
                    real = None
            for check in health_checks(self, rpath, service_check, real_check, real):
                assert real is not None
                checks.append((real.key, check))
            reals.append(real)
        quorum = read_quorum(t, [r for r in reals if r is not None], lambda at, plain: self.real(at, plain, sid))
        t.done()

        if self.problems.since(mark) or key is None or scheduler is None or persistence is None or states is None:
            return None
        if key in self.services:
            self.problems.add(path, f"duplicate service {key} (also {self.services[key]})")
            return None
        self.services[key] = path
        service = VirtualService(key, scheduler, persistence, netmask, frozenset(flags or ()))
        return ServiceSpec(service, tuple(r for r in reals if r is not None), states, tuple(checks), quorum,
                           add_weights=tuple(drained))

    def service_id(self, t: Table) -> _ServiceId:
        """``fwmark`` (+ ``family``) or ``protocol``/``address``/``port``."""
        if t.has("fwmark"):
            fwmark = t.integer("fwmark", 1, 2**32 - 1)
            family = t.choice("family", ("inet", "inet6"), default="inet")
            for other in ("protocol", "address", "port"):
                if t.has(other):
                    t.problem(other, f"expected no {other} with fwmark: a fwmark service is keyed by its mark "
                                     "(and family) alone")
            version = None if family is None else 6 if family == "inet6" else 4
            key = ServiceKey.mark(fwmark, version) if fwmark is not None and version is not None else None
            return _ServiceId(key, version, 0, True, "fwmark" if fwmark is None else f"fwmark {fwmark}")
        if t.has("family"):
            t.problem("family", "expected family only with fwmark: the address gives the family")
        protocol = t.choice("protocol", PROTOCOLS, required=True)
        address = None
        text = t.text("address", "an IP address", required=True)
        if text is not None:
            parsed = self.address(text)
            if isinstance(parsed, str):
                t.problem("address", parsed)
            else:
                address = parsed
        port = t.integer("port", 0, 65535, required=True)  # 0: every port of the address (persistent only)
        key = None
        if protocol is not None and address is not None and port is not None:
            key = ServiceKey.inet(protocol, address, port)
        return _ServiceId(key, address.version if address else None, port, False, str(address))

    # -- [[instance.service.real]]

    def real(self, path: str, data: dict[str, Any], service: _ServiceId) -> RealServer | None:
        t = Table(self.problems, path, data, _REAL_KEYS)
        mark = self.problems.mark()
        address = None
        text = t.text("address", "an IP address", required=True)
        if text is not None:
            parsed = self.address(text)
            if isinstance(parsed, str):
                t.problem("address", parsed)
            elif service.family is not None and parsed.version != service.family:
                t.problem("address", f"expected an IPv{service.family} address like the service "
                                     f"({service.name}), got IPv{parsed.version} address {parsed}")
            else:
                address = parsed
        port = t.integer("port", 0 if service.fwmark or service.port == 0 else 1, 65535, default=service.port)
        forward = t.choice("forward", FORWARDS, default="dr")
        weight = t.integer("weight", 0, 65535, default=1)
        upper = t.integer("upper_threshold", 0, 65535, default=0)
        lower = t.integer("lower_threshold", 0, 65535, default=0)
        t.boolean("drain", False)  # read by service(): weight 0 in the kernel, added at ``weight`` first
        tunnel = real_tunnel(t, forward)
        t.done()
        if upper is not None and lower is not None and lower > upper:
            # the kernel refuses it (ERANGE) even when upper is 0, "no limit": lower only means something below it
            limit = f"upper_threshold ({upper})" if upper else "upper_threshold (0: no limit, so 0)"
            t.problem("lower_threshold", f"expected lower_threshold <= {limit}, got {lower}")
        if (not service.fwmark and forward in ("dr", "tun") and port is not None and service.port is not None
                and port != service.port):
            t.problem("port", f"expected {service.port} (the service's port): with forward = {literal(forward)} "
                              f"IPVS cannot rewrite ports; use forward = \"nat\" to map {service.port} to {port}")
        if (self.problems.since(mark) or address is None or port is None or forward is None or weight is None
                or upper is None or lower is None or tunnel is None):
            return None
        return RealServer(address, port, forward, weight, upper, lower, *tunnel)

    # -- health checks: [instance.service.check] and [instance.service.real.check]

    def check_table(self, t: Table, header: str, at: str | None = None) -> _CheckKeys | None:
        """The keys of a ``check`` table, each validated on its own, with where it was written.

        ``None`` when there is no such table; a table with a problem is
        :data:`_BROKEN` (its problems are reported; the real servers under it
        report no follow-on problems).
        """
        data = t.table("check", header)
        if data is None:
            return None
        ct = Table(self.problems, at or t.at("check"), data, _CHECK_KEYS)
        mark = self.problems.mark()
        values: dict[str, object] = {}
        if ct.has("type"):
            values["type"] = ct.choice("type", CHECK_TYPES)
        if ct.has("port"):
            values["port"] = ct.integer("port", 1, 65535)
        if ct.has("path"):
            values["path"] = ct.text("path", 'a URL path starting with "/"', check=_check_url_path)
        if ct.has("status"):
            values["status"] = self.status_codes(ct)
        if ct.has("host"):
            values["host"] = ct.text("host", "a host name for the Host header", check=_check_host)
        if ct.has("command"):
            values["command"] = self.check_command(ct)
        if ct.has("interval"):
            values["interval"] = ct.number("interval", 0, 86400, lo_open=True, default=None)
        if ct.has("timeout"):
            values["timeout"] = ct.number("timeout", 0, 3600, lo_open=True, default=None)
        if ct.has("retry"):
            values["retry"] = ct.integer("retry", 0, 100)
        if ct.has("retry_delay"):
            values["retry_delay"] = ct.number("retry_delay", 0, 3600, lo_open=False, default=None)
        if ct.has("on_failure"):
            values["on_failure"] = ct.choice("on_failure", ON_FAILURE)
        if ct.has("verify"):
            values["verify"] = ct.boolean("verify", None)
        if ct.has("initial"):
            values["initial"] = ct.choice("initial", ("up", "down"))
        check_keys_more(self, ct, values)
        ct.done()
        if self.problems.since(mark):
            return _BROKEN
        return _CheckKeys(ct.path, {name: (value, ct.at(name)) for name, value in values.items()})

    def status_codes(self, ct: Table) -> tuple[int, ...] | None:
        items = ct.array("status", "a non-empty array of HTTP status codes 100..599")
        if items is None:
            return None
        if not items:
            ct.problem("status", "expected a non-empty array of HTTP status codes 100..599, got an empty array")
            return None
        codes: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
                self.problems.add(f"{ct.at('status')}[{i}]", f"expected an HTTP status code 100..599, {got(item)}")
                return None
            codes.append(item)
        return tuple(sorted(set(codes)))

    def check_command(self, ct: Table) -> tuple[str, ...] | None:
        what = "a non-empty array of strings: an absolute path, then its arguments (no shell)"
        items = ct.array("command", what)
        if items is None:
            return None
        if not items or not all(isinstance(w, str) and w and "\0" not in w for w in items):
            ct.problem("command", f"expected {what}, got {literal(items) if items else 'an empty array'}")
            return None
        if not os.path.isabs(items[0]):
            ct.problem("command", f"expected an absolute path first (no shell, no $PATH search), got {literal(items[0])}")
            return None
        return tuple(items)

    def health_check(
        self, rpath: str, service: _CheckKeys | None, real: _CheckKeys | None, server: RealServer | None,
    ) -> HealthCheck | None:
        """The check of one real server: its service's ``check`` keys, overridden by its own."""
        if service is None and real is None:
            return None
        if service is _BROKEN or real is _BROKEN or server is None:
            return None
        merged = {**(service.keys if service else {}), **(real.keys if real else {})}
        # where a problem of the merged check is written: the table that has the key, else the real's (or service's)
        table = real.path if real is not None else service.path if service is not None else rpath
        wrong: list[tuple[str, str]] = []
        if "type" not in merged:
            wrong.append((f"{table}.type", f"missing required key: expected {one_of(CHECK_TYPES)}"))
        else:
            kind = str(merged["type"][0])
            for name, types in _CHECK_KEY_TYPES.items():
                if name in merged and kind not in types:
                    wrong.append((merged[name][1], f"expected no {name}: it is for {' and '.join(types)} checks, "
                                                   f"this check is {kind} ({merged['type'][1]})"))
            if kind == "command" and "command" not in merged:
                wrong.append((merged["type"][1], "expected a command key too: a command check runs it"))
            if kind == "file" and "file" not in merged:
                wrong.append((merged["type"][1], "expected a file key too: a file check reads it"))
            wrong.extend(_family_problems(merged, server))
            if kind in PORT_CHECKS and "port" not in merged and server.port == 0:
                wrong.append((f"{table}.port", "missing required key: expected a port 1..65535 to check (the real "
                                               "server of a fwmark or port-0 service has none)"))
        for at, message in wrong:
            if (at, message) not in self.problems.items:  # one problem, however many real servers inherit it
                self.problems.add(at, message)
        if wrong:
            return None
        values = {name: value for name, (value, _at) in merged.items()}
        if values.get("reply") and "require_reply" not in values:
            values["require_reply"] = True  # keepalived's require_reply <hex>: the reply is required
        return HealthCheck(**values)  # type: ignore[arg-type]  # every value was validated above

    # -- [[group]]

    def groups(self, top: Table) -> tuple[Group, ...]:
        # An instance with a mistake of its own is still "declared": its name
        # must not be reported a second time as unknown here.
        declared = self.instance_names
        names: dict[str, str] = {}
        member_of: dict[str, str] = {}
        result = []
        for path, data in top.tables("group", "group"):
            t = Table(self.problems, path, data, _GROUP_KEYS)
            mark = self.problems.mark()
            name = t.text("name", "a group name", required=True, check=_check_name)
            members: list[str] = []
            items = t.array("instances", "a non-empty array of instance names", required=True)
            if items is not None and not items:
                t.problem("instances", "expected a non-empty array of instance names, got an empty array")
            for i, item in enumerate(items or ()):
                where = f"{t.at('instances')}[{i}]"
                if not isinstance(item, str):
                    self.problems.add(where, f"expected an instance name, {got(item)}")
                elif item in members:
                    self.problems.add(where, f"duplicate instance {literal(item)}: expected each instance once")
                elif item not in declared:
                    known = ", ".join(sorted(declared)[:10]) or "none"
                    self.problems.add(where, f"expected the name of a declared [[instance]] ({known}), "
                                             f"got {literal(item)}")
                elif item in member_of and name is not None:
                    self.problems.add(where, f"instance {literal(item)} is already in group {member_of[item]}: "
                                             "keepalived allows one sync group per instance")
                else:
                    members.append(item)
            t.done()
            if self.problems.since(mark) or name is None:
                continue
            if name in names:
                self.problems.add(join(path, "name"), f"duplicate group name {literal(name)} (also {names[name]})")
                continue
            names[name] = path
            for member in members:
                member_of[member] = literal(name)
            result.append(Group(name, tuple(members)))
        return tuple(result)

    # -- [sync_daemon]

    def sync_daemon(self, top: Table) -> SyncDaemonSpec | None:
        """``[sync_daemon]``, read after the instances (its ``instance`` must be one of them)."""
        data = top.table("sync_daemon", "sync_daemon")
        if data is None:
            return None
        t = Table(self.problems, "sync_daemon", data, _SYNC_DAEMON_KEYS)
        mark = self.problems.mark()
        interface = t.text("interface", "an interface name", required=True, check=_check_dev)
        mode = t.choice("mode", SYNC_MODES, default="follow")
        instance: str | None = None
        if mode == "both":
            if t.has("instance"):
                t.problem("instance", 'expected no instance with mode = "both": the master and backup daemons run '
                                      "on every director in every state, no VRRP instance drives them")
        else:
            instance = self.sync_instance(t)
        sync_id = t.integer("sync_id", 0, 255, default=0)
        group: IPAddress | None = SYNC_DEFAULT_GROUP
        text = t.text("group", "a multicast address")
        if text is not None:
            group = ip_or_none(text)
            if group is None:
                t.problem("group", f"expected an IPv4 or IPv6 multicast address, got {literal(text)}")
            elif not group.is_multicast:
                t.problem("group", "expected a multicast address (IPv4 224.0.0.0/4 or IPv6 ff00::/8), "
                                   f"got the unicast address {group}")
                group = None
        port = t.integer("port", 1, 65535, default=SYNC_DEFAULT_PORT)
        ttl = t.integer("ttl", 1, 255, default=SYNC_DEFAULT_TTL)
        maxlen = t.integer("maxlen", 0, None)
        if maxlen is not None:
            # a sync message is a UDP datagram: 65535 minus the IP and UDP headers of the group's family
            high = 65535 - (48 if group is not None and group.version == 6 else 28)
            if not _SYNC_MAXLEN_MIN <= maxlen <= high:
                t.problem("maxlen", f"expected an integer {_SYNC_MAXLEN_MIN}..{high} (bytes of a sync message; "
                                    f"a backup daemon takes no less than {_SYNC_MAXLEN_MIN}), got {maxlen}")
        t.done()
        if (self.problems.since(mark) or interface is None or mode is None or (instance is None and mode != "both")
                or sync_id is None or group is None or port is None or ttl is None):
            return None
        return SyncDaemonSpec(instance, interface, sync_id, maxlen, group, port, ttl, mode)

    def sync_instance(self, t: Table) -> str | None:
        """``sync_daemon.instance``: a declared instance; optional when the file declares one."""
        declared = sorted(self.instance_names)
        known = ", ".join(declared[:10]) or "none"
        if not t.has("instance"):
            if len(declared) == 1:
                return declared[0]
            if declared:  # no instance at all is reported at "instance" already
                t.problem("instance", "missing required key: expected the name of the [[instance]] whose VRRP "
                                      f"state drives the sync daemons (the file declares {known})")
            return None
        name = t.text("instance", "an instance name")
        if name is not None and name not in self.instance_names:
            t.problem("instance", f"expected the name of a declared [[instance]] ({known}), got {literal(name)}")
            return None
        return name

    # -- [hooks.NAME]

    def hooks(self, top: Table) -> dict[str, HookSettings]:
        data = top.table("hooks", "hooks.NAME")
        result: dict[str, HookSettings] = {}
        for name, value in (data or {}).items():
            where = join("hooks", name)
            if not _HOOK_NAME_RE.match(name):
                self.problems.add(where, f"expected a plugin name of letters, digits and _.-, got {literal(name)}")
            if not isinstance(value, dict):
                self.problems.add(where, f"expected a table ([hooks.{quote_key(name)}]), {got(value)}")
                continue
            t = Table(self.problems, where, value, ())  # other keys belong to the plugin
            values = read_fields(t, HookSettings)
            if values is None:
                continue
            options = {k: v for k, v in value.items() if k not in _HOOK_RESERVED}
            result[name] = HookSettings(**values, options=MappingProxyType(options))
        return result

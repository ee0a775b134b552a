"""TOML config -> validated, frozen value objects; every problem reported at once.

The loader below is the only place that reads the config file.  It never
touches the system: a config that fails validation raises
:class:`~kanotify.errors.ConfigError` carrying one :class:`~kanotify.errors.Problem`
per mistake (file, key path like ``instance[0].service[1].real[0].port``, what
was expected, and the line when it can be found), and the CLI exits 78.
Validation is complete before anything is returned: an operator fixing a file
sees all of its mistakes in one run, not one per run.

The format is the one of spec.md ("Config file (TOML)"); ``docs/config.md`` is
the operator's reference.  Beyond the spec's example, these keys exist:

``[settings]``
    ``state_dir``, ``journal``, ``hooks_dir`` (absolute paths), ``syslog``,
    ``ipvs_exclusive`` (booleans), ``lock_timeout`` (seconds, 0 < t <= 3600),
    ``garp_count`` (gratuitous ARPs per bound VIP, 0..100), ``garp_interval``
    (seconds between them, 0..10), ``drain_timeout`` (seconds a removed real
    server may keep connections at weight 0, >= 0), ``hook_timeout`` (seconds
    per hook call, 0 < t <= 600).
``[sysctl]``
    Dotted names as sysctl(8) writes them; an interface name containing a dot
    is written with ``/`` (``"net.ipv4.conf.eth0/100.arp_ignore"``).  Values
    are integers or single-line strings, stored as text.
``[[instance.vip]]``
    ``address`` without a prefix means /32 (/128), as in keepalived.  ``label``
    is IPv4 only and must start with ``dev``.  ``garp`` defaults to true except
    on ``lo``, where it cannot be enabled; a VIP on ``lo`` must be a /32 (/128).
``[[instance.service]]``
    ``fwmark`` (with ``family = "inet" | "inet6"``) instead of
    ``protocol``/``address``/``port``; ``scheduler`` (default ``wlc`` as
    ipvsadm), ``persistence`` (seconds, at most 31 days as ipvsadm),
    ``persistence_netmask`` (prefix length, only with persistence), ``flags``
    (``one-packet``, ``sh-fallback``, ``sh-port``; the last two only with the
    ``sh``/``mh`` schedulers).
``[[instance.service.real]]``
    ``weight``, ``upper_threshold``, ``lower_threshold`` (0..65535).  With
    ``forward = "dr"`` or ``"tun"`` the port must be the service's port: IPVS
    rewrites ports only for ``nat``.
``[[group]]``
    keepalived ``vrrp_sync_group``: ``name`` and the declared ``instances``
    (an instance belongs to at most one group, as in keepalived).
``[hooks.NAME]``
    Per-plugin table: ``enabled``, ``required`` (a failure fails the run),
    ``timeout`` (seconds); every other key is the plugin's own option, passed
    through untouched.

>>> cfg = parse_config('[[instance]]\\nname = "VI_1"\\n[[instance.vip]]\\naddress = "192.0.2.1"\\ndev = "lo"\\n')
>>> str(cfg.instances[0].vips[0].vip), cfg.instances[0].vips[0].garp
('192.0.2.1/32 dev lo', False)
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from .errors import ConfigError, Problem
from .model import (
    FORWARDS,
    PROTOCOLS,
    SCHEDULERS,
    SERVICE_FLAGS,
    Group,
    Instance,
    IPAddress,
    IPInterface,
    RealServer,
    ServiceKey,
    ServiceSpec,
    State,
    VirtualService,
    Vip,
    VipSpec,
    format_hostport,
)

DEFAULT_CONFIG = "/etc/kanotify/kanotify.toml"

#: ipvsadm's and keepalived's ceiling for a persistence timeout (31 days).
MAX_PERSISTENCE = 86400 * 31

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,63}\Z")
_HOOK_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_SYSCTL_RE = re.compile(r"[a-z][a-z0-9_]*(\.[A-Za-z0-9_/:@+-]+)+\Z")
_PREFIX_RE = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")
_STATE_NAMES = tuple(s.value for s in State)
_IFNAMSIZ = 15  # bytes, without the trailing NUL


@dataclass(frozen=True)
class HookSettings:
    """A ``[hooks.NAME]`` table: the engine's keys plus the plugin's own options."""

    enabled: bool = True
    required: bool = False  # a failure of a required hook fails the run
    timeout: float | None = None  # seconds; None: settings.hook_timeout
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Settings:
    """``[settings]``; every key optional."""

    state_dir: str = "/run/kanotify"
    journal: str = "/var/lib/kanotify/journal.jsonl"
    hooks_dir: str = "/etc/kanotify/hooks.d"
    syslog: bool = True
    ipvs_exclusive: bool = False
    lock_timeout: float = 10.0
    garp_count: int = 5
    garp_interval: float = 0.2
    drain_timeout: float = 300.0
    hook_timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    """A whole, valid config file."""

    path: str
    settings: Settings = Settings()
    sysctls: tuple[tuple[str, str], ...] = ()
    instances: tuple[Instance, ...] = ()
    groups: tuple[Group, ...] = ()
    hooks: Mapping[str, HookSettings] = field(default_factory=lambda: MappingProxyType({}))

    def instance(self, name: str) -> Instance | None:
        for inst in self.instances:
            if inst.name == name:
                return inst
        return None

    def group(self, name: str) -> Group | None:
        for grp in self.groups:
            if grp.name == name:
                return grp
        return None

    @property
    def instance_names(self) -> tuple[str, ...]:
        return tuple(inst.name for inst in self.instances)


def config_path(explicit: str | None = None) -> str:
    """``--config``, else ``$KANOTIFY_CONFIG``, else the default path."""
    return explicit or os.environ.get("KANOTIFY_CONFIG") or DEFAULT_CONFIG


# --------------------------------------------------------------------------- entry points


def load_config(path: str) -> Config:
    """Read and validate the config file at *path*.

    An unreadable file is a :class:`ConfigError` too (one problem naming the
    OS error), so the CLI has a single failure path for "no usable config".
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, ValueError) as exc:  # ValueError: NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([Problem(path, "", f"cannot read the config file: {reason}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"expected UTF-8 text, got an invalid byte at offset {exc.start}"
        raise ConfigError([Problem(path, "", message, line)]) from None
    return parse_config(text, path)


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Parse and validate config *text*; *filename* only labels the problems."""
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
    problems = _Problems()
    config = _ConfigReader(problems, filename).read(data)
    if problems.items or config is None:
        lines = _LineIndex(text) if text is not None else None
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


# --------------------------------------------------------------------------- text helpers


def _toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, as operators read it in the file."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime):
        return "date-time"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    return type(value).__name__


def _literal(value: object) -> str:
    """A value written back the way TOML spells it (short, for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 70 else text[:66] + '..."'
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return _toml_type(value)
    return str(value)


def _got(value: object) -> str:
    """``got string "80"`` for a wrong type (the type is the surprise)."""
    kind = _toml_type(value)
    if kind in ("array", "table"):
        return f"got {kind}"
    return f"got {kind} {_literal(value)}"


def _key(name: str) -> str:
    """One key-path component: bare when TOML allows it bare, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return json.dumps(name, ensure_ascii=False)


def _join(path: str, name: str) -> str:
    return f"{path}.{_key(name)}" if path else _key(name)


def _one_of(choices: Iterable[str]) -> str:
    return "one of " + ", ".join(choices)


# --------------------------------------------------------------------------- validation machinery


class _Problems:
    """Collects (key path, message) pairs; the file name is added at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def mark(self) -> int:
        return len(self.items)

    def since(self, mark: int) -> bool:
        return len(self.items) > mark


_MISSING: Any = object()


class _Table:
    """One TOML table under validation.

    Every getter records a problem under ``<this table's path>.<key>`` and
    returns ``None`` when the value is unusable, so callers go on checking the
    rest of the file; :meth:`done` reports the keys nobody asked for.
    """

    def __init__(self, problems: _Problems, path: str, data: Mapping[str, Any], allowed: Iterable[str]):
        self.problems = problems
        self.path = path
        self.data = data
        self.allowed = tuple(allowed)

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def problem(self, key: str | None, message: str) -> None:
        self.problems.add(self.path if key is None else self.at(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def done(self) -> None:
        for key in self.data:
            if key not in self.allowed:
                self.problem(key, _unknown_key(key, self.allowed))

    # -- scalars

    def _value(self, key: str, required: bool, what: str) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING and required:
            self.problem(key, f"missing required key: expected {what}")
        return value

    def text(
        self,
        key: str,
        what: str = "a non-empty string",
        *,
        required: bool = False,
        default: str | None = None,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """A non-empty string; *check* returns an error message or None."""
        value = self._value(key, required, what)
        if value is _MISSING:
            return default
        if not isinstance(value, str) or not value:
            self.problem(key, f"expected {what}, {_got(value)}")
            return None
        error = check(value) if check else None
        if error:
            self.problem(key, error)
            return None
        return value

    def choice(
        self, key: str, choices: Iterable[str], *, required: bool = False, default: str | None = None
    ) -> str | None:
        names = tuple(choices)
        value = self._value(key, required, _one_of(names))
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.problem(key, f"expected {_one_of(names)}, {_got(value)}")
            return None
        if value not in names:
            self.problem(key, f"expected {_one_of(names)}, got {_literal(value)}")
            return None
        return value

    def integer(
        self, key: str, lo: int, hi: int | None, *, required: bool = False, default: int | None = None
    ) -> int | None:
        what = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        value = self._value(key, required, what)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"expected {what}, {_got(value)}")
            return None
        if value < lo or (hi is not None and value > hi):
            self.problem(key, f"expected {what}, got {value}")
            return None
        return value

    def number(
        self, key: str, lo: float, hi: float | None, *, lo_open: bool, default: float | None
    ) -> float | None:
        """A finite number (integers welcome) in ``lo < x`` / ``lo <= x``, ``x <= hi``."""
        what = f"a number {'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        value = self._value(key, False, what)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(key, f"expected {what}, {_got(value)}")
            return None
        number = float(value)
        if (
            not math.isfinite(number)
            or (number <= lo if lo_open else number < lo)
            or (hi is not None and number > hi)
        ):
            self.problem(key, f"expected {what}, got {_literal(value)}")
            return None
        return number

    def boolean(self, key: str, default: bool | None) -> bool | None:
        value = self._value(key, False, "true or false")
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, {_got(value)}")
            return None
        return value

    # -- containers

    def array(self, key: str, what: str, *, required: bool = False) -> list[Any] | None:
        """A list; ``None`` when absent or not a list (the latter is a problem)."""
        value = self._value(key, required, what)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            self.problem(key, f"expected {what}, {_got(value)}")
            return None
        return value

    def words(
        self, key: str, choices: Iterable[str], what: str, *, required: bool = False, nonempty: bool = False
    ) -> list[str] | None:
        """A list of distinct strings, each one of *choices*."""
        names = tuple(choices)
        items = self.array(key, what, required=required)
        if items is None:
            return None
        if nonempty and not items:
            self.problem(key, f"expected {what}, got an empty array")
            return None
        result: list[str] = []
        ok = True
        for i, item in enumerate(items):
            where = f"{self.at(key)}[{i}]"
            if not isinstance(item, str):
                self.problems.add(where, f"expected {_one_of(names)}, {_got(item)}")
                ok = False
            elif item not in names:
                self.problems.add(where, f"expected {_one_of(names)}, got {_literal(item)}")
                ok = False
            elif item in result:
                self.problems.add(where, f"duplicate {_literal(item)}: expected each name once")
                ok = False
            else:
                result.append(item)
        return result if ok else None

    def states(self, key: str = "states") -> frozenset[State] | None:
        """``states = [...]``: default master only, as in spec.md."""
        if not self.has(key):
            return frozenset({State.MASTER})
        names = self.words(key, _STATE_NAMES, "a non-empty array of states (master, backup, fault, stop)",
                           nonempty=True)
        return None if names is None else frozenset(State(n) for n in names)

    def tables(self, key: str, header: str) -> list[tuple[str, dict[str, Any]]]:
        """An array of tables (``[[header]]``) as (path, table) pairs."""
        what = f"an array of tables ([[{header}]])"
        items = self.array(key, what)
        if items is None:
            return []
        result = []
        for i, item in enumerate(items):
            where = f"{self.at(key)}[{i}]"
            if isinstance(item, dict):
                result.append((where, item))
            else:
                self.problems.add(where, f"expected a table ([[{header}]]), {_got(item)}")
        return result

    def table(self, key: str, header: str) -> dict[str, Any] | None:
        value = self._value(key, False, "a table")
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.problem(key, f"expected a table ([{header}]), {_got(value)}")
            return None
        return value


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    import difflib  # error path only

    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key: expected one of {', '.join(allowed)}{hint}"


# --------------------------------------------------------------------------- value checks


def _check_abs_path(value: str) -> str | None:
    if "\0" in value:
        return "expected an absolute path, got a string containing NUL"
    if not os.path.isabs(value):
        return f"expected an absolute path, got {_literal(value)}"
    return None


def _check_name(value: str) -> str | None:
    if not _NAME_RE.match(value):
        return (
            "expected a name of 1..64 letters, digits or _.:@+- starting with a letter or digit, "
            f"got {_literal(value)}"
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
            f"got {_literal(value)}"
        )
    return None


def _ip(text: str) -> IPAddress | None:
    """A plain address (no %scope: VIPs and services never use link-local scopes)."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unicast_error(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return f"expected a unicast address, got the unspecified address {address}"
    if address.is_multicast:
        return f"expected a unicast address, got the multicast address {address}"
    return None


def _parse_address(value: str) -> IPAddress | str:
    """A unicast address without prefix, or the error message."""
    address = _ip(value)
    if address is None:
        what = "an IP address without /prefix" if "/" in value else "an IPv4 or IPv6 address"
        return f"expected {what}, got {_literal(value)}"
    return _unicast_error(address) or address


def _parse_interface(value: str) -> IPInterface | str:
    """``ADDR`` or ``ADDR/N`` (no netmask notation), or the error message."""
    text, slash, prefix = value.partition("/")
    address = _ip(text)
    if address is None:
        return f"expected an IPv4 or IPv6 address with optional /prefix, got {_literal(value)}"
    error = _unicast_error(address)
    if error:
        return error
    full = address.max_prefixlen
    if not slash:
        return ipaddress.ip_interface((address, full))
    if not _PREFIX_RE.match(prefix):
        return f"expected a prefix length 1..{full} after '/', got {_literal(value)}"
    length = int(prefix)
    if not 1 <= length <= full:
        return f"expected a prefix length 1..{full} for an IPv{address.version} address, got /{length}"
    return ipaddress.ip_interface((address, length))


# --------------------------------------------------------------------------- the file


_TOP_KEYS = ("settings", "sysctl", "instance", "group", "hooks")
_SETTINGS_KEYS = (
    "state_dir", "journal", "hooks_dir", "syslog", "ipvs_exclusive", "lock_timeout",
    "garp_count", "garp_interval", "drain_timeout", "hook_timeout",
)
_INSTANCE_KEYS = ("name", "vip", "service")
_VIP_KEYS = ("address", "dev", "label", "states", "garp")
_SERVICE_KEYS = (
    "protocol", "address", "port", "fwmark", "family", "scheduler", "persistence",
    "persistence_netmask", "flags", "states", "real",
)
_REAL_KEYS = ("address", "port", "forward", "weight", "upper_threshold", "lower_threshold")
_GROUP_KEYS = ("name", "instances")
_HOOK_RESERVED = ("enabled", "required", "timeout")


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

    def __init__(self, problems: _Problems, filename: str):
        self.problems = problems
        self.filename = filename
        self.vips: dict[tuple[str, str], str] = {}  # Vip.key -> path of first declaration
        self.v6_addrs: dict[tuple[IPAddress, str], tuple[str, int]] = {}
        self.services: dict[ServiceKey, str] = {}
        #: every instance name written in the file, valid entry or not
        self.instance_names: set[str] = set()

    def read(self, data: Mapping[str, Any]) -> Config | None:
        top = _Table(self.problems, "", data, _TOP_KEYS)
        settings = self.settings(top)
        sysctls = self.sysctls(top)
        instances = self.instances(top)
        groups = self.groups(top)
        hooks = self.hooks(top)
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
        )

    # -- [settings]

    def settings(self, top: _Table) -> Settings | None:
        data = top.table("settings", "settings")
        if data is None:
            return Settings()
        t = _Table(self.problems, "settings", data, _SETTINGS_KEYS)
        d = Settings()
        mark = self.problems.mark()
        path = "an absolute path"
        values = dict(
            state_dir=t.text("state_dir", path, default=d.state_dir, check=_check_abs_path),
            journal=t.text("journal", path, default=d.journal, check=_check_abs_path),
            hooks_dir=t.text("hooks_dir", path, default=d.hooks_dir, check=_check_abs_path),
            syslog=t.boolean("syslog", d.syslog),
            ipvs_exclusive=t.boolean("ipvs_exclusive", d.ipvs_exclusive),
            lock_timeout=t.number("lock_timeout", 0, 3600, lo_open=True, default=d.lock_timeout),
            garp_count=t.integer("garp_count", 0, 100, default=d.garp_count),
            garp_interval=t.number("garp_interval", 0, 10, lo_open=False, default=d.garp_interval),
            drain_timeout=t.number("drain_timeout", 0, None, lo_open=False, default=d.drain_timeout),
            hook_timeout=t.number("hook_timeout", 0, 600, lo_open=True, default=d.hook_timeout),
        )
        t.done()
        if self.problems.since(mark):
            return None
        return Settings(**values)  # type: ignore[arg-type]  # no None left: no problem recorded

    # -- [sysctl]

    def sysctls(self, top: _Table) -> tuple[tuple[str, str], ...]:
        data = top.table("sysctl", "sysctl")
        if data is None:
            return ()
        result = []
        for key, value in data.items():
            where = _join("sysctl", key)
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
            text = " ".join(value.split())
            if text:
                return text
            self.problems.add(where, f"expected {what}, got an empty string")
            return None
        self.problems.add(where, f"expected {what}, {_got(value)}")
        return None

    # -- [[instance]]

    def instances(self, top: _Table) -> tuple[Instance, ...]:
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
                    _join(path, "name"), f"duplicate instance name {_literal(inst.name)} (also {names[inst.name]})"
                )
                continue
            names[inst.name] = path
            result.append(inst)
        return tuple(result)

    def instance(self, path: str, data: dict[str, Any]) -> Instance | None:
        t = _Table(self.problems, path, data, _INSTANCE_KEYS)
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
        t = _Table(self.problems, path, data, _VIP_KEYS)
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
        states = t.states()
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
                t.problem("label", f"expected a label starting with the interface name {_literal(dev)}, "
                                   f"got {_literal(label)}")
            elif len(label.encode("utf-8", "surrogatepass")) > _IFNAMSIZ or not label.isprintable() or any(
                c.isspace() for c in label
            ):
                t.problem("label", f"expected a label of at most 15 bytes without whitespace, got {_literal(label)}")
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
        t = _Table(self.problems, path, data, _SERVICE_KEYS)
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
        flags = t.words("flags", SERVICE_FLAGS, f"an array of flags ({', '.join(SERVICE_FLAGS)})")
        for i, flag in enumerate(flags or ()):
            if flag.startswith("sh-") and scheduler is not None and scheduler not in ("sh", "mh"):
                self.problems.add(f"{t.at('flags')}[{i}]", f"expected scheduler sh or mh for flag {_literal(flag)}, "
                                                            f"got scheduler {_literal(scheduler)}")
        states = t.states()
        reals: list[RealServer | None] = []
        seen: dict[tuple[IPAddress, int], str] = {}
        for rpath, rdata in t.tables("real", "instance.service.real"):
            real = self.real(rpath, rdata, sid)
            if real is not None and real.key in seen:
                hostport = format_hostport(real.address, real.port)
                self.problems.add(rpath, f"duplicate real server {hostport} (also {seen[real.key]})")
                real = None
            if real is not None:
                seen[real.key] = rpath
            reals.append(real)
        t.done()

        if self.problems.since(mark) or key is None or scheduler is None or persistence is None or states is None:
            return None
        if key in self.services:
            self.problems.add(path, f"duplicate service {key} (also {self.services[key]})")
            return None
        self.services[key] = path
        service = VirtualService(key, scheduler, persistence, netmask, frozenset(flags or ()))
        return ServiceSpec(service, tuple(r for r in reals if r is not None), states)

    def service_id(self, t: _Table) -> _ServiceId:
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
            parsed = _parse_address(text)
            if isinstance(parsed, str):
                t.problem("address", parsed)
            else:
                address = parsed
        port = t.integer("port", 1, 65535, required=True)
        key = None
        if protocol is not None and address is not None and port is not None:
            key = ServiceKey.inet(protocol, address, port)
        return _ServiceId(key, address.version if address else None, port, False, str(address))

    # -- [[instance.service.real]]

    def real(self, path: str, data: dict[str, Any], service: _ServiceId) -> RealServer | None:
        t = _Table(self.problems, path, data, _REAL_KEYS)
        mark = self.problems.mark()
        address = None
        text = t.text("address", "an IP address", required=True)
        if text is not None:
            parsed = _parse_address(text)
            if isinstance(parsed, str):
                t.problem("address", parsed)
            elif service.family is not None and parsed.version != service.family:
                t.problem("address", f"expected an IPv{service.family} address like the service "
                                     f"({service.name}), got IPv{parsed.version} address {parsed}")
            else:
                address = parsed
        port = t.integer("port", 0 if service.fwmark else 1, 65535, default=service.port)
        forward = t.choice("forward", FORWARDS, default="dr")
        weight = t.integer("weight", 0, 65535, default=1)
        upper = t.integer("upper_threshold", 0, 65535, default=0)
        lower = t.integer("lower_threshold", 0, 65535, default=0)
        t.done()
        if upper and lower is not None and lower > upper:
            t.problem("lower_threshold", f"expected lower_threshold <= upper_threshold ({upper}), got {lower}")
        if (not service.fwmark and forward in ("dr", "tun") and port is not None and service.port is not None
                and port != service.port):
            t.problem("port", f"expected {service.port} (the service's port): with forward = {_literal(forward)} "
                              f"IPVS cannot rewrite ports; use forward = \"nat\" to map {service.port} to {port}")
        if (self.problems.since(mark) or address is None or port is None or forward is None or weight is None
                or upper is None or lower is None):
            return None
        return RealServer(address, port, forward, weight, upper, lower)

    # -- [[group]]

    def groups(self, top: _Table) -> tuple[Group, ...]:
        # An instance with a mistake of its own is still "declared": its name
        # must not be reported a second time as unknown here.
        declared = self.instance_names
        names: dict[str, str] = {}
        member_of: dict[str, str] = {}
        result = []
        for path, data in top.tables("group", "group"):
            t = _Table(self.problems, path, data, _GROUP_KEYS)
            mark = self.problems.mark()
            name = t.text("name", "a group name", required=True, check=_check_name)
            members: list[str] = []
            items = t.array("instances", "a non-empty array of instance names", required=True)
            if items is not None and not items:
                t.problem("instances", "expected a non-empty array of instance names, got an empty array")
            for i, item in enumerate(items or ()):
                where = f"{t.at('instances')}[{i}]"
                if not isinstance(item, str):
                    self.problems.add(where, f"expected an instance name, {_got(item)}")
                elif item in members:
                    self.problems.add(where, f"duplicate instance {_literal(item)}: expected each instance once")
                elif item not in declared:
                    known = ", ".join(sorted(declared)[:10]) or "none"
                    self.problems.add(where, f"expected the name of a declared [[instance]] ({known}), "
                                             f"got {_literal(item)}")
                elif item in member_of and name is not None:
                    self.problems.add(where, f"instance {_literal(item)} is already in group {member_of[item]}: "
                                             "keepalived allows one sync group per instance")
                else:
                    members.append(item)
            t.done()
            if self.problems.since(mark) or name is None:
                continue
            if name in names:
                self.problems.add(_join(path, "name"), f"duplicate group name {_literal(name)} (also {names[name]})")
                continue
            names[name] = path
            for member in members:
                member_of[member] = _literal(name)
            result.append(Group(name, tuple(members)))
        return tuple(result)

    # -- [hooks.NAME]

    def hooks(self, top: _Table) -> dict[str, HookSettings]:
        data = top.table("hooks", "hooks.NAME")
        result: dict[str, HookSettings] = {}
        for name, value in (data or {}).items():
            where = _join("hooks", name)
            if not _HOOK_NAME_RE.match(name):
                self.problems.add(where, f"expected a plugin name of letters, digits and _.-, got {_literal(name)}")
            if not isinstance(value, dict):
                self.problems.add(where, f"expected a table ([hooks.{_key(name)}]), {_got(value)}")
                continue
            t = _Table(self.problems, where, value, ())  # other keys belong to the plugin
            mark = self.problems.mark()
            enabled = t.boolean("enabled", True)
            required = t.boolean("required", False)
            timeout = t.number("timeout", 0, None, lo_open=True, default=None)
            if self.problems.since(mark) or enabled is None or required is None:
                continue
            options = {k: v for k, v in value.items() if k not in _HOOK_RESERVED}
            result[name] = HookSettings(enabled, required, timeout, MappingProxyType(options))
        return result


# --------------------------------------------------------------------------- line numbers

_KEYPART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_KEYS = rf"{_KEYPART}(?:[ \t]*\.[ \t]*{_KEYPART})*"
_HEADER_RE = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_KEYS})[ \t]*\]\]?[ \t]*(?:#.*)?\Z")
_ASSIGN_RE = re.compile(rf"[ \t]*({_KEYS})[ \t]*=")
_LAST_SEGMENT_RE = re.compile(r"""(?:\[\d+\]|\.?(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+))\Z""")


class _LineIndex:
    """Best-effort map from key paths to line numbers, built only on the error path.

    ``tomllib`` does not report positions of valid values, so the text is
    scanned for table headers and ``key =`` lines, counting ``[[arrays]]`` the
    way the key paths do.  Paths not found fall back to their nearest
    enclosing table (a missing key points at its table's header).
    """

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        arrays: dict[str, int] = {}
        current = ""
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            if in_string is not None:
                if in_string in line:
                    in_string = None if line.count(in_string) % 2 else in_string
                continue
            header = _HEADER_RE.match(line)
            if header:
                current = ""
                parts = _split_keys(header.group(2))
                for i, part in enumerate(parts):
                    current = _join(current, part)
                    if i == len(parts) - 1 and header.group(1) == "[[":
                        arrays[current] = arrays.get(current, -1) + 1
                        current = f"{current}[{arrays[current]}]"
                    elif current in arrays:
                        current = f"{current}[{arrays[current]}]"
                self.lines.setdefault(current, number)
                continue
            assign = _ASSIGN_RE.match(line)
            if assign:
                path = current
                for part in _split_keys(assign.group(1)):
                    path = _join(path, part)
                    self.lines.setdefault(path, number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    in_string = quote
                    break

    def find(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            match = _LAST_SEGMENT_RE.search(path)
            if not match:
                return None
            path = path[: match.start()]
        return None


def _split_keys(text: str) -> list[str]:
    parts = []
    for part in re.findall(_KEYPART, text):
        if part[0] in "\"'":
            try:
                part = tomllib.loads(f"k = {part}")["k"]
            except tomllib.TOMLDecodeError:
                part = part[1:-1]
        parts.append(part)
    return parts

"""The config's value types: :class:`Config`, :class:`Settings`, :class:`HookSettings`, :class:`ListenAddress`.

What a validated config file becomes (:mod:`kanotify.config.schema` reads the file into these).  A
``[settings]`` key is one field of :class:`Settings`, declaring its default and its rule together;
the reader and the list of allowed keys follow from it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..model import Group, Instance, IPAddress, ServiceKey, ServiceSpec, SyncDaemonSpec, format_hostport
from .tomlcheck import Boolean, Integer, Number, Rule, Table, Text, literal, setting

def ip_or_none(text: str) -> IPAddress | None:
    """A plain address (no %scope: VIPs and services never use link-local scopes)."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _check_abs_path(value: str) -> str | None:
    if "\0" in value:
        return "expected an absolute path, got a string containing NUL"
    if not os.path.isabs(value):
        return f"expected an absolute path, got {literal(value)}"
    return None


_ABS_PATH = Text("an absolute path", check=_check_abs_path)


@dataclass(frozen=True)
class ListenAddress:
    """Where a server listens: an IP address and a port (``settings.metrics``).

    >>> str(parse_listen_address("[::1]:9650"))
    '[::1]:9650'
    """

    address: IPAddress
    port: int

    def __str__(self) -> str:
        return format_hostport(self.address, self.port)


_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
_LISTEN_WHAT = 'ADDRESS:PORT, e.g. "127.0.0.1:9650" or "[::1]:9650"'


def parse_listen_address(value: str) -> ListenAddress | str:
    """``"127.0.0.1:9650"`` or ``"[::1]:9650"`` (no host names: a failover path must not wait for DNS),
    or the error message."""
    if value.startswith("["):
        host, bracket, port = value[1:].partition("]:")
        if not bracket:
            return f"expected {_LISTEN_WHAT}: a bracketed IPv6 address needs ]:PORT after it, got {literal(value)}"
    else:
        host, colon, port = value.rpartition(":")
        if not colon:
            return f"expected {_LISTEN_WHAT}: no port in {literal(value)}"
        if ":" in host:
            return f"expected {_LISTEN_WHAT}: write an IPv6 address in brackets, got {literal(value)}"
    address = ip_or_none(host)
    if not host:
        return f"expected {_LISTEN_WHAT}: no address before the port in {literal(value)}"
    if address is None:
        return f"expected {_LISTEN_WHAT}: {literal(host)} is not an IP address (host names are not accepted)"
    if value.startswith("[") and address.version != 6:
        return f"expected {_LISTEN_WHAT}: only IPv6 addresses go in brackets, got {literal(value)}"
    if address.is_multicast:
        return f"expected {_LISTEN_WHAT}: {address} is a multicast address"
    if not _PORT_RE.match(port) or not 1 <= int(port) <= 65535:
        return f"expected {_LISTEN_WHAT}: the port must be an integer 1..65535, got {literal(value)}"
    return ListenAddress(address, int(port))


class _ListenAddressRule(Rule):
    """A :class:`ListenAddress` written as ``"ADDRESS:PORT"``."""

    __slots__ = ()

    def read(self, table: Table, name: str, default: Any) -> Any:
        text = table.text(name, _LISTEN_WHAT, check=lambda v: _error(parse_listen_address(v)))
        if text is None:
            return default  # absent (or a problem, which the table has recorded)
        return parse_listen_address(text)


def _error(parsed: object) -> str | None:
    return parsed if isinstance(parsed, str) else None


@dataclass(frozen=True)
class HookSettings:
    """A ``[hooks.NAME]`` table: the engine's keys plus the plugin's own options."""

    enabled: bool = setting(True, Boolean())
    required: bool = setting(False, Boolean())  # a failure of a required hook fails the run
    timeout: float | None = setting(None, Number(0, lo_open=True))  # seconds; None: settings.hook_timeout
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Settings:
    """``[settings]``; every key optional.

    Each field is one key: its default and the rule that reads it (the reader
    and the allowed keys are derived from these declarations; docs/config.md
    documents each, and tests/unit/test_docs.py checks the defaults there).
    """

    state_dir: str = setting("/run/kanotify", _ABS_PATH)
    journal: str = setting("/var/lib/kanotify/journal.jsonl", _ABS_PATH)
    hooks_dir: str = setting("/etc/kanotify/hooks.d", _ABS_PATH)
    syslog: bool = setting(True, Boolean())
    ipvs_exclusive: bool = setting(False, Boolean())
    lock_timeout: float = setting(10.0, Number(0, 3600, lo_open=True))  # seconds
    garp_count: int = setting(5, Integer(0, 100))  # gratuitous ARPs per bound VIP
    garp_interval: float = setting(0.2, Number(0, 10))  # seconds between them
    drain_timeout: float = setting(300.0, Number(0))  # seconds a removed real server may drain at weight 0
    hook_timeout: float = setting(5.0, Number(0, 600, lo_open=True))  # seconds per hook call
    reconcile_interval: float = setting(30.0, Number(0, 86400))  # listener: seconds between drift checks, 0 = off
    metrics: ListenAddress | None = setting(None, _ListenAddressRule())  # listener: serve /metrics here; None = off
    # listener: keepalived's pidfile (its -p/--pid); keepalived gone without a STOP -> its instances to STOP
    keepalived_pidfile: str = setting("/run/keepalived.pid", _ABS_PATH)


#: the BGP daemons ``[bgp] daemon`` names (what doctor and status read, never change)
BGP_DAEMONS = ("bird", "frr")


@dataclass(frozen=True)
class BgpSpec:
    """``[bgp]``: binding is announcing.  The VIPs go on the dummy link ``interface``,
    which the director's BGP daemon (``daemon``: bird or frr) exports; ``control`` is
    that daemon's control socket (``birdc -s`` / ``vtysh --vty_socket``), ``None`` for
    its default.

    >>> BgpSpec("kav0").daemon
    'bird'
    """

    interface: str
    daemon: str = "bird"
    control: str | None = None


@dataclass(frozen=True)
class Config:
    """A whole, valid config file."""

    path: str
    settings: Settings = Settings()
    sysctls: tuple[tuple[str, str], ...] = ()
    instances: tuple[Instance, ...] = ()
    groups: tuple[Group, ...] = ()
    hooks: Mapping[str, HookSettings] = field(default_factory=lambda: MappingProxyType({}))
    sync_daemon: SyncDaemonSpec | None = None  # [sync_daemon]: None leaves sync daemons alone
    bgp: BgpSpec | None = None  # [bgp]: the dummy link a BGP daemon exports; None: no BGP wiring

    def instance(self, name: str) -> Instance | None:
        for inst in self.instances:
            if inst.name == name:
                return inst
        return None

    def service_spec(self, key: ServiceKey) -> ServiceSpec | None:
        """The first ``[[instance.service]]`` of ``key``."""
        for inst in self.instances:
            for spec in inst.services:
                if spec.service.key == key:
                    return spec
        return None

    def group(self, name: str) -> Group | None:
        for grp in self.groups:
            if grp.name == name:
                return grp
        return None

    @property
    def instance_names(self) -> tuple[str, ...]:
        return tuple(inst.name for inst in self.instances)

"""Actions: the steps of a plan, as data.

Every action is a frozen dataclass with an operator-readable ``str()``.  The
planner produces them, dry-run prints them, the journal records them and only
a backend's ``apply`` turns them into system changes.  ``Noop`` is kept in the
plan on purpose: "arp_ignore on all already 1" is useful in a journal.

An action that only makes sense after another one succeeded says so in its
data (:attr:`Action.depends_on`): the engine skips it when one of those failed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar

from .model import Link, RealServer, ServiceKey, SyncDaemon, Vip, VirtualService, format_hostport


class ActionStatus(enum.StrEnum):
    """What happened to one action of a run: the journal's ``actions[].status``."""

    #: applied to the system
    APPLIED = "applied"
    #: nothing to do (:attr:`Action.is_noop`), kept for the journal
    NOOP = "noop"
    FAILED = "failed"
    #: not attempted: something it needs failed (its bind, a required hook)
    SKIPPED = "skipped"
    #: planned, not applied yet: a dry-run's changes, and a ``started`` record's
    PENDING = "pending"


@dataclass(frozen=True)
class Action:
    """Base class.  ``domain`` says which backend applies it."""

    domain: ClassVar[str] = "none"

    @property
    def is_noop(self) -> bool:
        return False

    @property
    def depends_on(self) -> tuple["Action", ...]:
        """Actions of the same plan that must have succeeded for this one to be applied.

        They come earlier in the plan; when one failed (or was itself skipped),
        the engine skips this action instead of applying it.
        """
        return ()


@dataclass(frozen=True)
class Noop(Action):
    """Nothing to do, and why.  ``Noop("net.ipv4.conf.all.arp_ignore already 1")``"""

    reason: str

    @property
    def is_noop(self) -> bool:
        return True

    def __str__(self) -> str:
        return self.reason


# --------------------------------------------------------------------------- sysctl


@dataclass(frozen=True)
class SetSysctl(Action):
    """``SetSysctl("net.ipv4.conf.all.arp_ignore", "1", current="0")``"""

    domain: ClassVar[str] = "sysctl"
    key: str
    value: str
    current: str | None = None

    def __str__(self) -> str:
        was = "missing" if self.current is None else self.current
        return f"set sysctl {self.key} = {self.value} (was {was})"


# --------------------------------------------------------------------------- VIPs


@dataclass(frozen=True)
class BindVip(Action):
    """``BindVip(vip)`` -> "bind 192.0.2.100/24 dev eth0 label eth0:0"."""

    domain: ClassVar[str] = "address"
    vip: Vip

    def __str__(self) -> str:
        return f"bind {self.vip}"


@dataclass(frozen=True)
class UnbindVip(Action):
    """``UnbindVip(vip)`` -> "remove 192.0.2.100/32 dev lo label lo:0"."""

    domain: ClassVar[str] = "address"
    vip: Vip

    def __str__(self) -> str:
        return f"remove {self.vip}"


@dataclass(frozen=True)
class SendGarp(Action):
    """Announce a VIP: gratuitous ARP (IPv4) or unsolicited NA (IPv6)."""

    domain: ClassVar[str] = "garp"
    vip: Vip
    count: int = 5
    interval: float = 0.2

    @property
    def depends_on(self) -> tuple[Action, ...]:
        """Announcing a VIP that could not be bound would advertise an address nobody answers."""
        return (BindVip(self.vip),)

    def __str__(self) -> str:
        kind = "gratuitous ARP" if self.vip.family == 4 else "unsolicited NA"
        return (
            f"send {kind} for {self.vip.address.ip} on {self.vip.dev} "
            f"({self.count}x every {self.interval:g}s)"
        )


# --------------------------------------------------------------------------- IPVS


@dataclass(frozen=True)
class AddService(Action):
    domain: ClassVar[str] = "ipvs"
    service: VirtualService

    def __str__(self) -> str:
        return f"add ipvs service {self.service}"


@dataclass(frozen=True)
class EditService(Action):
    """Edit a service in place (IPVS "set"): keeps its real servers and connections."""

    domain: ClassVar[str] = "ipvs"
    old: VirtualService
    new: VirtualService

    def __str__(self) -> str:
        return f"edit ipvs service {self.new.key}: {_diff(self.old, self.new)}"


@dataclass(frozen=True)
class DeleteService(Action):
    domain: ClassVar[str] = "ipvs"
    service: VirtualService
    reason: str = ""

    def __str__(self) -> str:
        text = f"delete ipvs service {self.service.key}"
        return f"{text} ({self.reason})" if self.reason else text


@dataclass(frozen=True)
class AddReal(Action):
    domain: ClassVar[str] = "ipvs"
    service: ServiceKey
    real: RealServer

    def __str__(self) -> str:
        return f"add real server {self.real} to {self.service}"


@dataclass(frozen=True)
class EditReal(Action):
    """Edit a real server in place; ``reason`` is e.g. "drain" for weight 0."""

    domain: ClassVar[str] = "ipvs"
    service: ServiceKey
    old: RealServer
    new: RealServer
    reason: str = ""

    def __str__(self) -> str:
        text = f"edit real server {_hostport(self.new)} of {self.service}: {_diff(self.old, self.new)}"
        return f"{text} ({self.reason})" if self.reason else text


@dataclass(frozen=True)
class DeleteReal(Action):
    domain: ClassVar[str] = "ipvs"
    service: ServiceKey
    real: RealServer
    reason: str = ""

    def __str__(self) -> str:
        text = f"delete real server {_hostport(self.real)} from {self.service}"
        return f"{text} ({self.reason})" if self.reason else text


# --------------------------------------------------------------------------- IPVS sync daemons


#: why a running sync daemon is stopped right before the configured one is started
RESTART_REASON = "other parameters than configured: restarted"


@dataclass(frozen=True)
class StartSyncDaemon(Action):
    """Start an IPVS connection-sync daemon.

    ``replaces`` is the daemon of the same state that ran with other
    parameters and is stopped just before (the kernel cannot change a running
    daemon): this start is skipped when that stop failed.

    >>> str(StartSyncDaemon(SyncDaemon("master", "eth0", 51)))
    'start master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)'
    """

    domain: ClassVar[str] = "sync"
    daemon: SyncDaemon
    replaces: SyncDaemon | None = None

    @property
    def depends_on(self) -> tuple[Action, ...]:
        return (StopSyncDaemon(self.replaces, RESTART_REASON),) if self.replaces is not None else ()

    def __str__(self) -> str:
        return f"start {self.daemon}"


@dataclass(frozen=True)
class StopSyncDaemon(Action):
    """Stop the running IPVS sync daemon ``daemon`` (by its state); ``reason`` says why.

    Its identity is the daemon: the reason is not compared.

    >>> str(StopSyncDaemon(SyncDaemon("backup", "eth0", 51, 1472), "not wanted"))
    'stop backup sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) (not wanted)'
    """

    domain: ClassVar[str] = "sync"
    daemon: SyncDaemon
    reason: str = field(default="", compare=False)

    def __str__(self) -> str:
        text = f"stop {self.daemon}"
        return f"{text} ({self.reason})" if self.reason else text


# --------------------------------------------------------------------------- links


@dataclass(frozen=True)
class AddLink(Action):
    """Create a link (the ``[bgp]`` dummy link): ``ip link add kav0 type dummy; ip link set kav0 up arp off``.

    >>> str(AddLink(Link("kav0")))
    'create dummy link kav0 (up, no ARP)'
    """

    domain: ClassVar[str] = "link"
    link: Link

    def __str__(self) -> str:
        return f"create {self.link}"


@dataclass(frozen=True)
class SetLink(Action):
    """Set an existing link's flags (up, ARP off); its kind is never changed and it is never deleted.

    >>> str(SetLink(Link("kav0", up=False, noarp=False), Link("kav0")))
    'set link kav0 up, ARP off (was down, ARP on)'
    """

    domain: ClassVar[str] = "link"
    old: Link
    new: Link

    def __str__(self) -> str:
        want = f"{'up' if self.new.up else 'down'}, ARP {'off' if self.new.noarp else 'on'}"
        was = f"{'up' if self.old.up else 'down'}, ARP {'off' if self.old.noarp else 'on'}"
        return f"set link {self.new.name} {want} (was {was})"


# --------------------------------------------------------------------------- hooks


@dataclass(frozen=True)
class HookAction(Action):
    """A step contributed by a hook plugin; applied by calling ``run``.

    ``run()`` takes no arguments (it is never called in dry-run, which applies
    nothing) and raises to report failure.
    """

    domain: ClassVar[str] = "hook"
    plugin: str
    description: str
    run: Callable[[], object] = field(compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"[{self.plugin}] {self.description}"


def _hostport(real: RealServer) -> str:
    return format_hostport(real.address, real.port)


def _shown(value: object) -> object:
    if isinstance(value, frozenset):
        return ",".join(sorted(str(v) for v in value)) or "none"
    return value


def _diff(old: VirtualService | RealServer, new: VirtualService | RealServer) -> str:
    """``scheduler rr -> wrr, weight 1 -> 3`` for two values of one type."""
    parts = []
    for f in fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if f.name == "key" or a == b:
            continue
        parts.append(f"{f.name} {_shown(a)} -> {_shown(b)}")
    return ", ".join(parts) or "no change"

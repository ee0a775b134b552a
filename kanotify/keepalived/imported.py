"""The vocabulary of ``kanotify import``: what it produces, and the blocks it reads keepalived.conf into.

Frozen values (:class:`ImportResult` and its parts: services, real servers, their
checks, the sync daemon's table, and a :class:`Note` for every keyword not
imported) are what :mod:`kanotify.keepalived.importer` returns and
:mod:`kanotify.keepalived.doctor` reads.  :class:`VSBlock` and :class:`RSBlock`
are a ``virtual_server`` and a ``real_server`` as read so far (mutable, per
import); the checker mapping (:mod:`kanotify.keepalived.checkers`) reads them.
The text helpers write TOML strings and comment lines.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from ..model import IPAddress, RealServer, ServiceKey, ServiceSpec, State, VirtualService
from .conf import Statement, Where


@dataclass(frozen=True)
class Note:
    """A keyword that was not imported, where it is, why, and what it would become."""

    where: Where
    keyword: str  # the words as written, e.g. "delay_loop 6"
    reason: str
    proposal: tuple[str, ...] = ()  # TOML lines it would be (printed commented out)

    def lines(self, indent: str = "") -> list[str]:
        head = f"{indent}# not imported: {clean(self.keyword)} ({self.where}): {clean(self.reason)}"
        return [head] + [f"{indent}#   {line}" for line in self.proposal]


@dataclass(frozen=True)
class ImportedReal:
    """One real server of an imported service."""

    real: RealServer
    where: Where
    notes: tuple[Note, ...] = ()
    check: "ImportedCheck | None" = None  # from its keepalived checkers
    drain: bool = False  # keepalived's weight 0 in an mh/sh service: ``weight`` is then the one it is added at
    more_checks: tuple["ImportedCheck", ...] = ()  # its other checks: UP only while all pass


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
    quorum: "ImportedQuorum | None" = None  # quorum, hysteresis, sorry_server (:mod:`.quorum_import`)

    @property
    def spec(self) -> ServiceSpec:
        reals = tuple(replace(r.real, weight=0) if r.drain else r.real for r in self.reals)
        add_weights = tuple((r.real.key, r.real.weight) for r in self.reals if r.drain)
        return ServiceSpec(self.service, reals, frozenset({State.MASTER}), add_weights=add_weights)

    @property
    def shared_check(self) -> "ImportedCheck | None":
        """The check every real server has the same of (written once, as ``[instance.service.check]``)."""
        checks = [r.check for r in self.reals]
        first = checks[0] if checks else None
        if any(r.more_checks for r in self.reals):
            return None  # several checks: each real server writes its own array
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
        out = [f"# {clean(comment)}" for comment in self.comments]
        out.append(f"[sync_daemon]    # {self.keyword} ({self.where})")
        out += [f"{line.key} = {line.value}" + (f"    # {clean(line.origin)}" if line.origin else "")
                for line in self.lines]
        return out


# --------------------------------------------------------------------------- virtual_server state


@dataclass
class QuorumBlock:
    """What a virtual_server said about its quorum, as read so far."""

    quorum: int | None = None
    quorum_where: Where | None = None
    hysteresis: int | None = None
    hysteresis_where: Where | None = None
    sorry: tuple[IPAddress, int, str, Where] | None = None  # address, port (0: none), forward, where
    inhibit: Where | None = None
    method: Where | None = None  # sorry_server_lvs_method
    scripts: list[Statement] = field(default_factory=list)
    omega: Where | None = None


@dataclass(frozen=True)
class ImportedQuorum:
    """The service keys (and sorry server table) one virtual_server's quorum keywords become."""

    lines: tuple[tuple[str, str, str], ...]  # (key, TOML value, origin)
    sorry: tuple[tuple[str, str, str], ...] = ()  # the [instance.service.sorry_server] keys
    comments: tuple[str, ...] = ()

    def toml(self) -> list[str]:
        out = [f"  # {c}" for c in self.comments]
        out += [f"  {k} = {v}" + (f"    # {o}" if o else "") for k, v, o in self.lines]
        if self.sorry:
            out += ["", "    [instance.service.sorry_server]"]
            out += [f"    {k} = {v}" + (f"    # {o}" if o else "") for k, v, o in self.sorry]
        return out




@dataclass
class CheckerOption:
    value: str
    where: Where
    written: str  # keyword as written (legacy names show as such)


@dataclass
class VSBlock:
    stmt: Statement
    protocol: str | None = None
    scheduler: str | None = None
    forward: str | None = None
    tunnel: tuple[str, int, str] | None = None  # lvs_method TUN type ... port ... csum
    persistence: int | None = None
    granularity: str | None = None
    granularity_where: Where | None = None
    family: int | None = None  # ip_family
    weight: int = 1
    flags: set[str] = field(default_factory=set)
    cascade: dict[str, CheckerOption] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    reals: list["RSBlock"] = field(default_factory=list)
    track_files: dict[str, Statement] = field(default_factory=dict)  # the config's track_file blocks, by name
    quorum: QuorumBlock = field(default_factory=QuorumBlock)  # quorum, hysteresis, sorry_server (quorum_import)


@dataclass
class RSBlock:
    stmt: Statement
    address: IPAddress
    port: int
    weight: int | None = None
    forward: str | None = None
    tunnel: tuple[str, int, str] | None = None
    upper: int = 0
    lower: int = 0
    cascade: dict[str, CheckerOption] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    checkers: list[Statement] = field(default_factory=list)


def note_at(stmt: Statement, reason: str, proposal: tuple[str, ...] = ()) -> Note:
    return Note(stmt.where, " ".join(stmt.words), reason, proposal)


def uint_in(word: str | None, lo: int, hi: int) -> int | None:
    if word is None or not re.fullmatch(r"[0-9]+", word):
        return None
    value = int(word)
    return value if lo <= value <= hi else None


def parse_ip(word: str | None) -> IPAddress | None:
    """*word* as an IP address, or None."""
    try:
        return ipaddress.ip_address(word or "")
    except ValueError:
        return None


def clean(text: str) -> str:
    """One comment line: control characters spelled out."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def toml_str(text: str | None) -> str:
    # a JSON string is a TOML basic string, once DEL is escaped too (non-ASCII stays as it is: TOML has no
    # surrogate pairs for \u escapes of characters beyond the BMP)
    return json.dumps(text or "", ensure_ascii=False).replace("\x7f", "\\u007f")

"""The listener's work, and the worker that runs it in the engine's thread, one piece at a time.

The event loop records what it noticed as one of the work types below and
queues it (:mod:`kanotify.daemon.workqueue`); :func:`merge` is the queue's
coalescing rule.  :class:`Worker` turns each piece into engine calls: a FIFO
state change into a run (its coalesced predecessors journaled as superseded),
a handed-over command into the entry layer's handler (the daemon hosts it, the
command layer runs it), a repair, reload or health change into a reconcile,
keepalived's death into a STOP of what it drove.

Every piece of work carries the health checks' DOWN set as it was when the
work was queued (``health``, a frozen snapshot taken in the loop's thread):
the worker never reads the checker's live state, which the loop owns.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, TextIO

from ..errors import ConfigError
from ..journal import summary_line, syslog_line
from ..actions import ActionStatus
from ..model import Outcome, ServiceKey, State
from ..plan import HealthView, desired_for
from ..procinfo import ticket_fields
from ..run import Request, RunKind, RunResult
from ..store import Ticket
from .fifo import PriorityEvent, VrrpEvent
from .keepalived_watch import Gone

if TYPE_CHECKING:
    from ..config.values import Config
    from ..engine import Engine
    from ..metrics.facts import ListenerMetrics

log = logging.getLogger("kanotify.listen")


def say(text: str) -> None:
    """The listener's own line on stderr (its log under systemd)."""
    print(f"kanotify listen: {text}", file=sys.stderr, flush=True)


def event_ticket() -> Ticket:
    """A ticket for an event read now: as if a notify process had been started at this moment.

    A process's ticket is its start time in clock ticks since boot; an event
    read from the FIFO gets the current time in the same unit, so it orders
    with notify scripts that keepalived started before or after it wrote the line.
    """
    boot, _ticks, pid = ticket_fields()
    ticks = int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))
    return Ticket(boot, ticks, pid)


# --------------------------------------------------------------------------- the work


@dataclass
class Vrrp:
    """A state change read from the FIFO; ``coalesced``: the older ones of its key it replaced."""

    event: VrrpEvent
    ticket: Ticket
    health: HealthView | None = None
    coalesced: list[tuple[VrrpEvent, Ticket]] = field(default_factory=list)


@dataclass
class Command:
    """A one-shot handed over on the control socket; ``reply`` (any thread) answers the client."""

    argv: list[str]
    config: str
    ticket: Ticket | None
    reply: Callable[[dict[str, object]], None]
    health: HealthView | None = None


@dataclass
class Repair:
    reason: str
    health: HealthView | None = None


@dataclass
class Note:
    """A priority change from the FIFO: journaled, nothing to converge."""

    event: PriorityEvent
    ticket: Ticket


@dataclass
class Reload:
    reason: str


@dataclass
class HealthRun:
    changes: list[str]
    services: set[ServiceKey]  # whose real servers changed: the run reads and plans only these
    health: HealthView | None = None
    quorum: list[tuple[ServiceKey, bool]] = field(default_factory=list)  # quorum changes, in order: (service, up)


def driven_by_keepalived(config: Config, recorded: Mapping[str, State]) -> tuple[str, ...]:
    """The instances a dead keepalived leaves behind: recorded in a state other than STOP, except
    those whose VIPs are all on the ``[bgp]`` link -- no keepalived drives those (``reconcile --state
    master --instance ANYCAST`` at boot), and withdrawing a healthy director because a VRRP pair
    on the same host lost its keepalived would be wrong."""
    anycast = config.bgp.interface if config.bgp is not None else None
    return tuple(
        inst.name for inst in config.instances
        if recorded.get(inst.name) not in (None, State.STOP)
        and not (anycast is not None and inst.vips and all(spec.vip.dev == anycast for spec in inst.vips))
    )


@dataclass
class KeepalivedGone:
    gone: Gone
    ticket: Ticket  # when it was noticed: a notification keepalived issued before it died is older
    health: HealthView | None = None


@dataclass
class Failure:
    """Something the listener could not do (serve its metrics, watch keepalived): journaled as a failed run."""

    kind: RunKind
    note: str


Work = Vrrp | Command | Repair | Note | Reload | HealthRun | KeepalivedGone | Failure


def merge(queued: Work, new: Work) -> Work | None:
    """The queue's rule for a key already queued: what it becomes (keeping its place), None to drop ``new``.

    A state event replaces the queued one of its instance (the older one is
    journaled as superseded); health changes add up; one pending repair (or
    reload) does for all.
    """
    if isinstance(new, Vrrp) and isinstance(queued, Vrrp):
        new.coalesced = queued.coalesced + [(queued.event, queued.ticket)]
    elif isinstance(new, HealthRun) and isinstance(queued, HealthRun):
        new.changes = queued.changes + new.changes
        new.services = queued.services | new.services
        new.quorum = queued.quorum + new.quorum
    elif isinstance(new, (Repair, Reload)):
        return None
    return new


# --------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class HandedOver:
    """A handed-over command as the entry layer's handler gets it: the client's words, ticket, and
    what the listener hosts it with (its config -- re-read if the file changed --, its engine, the
    health facts of the moment it was queued, and buffers for the output)."""

    argv: list[str]
    ticket: Ticket | None
    stdout: TextIO
    stderr: TextIO
    config: Callable[[], Config]
    engine: Callable[[], Engine]
    health: HealthView | None


#: runs a handed-over command and returns its exit code (None: not one the listener runs)
Handler = Callable[[HandedOver], "int | None"]


class WorkerHost(Protocol):
    """What the worker asks of the listener that owns it."""

    config_file: str
    fifo_path: str | None

    def current_engine(self) -> Engine: ...

    def load(self) -> Config: ...

    def config_changed(self) -> bool: ...

    def install_from_worker(self, config: Config, reason: str) -> HealthView | None:
        """Make ``config`` the one in force (in the loop's thread); returns once it is, with the
        health facts then (a snapshot taken in the loop's thread)."""


class Worker:
    """Runs each piece of work in the engine's thread; ``runs`` counts the runs it did (for tests)."""

    def __init__(self, host: WorkerHost, handler: Handler | None, metrics: ListenerMetrics) -> None:
        self.host = host
        self.handler = handler
        self.metrics = metrics
        self.runs = 0
        #: the VIPs that should be bound now (per the saved states): their removal is drift (read in the loop)
        self.desired_vips: frozenset[tuple[str, str]] = frozenset()

    def do(self, work: Work) -> None:
        # The cyclic GC waits while a run builds its tens of thousands of objects (a 1000 x 10
        # reconcile: ~30 ms of young collections and walks of the whole config in a VM);
        # they are freed by reference counting when it ends.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._run(work)
        finally:
            self._note_desired()
            if collecting:
                gc.enable()

    def count_predecessor(self, pid: int) -> None:
        """Count the runs the previous listener was killed in (its metrics died with it)."""
        engine = self.host.current_engine()
        try:
            found = self.metrics.count_predecessor(engine.journal, pid, engine.config.instance_names)
        except Exception:  # noqa: BLE001 - metrics must never stop the listener
            log.exception("kanotify listen: could not read the journal for the previous listener's runs")
            return
        if found:
            say(f"the previous listener (pid {pid}) ended in the middle of {found} run(s): "
                "counted as interrupted (kanotify history shows them)")

    def _note_desired(self) -> None:
        engine = self.host.current_engine()
        saved, _warnings = engine.store.load(repair=False)
        desired = desired_for(engine.config, saved.states())
        self.desired_vips = frozenset(spec.vip.key for spec in desired.vips)

    def _run(self, work: Work) -> None:
        engine = self.host.current_engine()
        if isinstance(work, Vrrp):
            for event, ticket in work.coalesced:
                request = self._vrrp_request(engine, event, ticket, work.health)
                if request is not None:
                    engine.journal_only(request, Outcome.SUPERSEDED,
                                        "coalesced: a newer event for it arrived before this one was applied")
            self._run_vrrp(engine, work)
        elif isinstance(work, Command):
            work.reply(self._run_command(work))
        elif isinstance(work, Repair):
            self._report(engine.reconcile(argv=["kanotify", "listen", work.reason], kind=RunKind.REPAIR,
                                          quiet=True, health=work.health))
        elif isinstance(work, Note):
            ev = work.event
            request = Request(RunKind.PRIORITY, (ev.name,), self._trigger(ev.line), ticket=work.ticket,
                              priority=ev.priority, command=f"fifo {ev.kind} {ev.word.lower()}")
            engine.journal_only(request, Outcome.CONVERGED,
                                f"{ev.word} {ev.priority}: priority changed, nothing to converge")
        elif isinstance(work, Reload):
            self._reload(work.reason)
        elif isinstance(work, HealthRun):
            reason = "health: " + "; ".join(work.changes)
            self._report(engine.reconcile(argv=["kanotify", "listen", reason[:2000]], kind=RunKind.HEALTH,
                                          quiet=not work.quorum, services=work.services, health=work.health,
                                          quorum=work.quorum))
        elif isinstance(work, KeepalivedGone):
            self._run_keepalived_gone(engine, work)
        elif isinstance(work, Failure):
            engine.journal_only(Request(work.kind, (), ("kanotify", "listen")), Outcome.FAILED, work.note)

    def _run_keepalived_gone(self, engine: Engine, work: KeepalivedGone) -> None:
        """STOP for every instance keepalived drove: those recorded in a state other than STOP."""
        saved, _warnings = engine.store.load(repair=False)  # the run itself reads them again under the lock
        names = driven_by_keepalived(engine.config, saved.states())
        if not names:
            say(f"{work.gone.why}: no instance to release (each is STOP already, or was never notified)")
            return
        self._report(engine.run(Request(
            RunKind.KEEPALIVED_GONE, names, ("kanotify", "listen", work.gone.why), {n: State.STOP for n in names},
            persist=True, ticket=work.ticket, health=work.health,
        )))

    def _trigger(self, line: str) -> tuple[str, ...]:
        return ("kanotify", "listen", self.host.fifo_path or "-", line)

    def _vrrp_request(self, engine: Engine, event: VrrpEvent, ticket: Ticket,
                      health: HealthView | None) -> Request | None:
        config = engine.config
        names: tuple[str, ...]
        if event.kind == "INSTANCE":
            names = (event.name,) if config.instance(event.name) is not None else ()
        else:
            group = config.group(event.name)
            names = group.instances if group is not None else ()
        if not names:
            return None
        word = "master_rx_lower_pri" if event.reassert else event.state.value
        return Request(
            RunKind.FIFO, tuple(names), self._trigger(event.line), {n: event.state for n in names},
            persist=True, ticket=ticket, priority=event.priority, announce=event.reassert, health=health,
            command=f"fifo {event.kind} {word}",
        )

    def _run_vrrp(self, engine: Engine, work: Vrrp) -> None:
        event = work.event
        request = self._vrrp_request(engine, event, work.ticket, work.health)
        if request is None:
            what = "instance" if event.kind == "INSTANCE" else "group"
            engine.ignored(argv=self._trigger(event.line), kind=RunKind.FIFO,
                           command=f"fifo {event.kind} {event.state.value}",
                           note=f"{what} {event.name!r} is not managed by {engine.config.path}; ignored",
                           name=event.name)
            return
        self._report(engine.run(request))

    def _report(self, result: RunResult) -> None:
        self.runs += 1
        if result.outcome is not Outcome.CONVERGED or any(r.status is not ActionStatus.NOOP for r in result.results):
            say(summary_line(result.record))

    def _run_command(self, work: Command) -> dict[str, object]:
        host = self.host
        if os.path.realpath(work.config) != os.path.realpath(host.config_file):
            return {"refused": f"the listener serves {host.config_file}, not {work.config}"}
        if self.handler is None:
            return {"refused": "this listener hosts no commands"}
        out, err = io.StringIO(), io.StringIO()
        code = self.handler(HandedOver(list(work.argv), work.ticket, out, err, self._config_for_command,
                                       host.current_engine, work.health))
        if code is None:
            return {"refused": "not a command the listener runs"}
        self.runs += 1
        return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}

    def _config_for_command(self) -> Config:
        """The config a handed-over command runs with: ours, re-read first if the file changed since."""
        if self.host.config_changed():
            config = self.host.load()  # ConfigError: the command exits 78, as in-process; the old config stays
            self.host.install_from_worker(config, "the config file changed")
        return self.host.current_engine().config

    def _reload(self, reason: str) -> None:
        engine = self.host.current_engine()
        try:
            config = self.host.load()
        except ConfigError as exc:
            note = f"{reason}: the new config is invalid, the old one stays in force: " + "; ".join(
                str(p) for p in exc.problems)
            for problem in exc.problems:
                say(f"config error: {problem}")
            engine.journal_only(Request(RunKind.RELOAD, (), ("kanotify", "listen", reason)), Outcome.FAILED, note)
            syslog_line(note, enabled=engine.config.settings.syslog, error=True)
            return
        health = self.host.install_from_worker(config, reason)
        self._report(self.host.current_engine().reconcile(argv=["kanotify", "listen", reason],
                                                          kind=RunKind.RELOAD, health=health))


__all__ = [
    "Command", "Failure", "HandedOver", "Handler", "HealthRun", "KeepalivedGone", "Note", "Reload", "Repair",
    "Vrrp", "Work", "Worker", "WorkerHost", "event_ticket", "merge", "say",
]

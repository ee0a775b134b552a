"""What one run is about and what came of it: the values the engine, the CLI and hook plugins share.

A *run* is one pass of the engine: a notification (``kanotify master VI_1``, a
FIFO line), a ``reconcile``, a ``plan``, a health-check change.  It is asked
for with a :class:`Request`, described to hook plugins by a
:class:`RunContext`, and ends in a :class:`RunResult` whose ``record`` is the
journal line.  The :class:`Hooks` protocol is the engine's seam to the hook
plugins; everything per run lives in the :class:`HookRun` it hands out, so
one engine serves any number of runs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from .actions import Action, ActionStatus
from .errors import EXIT_FAILED, EXIT_OK, HookProblem
from .model import Outcome, ServiceKey, State
from .plan import HealthView, Plan

if TYPE_CHECKING:
    import logging

    from .config.values import Config
    from .model import Observed
    from .store import Ticket

class RunKind(enum.StrEnum):
    """What a run is: the journal's ``kind``, beside its free-text ``command``.

    The ``command`` says more for some (``notify GROUP master``, ``fifo VI_1 master_rx_lower_pri``);
    a reader (the metrics) decides from the kind alone.  Journal lines written before the kind
    was journaled have only the ``command``: :func:`kanotify.metrics.facts.kind_of_command` reads it
    from that.
    """

    #: ``kanotify master|backup|fault|stop INSTANCE``: keepalived's notify_master (...) script
    MASTER = "master"
    BACKUP = "backup"
    FAULT = "fault"
    STOP = "stop"
    #: ``kanotify notify TYPE NAME STATE PRIORITY``: keepalived's generic notify script
    NOTIFY = "notify"
    #: a state line of keepalived's notify FIFO, read by the listener (``master_rx_lower_pri`` too)
    FIFO = "fifo"
    #: a priority line of the notify FIFO: journaled only, nothing to converge
    PRIORITY = "priority"
    #: ``kanotify reconcile``: converge to the saved states (or to ``--state``)
    RECONCILE = "reconcile"
    #: ``kanotify plan``: a dry-run reconcile
    PLAN = "plan"
    #: (listener) converge to the saved states: at start-up, every ``reconcile_interval``, a managed VIP removed
    REPAIR = "repair"
    #: (listener) real servers changed health: their services only
    HEALTH = "health"
    #: (listener) SIGHUP (or the config file changed): the new config applied
    RELOAD = "reload"
    #: (listener) keepalived's process died without a STOP: the instances it drove go to STOP
    KEEPALIVED_GONE = "keepalived-gone"
    #: (listener) journal only (outcome failed): keepalived's pidfile cannot be used, its death is not watched
    KEEPALIVED_WATCH = "keepalived-watch"
    #: (listener) journal only (outcome failed): the metrics server cannot serve
    METRICS = "metrics"

    @property
    def is_notification(self) -> bool:
        """A VRRP transition: a notification, or the listener's STOP for a keepalived that died."""
        return self in _NOTIFICATIONS

    @classmethod
    def of_state(cls, state: State) -> RunKind:
        """The kind of ``kanotify STATE INSTANCE``."""
        return cls(state.value)


_NOTIFICATIONS = frozenset({RunKind.MASTER, RunKind.BACKUP, RunKind.FAULT, RunKind.STOP, RunKind.NOTIFY,
                            RunKind.FIFO, RunKind.KEEPALIVED_GONE})


@dataclass(frozen=True)
class Request:
    """What a run is asked to do.

    ``kind`` is the journal's ``kind``; ``command`` its ``command``, the kind
    unless it says more.  ``new_states`` maps instances to the state a notification reports (``None``
    for a reconcile or plan, which converge to the saved states); ``persist``
    saves them in ``state.json`` first.  ``ticket`` orders notifications: an
    older one than the saved ticket is superseded.  ``argv`` is the journal's
    ``trigger``.  ``announce`` sends GARP/NA for bound VIPs too (a master
    re-asserting itself); ``warnings`` go into the journal line; a ``quiet`` run
    (the listener's drift checks) writes no journal line when it found nothing
    to do.  ``services`` (a health run) observes and plans only those IPVS
    services -- the ones whose real servers changed health -- and nothing else.
    """

    kind: RunKind
    instances: tuple[str, ...]
    argv: tuple[str, ...]
    new_states: Mapping[str, State] | None = None
    persist: bool = False
    dry_run: bool = False
    ticket: Ticket | None = None
    priority: int | None = None
    announce: bool = False
    warnings: tuple[str, ...] = ()
    quiet: bool = False
    services: frozenset[ServiceKey] | None = None
    #: a health run: the services whose quorum was lost (False) or gained (True), in order (quorum hooks)
    quorum: tuple[tuple[ServiceKey, bool], ...] = ()
    #: the listener's health checks as they were when it queued the request (None: no checks run)
    health: HealthView | None = None
    command: str = ""

    def __post_init__(self) -> None:
        if not self.command:
            object.__setattr__(self, "command", self.kind.value)


@dataclass
class ActionResult:
    """What happened to one action of a plan."""

    action: Action
    status: ActionStatus
    error: str | None = None
    errno: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": str(self.action), "status": self.status.value}
        if self.error is not None:
            data["error"] = self.error
        if self.errno is not None:
            data["errno"] = self.errno
        return data


@dataclass
class RunContext:
    """What a run is about; handed to hook plugins.

    ``from_states``/``to_states`` map instance names to states (``from`` is
    ``None`` when nothing was saved).  ``plan`` is filled in once planned.
    """

    command: str
    instances: tuple[str, ...]
    from_states: dict[str, State | None]
    to_states: dict[str, State]
    dry_run: bool
    config: Config
    priority: int | None = None
    plan: Plan = field(default_factory=Plan)

    @property
    def logger(self) -> logging.Logger:
        """The ``kanotify`` logger.  :mod:`logging` is imported on first use: a notification without
        plugins never pays for it (~3 ms natively, ~30 ms in a slow VM)."""
        import logging

        return logging.getLogger("kanotify")

    @property
    def instance(self) -> str | None:
        """The instance of a single-instance run, else ``None``."""
        return self.instances[0] if len(self.instances) == 1 else None

    @property
    def from_state(self) -> State | None:
        return self.from_states.get(self.instance) if self.instance else None

    @property
    def to_state(self) -> State | None:
        return self.to_states.get(self.instance) if self.instance else None


@dataclass
class RunResult:
    """The outcome of one run; ``record`` is exactly the journal line.

    ``verify`` lists what still differed after applying; ``problems`` what went
    wrong with hook plugins in this run (load problems included).  ``observed``
    is the system as the run left it (its observation with the read-back after
    applying merged in); ``None`` when the run observed nothing (superseded,
    journal-only, or failed before observing).
    """

    context: RunContext
    results: list[ActionResult]
    outcome: Outcome
    record: dict[str, Any]
    verify: list[str] = field(default_factory=list)
    problems: list[HookProblem] = field(default_factory=list)
    observed: Observed | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.outcome is Outcome.FAILED else EXIT_OK

    @property
    def plan(self) -> Plan:
        return self.context.plan


class HookRun(Protocol):
    """The hook calls of one run.  ``problems`` lists what went wrong so far (load problems included)."""

    @property
    def problems(self) -> Sequence[HookProblem]: ...

    def before_transition(self) -> list[Action]:
        """The plugins' actions; raises :class:`~kanotify.errors.HookError` if a required plugin failed."""
        ...

    def action_failed(self, action: Action, error: BaseException) -> None: ...

    def after_transition(self, result: RunResult) -> None: ...

    def quorum_changed(self, service: ServiceKey, up: bool) -> None:
        """``kanotify_quorum_up`` / ``kanotify_quorum_down`` for ``service``."""
        ...


class Hooks(Protocol):
    """What the engine asks of the hook plugins: a :class:`HookRun` per run."""

    def begin(self, ctx: RunContext) -> HookRun: ...


class NoHooks:
    """No plugins: the :class:`Hooks` of an engine without any."""

    def begin(self, ctx: RunContext) -> HookRun:
        return _NoHookRun()


class _NoHookRun:
    @property
    def problems(self) -> Sequence[HookProblem]:
        return ()

    def before_transition(self) -> list[Action]:
        return []

    def action_failed(self, action: Action, error: BaseException) -> None:
        pass

    def after_transition(self, result: RunResult) -> None:
        pass

    def quorum_changed(self, service: ServiceKey, up: bool) -> None:
        pass


__all__ = [
    "ActionResult", "ActionStatus", "HookRun", "Hooks", "NoHooks", "Outcome", "Request", "RunContext", "RunKind",
    "RunResult",
]

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

from .actions import Action
from .errors import EXIT_FAILED, EXIT_OK, HookProblem
from .model import ServiceKey, State
from .plan import HealthView, Plan

if TYPE_CHECKING:
    import logging

    from .config.values import Config
    from .model import Observed
    from .store import Ticket

#: Status of an action in a run (the journal's ``actions[].status``).
APPLIED = "applied"
NOOP = "noop"
FAILED = "failed"
#: not attempted: something it needs failed (its bind, a required hook)
SKIPPED = "skipped"
#: dry-run only: would be applied
PENDING = "pending"

#: Outcome of a run (the journal's ``outcome``).
CONVERGED = "converged"
OUTCOME_FAILED = "failed"
SUPERSEDED = "superseded"


class RunKind(enum.StrEnum):
    """The runs the listener starts on its own, by their journal ``command``.

    The others are named by what asked for them: ``master``, ``notify INSTANCE
    backup``, ``fifo GROUP stop``, ``reconcile``, ``plan``.
    """

    #: converge to the saved states: at start-up, every ``reconcile_interval``, a managed VIP removed
    REPAIR = "repair"
    #: real servers changed health: their services only
    HEALTH = "health"
    #: SIGHUP (or the config file changed): the new config applied
    RELOAD = "reload"
    #: keepalived's process died without a STOP: the instances it drove go to STOP
    KEEPALIVED_GONE = "keepalived-gone"
    #: journal only (outcome failed): keepalived's pidfile cannot be used, its death is not watched
    KEEPALIVED_WATCH = "keepalived-watch"


@dataclass(frozen=True)
class Request:
    """What a run is asked to do.

    ``new_states`` maps instances to the state a notification reports (``None``
    for a reconcile or plan, which converge to the saved states); ``persist``
    saves them in ``state.json`` first.  ``ticket`` orders notifications: an
    older one than the saved ticket is superseded.  ``argv`` is the journal's
    ``trigger``.  ``announce`` sends GARP/NA for bound VIPs too (a master
    re-asserting itself); ``warnings`` go into the journal line; a ``quiet`` run
    (the listener's drift checks) writes no journal line when it found nothing
    to do.  ``services`` (a health run) observes and plans only those IPVS
    services -- the ones whose real servers changed health -- and nothing else.
    """

    command: str
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
    #: the listener's health checks as they were when it queued the request (None: no checks run)
    health: HealthView | None = None


@dataclass
class ActionResult:
    """What happened to one action of a plan."""

    action: Action
    status: str
    error: str | None = None
    errno: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": str(self.action), "status": self.status}
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
    outcome: str
    record: dict[str, Any]
    verify: list[str] = field(default_factory=list)
    problems: list[HookProblem] = field(default_factory=list)
    observed: Observed | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.outcome == OUTCOME_FAILED else EXIT_OK

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


__all__ = [
    "APPLIED", "CONVERGED", "FAILED", "NOOP", "OUTCOME_FAILED", "PENDING", "SKIPPED", "SUPERSEDED",
    "ActionResult", "HookRun", "Hooks", "NoHooks", "Request", "RunContext", "RunKind", "RunResult",
]

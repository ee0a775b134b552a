"""The engine: lock, ordering, record, observe -> plan -> apply -> verify, journal.

Every entry point (a notification, ``reconcile``, ``plan``) goes through
:meth:`Engine.run`, so they all behave the same way:

1. take the run lock (``settings.lock_timeout``);
2. for a notification, compare its ticket with the recorded one: an older
   notification that got the lock late is *superseded* and changes nothing;
3. record the new state atomically *before* touching the system, so a run
   killed half-way is finished by the next ``reconcile``;
4. observe only what the config manages, plan (pure), let hooks add steps,
   apply the changes (one failing action never stops the independent ones),
   re-observe and verify that a fresh plan has nothing left to do;
5. append one journal line and a syslog line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .actions import Action, BindVip, SendGarp
from .backends.base import Backend, Scope
from .config import Config
from .errors import EXIT_FAILED, EXIT_OK, ApplyError, HookError, KanotifyError
from .journal import Journal, summary_line, syslog_line, utc_now_iso
from .model import Desired, Observed, State
from .plan import Plan, PlanOptions, desired_state, next_draining, plan
from .state import InstanceRecord, Records, StateStore, Ticket

log = logging.getLogger("kanotify")

APPLIED, NOOP, FAILED, SKIPPED = "applied", "noop", "failed", "skipped"
CONVERGED, OUTCOME_FAILED, SUPERSEDED = "converged", "failed", "superseded"


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
    ``None`` when nothing was recorded).  ``plan`` is filled in once planned.
    """

    command: str
    instances: tuple[str, ...]
    from_states: dict[str, State | None]
    to_states: dict[str, State]
    dry_run: bool
    config: Config
    priority: int | None = None
    plan: Plan = field(default_factory=Plan)
    logger: logging.Logger = log

    @property
    def instance(self) -> str | None:
        return self.instances[0] if len(self.instances) == 1 else None

    @property
    def from_state(self) -> State | None:
        return self.from_states.get(self.instance) if self.instance else None

    @property
    def to_state(self) -> State | None:
        return self.to_states.get(self.instance) if self.instance else None


@dataclass
class RunResult:
    """The outcome of one run; ``record`` is exactly the journal line."""

    context: RunContext
    results: list[ActionResult]
    outcome: str
    record: dict[str, Any]
    verify: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.outcome == OUTCOME_FAILED else EXIT_OK

    @property
    def plan(self) -> Plan:
        return self.context.plan


class NullHooks:
    """The hook interface the engine calls; this one does nothing."""

    problems: list[dict[str, Any]] = []

    def before_transition(self, ctx: RunContext) -> list[Action]:
        return []

    def after_transition(self, ctx: RunContext, result: RunResult) -> None:
        pass

    def action_failed(self, ctx: RunContext, action: Action, error: BaseException) -> None:
        pass


def _system_backend() -> Backend:
    from .backends.system import SystemBackend

    return SystemBackend()


class Engine:
    """Runs transitions, reconciles and plans against one config.

    ``backend_factory`` makes the backend for a run (the in-memory backend in
    unit tests); ``clock`` is wall-clock seconds (drain timeouts).
    """

    def __init__(
        self,
        config: Config,
        *,
        backend_factory: Callable[[], Backend] | None = None,
        hooks: Any = None,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.backend_factory = backend_factory or (lambda: _system_backend())
        self.hooks = hooks if hooks is not None else NullHooks()
        self.clock = clock
        self.journal = journal or Journal(config.settings.journal)
        self.store = store or StateStore(config.settings.state_dir)
        self.warnings: list[str] = []

    # ------------------------------------------------------------------ entry points

    def transition(
        self,
        names: Sequence[str],
        state: State,
        *,
        argv: Sequence[str],
        command: str,
        dry_run: bool = False,
        ticket: Ticket | None = None,
        priority: int | None = None,
    ) -> RunResult:
        """A notification: ``names`` entered ``state``."""
        return self.run(
            command, tuple(names), {n: state for n in names}, argv=argv, dry_run=dry_run,
            ticket=ticket, priority=priority, record=True,
        )

    def reconcile(
        self,
        names: Sequence[str] | None = None,
        state: State | None = None,
        *,
        argv: Sequence[str],
        command: str = "reconcile",
        dry_run: bool = False,
    ) -> RunResult:
        """Converge to the recorded states (or to ``state``, which is then recorded)."""
        scope = tuple(names) if names else self.config.instance_names
        forced = {n: state for n in scope} if state is not None else None
        return self.run(command, scope, forced, argv=argv, dry_run=dry_run, record=state is not None)

    def ignored(self, *, argv: Sequence[str], command: str, note: str, name: str | None = None) -> RunResult:
        """Journal a notification that is not for us (generic ``notify`` of another instance)."""
        ctx = RunContext(command, (name,) if name else (), {}, {}, False, self.config)
        record = self._record(ctx, [], CONVERGED, argv, 0.0, note=note)
        self._write_journal(record)
        return RunResult(ctx, [], CONVERGED, record)

    # ------------------------------------------------------------------ the run

    def run(
        self,
        command: str,
        names: tuple[str, ...],
        new_states: Mapping[str, State] | None,
        *,
        argv: Sequence[str],
        dry_run: bool = False,
        ticket: Ticket | None = None,
        priority: int | None = None,
        record: bool = False,
    ) -> RunResult:
        started = time.monotonic()
        self.warnings = []  # per run: one engine may serve many runs
        self.store.warnings = []
        start_run = getattr(self.hooks, "start_run", None)
        if start_run is not None:  # forget the previous run's hook problems (one engine, many runs)
            start_run()
        ctx = RunContext(command, names, {}, {}, dry_run, self.config, priority)
        try:
            with contextlib.ExitStack() as stack:
                locked = True
                try:
                    self.store.ensure_dir()
                    stack.enter_context(self.store.lock(self.config.settings.lock_timeout))
                except KanotifyError as exc:
                    if not dry_run:
                        raise
                    # a dry-run changes nothing: it may plan without the lock (read-only state dir)
                    locked = False
                    self.warnings.append(f"{exc}; planned without the lock")
                return self._run_locked(ctx, new_states, argv, ticket, record, started, locked=locked)
        except KanotifyError as exc:  # lock timeout, unusable state dir, ...
            return self._failed_early(ctx, argv, started, str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. netlink unusable: journal it with its traceback
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()
            return self._failed_early(ctx, argv, started, f"{type(exc).__name__}: {exc}", traceback_text=text)

    def _run_locked(
        self,
        ctx: RunContext,
        new_states: Mapping[str, State] | None,
        argv: Sequence[str],
        ticket: Ticket | None,
        record: bool,
        started: float,
        locked: bool,
    ) -> RunResult:
        records = self.store.load(repair=locked)
        self.warnings.extend(self.store.warnings)
        recorded = records.states()
        ctx.from_states = {n: recorded.get(n) for n in ctx.instances}

        superseded: list[str] = []
        if new_states is not None and ticket is not None:
            for name in list(new_states):
                rec = records.instances.get(name)
                if rec is not None and ticket.older_than(rec.ticket):
                    superseded.append(name)
        if superseded and len(superseded) == len(ctx.instances):
            ctx.to_states = {n: recorded[n] for n in ctx.instances}
            note = "a newer notification was already applied: " + ", ".join(
                f"{n} is {recorded[n].value}" for n in superseded
            )
            result_record = self._record(ctx, [], SUPERSEDED, argv, _ms(started), note=note)
            self._write_journal(result_record)
            return RunResult(ctx, [], SUPERSEDED, result_record)

        effective = dict(recorded)
        if new_states is not None:
            effective.update({n: s for n, s in new_states.items() if n not in superseded})
        ctx.to_states = {n: effective.get(n, State.BACKUP) for n in ctx.instances}

        if record and new_states is not None and not ctx.dry_run and locked:
            now_iso = utc_now_iso()
            for name, state in new_states.items():
                if name in superseded:
                    continue
                records.instances[name] = InstanceRecord(state, ticket, now_iso, list(argv))
            self.store.save(records)

        desired = desired_state(self.config, effective, ctx.instances)
        scope = Scope(
            sysctls=tuple(k for k, _ in desired.sysctls),
            vips=desired.managed_vips,
            services=desired.managed_services,
            ipvs=desired.needs_ipvs,
        )
        options = PlanOptions(
            garp_count=self.config.settings.garp_count,
            garp_interval=self.config.settings.garp_interval,
            drain_timeout=self.config.settings.drain_timeout,
            now=self.clock(),
            draining=records.draining,
        )
        backend = self.backend_factory()
        try:
            observed = backend.observe(scope)
            ctx.plan = plan(desired, observed, options)
            aborted = None
            try:
                extra = self._hook_actions(ctx)
            except HookError as exc:  # a *required* hook failed: do not converge
                aborted, extra = str(exc), []
            if extra:
                ctx.plan = Plan(ctx.plan.actions + tuple(extra))
            verify: list[str] = []
            if aborted is not None:
                results = [
                    ActionResult(a, NOOP) if a.is_noop else ActionResult(a, SKIPPED, f"not applied: {aborted}")
                    for a in ctx.plan
                ]
                self.warnings.append(aborted)
            elif ctx.dry_run:
                results = [ActionResult(a, NOOP if a.is_noop else SKIPPED) for a in ctx.plan]
            else:
                results = self._apply(ctx, backend)
                after = backend.observe(scope)
                verify = [str(a) for a in plan(desired, after, _verify_options(options)).changes]
                if locked:
                    self._update_drains(records, desired, after, options.now)
            if observed.ipvs_error and desired.services:
                self.warnings.append(observed.ipvs_error)
        finally:
            backend.close()

        failed = (
            aborted is not None
            or any(r.status == FAILED for r in results)
            or bool(getattr(self.hooks, "problems", None))
        )
        outcome = OUTCOME_FAILED if failed or verify else CONVERGED
        partial = "superseded for " + ", ".join(superseded) if superseded else None
        result_record = self._record(ctx, results, outcome, argv, _ms(started), verify=verify, note=partial)
        result = RunResult(ctx, results, outcome, result_record, verify)
        self._call_after(ctx, result)
        self._write_journal(result_record)
        return result

    # ------------------------------------------------------------------ pieces

    def _apply(self, ctx: RunContext, backend: Backend) -> list[ActionResult]:
        results: dict[int, ActionResult] = {}
        changes = [(i, a) for i, a in enumerate(ctx.plan.actions) if not a.is_noop]
        failed_vips = set()
        # Apply in order, one domain chunk at a time, so that a GARP is skipped when its bind failed.
        pending = list(changes)
        while pending:
            domain = pending[0][1].domain
            chunk = []
            while pending and pending[0][1].domain == domain:
                chunk.append(pending.pop(0))
            runnable = []
            for i, action in chunk:
                if isinstance(action, SendGarp) and action.vip in failed_vips:
                    results[i] = ActionResult(action, SKIPPED, "not sent: binding the VIP failed")
                else:
                    runnable.append((i, action))
            outcomes = _apply_many(backend, [a for _, a in runnable])
            for (i, action), error in zip(runnable, outcomes):
                if error is None:
                    results[i] = ActionResult(action, APPLIED)
                    continue
                results[i] = _failure(action, error)
                if isinstance(action, BindVip):
                    failed_vips.add(action.vip)
                self._call_failed(ctx, action, error)
        return [
            results.get(i, ActionResult(a, NOOP)) for i, a in enumerate(ctx.plan.actions)
        ]

    def _update_drains(self, records: Records, desired: Desired, after: Observed, now: float) -> None:
        scoped = {str(k) for k in desired.managed_services}
        kept = {k: v for k, v in records.draining.items() if k[0] not in scoped}
        kept.update(next_draining(desired, after, records.draining, now))
        if kept != records.draining:
            records.draining = kept
            self.store.save(records)

    def _hook_actions(self, ctx: RunContext) -> list[Action]:
        return list(self.hooks.before_transition(ctx) or [])

    def _call_after(self, ctx: RunContext, result: RunResult) -> None:
        self.hooks.after_transition(ctx, result)
        # the record was built before after_transition ran: add what it reported
        problems = getattr(self.hooks, "problems", None)
        if problems:
            result.record["hooks"] = list(problems)
            if result.outcome == CONVERGED:
                result.outcome = OUTCOME_FAILED
                result.record["outcome"] = OUTCOME_FAILED

    def _call_failed(self, ctx: RunContext, action: Action, error: BaseException) -> None:
        self.hooks.action_failed(ctx, action, error)

    def _failed_early(
        self, ctx: RunContext, argv: Sequence[str], started: float, message: str, traceback_text: str | None = None
    ) -> RunResult:
        record = self._record(ctx, [], OUTCOME_FAILED, argv, _ms(started), note=message)
        if traceback_text:
            record["traceback"] = traceback_text
        self._write_journal(record)
        return RunResult(ctx, [], OUTCOME_FAILED, record)

    def _record(
        self,
        ctx: RunContext,
        results: list[ActionResult],
        outcome: str,
        argv: Sequence[str],
        duration_ms: float,
        *,
        verify: list[str] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        def name(state: State | None) -> str | None:
            return state.value if state is not None else None

        single = ctx.instance
        record: dict[str, Any] = {
            "ts": utc_now_iso(),
            "trigger": list(argv),
            "command": ctx.command,
            "instance": single,
            "from": name(ctx.from_states.get(single)) if single else None,
            "to": name(ctx.to_states.get(single)) if single else None,
            "instances": [
                {"instance": n, "from": name(ctx.from_states.get(n)), "to": name(ctx.to_states.get(n))}
                for n in ctx.instances
            ],
            "dry_run": ctx.dry_run,
            "actions": [r.to_json() for r in results],
            "outcome": outcome,
            "duration_ms": round(duration_ms, 1),
            "pid": os.getpid(),
        }
        if ctx.priority is not None:
            record["priority"] = ctx.priority
        if verify:
            record["verify"] = verify
        problems = getattr(self.hooks, "problems", None)
        if problems:
            record["hooks"] = list(problems)
        warnings = list(dict.fromkeys(self.warnings))
        if warnings:
            record["warnings"] = warnings
        if note:
            record["note"] = note
        return record

    def _write_journal(self, record: dict[str, Any]) -> None:
        try:
            self.journal.append(record)
        except OSError as exc:
            message = f"cannot write journal {self.journal.path}: {exc.strerror}"
            self.warnings.append(message)
            record.setdefault("warnings", []).append(message)  # the CLI prints these
            syslog_line(message, enabled=self.config.settings.syslog, error=True)
        syslog_line(
            summary_line(record),
            enabled=self.config.settings.syslog,
            error=record["outcome"] == OUTCOME_FAILED,
        )


def _verify_options(options: PlanOptions) -> PlanOptions:
    from dataclasses import replace

    return replace(options, garp_count=0)


def _apply_many(backend: Backend, actions: list[Action]) -> list[BaseException | None]:
    if not actions:
        return []
    many = getattr(backend, "apply_many", None)
    try:
        if many is not None:
            return list(many(actions))
        from .backends.base import apply_each

        return apply_each(backend, actions)
    except Exception as exc:  # noqa: BLE001 - a backend bug must not hide the other actions' fate
        return [exc for _ in actions]


def _failure(action: Action, error: BaseException) -> ActionResult:
    if isinstance(error, ApplyError):
        return ActionResult(action, FAILED, str(error), error.errno)
    if isinstance(error, OSError):
        return ActionResult(action, FAILED, f"{action}: {error.strerror or error}", error.errno)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()
    return ActionResult(action, FAILED, f"{type(error).__name__}: {error}\n{text}", None)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0

"""The engine: lock, ordering, saved states, observe -> plan -> apply -> verify, journal.

Every entry point (a notification, ``reconcile``, ``plan``) is a
:class:`~kanotify.run.Request` that goes through :meth:`Engine.run`, so they
all behave the same way:

1. take the run lock (``settings.lock_timeout``);
2. **supersede**: for a notification, compare its ticket with the saved one: an
   older notification that got the lock late changes nothing;
3. **persist states**: save the new states atomically *before* touching the
   system, so a run killed half-way is finished by the next ``reconcile``;
4. **converge**: observe only what the config manages, plan (pure), let hooks
   add steps, apply the changes (one failing action never stops the
   independent ones), re-observe and verify that a fresh plan has nothing
   left to do.  A run whose plan has changes to apply first appends a
   ``started`` journal record (its planned actions, ``pending``): whatever
   it changes is journaled even if it is killed before step 5;
5. **record**: append the final journal line (same ``run`` id) and a syslog line.

An :class:`Engine` keeps no state between runs except its config, its hooks and
(with ``reuse_backend``) its open backend: warnings, hook problems and results
belong to the run, so one engine serves thousands of runs in ``kanotify listen``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

from .actions import Action, ActionStatus
from .backends import system
from .backends.base import Backend
from .config.values import Config
from .errors import ApplyError, HookError, KanotifyError
from .journal import Journal, RecordKind, new_run_id, summary_line, syslog_line, utc_now_iso, writer_process
from .model import Desired, Observed, Outcome, Scope, ServiceKey, State
from .plan import HealthView, Plan, PlanOptions, desired_for, next_draining, plan
from .run import ActionResult, HookRun, Hooks, NoHooks, Request, RunContext, RunKind, RunResult
from .store import SavedState, SavedStates, StateStore, Ticket
from .verify import merged, touched_scope


@dataclass
class _Run:
    """The state of one run while it is under way (never kept on the engine)."""

    request: Request
    ctx: RunContext
    hooks: HookRun
    started: float
    warnings: list[str] = field(default_factory=list)
    locked: bool = True
    #: the journal's ``run``: the same in the run's ``started`` record (if any) and its final one
    id: str = field(default_factory=new_run_id)
    #: its ``started`` record was written: the final one must follow, whatever happens
    journaled_start: bool = False

    def ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0


class Engine:
    """Runs transitions, reconciles and plans against one config.

    ``backend_factory`` makes the backend for a run (default: this host's,
    :func:`kanotify.backends.system.system_backend`; the in-memory one in unit tests); with ``reuse_backend`` the first one made is kept open for
    every later run until :meth:`close` (the listener: sockets opened once).
    ``clock`` is wall-clock seconds (drain timeouts).  A request's ``health``
    (the listener's checks, as they were when it queued the request) drains or
    removes the real servers found DOWN.
    ``on_result`` sees every run's result once it is recorded (the listener's
    metrics); it must not raise.
    """

    def __init__(
        self,
        config: Config,
        *,
        backend_factory: Callable[[], Backend] | None = None,
        reuse_backend: bool = False,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
        store: StateStore | None = None,
        on_result: Callable[[RunResult], None] | None = None,
    ) -> None:
        self.config = config
        self.on_result = on_result
        self.backend_factory = backend_factory or system.system_backend
        self.reuse_backend = reuse_backend
        self.hooks: Hooks = hooks if hooks is not None else NoHooks()
        self.clock = clock
        self.journal = journal or Journal(config.settings.journal)
        self.store = store or StateStore(config.settings.state_dir)
        self._backend: Backend | None = None

    def close(self) -> None:
        """Close a kept backend (``reuse_backend``)."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    # ------------------------------------------------------------------ entry points

    def transition(
        self,
        names: Sequence[str],
        state: State,
        *,
        argv: Sequence[str],
        kind: RunKind,
        command: str = "",
        dry_run: bool = False,
        ticket: Ticket | None = None,
        priority: int | None = None,
        warnings: Sequence[str] = (),
        health: HealthView | None = None,
    ) -> RunResult:
        """A notification: ``names`` entered ``state``; ``command`` (default: the kind) is the journal's."""
        return self.run(Request(
            kind, tuple(names), tuple(argv), {n: state for n in names}, persist=True,
            dry_run=dry_run, ticket=ticket, priority=priority, warnings=tuple(warnings), command=command, health=health,
        ))

    def reconcile(
        self,
        names: Sequence[str] | None = None,
        state: State | None = None,
        *,
        argv: Sequence[str],
        kind: RunKind = RunKind.RECONCILE,
        dry_run: bool = False,
        warnings: Sequence[str] = (),
        quiet: bool = False,
        services: Iterable[ServiceKey] | None = None,
        ticket: Ticket | None = None,
        health: HealthView | None = None,
        quorum: Sequence[tuple[ServiceKey, bool]] = (),
    ) -> RunResult:
        """Converge to the saved states (or to ``state``, which is then saved, with ``ticket``).

        With ``services`` only those IPVS services (the listener's health run:
        the services whose real servers changed health).
        """
        scope = tuple(names) if names else self.config.instance_names
        forced = {n: state for n in scope} if state is not None else None
        return self.run(Request(kind, scope, tuple(argv), forced, persist=state is not None, dry_run=dry_run,
                                ticket=ticket if state is not None else None, warnings=tuple(warnings), quiet=quiet,
                                services=frozenset(services) if services is not None else None, health=health,
                                quorum=tuple(quorum)))

    def ignored(
        self, *, argv: Sequence[str], kind: RunKind, command: str = "", note: str, name: str | None = None
    ) -> RunResult:
        """Journal a notification that is not for us (generic ``notify`` of another instance)."""
        request = Request(kind, (name,) if name else (), tuple(argv), command=command)
        return self.journal_only(request, Outcome.CONVERGED, note)

    def journal_only(self, request: Request, outcome: Outcome, note: str) -> RunResult:
        """Journal a request without running it: ignored, informational, or coalesced into a newer one."""
        run = self._begin(request)
        run.ctx.to_states = dict(request.new_states or {})
        return self._record(run, [], outcome, note=note)

    # ------------------------------------------------------------------ the run

    def run(self, request: Request) -> RunResult:
        """Run one request: lock, supersede, persist states, converge, record."""
        run = self._begin(request)
        try:
            with contextlib.ExitStack() as stack:
                self._lock(run, stack)
                saved, warnings = self.store.load(repair=run.locked)
                run.warnings.extend(warnings)
                superseded = self._supersede(run, saved)
                if superseded is not None:
                    return superseded
                self._persist_states(run, saved)
                return self._converge(run, saved)
        except KanotifyError as exc:  # lock timeout, unusable state dir, ...
            return self._record(run, [], Outcome.FAILED, note=str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. netlink unusable: journal it with its traceback
            text = _traceback_text(exc)
            return self._record(run, [], Outcome.FAILED, note=f"{type(exc).__name__}: {exc}", traceback_text=text)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: a live process must not leave a run "running"
            if run.journaled_start:
                self._record(run, [], Outcome.FAILED, note=f"{type(exc).__name__} before its final record")
            raise

    def _begin(self, request: Request) -> _Run:
        ctx = RunContext(request.command, request.instances, {}, {}, request.dry_run, self.config, request.priority)
        return _Run(request, ctx, self.hooks.begin(ctx), time.monotonic(), list(request.warnings))

    def _lock(self, run: _Run, stack: contextlib.ExitStack) -> None:
        try:
            self.store.ensure_dir()
            stack.enter_context(self.store.lock(self.config.settings.lock_timeout))
        except KanotifyError as exc:
            if not run.request.dry_run:
                raise
            # a dry-run changes nothing: it may plan without the lock (read-only state dir)
            run.locked = False
            run.warnings.append(f"{exc}; planned without the lock")

    def _effective_new_states(self, run: _Run, saved: SavedStates) -> dict[str, State]:
        """The request's new states, without those of instances a newer notification already set."""
        new = run.request.new_states or {}
        ticket = run.request.ticket
        if ticket is None:
            return dict(new)
        return {
            name: state for name, state in new.items()
            if not ((rec := saved.instances.get(name)) is not None and ticket.older_than(rec.ticket))
        }

    def _supersede(self, run: _Run, saved: SavedStates) -> RunResult | None:
        """The result of a notification that every instance of it has outlived, else ``None``."""
        ctx, new = run.ctx, run.request.new_states
        recorded = saved.states()
        ctx.from_states = {n: recorded.get(n) for n in ctx.instances}
        fresh = self._effective_new_states(run, saved)
        effective = {**recorded, **fresh}
        ctx.to_states = {n: effective.get(n, State.BACKUP) for n in ctx.instances}
        if new is None or fresh or not ctx.instances:
            return None
        note = "a newer notification was already applied: " + ", ".join(
            f"{n} is {recorded[n].value}" for n in new
        )
        return self._record(run, [], Outcome.SUPERSEDED, note=note)

    def _persist_states(self, run: _Run, saved: SavedStates) -> None:
        """Save the notified states before anything changes (a killed run is then finished by reconcile)."""
        request = run.request
        if not request.persist or request.dry_run or not run.locked:
            return
        fresh = self._effective_new_states(run, saved)
        if not fresh:
            return
        now_iso = utc_now_iso()
        for name, state in fresh.items():
            saved.instances[name] = SavedState(state, request.ticket, now_iso, list(request.argv))
        self.store.save(saved)

    def _converge(self, run: _Run, saved: SavedStates) -> RunResult:
        """Observe, plan, let hooks add steps, apply, verify: the part that touches the system."""
        ctx = run.ctx
        states = dict(saved.states())
        states.update(ctx.to_states)
        desired = desired_for(self.config, states, ctx.instances, run.request.health)
        scope = desired.scope
        if run.request.services is not None:
            # a health run: the services whose real servers changed, read and planned alone (not 10,000 reals)
            services = run.request.services & desired.managed_services
            # a quorum change binds or unbinds the VIPs on those services' addresses too
            addresses = {key.address for key, _up in run.request.quorum} if run.request.quorum else set()
            scope = Scope(vips=frozenset(v for v in desired.managed_vips if v.address.ip in addresses),
                          services=services, ipvs=True, services_only=True)
            desired = desired.restricted(scope)
        options = PlanOptions(
            garp_count=self.config.settings.garp_count,
            garp_interval=self.config.settings.garp_interval,
            announce=run.request.announce,
            drain_timeout=self.config.settings.drain_timeout,
            now=self.clock(),
            draining=saved.draining,
        )
        backend = self._acquire_backend()
        verify: list[str] = []
        try:
            observed = after = backend.observe(scope)
            ctx.plan = plan(desired, observed, options)
            aborted = None
            try:
                extra = run.hooks.before_transition()
            except HookError as exc:  # a *required* hook failed: do not converge
                aborted, extra = str(exc), []
            if extra:
                ctx.plan = Plan(ctx.plan.actions + tuple(extra))
            if aborted is not None:
                results = [
                    ActionResult(a, ActionStatus.NOOP) if a.is_noop
                    else ActionResult(a, ActionStatus.SKIPPED, f"not applied: {aborted}")
                    for a in ctx.plan
                ]
                run.warnings.append(aborted)
            elif run.request.dry_run:
                results = [ActionResult(a, ActionStatus.NOOP if a.is_noop else ActionStatus.PENDING) for a in ctx.plan]
            else:
                if ctx.plan.has_changes:
                    self._journal_started(run)
                results = self._apply(run, backend)
                if any(r.status != ActionStatus.NOOP for r in results):  # nothing changed: nothing to read again
                    after, verify = _verify(backend, desired, observed, results, options)
                if run.locked:
                    self._update_drains(saved, desired, after, options.now)
            if observed.ipvs_error and (desired.services or desired.sync_daemons):
                run.warnings.append(observed.ipvs_error)
        finally:
            self._release_backend(backend)

        failed = (aborted is not None or any(r.status is ActionStatus.FAILED for r in results)
                  or bool(run.hooks.problems))
        outcome = Outcome.FAILED if failed or verify else Outcome.CONVERGED
        stale = sorted(set(run.request.new_states or ()) - set(self._effective_new_states(run, saved)))
        note = "superseded for " + ", ".join(stale) if stale else None
        return self._record(run, results, outcome, verify=verify, note=note, after_hooks=True, observed=after)

    # ------------------------------------------------------------------ pieces

    def _acquire_backend(self) -> Backend:
        if not self.reuse_backend:
            return self.backend_factory()
        if self._backend is None:
            self._backend = self.backend_factory()
        return self._backend

    def _release_backend(self, backend: Backend) -> None:
        if not self.reuse_backend:
            backend.close()

    def _apply(self, run: _Run, backend: Backend) -> list[ActionResult]:
        """Apply the plan's changes in order, one domain's consecutive actions at a time.

        An action whose dependency (:attr:`~kanotify.actions.Action.depends_on`)
        failed or was skipped is skipped.  Linear in the number of actions.
        """
        actions = run.ctx.plan.actions
        results = [ActionResult(a, ActionStatus.NOOP) for a in actions]
        broken: set[Action] = set()
        for chunk in _chunks([(i, a) for i, a in enumerate(actions) if not a.is_noop]):
            runnable: list[tuple[int, Action]] = []
            for i, action in chunk:
                deps = action.depends_on
                blocker = next((d for d in deps if d in broken), None) if deps and broken else None
                if blocker is None:
                    runnable.append((i, action))
                else:
                    results[i] = ActionResult(action, ActionStatus.SKIPPED, f"not applied: {blocker} failed")
                    broken.add(action)
            for (i, action), error in zip(runnable, _apply_many(backend, [a for _, a in runnable])):
                if error is None:
                    results[i] = ActionResult(action, ActionStatus.APPLIED)
                else:
                    results[i] = _failure(action, error)
                    broken.add(action)
                    run.hooks.action_failed(action, error)
        return results

    def _update_drains(self, saved: SavedStates, desired: Desired, after: Observed, now: float) -> None:
        scoped = {str(k) for k in desired.managed_services} if saved.draining else set()
        kept = {k: v for k, v in saved.draining.items() if k[0] not in scoped}
        kept.update(next_draining(desired, after, saved.draining, now))
        if kept != saved.draining:
            saved.draining = kept
            self.store.save(saved)

    def _record(
        self,
        run: _Run,
        results: list[ActionResult],
        outcome: Outcome,
        *,
        verify: list[str] | None = None,
        note: str | None = None,
        traceback_text: str | None = None,
        after_hooks: bool = False,
        observed: Observed | None = None,
    ) -> RunResult:
        """Build the journal record, let ``after_transition`` see it, write it and the syslog line."""
        record = self._journal_record(run, results, outcome, verify, note)
        if traceback_text:
            record["traceback"] = traceback_text
        result = RunResult(run.ctx, results, outcome, record, list(verify or ()), observed=observed)
        if after_hooks:
            if not run.request.dry_run:
                for service, up in run.request.quorum:  # after the apply: a lost quorum's VIPs are unbound by now
                    run.hooks.quorum_changed(service, up)
            run.hooks.after_transition(result)
            problems = run.hooks.problems  # the record was built before after_transition ran
            if problems:
                record["hooks"] = [p.to_json() for p in problems]
                if result.outcome is Outcome.CONVERGED:
                    result.outcome = Outcome.FAILED
                    record["outcome"] = Outcome.FAILED.value
        result.problems = list(run.hooks.problems)
        if not (run.request.quiet and _uneventful(result)):
            self._write_journal(record)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _journal_record(
        self, run: _Run, results: list[ActionResult], outcome: Outcome, verify: list[str] | None, note: str | None
    ) -> dict[str, Any]:
        ctx = run.ctx
        record = self._identity(run, RecordKind.FINAL)
        record["actions"] = [r.to_json() for r in results]
        record["outcome"] = outcome.value
        record["duration_ms"] = round(run.ms(), 1)
        record["pid"] = os.getpid()
        if ctx.priority is not None:
            record["priority"] = ctx.priority
        if verify:
            record["verify"] = verify
        problems = run.hooks.problems
        if problems:
            record["hooks"] = [p.to_json() for p in problems]
        warnings = list(dict.fromkeys(run.warnings))
        if warnings:
            record["warnings"] = warnings
        if note:
            record["note"] = note
        return record

    def _journal_started(self, run: _Run) -> None:
        """Append the run's ``started`` record (under the run lock, before its first change).

        If it cannot be written the run goes on (failing over matters more) and
        its final record and syslog say so.
        """
        ctx = run.ctx
        record = self._identity(run, RecordKind.STARTED)
        record["actions"] = [
            {"action": str(a), "status": (ActionStatus.NOOP if a.is_noop else ActionStatus.PENDING).value}
            for a in ctx.plan
        ]
        record["pid"] = os.getpid()
        record["process"] = writer_process()
        if ctx.priority is not None:
            record["priority"] = ctx.priority
        try:
            self.journal.append(record)
        except OSError as exc:
            message = f"cannot write journal {self.journal.path} before applying: {exc.strerror}"
            run.warnings.append(message)
            syslog_line(message, enabled=self.config.settings.syslog, error=True)
            return
        run.journaled_start = True

    def _identity(self, run: _Run, record_kind: RecordKind) -> dict[str, Any]:
        """The keys a run's records share: what it is about."""
        ctx = run.ctx

        def name(state: State | None) -> str | None:
            return state.value if state is not None else None

        single = ctx.instance
        return {
            "ts": utc_now_iso(),
            "record": record_kind.value,
            "run": run.id,
            "trigger": list(run.request.argv),
            "kind": run.request.kind.value,
            "command": ctx.command,
            "instance": single,
            "from": name(ctx.from_states.get(single)) if single else None,
            "to": name(ctx.to_states.get(single)) if single else None,
            "instances": [
                {"instance": n, "from": name(ctx.from_states.get(n)), "to": name(ctx.to_states.get(n))}
                for n in ctx.instances
            ],
            "dry_run": ctx.dry_run,
        }

    def _write_journal(self, record: dict[str, Any]) -> None:
        syslog = self.config.settings.syslog
        try:
            self.journal.append(record)
        except OSError as exc:
            message = f"cannot write journal {self.journal.path}: {exc.strerror}"
            record.setdefault("warnings", []).append(message)  # the CLI prints these
            syslog_line(message, enabled=syslog, error=True)
        syslog_line(summary_line(record), enabled=syslog, error=record["outcome"] == Outcome.FAILED.value)


def _uneventful(result: RunResult) -> bool:
    """Converged without applying, failing or warning about anything: a drift check that found none."""
    return (result.outcome == Outcome.CONVERGED and not result.record.get("warnings")
            and all(r.status == ActionStatus.NOOP for r in result.results))


def _verify(
    backend: Backend, desired: Desired, before: Observed, results: list[ActionResult], options: PlanOptions
) -> tuple[Observed, list[str]]:
    """Read back only what the run touched and plan it again: (the system after, what still differs)."""
    scope = touched_scope(desired, [r.action for r in results if r.status != ActionStatus.NOOP])
    again = backend.observe(scope)
    left = plan(desired.restricted(scope), again, replace(options, garp_count=0)).changes
    return merged(before, again, scope), [str(a) for a in left]


def _chunks(indexed: list[tuple[int, Action]]) -> list[list[tuple[int, Action]]]:
    """Consecutive actions of one domain, cut before an action that depends on one in the chunk."""
    # Only the actions something depends on are remembered (by type first): hashing
    # each of the 11,000 actions of a big sync walks its value objects, and cost more
    # than the rest of this together.
    needed = {d for _, a in indexed for d in a.depends_on}
    needed_types = {type(d) for d in needed}
    chunks: list[list[tuple[int, Action]]] = []
    members: set[Action] = set()
    for i, action in indexed:
        current = chunks[-1] if chunks else None
        deps = action.depends_on
        if (current is None or current[-1][1].domain != action.domain
                or (deps and any(d in members for d in deps))):
            chunks.append([(i, action)])
            members = set()
        else:
            current.append((i, action))
        if type(action) in needed_types and action in needed:
            members.add(action)
    return chunks


def _apply_many(backend: Backend, actions: list[Action]) -> list[BaseException | None]:
    if not actions:
        return []
    try:
        return list(backend.apply_many(actions))
    except Exception as exc:  # noqa: BLE001 - a backend bug must not hide the other actions' fate
        return [exc for _ in actions]


def _failure(action: Action, error: BaseException) -> ActionResult:
    if isinstance(error, ApplyError):
        return ActionResult(action, ActionStatus.FAILED, str(error), error.errno)
    if isinstance(error, OSError):
        return ActionResult(action, ActionStatus.FAILED, f"{action}: {error.strerror or error}", error.errno)
    text = _traceback_text(error)
    return ActionResult(action, ActionStatus.FAILED, f"{type(error).__name__}: {error}\n{text}", None)


def _traceback_text(error: BaseException) -> str:
    import traceback  # only for a failure: with textwrap and linecache, ~2 ms of every start-up otherwise

    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()


__all__ = ["Engine"]

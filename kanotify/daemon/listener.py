"""``kanotify listen``: the resident daemon -- keepalived's FIFO in order, one-shots handed over, drift repaired.

One process holds the parsed config, one engine (pyroute2 imported, netlink
sockets open) and a single worker thread that runs every transition, one at
a time, in the order the requests arrived:

* **keepalived's notify FIFO** (``kanotify listen FIFO``): each line is parsed
  (:mod:`kanotify.daemon.fifo`); a state change becomes a run, a backlog for one
  instance coalesces to its newest state (the older events are still
  journaled, as superseded), priority changes are journaled, checker lines
  logged, anything else logged and skipped;
* **the control socket** (``<state_dir>/control.sock``, :mod:`kanotify.daemon.control`):
  a one-shot ``kanotify master|backup|fault|stop|notify|reconcile`` hands its
  argv over and gets the output and exit code back, exactly as in-process;
* **drift repair**: a quiet reconcile every ``settings.reconcile_interval``
  seconds, and at once when rtnetlink reports a managed VIP removed
  (:mod:`kanotify.backends.addrwatch`); journaled (command ``repair``) when it
  changed something;
* **keepalived gone** (:mod:`kanotify.daemon.keepalived_watch`): keepalived's process,
  from ``settings.keepalived_pidfile``, held through a pidfd; when it dies
  without a STOP (SIGKILL, a crash, the OOM killer) the instances it drove
  (recorded state not STOP) go to STOP, journaled as ``keepalived-gone``;
* **metrics** (``settings.metrics``): Prometheus text at ``http://ADDRESS/metrics``,
  served by a thread of its own (:mod:`kanotify.metrics.server`); the engine hands
  each run's result to :class:`kanotify.metrics.facts.ListenerMetrics`.  A port it
  cannot bind never stops the listener: it runs without metrics, says so
  (stderr, syslog, journal) and tries again every :data:`METRICS_RETRY` s.

The event loop (asyncio) only reads and queues; it never waits for a run, so
it stays responsive while a transition takes its time.  Signals: SIGHUP
reloads the config (an invalid one keeps the old config, and every problem is
journaled and logged); SIGTERM finishes the current transition, keeps reading
the FIFO for up to a second (keepalived writes its STOP lines after it has
signalled the fifo script) and exits 0 -- after converging to STOP first when
keepalived itself is gone (every keepalived process died: keepalived's fifo
script gets SIGTERM then too, as on a reload, when keepalived is still there).

One listener per ``state_dir``: it holds ``<state_dir>/listen.lock``.  A newer
one (keepalived starts its fifo script again on every reload) asks the older
one to yield over the control socket, waits for it to finish what it has read
and exit, and only then opens the FIFO -- so no line is read by two processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import gc
import io
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .. import commands
from . import control
from ..backends import Backend, system_backend
from ..backends.addrwatch import AddressWatch, Removed
from ..backends.garp import ThreadRepeater
from ..config.schema import load_config
from ..config.prescan import config_path
from ..config.values import Config
from ..engine import Engine
from ..errors import ConfigError, KanotifyError
from .fifo import FifoReader, LvsEvent, PriorityEvent, Unparsed, VrrpEvent, parse_line
from .health import Change, Health
from ..journal import summary_line, syslog_line
from .keepalived_watch import Gone, KeepalivedWatch
from ..metrics.facts import Facts, ListenerMetrics
from ..model import ServiceKey, State
from ..plan import desired_for
from ..procinfo import ticket_fields
from ..run import CONVERGED, OUTCOME_FAILED, SUPERSEDED, Request, RunKind, RunResult
from ..store import LISTEN_LOCK, StateStore, Ticket

if TYPE_CHECKING:
    from ..config.values import ListenAddress
    from ..metrics.server import MetricsServer

log = logging.getLogger("kanotify.listen")

#: how often a missing FIFO (or one without a writer) is looked for again, and a recreated one noticed
FIFO_POLL = 0.2
FIFO_CHECK = 1.0
#: how long SIGTERM keeps reading the FIFO (keepalived writes STOP lines after signalling its script)
STOP_GRACE = 1.0
#: seconds between tries to bind settings.metrics after it failed (the port may be held a while longer)
METRICS_RETRY = 10.0
MAX_ARGS = 64


# --------------------------------------------------------------------------- work


@dataclass
class _Vrrp:
    event: VrrpEvent
    ticket: Ticket
    coalesced: list[tuple[VrrpEvent, Ticket]] = field(default_factory=list)


@dataclass
class _Command:
    argv: list[str]
    config: str
    ticket: Ticket | None
    answer: asyncio.Future[dict[str, object]]


@dataclass
class _Repair:
    reason: str


@dataclass
class _Note:
    event: PriorityEvent
    ticket: Ticket


@dataclass
class _Reload:
    reason: str


@dataclass
class _HealthRun:
    changes: list[str]
    services: set[ServiceKey]  # whose real servers changed: the run reads and plans only these


@dataclass
class _KeepalivedGone:
    gone: Gone
    ticket: Ticket  # when it was noticed: a notification keepalived issued before it died is older


@dataclass
class _Failure:
    """Something the listener could not do (serve its metrics, watch keepalived): journaled as a failed ``command``."""

    command: str
    note: str


_Work = _Vrrp | _Command | _Repair | _Note | _Reload | _HealthRun | _KeepalivedGone | _Failure


def event_ticket() -> Ticket:
    """A ticket for an event read now: as if a notify process had been started at this moment.

    A process's ticket is its start time in clock ticks since boot; an event
    read from the FIFO gets the current time in the same unit, so it orders
    with notify scripts that keepalived started before or after it wrote the line.
    """
    boot, _ticks, pid = ticket_fields()
    ticks = int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))
    return Ticket(boot, ticks, pid)


class Listener:
    """The daemon for one config; :meth:`run` blocks until it stops and returns the exit code.

    ``backend_factory`` (the in-memory backend), ``watch_addresses=False`` and
    ``signals=False`` (a listener in a test's thread: only the main thread may
    handle signals; call :meth:`reload` and :meth:`stop` instead) are for tests.
    """

    def __init__(
        self,
        config_file: str,
        fifo: str | None = None,
        *,
        allow_insecure: bool = False,
        backend_factory: Callable[[], Backend] | None = None,
        watch_addresses: bool = True,
        signals: bool = True,
    ) -> None:
        self.config_file = os.path.abspath(config_file)
        self.fifo_path = os.path.abspath(fifo) if fifo else None
        self.allow_insecure = allow_insecure
        self.watch_addresses = watch_addresses
        self.signals = signals
        self.started = threading.Event()  # set once the listener serves its control socket
        self.repeater = ThreadRepeater()
        self.backend_factory = backend_factory or (lambda: system_backend(garp_repeater=self.repeater, long_lived=True))
        self.engine: Engine | None = None
        self.health: Health | None = None
        self.config_signature: tuple[int, ...] | None = None
        #: the VIPs that should be bound now (per the saved states): their removal is drift
        self.desired_vips: frozenset[tuple[str, str]] = frozenset()
        self.store: StateStore | None = None
        self._queue: dict[object, _Work] = {}
        self._stopping = False
        self._lock_fd: int | None = None
        self._fifo: FifoReader | None = None
        self._fifo_fd: int | None = None
        self._watch: AddressWatch | None = None
        self._keepalived: KeepalivedWatch | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._stopped_instances: set[str] = set()  # STOP lines read since SIGTERM
        self._running = False
        self._removed: list[Removed] = []  # address removals not judged yet (one came in during a run)
        self._lost_events = False
        self._predecessor: int | None = None  # the pid in listen.lock when this listener took it
        self.runs = 0  # transitions run, for tests
        self.metrics = ListenerMetrics()
        self.metrics_server: MetricsServer | None = None
        self._metrics_retry: asyncio.TimerHandle | None = None

    @property
    def keepalived_pid(self) -> int | None:
        """The keepalived process watched now (``settings.keepalived_pidfile``), if any."""
        return self._keepalived.pid if self._keepalived is not None else None

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        try:
            return asyncio.run(self._main())
        except ConfigError as exc:
            for problem in exc.problems:
                _say(f"config error: {problem}")
            return exc.exit_code
        except KanotifyError as exc:
            _say(str(exc))
            return exc.exit_code

    async def _main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kanotify-engine")
        config = self._load()
        self.store = StateStore(config.settings.state_dir)
        self.store.ensure_dir()
        await self._acquire(config)
        server = None
        try:
            self._install(config)
            server = await self._serve()
            if self.signals:
                for signum, handler in ((signal.SIGHUP, self._on_hup), (signal.SIGTERM, self._on_term),
                                        (signal.SIGINT, self._on_term)):
                    self.loop.add_signal_handler(signum, handler)
            if self.watch_addresses:
                self._watch = AddressWatch()
                self.loop.add_reader(self._watch.fileno(), self._on_addresses)
            if self.fifo_path:
                self._fifo = FifoReader(self.fifo_path)
                self._open_fifo()
            self._keepalived = KeepalivedWatch(self.loop, config.settings.keepalived_pidfile, say=_say,
                                               on_gone=self._on_keepalived_gone, warn=self._keepalived_problem)
            self._keepalived.start()
            if self._predecessor is not None:  # the worker's first job, before the start-up repair
                self._executor.submit(self._count_predecessor, self._predecessor)
            runner = asyncio.ensure_future(self._runner())
            self._submit("repair", _Repair("listener started"))
            _say(f"listening: config {self.config_file}, control {control.socket_path(self.store.dir)}"
                 + (f", FIFO {self.fifo_path}" if self.fifo_path else ""))
            self.started.set()
            await self._done.wait()
            runner.cancel()
        finally:
            if server is not None:
                server.close()
            self._close_fifo()
            if self._keepalived is not None:
                self._keepalived.close()
            if self._watch is not None:
                self.loop.remove_reader(self._watch.fileno())
                self._watch.close()
            if self.health is not None:
                self.health.stop()
            self._serve_metrics(None)
            self._executor.shutdown(wait=True)
            if self.engine is not None:
                self.engine.close()
            self._release()
        _say("stopped")
        return 0

    def _load(self) -> Config:
        if not self.allow_insecure and os.path.exists(self.config_file):
            from ..security import check_config_file

            check_config_file(self.config_file)
        config = load_config(self.config_file)
        self.config_signature = _signature(self.config_file)
        return config

    def _install(self, config: Config) -> None:
        """Make ``config`` the one in force: a new engine (the old one's backend closed), timers, watch list."""
        old = self.engine
        if self.health is None:
            assert self.store is not None
            self.health = Health(self.loop, self._on_health, self.store.dir)
        self.health.configure(config)  # real servers that stay keep their health
        self.engine = Engine(config, hooks=commands.hooks_for(config, self.allow_insecure),
                             backend_factory=self.backend_factory, reuse_backend=True, health=self.health,
                             on_result=self.metrics.on_result)
        if old is not None:
            old.close()
        self._schedule_reconcile()
        self._serve_metrics(config.settings.metrics)
        if self._keepalived is not None:
            self._keepalived.set_path(config.settings.keepalived_pidfile)

    # ------------------------------------------------------------------ one listener per state_dir

    async def _acquire(self, config: Config) -> None:
        assert self.store is not None
        path = os.path.join(self.store.dir, LISTEN_LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise KanotifyError(f"listener lock {path}: {exc.strerror}") from None
        if os.fstat(fd).st_uid != os.geteuid():
            os.close(fd)
            raise KanotifyError(f"listener lock {path} is owned by someone else: refused")
        if not _try_lock(fd):
            holder = _read_pid(fd)
            _say(f"another listener (pid {holder}) serves {self.store.dir}: asking it to yield")
            # in this thread: nothing else runs yet
            problem = control.ask_to_yield(control.socket_path(self.store.dir))
            if problem:
                _say(f"{problem}: waiting for its lock")
            deadline = time.monotonic() + config.settings.lock_timeout + 5.0
            while not _try_lock(fd):
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise KanotifyError(f"another listener (pid {holder}) holds {path} and did not yield")
                await asyncio.sleep(0.02)
        previous = _read_pid(fd)
        self._predecessor = int(previous) if previous.isdigit() and int(previous) != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release(self) -> None:
        if self._lock_fd is None or self.store is None:
            return
        try:
            os.unlink(control.socket_path(self.store.dir))
        except OSError:
            pass
        os.close(self._lock_fd)  # the lock goes with the descriptor
        self._lock_fd = None

    # ------------------------------------------------------------------ the queue

    def _submit(self, key: object, work: _Work) -> None:
        """Queue ``work``; a state event for an instance already queued replaces it (keeping its place)."""
        queued = self._queue.get(key)
        if isinstance(work, _Vrrp) and isinstance(queued, _Vrrp):
            work.coalesced = queued.coalesced + [(queued.event, queued.ticket)]
        elif isinstance(work, _HealthRun) and isinstance(queued, _HealthRun):
            work.changes = queued.changes + work.changes
            work.services = queued.services | work.services
        elif isinstance(work, (_Repair, _Reload)) and queued is not None:
            return  # one pending repair (or reload) does for all
        self._queue[key] = work
        self._wake.set()

    async def _runner(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                key = next(iter(self._queue))
                work = self._queue.pop(key)
                self._running = True
                try:
                    await self.loop.run_in_executor(self._executor, self._do, work)
                except Exception:  # noqa: BLE001 - one bad run must not end the listener
                    log.exception("kanotify listen: a run failed unexpectedly")
                    if isinstance(work, _Command) and not work.answer.done():
                        work.answer.set_result({"error": "the listener failed to run it"})
                finally:
                    self._running = False
                # removals seen while it ran are judged by the states it left (it may have made them itself)
                self._judge_removals()
            if self._stopping and self._drained():
                self._done.set()

    def _drained(self) -> bool:
        return not self._queue and (self._fifo is None or self._fifo_fd is None)

    # ------------------------------------------------------------------ running work (the worker thread)

    def _do(self, work: _Work) -> None:
        # The cyclic GC waits while a run builds its tens of thousands of objects (a 1000 x 10
        # reconcile: ~30 ms of young collections and walks of the whole config in a VM);
        # they are freed by reference counting when it ends.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._run_work(work)
        finally:
            self._note_desired()
            if collecting:
                gc.enable()

    def _count_predecessor(self, pid: int) -> None:
        """Count the runs the previous listener was killed in (its metrics died with it); the worker thread."""
        engine = self.engine
        if engine is None:
            return
        try:
            found = self.metrics.count_predecessor(engine.journal, pid, engine.config.instance_names)
        except Exception:  # noqa: BLE001 - metrics must never stop the listener
            log.exception("kanotify listen: could not read the journal for the previous listener's runs")
            return
        if found:
            _say(f"the previous listener (pid {pid}) ended in the middle of {found} run(s): "
                 "counted as interrupted (kanotify history shows them)")

    def _note_desired(self) -> None:
        """Remember which VIPs the saved states want bound, for the address watch (read in the loop thread)."""
        engine = self.engine
        if engine is None:
            return
        saved, _warnings = engine.store.load(repair=False)
        desired = desired_for(engine.config, saved.states())
        self.desired_vips = frozenset(spec.vip.key for spec in desired.vips)

    def _run_work(self, work: _Work) -> None:
        engine = self.engine
        assert engine is not None
        if isinstance(work, _Vrrp):
            for event, ticket in work.coalesced:
                request = self._vrrp_request(engine, event, ticket)
                if request is not None:
                    engine.journal_only(request, SUPERSEDED,
                                        "coalesced: a newer event for it arrived before this one was applied")
            self._run_vrrp(engine, work.event, work.ticket)
        elif isinstance(work, _Command):
            answer = self._run_command(work)
            self.loop.call_soon_threadsafe(_resolve, work.answer, answer)
        elif isinstance(work, _Repair):
            self._report(engine.reconcile(argv=["kanotify", "listen", work.reason], command=RunKind.REPAIR,
                                          quiet=True))
        elif isinstance(work, _Note):
            ev = work.event
            request = Request(f"fifo {ev.kind} {ev.word.lower()}", (ev.name,), self._trigger(ev.line),
                              ticket=work.ticket, priority=ev.priority)
            engine.journal_only(request, CONVERGED, f"{ev.word} {ev.priority}: priority changed, nothing to converge")
        elif isinstance(work, _Reload):
            self._reload(work.reason)
        elif isinstance(work, _HealthRun):
            reason = "health: " + "; ".join(work.changes)
            self._report(engine.reconcile(argv=["kanotify", "listen", reason[:2000]], command=RunKind.HEALTH,
                                          quiet=True, services=work.services))
        elif isinstance(work, _KeepalivedGone):
            self._run_keepalived_gone(engine, work)
        elif isinstance(work, _Failure):
            engine.journal_only(Request(work.command, (), ("kanotify", "listen")), OUTCOME_FAILED, work.note)

    def _run_keepalived_gone(self, engine: Engine, work: _KeepalivedGone) -> None:
        """STOP for every instance keepalived drove: those recorded in a state other than STOP."""
        saved, _warnings = engine.store.load(repair=False)  # the run itself reads them again under the lock
        recorded = saved.states()
        names = tuple(n for n in engine.config.instance_names if recorded.get(n) not in (None, State.STOP))
        if not names:
            _say(f"{work.gone.why}: no instance to release (each is STOP already, or was never notified)")
            return
        self._report(engine.run(Request(
            RunKind.KEEPALIVED_GONE, names, ("kanotify", "listen", work.gone.why), {n: State.STOP for n in names},
            persist=True, ticket=work.ticket,
        )))

    def _trigger(self, line: str) -> tuple[str, ...]:
        return ("kanotify", "listen", self.fifo_path or "-", line)

    def _vrrp_request(self, engine: Engine, event: VrrpEvent, ticket: Ticket) -> Request | None:
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
            f"fifo {event.kind} {word}", tuple(names), self._trigger(event.line), {n: event.state for n in names},
            persist=True, ticket=ticket, priority=event.priority, announce=event.reassert,
        )

    def _run_vrrp(self, engine: Engine, event: VrrpEvent, ticket: Ticket) -> None:
        request = self._vrrp_request(engine, event, ticket)
        if request is None:
            what = "instance" if event.kind == "INSTANCE" else "group"
            engine.ignored(argv=self._trigger(event.line), command=f"fifo {event.kind} {event.state.value}",
                           note=f"{what} {event.name!r} is not managed by {engine.config.path}; ignored",
                           name=event.name)
            return
        self._report(engine.run(request))

    def _report(self, result: RunResult) -> None:
        self.runs += 1
        if result.outcome != CONVERGED or any(r.status != "noop" for r in result.results):
            _say(summary_line(result.record))

    def _run_command(self, work: _Command) -> dict[str, object]:
        if os.path.realpath(work.config) != os.path.realpath(self.config_file):
            return {"refused": f"the listener serves {self.config_file}, not {work.config}"}
        out, err = io.StringIO(), io.StringIO()
        session = commands.Session(
            argv=["kanotify", *work.argv], stdout=out, stderr=err, ticket=work.ticket,
            config=self._config_for_command, engine=lambda g, config: self._current_engine(),
        )
        code = commands.run_fast(work.argv, session)
        if code is None:
            return {"refused": "not a command the listener runs"}
        self.runs += 1
        return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}

    def _current_engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def _config_for_command(self, g: commands.Globals) -> Config:
        """The config a handed-over command runs with: ours, re-read first if the file changed since."""
        if _signature(self.config_file) != self.config_signature:
            config = self._load()  # ConfigError: the command exits 78, as in-process; the old config stays
            self._install_from_worker(config, "the config file changed")
        return self._current_engine().config

    def _reload(self, reason: str) -> None:
        engine = self._current_engine()
        try:
            config = self._load()
        except ConfigError as exc:
            note = f"{reason}: the new config is invalid, the old one stays in force: " + "; ".join(
                str(p) for p in exc.problems)
            for problem in exc.problems:
                _say(f"config error: {problem}")
            engine.journal_only(Request(RunKind.RELOAD, (), ("kanotify", "listen", reason)), OUTCOME_FAILED, note)
            syslog_line(note, enabled=engine.config.settings.syslog, error=True)
            return
        self._install_from_worker(config, reason)
        self._report(self._current_engine().reconcile(argv=["kanotify", "listen", reason], command=RunKind.RELOAD))

    def _install_from_worker(self, config: Config, reason: str) -> None:
        done = concurrent.futures.Future[None]()

        def install() -> None:
            try:
                self._install(config)
                done.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed back to the worker
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(install)
        done.result()
        _say(f"config reloaded ({reason})")

    # ------------------------------------------------------------------ the FIFO

    def _open_fifo(self) -> None:
        reader = self._fifo
        if reader is None or self._stopping:
            return
        if reader.open():
            assert reader.fd is not None
            self._fifo_fd = reader.fd
            self.loop.add_reader(reader.fd, self._on_fifo)
            self.loop.call_later(FIFO_CHECK, self._check_fifo)
        else:
            self.loop.call_later(FIFO_POLL, self._open_fifo)

    def _close_fifo(self) -> None:
        if self._fifo_fd is not None:
            self.loop.remove_reader(self._fifo_fd)
            self._fifo_fd = None
        if self._fifo is not None:
            self._fifo.close()

    def _on_fifo(self) -> None:
        reader = self._fifo
        assert reader is not None
        chunk = reader.read()
        for line in chunk.lines:
            self._on_line(line)
        if chunk.half:
            _say(f"FIFO {self.fifo_path}: half a line at EOF, skipped: {chunk.half[:200]!r}")
        if chunk.eof:  # every writer closed (keepalived stopped or reloads): look for it again soon
            self._close_fifo()
            if self._stopping:
                self._wake.set()  # keepalived has written its last lines: the stop need not wait longer
            else:
                self.loop.call_later(FIFO_POLL, self._open_fifo)

    def _check_fifo(self) -> None:
        reader = self._fifo
        if reader is None or self._fifo_fd is None or self._stopping:
            return
        if reader.replaced():  # keepalived made a new FIFO: finish the old one, then follow
            self._on_fifo()
            if self._fifo_fd is not None:
                self._close_fifo()
            _say(f"FIFO {self.fifo_path} was recreated: following the new one")
            self._open_fifo()
            return
        self.loop.call_later(FIFO_CHECK, self._check_fifo)

    def _on_line(self, raw: bytes) -> None:
        event = parse_line(raw)
        if isinstance(event, VrrpEvent):
            self._submit((event.kind, event.name), _Vrrp(event, event_ticket()))
            if self._stopping and event.state is State.STOP:
                self._note_stop(event)
        elif isinstance(event, PriorityEvent):
            self._submit(object(), _Note(event, event_ticket()))
        elif isinstance(event, LvsEvent):
            _say(f"keepalived checker: {event.line}")
        elif isinstance(event, Unparsed):
            if event.line or event.why != "empty line":
                _say(f"FIFO {self.fifo_path}: skipped ({event.why}): {event.line[:200]!r}")

    # ------------------------------------------------------------------ keepalived gone

    def _on_keepalived_gone(self, gone: Gone) -> None:
        """keepalived died without a STOP: queue the STOP of what it drove (in the loop thread)."""
        if self._fifo_fd is not None:
            self._on_fifo()  # what it wrote before it died is older: queued (and ticketed) first
        self._submit(RunKind.KEEPALIVED_GONE, _KeepalivedGone(gone, event_ticket()))

    def _keepalived_problem(self, note: str) -> None:
        """keepalived's pidfile cannot be used: said, sent to syslog and journaled, once."""
        _say(note)
        syslog_line(note, enabled=self._current_engine().config.settings.syslog, error=True)
        self._submit(object(), _Failure(RunKind.KEEPALIVED_WATCH, note))

    # ------------------------------------------------------------------ health checks

    def _on_health(self, changes: list[Change]) -> None:
        for change in changes:
            _say(f"health: {change}")
        self._submit("health", _HealthRun([str(c) for c in changes], {c.key[0] for c in changes}))

    # ------------------------------------------------------------------ metrics

    def _serve_metrics(self, address: ListenAddress | None) -> None:
        """Serve ``/metrics`` at ``address`` (None: not at all); in the loop thread."""
        server = self.metrics_server
        if server is not None and server.address == address:
            return
        if self._metrics_retry is not None:
            self._metrics_retry.cancel()
            self._metrics_retry = None
        if server is not None:
            server.stop()
            self.metrics_server = None
        if address is None or self._stopping:
            return
        from ..metrics.server import MetricsServer  # prometheus_client: only for a listener that serves metrics

        self._start_metrics(MetricsServer(address, self._metrics_facts), first=True)

    def _start_metrics(self, server: MetricsServer, first: bool = False) -> None:
        self._metrics_retry = None
        try:
            server.start()
        except OSError as exc:
            if first:  # loudly, once: the listener is the failover path and goes on without metrics
                note = (f"metrics: cannot serve {server.url}: {exc.strerror or exc}; running WITHOUT metrics, "
                        f"trying again every {METRICS_RETRY:g}s")
                _say(note)
                syslog_line(note, enabled=self._current_engine().config.settings.syslog, error=True)
                self._submit(object(), _Failure("metrics", note))
            self._metrics_retry = self.loop.call_later(METRICS_RETRY, self._start_metrics, server)
            return
        self.metrics_server = server
        _say(f"metrics: serving {server.url}" + ("" if first else " (after all)"))

    def _metrics_facts(self) -> Facts:
        """What a scrape shows (in the server's thread): reads only what the worker published."""
        return self.metrics.facts(self._current_engine().config, self.health)

    # ------------------------------------------------------------------ drift

    def _on_addresses(self) -> None:
        assert self._watch is not None
        removed, lost = self._watch.read()
        self._removed.extend(removed)
        self._lost_events = self._lost_events or lost
        if not self._running:  # during a run, wait: the run itself may be removing them
            self._judge_removals()

    def _judge_removals(self) -> None:
        """Repair when an address the saved states want bound was removed (or events were lost)."""
        removed, lost = self._removed, self._lost_events
        self._removed, self._lost_events = [], False
        wanted = self.desired_vips
        hits = [r for r in removed if (r.address, r.dev) in wanted]
        if hits or lost:
            what = ", ".join(f"{r.address} removed from {r.dev}" for r in hits) or "address events were lost"
            self._submit("repair", _Repair(f"rtnetlink: {what}"))

    def _schedule_reconcile(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        engine = self.engine
        interval = engine.config.settings.reconcile_interval if engine is not None else 0
        if interval > 0 and not self._stopping:
            self._timer = self.loop.call_later(interval, self._tick, interval)

    def _tick(self, interval: float) -> None:
        self._submit("repair", _Repair(f"every {interval:g}s (reconcile_interval)"))
        self._timer = self.loop.call_later(interval, self._tick, interval)

    # ------------------------------------------------------------------ signals and the control socket

    def reload(self) -> None:
        """As SIGHUP, from any thread."""
        self.loop.call_soon_threadsafe(self._on_hup)

    def stop(self) -> None:
        """As SIGTERM, from any thread."""
        self.loop.call_soon_threadsafe(self._on_term)

    def _on_hup(self) -> None:
        self._submit("reload", _Reload("SIGHUP"))

    def _on_term(self) -> None:
        if self._stopping:
            return
        _say("SIGTERM: finishing" + (f", reading the FIFO for {STOP_GRACE:g} s more" if self._fifo_fd is not None else ""))
        if self._keepalived is not None:
            # keepalived signals its fifo script on a reload too: only its own death means STOP
            self._keepalived.gone_now()  # gone: queued by on_gone, run before the exit
        self._begin_stop(STOP_GRACE)

    def _begin_stop(self, grace: float) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if grace > 0 and self._fifo_fd is not None:
            self._grace = self.loop.call_later(grace, self._end_grace)
        else:
            self._end_grace()

    def _end_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._close_fifo()
        self._wake.set()

    def _note_stop(self, event: VrrpEvent) -> None:
        """keepalived writes STOP for each of its instances after signalling us: once all came, stop waiting.

        keepalived SIGKILLs its fifo script about a second after the SIGTERM;
        leaving as soon as the STOP lines are in means a clean exit, not a kill.
        """
        engine = self.engine
        if engine is None:
            return
        config = engine.config
        group = config.group(event.name) if event.kind == "GROUP" else None
        self._stopped_instances.update(group.instances if group is not None else (event.name,))
        if self._grace is not None and set(config.instance_names) <= self._stopped_instances:
            self._end_grace()

    async def _serve(self) -> asyncio.AbstractServer:
        assert self.store is not None
        path = control.socket_path(self.store.dir)
        try:
            os.unlink(path)  # a stale one: we hold the listener lock, nobody else serves here
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            control.at_unix_path(sock, path, "bind")  # the engine's thread has not started yet: chdir is safe
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        return await asyncio.start_unix_server(self._client, sock=sock, limit=control.MAX_MESSAGE + 2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._handle(reader, writer)
            writer.write(control.encode(reply))
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away (keepalived killed it): the work, if any, is done anyway
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, object]:
        sock = writer.get_extra_info("socket")
        uid = control.peer_uid(sock)
        if not control.peer_allowed(uid):
            _say(f"control socket: refused a peer with uid {uid} (root only)")
            return {"error": f"uid {uid} may not use the control socket (root only)"}
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=2.0)
        except asyncio.TimeoutError:
            return {"error": "no whole request within 2 s"}
        except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            return {"error": f"request longer than {control.MAX_MESSAGE} bytes"}
        if not line.endswith(b"\n"):
            return {"error": "half a request (no newline)"}
        try:
            message = control.decode(line)
        except control.ProtocolError as exc:
            return {"error": str(exc)}
        op = message.get("op")
        if op == "yield":
            _say("a newer listener takes over: finishing")
            self._begin_stop(0)
            return {"ok": True}
        if op != "run":
            return {"error": f"unknown op {op!r}"}
        if self._stopping:
            return {"refused": "the listener is stopping"}
        argv, config, ticket = message.get("argv"), message.get("config"), message.get("ticket")
        if (not isinstance(argv, list) or not argv or len(argv) > MAX_ARGS
                or not all(isinstance(w, str) and len(w) <= 4096 for w in argv)):
            return {"error": "argv must be a list of 1..64 strings"}
        if not isinstance(config, str) or not config.startswith("/"):
            return {"error": "config must be an absolute path"}
        answer: asyncio.Future[dict[str, object]] = self.loop.create_future()
        self._submit(object(), _Command(list(argv), config, _ticket(ticket), answer))
        return await answer


# --------------------------------------------------------------------------- helpers


def _resolve(future: asyncio.Future[dict[str, object]], value: dict[str, object]) -> None:
    if not future.done():
        future.set_result(value)


def _ticket(value: object) -> Ticket | None:
    if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:])):
        return Ticket(value[0], value[1], value[2])
    return None


def _signature(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid, st.st_mode)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def _say(text: str) -> None:
    print(f"kanotify listen: {text}", file=sys.stderr, flush=True)


def cmd_listen(g: commands.Globals, fifo: str | None) -> int:
    """``kanotify listen [FIFO]``."""
    return Listener(config_path(g.config), fifo, allow_insecure=g.allow_insecure).run()


__all__ = ["Listener", "cmd_listen", "event_ticket"]

"""``kanotify listen``: the resident daemon -- keepalived's FIFO in order, one-shots handed over, drift repaired.

One process holds the parsed config, one engine (its modules imported, netlink
sockets open) and a single worker thread that runs every transition, one at
a time, in the order the requests arrived:

* **keepalived's notify FIFO** (``kanotify listen FIFO``): each line is parsed
  (:mod:`kanotify.daemon.fifo`); a state change becomes a run, a backlog for one
  instance coalesces to its newest state (the older events are still
  journaled, as superseded), priority changes are journaled, checker lines
  logged, anything else logged and skipped;
* **the control socket** (``<state_dir>/control.sock``, :mod:`kanotify.daemon.control`,
  served by :mod:`kanotify.daemon.controlserver`): a one-shot ``kanotify
  master|backup|fault|stop|notify|reconcile`` hands its argv over and gets the
  output and exit code back, exactly as in-process (the entry layer's handler
  runs it: the listener hosts it);
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
  cannot bind never stops the listener (:mod:`kanotify.daemon.metricskeeper`).

This module is the lifecycle: start, the loop's readers and timers, signals,
the stop.  What it notices becomes work for :mod:`kanotify.daemon.workqueue`
(coalescing by key), which one worker thread runs through
:class:`kanotify.daemon.worker.Worker`; each piece of work carries the health
checks' DOWN set as it was when it was queued.

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
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Callable, Sequence

from ..backends.base import Backend
from ..backends.system import system_backend
from ..backends.addrwatch import AddressWatch, Removed
from ..backends.garp import ThreadRepeater
from ..config.schema import load_config
from ..config.values import Config
from ..engine import Engine
from ..errors import ConfigError, KanotifyError

from ..journal import syslog_line
from ..metrics.facts import Facts, ListenerMetrics
from ..model import State
from ..plan import HealthView
from ..run import Hooks, RunKind
from ..store import LISTEN_LOCK, StateStore
from . import control
from .controlserver import ControlServer
from .fifo import FifoReader, LvsEvent, PriorityEvent, Unparsed, VrrpEvent, parse_line
from .health import NONE_DOWN, Change, DownSet, Health
from .quorum import QuorumChange
from .keepalived_watch import Gone, KeepalivedWatch
from .metricskeeper import MetricsKeeper
from .workqueue import WorkQueue, unique
from .worker import (
    Command, Failure, Handler, HealthRun, KeepalivedGone, Note, Reload, Repair, Vrrp, Work, Worker, event_ticket,
    merge, say,
)

if TYPE_CHECKING:
    from ..metrics.server import MetricsServer

#: how often a missing FIFO (or one without a writer) is looked for again, and a recreated one noticed
FIFO_POLL = 0.2
FIFO_CHECK = 1.0
#: how long SIGTERM keeps reading the FIFO (keepalived writes STOP lines after signalling its script)
STOP_GRACE = 1.0


class Listener:
    """The daemon for one config; :meth:`run` blocks until it stops and returns the exit code.

    ``handler`` runs a handed-over command (the entry layer's,
    :func:`kanotify.commands.run_handed_over`; without one the listener refuses
    them and the clients run them in-process); ``hooks_for`` gives a config's
    hook plugins.  ``backend_factory`` (the in-memory backend),
    ``watch_addresses=False`` and ``signals=False`` (a listener in a test's
    thread: only the main thread may handle signals; call :meth:`reload` and
    :meth:`stop` instead) are for tests.
    """

    def __init__(
        self,
        config_file: str,
        fifo: str | None = None,
        *,
        handler: Handler | None = None,
        hooks_for: Callable[[Config], Hooks | None] = lambda config: None,
        allow_insecure: bool = False,
        backend_factory: Callable[[], Backend] | None = None,
        watch_addresses: bool = True,
        signals: bool = True,
    ) -> None:
        self.config_file = os.path.abspath(config_file)
        self.fifo_path = os.path.abspath(fifo) if fifo else None
        self.allow_insecure = allow_insecure
        self.hooks_for = hooks_for
        self.watch_addresses = watch_addresses
        self.signals = signals
        self.started = threading.Event()  # set once the listener serves its control socket
        self.repeater = ThreadRepeater()
        self.backend_factory = backend_factory or (lambda: system_backend(garp_repeater=self.repeater, long_lived=True))
        self.engine: Engine | None = None
        self.health: Health | None = None
        #: the health checks' DOWN set, as of their last change (the loop's thread publishes it, any reads it)
        self.down: DownSet = NONE_DOWN
        self.config_signature: tuple[int, ...] | None = None
        self.store: StateStore | None = None
        self.metrics = ListenerMetrics()
        self.worker = Worker(self, handler, self.metrics)
        self.queue: WorkQueue[Work] = WorkQueue(merge)
        self._stopping = False
        self._lock_fd: int | None = None
        self._fifo: FifoReader | None = None
        self._fifo_fd: int | None = None
        self._watch: AddressWatch | None = None
        self._keepalived: KeepalivedWatch | None = None
        self._metrics: MetricsKeeper | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._stopped_instances: set[str] = set()  # STOP lines read since SIGTERM
        self._removed: list[Removed] = []  # address removals not judged yet (one came in during a run)
        self._lost_events = False
        self._predecessor: int | None = None  # the pid in listen.lock when this listener took it

    @property
    def keepalived_pid(self) -> int | None:
        """The keepalived process watched now (``settings.keepalived_pidfile``), if any."""
        return self._keepalived.pid if self._keepalived is not None else None

    @property
    def runs(self) -> int:
        """Runs done (for tests)."""
        return self.worker.runs

    @property
    def metrics_server(self) -> MetricsServer | None:
        """The ``/metrics`` server serving now, if any."""
        return self._metrics.server if self._metrics is not None else None

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        try:
            return asyncio.run(self._main())
        except ConfigError as exc:
            for problem in exc.problems:
                say(f"config error: {problem}")
            return exc.exit_code
        except KanotifyError as exc:
            say(str(exc))
            return exc.exit_code

    async def _main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kanotify-engine")
        self._metrics = MetricsKeeper(self.loop, self._metrics_facts, self._metrics_failed)
        config = self.load()
        self.store = StateStore(config.settings.state_dir)
        self.store.ensure_dir()
        await self._acquire(config)
        server = None
        try:
            self._install(config)
            server = ControlServer(control.socket_path(self.store.dir), submit=self._submit_command,
                                   on_yield=lambda: self._begin_stop(0), stopping=lambda: self._stopping)
            await server.start()
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
            self._keepalived = KeepalivedWatch(self.loop, config.settings.keepalived_pidfile, say=say,
                                               on_gone=self._on_keepalived_gone, warn=self._keepalived_problem)
            self._keepalived.start()
            if self._predecessor is not None:  # the worker's first job, before the start-up repair
                self._executor.submit(self.worker.count_predecessor, self._predecessor)
            runner = asyncio.ensure_future(self.queue.serve(
                self._execute, failed=_failed, after_each=self._judge_removals, idle=self._idle))
            self._submit("repair", Repair("listener started"))
            say(f"listening: config {self.config_file}, control {server.path}"
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
            self._metrics.close()  # set before the try
            self._executor.shutdown(wait=True)
            if self.engine is not None:
                self.engine.close()
            self._release()
        say("stopped")
        return 0

    def load(self) -> Config:
        """The config file, checked and parsed (ConfigError); any thread."""
        if not self.allow_insecure and os.path.exists(self.config_file):
            from ..security import check_config_file

            check_config_file(self.config_file)
        config = load_config(self.config_file)
        self.config_signature = _signature(self.config_file)
        return config

    def config_changed(self) -> bool:
        """Has the config file changed since it was last loaded?"""
        return _signature(self.config_file) != self.config_signature

    def current_engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def _install(self, config: Config) -> None:
        """Make ``config`` the one in force: a new engine (the old one's backend closed), timers, watch list."""
        old = self.engine
        if self.health is None:
            assert self.store is not None
            self.health = Health(self.loop, self._on_health, self.store.dir, on_quorum=self._on_health)
        self.health.configure(config)  # real servers that stay keep their health
        self.down = self.health.down_now()
        self.engine = Engine(config, hooks=self.hooks_for(config), backend_factory=self.backend_factory,
                             reuse_backend=True, on_result=self.metrics.on_result)
        if old is not None:
            old.close()
        self._schedule_reconcile()
        assert self._metrics is not None
        self._metrics.serve(None if self._stopping else config.settings.metrics)
        if self._keepalived is not None:
            self._keepalived.set_path(config.settings.keepalived_pidfile)

    def install_from_worker(self, config: Config, reason: str) -> HealthView | None:
        """:meth:`_install` in the loop's thread, from the worker's; the health facts then."""
        done = concurrent.futures.Future[DownSet]()

        def install() -> None:
            try:
                self._install(config)
                done.set_result(self.down)
            except BaseException as exc:  # noqa: BLE001 - handed back to the worker
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(install)
        down = done.result()
        say(f"config reloaded ({reason})")
        return down

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
            say(f"another listener (pid {holder}) serves {self.store.dir}: asking it to yield")
            # in this thread: nothing else runs yet
            problem = control.ask_to_yield(control.socket_path(self.store.dir))
            if problem:
                say(f"{problem}: waiting for its lock")
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

    # ------------------------------------------------------------------ the queue (the loop's thread)

    def _submit(self, key: object, work: Work) -> None:
        """Queue ``work`` with the health facts of this moment (those that converge carry them)."""
        if isinstance(work, (Vrrp, Command, Repair, HealthRun, KeepalivedGone)):
            work.health = self.down
        self.queue.submit(key, work)

    def _submit_command(self, command: Command) -> None:
        self._submit(unique(), command)

    async def _execute(self, work: Work) -> None:
        await self.loop.run_in_executor(self._executor, self.worker.do, work)

    def _idle(self) -> None:
        if self._stopping and not self.queue and (self._fifo is None or self._fifo_fd is None):
            self._done.set()

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
            say(f"FIFO {self.fifo_path}: half a line at EOF, skipped: {chunk.half[:200]!r}")
        if chunk.eof:  # every writer closed (keepalived stopped or reloads): look for it again soon
            self._close_fifo()
            if self._stopping:
                self.queue.wake()  # keepalived has written its last lines: the stop need not wait longer
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
            say(f"FIFO {self.fifo_path} was recreated: following the new one")
            self._open_fifo()
            return
        self.loop.call_later(FIFO_CHECK, self._check_fifo)

    def _on_line(self, raw: bytes) -> None:
        event = parse_line(raw)
        if isinstance(event, VrrpEvent):
            self._submit((event.kind, event.name), Vrrp(event, event_ticket()))
            if self._stopping and event.state is State.STOP:
                self._note_stop(event)
        elif isinstance(event, PriorityEvent):
            self._submit(unique(), Note(event, event_ticket()))
        elif isinstance(event, LvsEvent):
            say(f"keepalived checker: {event.line}")
        elif isinstance(event, Unparsed):
            if event.line or event.why != "empty line":
                say(f"FIFO {self.fifo_path}: skipped ({event.why}): {event.line[:200]!r}")

    # ------------------------------------------------------------------ keepalived gone

    def _on_keepalived_gone(self, gone: Gone) -> None:
        """keepalived died without a STOP: queue the STOP of what it drove (in the loop thread)."""
        if self._fifo_fd is not None:
            self._on_fifo()  # what it wrote before it died is older: queued (and ticketed) first
        self._submit(RunKind.KEEPALIVED_GONE, KeepalivedGone(gone, event_ticket()))

    def _keepalived_problem(self, note: str) -> None:
        """keepalived's pidfile cannot be used: said, sent to syslog and journaled, once."""
        self._failed(RunKind.KEEPALIVED_WATCH, note)

    def _failed(self, kind: RunKind, note: str) -> None:
        say(note)
        syslog_line(note, enabled=self.current_engine().config.settings.syslog, error=True)
        self._submit(unique(), Failure(kind, note))

    # ------------------------------------------------------------------ health checks

    def _on_health(self, changes: Sequence[Change | QuorumChange]) -> None:
        assert self.health is not None
        self.down = self.health.down_now()
        for change in changes:
            say(f"health: {change}")
        self._submit("health", HealthRun([str(c) for c in changes], {c.service for c in changes},
                                         quorum=[(c.service, c.up) for c in changes if isinstance(c, QuorumChange)]))

    # ------------------------------------------------------------------ metrics

    def _metrics_failed(self, note: str) -> None:
        self._failed(RunKind.METRICS, note)

    def _metrics_facts(self) -> Facts:
        """What a scrape shows (in the server's thread): reads only what the worker and the loop published."""
        return self.metrics.facts(self.current_engine().config, self.down if self.health is not None else None)

    # ------------------------------------------------------------------ drift

    def _on_addresses(self) -> None:
        assert self._watch is not None
        removed, lost = self._watch.read()
        self._removed.extend(removed)
        self._lost_events = self._lost_events or lost
        if not self.queue.running:  # during a run, wait: the run itself may be removing them
            self._judge_removals()

    def _judge_removals(self) -> None:
        """Repair when an address the saved states want bound was removed (or events were lost).

        Also after each run: removals seen while it ran are judged by the states it left
        (it may have made them itself).
        """
        removed, lost = self._removed, self._lost_events
        self._removed, self._lost_events = [], False
        wanted = self.worker.desired_vips
        hits = [r for r in removed if (r.address, r.dev) in wanted]
        if hits or lost:
            what = ", ".join(f"{r.address} removed from {r.dev}" for r in hits) or "address events were lost"
            self._submit("repair", Repair(f"rtnetlink: {what}"))

    def _schedule_reconcile(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        engine = self.engine
        interval = engine.config.settings.reconcile_interval if engine is not None else 0
        if interval > 0 and not self._stopping:
            self._timer = self.loop.call_later(interval, self._tick, interval)

    def _tick(self, interval: float) -> None:
        self._submit("repair", Repair(f"every {interval:g}s (reconcile_interval)"))
        self._timer = self.loop.call_later(interval, self._tick, interval)

    # ------------------------------------------------------------------ signals and the stop

    def reload(self) -> None:
        """As SIGHUP, from any thread."""
        self.loop.call_soon_threadsafe(self._on_hup)

    def stop(self) -> None:
        """As SIGTERM, from any thread."""
        self.loop.call_soon_threadsafe(self._on_term)

    def _on_hup(self) -> None:
        self._submit("reload", Reload("SIGHUP"))

    def _on_term(self) -> None:
        if self._stopping:
            return
        say("SIGTERM: finishing" + (f", reading the FIFO for {STOP_GRACE:g} s more" if self._fifo_fd is not None else ""))
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
        self.queue.wake()

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


# --------------------------------------------------------------------------- helpers


def _failed(work: Work) -> None:
    """A piece of work raised: a handed-over command's client still gets an answer."""
    if isinstance(work, Command):
        work.reply({"error": "the listener failed to run it"})


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


__all__ = ["Listener", "event_ticket"]

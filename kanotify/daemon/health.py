"""Health checks of real servers, run by ``kanotify listen``: keepalived's checker semantics.

Every real server with a ``check`` (``[instance.service.real.check]``, or its
service's ``[instance.service.check]`` as the default) is checked on every
director, whatever its VRRP state, so a new master starts with known health.
The state machine is keepalived's: a real server is DOWN after 1 + ``retry``
consecutive failures ``retry_delay`` seconds apart, UP again after one
success, and starts UP (DOWN with ``initial = "down"``, until its first
success).  A change is handed to the listener, which runs the engine
(command ``health``): the planner then drains the DOWN real server (weight 0)
or removes it, and restores it when it is UP -- where its service is desired.

The checks run on the listener's asyncio loop, without a thread or a task per
check where it can be avoided: a TCP check is a non-blocking ``connect()``
watched by one epoll of its own (the loop watches that one descriptor), HTTP(S)
a small coroutine, a command a subprocess killed at its timeout.  Checks are
due on a grid of :data:`TICK` seconds: every check due in the same tick starts
in the same wake-up of the loop, and the TCP checks started together share one
timeout timer -- 10,000 real servers every 6 s cost ~50 wake-ups a second, not
~3,300 (a check starts up to one tick late).  The first checks are spread over
the interval (5 s at most, unless that would start more than FIRST_RATE a
second); each next one is due an interval after the previous one was due
(a retry: ``retry_delay`` after the failure), so they stay spread.  ``<state_dir>/health.json`` has
every checked real server's state for ``kanotify status`` and ``kanotify metrics``
(read through :mod:`kanotify.daemon.healthreport`).
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import json
import math
import os
import resource
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from . import checks as _checks
from ..atomic import replace_file
from ..config.values import Config
from .healthreport import HEALTH_FILE
from .quorum import QuorumBook, QuorumChange
from ..model import HealthCheck, IPAddress, RealKey, ServiceKey, format_hostport

#: how often health.json is rewritten at most while only errors and times change (state changes: at once)
WRITE_EVERY = 2.0
#: the grid checks are due on (seconds): checks due within one tick start together
TICK = 0.02
#: health.json's "late": how many checks started at most this many seconds after their tick (the last: later)
LATE_BOUNDS = (0.05, 0.25, 1.0, 5.0)
_LATE_LABELS = (*(f"{bound:g}" for bound in LATE_BOUNDS), "more")
#: the first checks start within 5 s of a start or reload -- unless that is more than this many a second
FIRST_RATE = 1000.0
#: descriptors kept free for the rest of the listener when connects fill the open-files limit
FD_RESERVE = 256
#: errors of socket()/connect() that are this host's problem, not the real server's: not counted as a failure
LOCAL_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL})

Key = tuple[ServiceKey, RealKey]
#: one check of a real server: (service, real, its place among the real server's checks)
CheckKey = tuple[ServiceKey, RealKey, int]


@dataclass
class Target:
    """One checked real server and where its state machine stands.

    ``key`` is (service, (address, real server's port)); ``port`` the port
    checked (the check's own, else the real server's).
    """

    key: Key
    address: IPAddress
    port: int
    check: HealthCheck
    up: bool
    since: float  # wall clock of the last change (or of the start)
    index: int = 0  # its place among the checks of its real server (all must pass: keepalived)
    base: int = 1  # the real server's configured weight
    offset: int = 0  # what a dynamic command or a file check adds to ``base`` (0: nothing)
    failures: int = 0
    last_error: str | None = None
    last_check: float | None = None
    checks: int = 0
    passed_once: bool = False
    due: int | None = None  # the tick of the next check (None: none planned)
    started: int | None = None  # the tick the last check was due in
    busy: bool = False
    checked: bool = True  # False once it left the config (or the checks stopped): results are dropped
    sockaddr: tuple[str, int] | None = None  # what connect() takes, made once
    bind: tuple[str, int] | None = None  # what bind() takes (source, source_port), None: no bind
    quorum: bool = False  # its service's quorum is tracked (:class:`~kanotify.daemon.quorum.QuorumBook`)
    static: str = ""  # its health.json entry's fields that change only with the config
    entry: str | None = None  # its whole health.json entry as last encoded (None: changed since)

    @property
    def service(self) -> ServiceKey:
        return self.key[0]


@dataclass(frozen=True)
class Change:
    """A real server went UP or DOWN."""

    key: Key
    up: bool
    why: str
    weight: int | None = None  # a dynamic weight (a command's exit status, a file's number): the new weight

    @property
    def service(self) -> ServiceKey:
        return self.key[0]

    def __str__(self) -> str:
        service, (address, port) = self.key
        state = "UP" if self.up else "DOWN"
        if self.weight is not None:
            state += f" weight {self.weight}"
        return f"{format_hostport(address, port)} of {service} {state} ({self.why})"


@dataclass(frozen=True)
class DownSet:
    """The real servers the checks found DOWN at one moment: a :class:`kanotify.plan.HealthView` that any
    thread may read.  The listener takes one in the loop's thread when it queues work, and the work
    carries it to the planner in the engine's thread (:meth:`Health.down_now`)."""

    down: frozenset[Key] = frozenset()
    weights: tuple[tuple[Key, int], ...] = ()  # real servers whose dynamic checks set their weight
    lost: frozenset[ServiceKey] = frozenset()  # the services whose quorum is lost

    def is_down(self, service: ServiceKey, real: RealKey) -> bool:
        return bool(self.down) and (service, real) in self.down

    def weight_of(self, service: ServiceKey, real: RealKey) -> int | None:
        return dict(self.weights).get((service, real)) if self.weights else None

    def quorum_lost(self, service: ServiceKey) -> bool:
        return bool(self.lost) and service in self.lost


#: nothing DOWN: the snapshot of most moments, shared
NONE_DOWN = DownSet()


class Health:
    """The checks of one config; :meth:`down_now` is what the planner gets (as a snapshot).

    ``on_change`` is called (in the loop thread) with the changes of one
    check result; ``state_dir`` receives ``health.json``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[list[Change]], None],
                 state_dir: str, clock: Callable[[], float] = time.time,
                 on_quorum: Callable[[list[QuorumChange]], None] | None = None) -> None:
        self.loop = loop
        self.on_change = on_change
        self.on_quorum = on_quorum  # a service's quorum was lost or gained (after the real server's change)
        self.state_dir = state_dir
        self.clock = clock
        self.targets: dict[CheckKey, Target] = {}
        #: the real servers with a check that is DOWN, by service: real -> how many of its checks are DOWN
        self._down: dict[ServiceKey, dict[RealKey, int]] = {}
        self._weights: dict[Key, int] = {}  # the weights dynamic checks set (the real server's own otherwise)
        self._by_real: dict[Key, list[Target]] = {}  # every real server's checks
        self.quorum = QuorumBook()
        self._order: list[Target] | None = None  # health.json's order, None: to sort again
        self._dirty = False
        self._writer: asyncio.TimerHandle | None = None  # the next write of counters and errors
        self._soon: asyncio.Handle | None = None  # a write of state changes at the end of this turn of the loop
        self._stopped = False
        self._tls_off: ssl.SSLContext | None = None
        self._tls_on: ssl.SSLContext | None = None
        #: tick -> the targets due then (a target whose ``due`` moved on is skipped there)
        self._due: dict[int, list[Target]] = {}
        self._epoll: select.epoll | None = None  # the TCP connects in flight, made on first use
        self._max_connecting = 0  # how many may be in flight (set with the epoll, from the open-files limit)
        self._connecting: dict[int, tuple[Target, socket.SocketType]] = {}  # by descriptor
        #: tick -> the connects that time out then, unless done before
        self._deadlines: dict[int, list[tuple[int, socket.SocketType, Target]]] = {}
        #: the HTTP(S) and command checks running, by target: cancelled when it leaves the config or on stop
        self._tasks: dict[CheckKey, asyncio.Task[None]] = {}
        #: checks started, by how late (LATE_BOUNDS), since the start: does the checker keep up?
        self.late = [0] * (len(LATE_BOUNDS) + 1)

    # ------------------------------------------------------------------ the planner's view

    def down_now(self) -> DownSet:
        """The DOWN real servers now, frozen (in the loop's thread: it owns the checks' state)."""
        lost = self.quorum.lost
        if not self._down and not self._weights and not lost:
            return NONE_DOWN
        return DownSet(frozenset((service, real) for service, reals in self._down.items() for real in reals),
                       tuple(self._weights.items()), lost)

    def weight_of(self, service: ServiceKey, real: RealKey) -> int | None:
        """The weight the dynamic checks of a real server set (None: its configured one)."""
        return self._weights.get((service, real)) if self._weights else None

    def quorum_lost(self, service: ServiceKey) -> bool:
        return service in self.quorum.lost

    def is_down(self, service: ServiceKey, real: RealKey) -> bool:
        """The live answer (the loop's thread; another thread takes a :meth:`down_now` there and reads it)."""
        if not self._down:  # nothing is DOWN: the planner's question for each of 10,000 reals costs nothing
            return False
        reals = self._down.get(service)
        return reals is not None and real in reals

    def _note_state(self, target: Target, was_down: bool) -> None:
        """Keep :attr:`_down` (what :meth:`is_down` reads) in step with ``target.up`` (and its leaving).

        ``was_down``: the target counted as DOWN before (it was DOWN and checked).
        """
        service, real = target.key
        down = not target.up and target.checked
        if down == was_down:
            return
        reals = self._down.setdefault(service, {})
        count = reals.get(real, 0) + (1 if down else -1)
        if count > 0:
            reals[real] = count
        else:
            reals.pop(real, None)
            if not reals:
                del self._down[service]

    def _real_down(self, key: Key) -> bool:
        reals = self._down.get(key[0])
        return reals is not None and key[1] in reals

    def _note_weight(self, key: Key) -> int | None:
        """The real server's weight from its checks' offsets (kept in :attr:`_weights`); None: its own."""
        targets = self._by_real.get(key) or []
        offsets = [t.offset for t in targets if t.checked]
        if not any(offsets):
            self._weights.pop(key, None)
            return None
        weight = max(0, min(65535, targets[0].base + sum(offsets)))
        self._weights[key] = weight
        return weight

    # ------------------------------------------------------------------ configuration

    def configure(self, config: Config) -> None:
        """Check what ``config`` says; real servers that stay keep their state, removed ones stop."""
        wanted: dict[CheckKey, tuple[IPAddress, int, HealthCheck, int]] = {}
        for inst in config.instances:
            for spec in inst.services:
                if not spec.checks:
                    continue
                for real in spec.reals:
                    for i, check in enumerate(spec.checks_for(real.key)):
                        wanted[(spec.service.key, real.key, i)] = (real.address, check.port or real.port, check,
                                                                   real.weight)
        now = self.clock()
        for key in list(self.targets):
            if key not in wanted:
                gone = self.targets.pop(key)
                was_down = not gone.up
                self._forget(gone)
                self._note_state(gone, was_down)
        spread = 0
        for key, (address, port, check, base) in wanted.items():
            target = self.targets.get(key)
            if target is not None:
                target.base = base
                if target.check != check or target.port != port:
                    target.check, target.port = check, port  # same state, new way of checking
                    _prepare(target)
                    self._schedule(target, 0.0)
                continue
            target = Target((key[0], key[1]), address, port, check, up=check.initial == "up", since=now, index=key[2],
                            base=base)
            _prepare(target)
            self.targets[key] = target
            self._note_state(target, False)
            # spread the first checks over the interval: 10,000 real servers must not all connect at once;
            # within 5 s (health known soon after a start) unless that means more than FIRST_RATE a second
            spread += 1
            span = min(check.interval, max(5.0, len(wanted) / FIRST_RATE))
            self._schedule(target, (spread * 0.618034 % 1.0) * span)
        self._by_real = {}
        for target in self.targets.values():
            self._by_real.setdefault(target.key, []).append(target)
        for real_key in list(self._weights):
            if real_key not in self._by_real:
                del self._weights[real_key]
        for real_key in self._by_real:
            self._note_weight(real_key)
        changes = self.quorum.configure(config, self.is_down, now)
        tracked = self.quorum.services
        for target in self.targets.values():
            target.quorum = target.key[0] in tracked
        if changes and self.on_quorum is not None:  # one that starts without its quorum: journaled, hooks told
            self.loop.call_soon(self.on_quorum, changes)
        self._order = None
        self._dirty = True
        self._write()

    def stop(self) -> None:
        self._stopped = True
        for target in self.targets.values():
            self._forget(target)
        self._due.clear()
        self._deadlines.clear()
        for _target, sock in self._connecting.values():
            sock.close()
        self._connecting.clear()
        if self._epoll is not None:
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        if self._dirty:
            self._write()
        for handle in (self._writer, self._soon):
            if handle is not None:
                handle.cancel()

    def _forget(self, target: Target) -> None:
        target.due = None
        target.checked = False
        task = self._tasks.pop((*target.key, target.index), None)
        if task is not None:
            task.cancel()  # a command check is killed now, not at its timeout

    def _schedule(self, target: Target, delay: float, at: float | None = None) -> None:
        """Check ``target`` ``delay`` seconds after ``at`` (the loop's time, default now): in the first tick not earlier."""
        self._plan(target, math.ceil(((self.loop.time() if at is None else at) + delay) / TICK))

    def _plan(self, target: Target, tick: int) -> None:
        """Check ``target`` in ``tick``."""
        if self._stopped:
            return
        target.due = tick
        due = self._due.get(tick)
        if due is None:
            self._due[tick] = [target]
            self.loop.call_at(tick * TICK, self._tick, tick)
        else:
            due.append(target)

    # ------------------------------------------------------------------ running the checks

    def _tick(self, tick: int) -> None:
        """Start every check due in ``tick``."""
        now = None
        started = self.loop.time()
        count = 0
        for target in self._due.pop(tick, ()):
            if target.due != tick or target.busy or self._stopped:
                continue  # rescheduled, forgotten or still being checked: its result schedules it again
            target.due = None
            target.started = tick
            target.busy = True
            count += 1
            kind = target.check.type
            if kind == "tcp":
                if now is None:
                    now = self.clock()
                if len(self._connecting) >= self._max_connecting > 0:
                    # after a stall of the loop a burst of due checks must not run out of descriptors
                    target.busy = False
                    self._schedule(target, TICK, started)
                    continue
                self._tcp(target, now, started)
            else:
                if not self._max_connecting:
                    self._max_connecting = max(16, _raise_open_files() - FD_RESERVE)
                if len(self._tasks) + len(self._connecting) >= self._max_connecting:
                    target.busy = False  # descriptors run short: a little later, not a failure
                    self._schedule(target, TICK, started)
                    continue
                task = self.loop.create_task(self._guarded(target))
                self._tasks[(*target.key, target.index)] = task
        if count:
            self.late[bisect.bisect_left(LATE_BOUNDS, started - tick * TICK)] += count

    def _tcp(self, target: Target, now: float, started: float) -> None:
        """A non-blocking connect(); its answer comes through :meth:`_connected`, or a shared timeout.

        ``now`` is the wall clock, ``started`` the loop's, both read once per tick.
        """
        family = socket.AF_INET6 if (target.check.address or target.address).version == 6 else socket.AF_INET
        try:
            # the C socket type itself: socket.socket's Python-level __init__ and close() are a tenth of a check
            sock = socket.SocketType(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        except OSError as exc:
            if exc.errno in LOCAL_ERRORS:
                self._not_checked(target, f"socket: {exc.strerror}", started)
            else:
                self._result(target, f"socket: {exc.strerror}", now, started)
            return
        assert target.sockaddr is not None
        if target.bind is not None:
            try:
                sock.bind(target.bind)
            except OSError as exc:
                sock.close()
                self._not_checked(target, f"bind: {exc.strerror}", started)
                return
        code = sock.connect_ex(target.sockaddr)
        if code != errno.EINPROGRESS:
            sock.close()
            if code in LOCAL_ERRORS:
                self._not_checked(target, f"connect: {_errno_text(code)}", started)
            else:
                self._result(target, _errno_text(code) if code else None, now, started)
            return
        fd = sock.fileno()
        epoll = self._epoll
        if epoll is None:
            epoll = self._epoll = select.epoll()
            self.loop.add_reader(epoll.fileno(), self._connected)
            self._max_connecting = self._max_connecting or max(16, _raise_open_files() - FD_RESERVE)
        # one-shot: no epoll_ctl to take it out again, close() does that
        epoll.register(fd, select.EPOLLOUT | select.EPOLLONESHOT)
        self._connecting[fd] = (target, sock)
        # a full timeout (at most one tick more), one timer for all the connects that end together
        deadline = math.ceil((started + target.check.timeout) / TICK)
        expiring = self._deadlines.get(deadline)
        if expiring is None:
            self._deadlines[deadline] = [(fd, sock, target)]
            self.loop.call_at(deadline * TICK, self._expire, deadline)
        else:
            expiring.append((fd, sock, target))

    def _connected(self) -> None:
        """The connects that finished (or failed): each one's result."""
        assert self._epoll is not None
        events = self._epoll.poll(0)
        if not events:
            return
        now, at = self.clock(), self.loop.time()
        for fd, mask in events:
            entry = self._connecting.pop(fd, None)
            if entry is None:
                continue
            target, sock = entry
            error = None
            if mask & (select.EPOLLERR | select.EPOLLHUP):
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                error = _errno_text(code) if code else None
            sock.close()
            self._result(target, error, now, at)

    def _expire(self, deadline: int) -> None:
        now = None
        for fd, sock, target in self._deadlines.pop(deadline, ()):
            entry = self._connecting.get(fd)
            if entry is None or entry[1] is not sock:
                continue  # answered already (and the descriptor may be another connect's by now)
            del self._connecting[fd]
            sock.close()
            if now is None:
                now = self.clock()
            self._result(target, f"no connection within {target.check.timeout:g}s", now)

    async def _guarded(self, target: Target) -> None:
        """An HTTP(S) or command check whose every ending is a result: a check that raised is a failed check.

        Without this an unexpected exception would leave the target busy, and
        never checked again.  Cancelled (it left the config, or the checks
        stop): no result.
        """
        try:
            check = target.check
            address = check.address or target.address
            kind = check.type
            outcome: _checks.Outcome
            if kind in ("http", "https"):
                tls = self._tls(check.verify) if kind == "https" else None
                outcome = await _checks.http(address, target.port, check, tls, check.host or _default_host(target),
                                             _status_error)
            elif kind == "command":
                outcome = await _checks.command(check)
            elif kind == "dns":
                outcome = await _checks.dns(address, target.port, check)
            elif kind == "udp":
                outcome = await _checks.udp(address, target.port, check)
            elif kind == "ping":
                outcome = await _checks.ping(address, check)
            elif kind == "smtp":
                outcome = await _checks.smtp(address, target.port, check)
            else:
                outcome = _checks.file(check)
            self._result(target, outcome[0], weight=outcome[1])
        except asyncio.CancelledError:
            target.busy = False
            raise
        except OSError as exc:
            if exc.errno not in LOCAL_ERRORS:
                raise
            self._not_checked(target, f"socket: {exc.strerror}")  # this host's shortage, as for tcp
        except Exception as exc:  # noqa: BLE001 -- a bug or a surprise of one check must not stop it for good
            self._result(target, f"check failed: {type(exc).__name__}: {exc}")
        finally:
            if self._tasks.get((*target.key, target.index)) is asyncio.current_task():
                del self._tasks[(*target.key, target.index)]

    def _tls(self, verify: bool) -> ssl.SSLContext:
        if verify:
            if self._tls_on is None:
                self._tls_on = ssl.create_default_context()
            return self._tls_on
        if self._tls_off is None:  # like keepalived's SSL_GET: the certificate is not the question
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self._tls_off = context
        return self._tls_off

    # ------------------------------------------------------------------ the state machine

    def _not_checked(self, target: Target, why: str, at: float | None = None) -> None:
        """A check this host could not make (no descriptor, no port): nothing counted, tried again soon.

        As keepalived does ("Rescheduling"): the real server's state is not
        this host's shortage.  ``last_error`` says what happened.
        """
        target.busy = False
        if self._stopped or not target.checked:
            return
        target.last_error = f"{why} (not checked, this host's problem: not counted)"
        target.entry = None
        self._schedule(target, max(target.check.retry_delay, TICK), at)
        self._mark_dirty(now=False)

    def _result(self, target: Target, error: str | None, now: float | None = None, at: float | None = None,
                weight: int | None = None) -> None:
        """One check's outcome (``error`` None: passed) through the state machine.

        ``now`` is the wall clock and ``at`` the loop's time, when the caller
        has read them already for a whole batch of results.  ``weight``: what a
        passed dynamic command (the weight) or file check (added to the
        configured weight) says.  The real server is UP while all its checks
        are: a change of one check is a :class:`Change` only when it changes that.
        """
        target.busy = False
        if self._stopped or not target.checked:
            return  # stopped, or the real server left the config while it was being checked
        check = target.check
        if now is None:
            now = self.clock()
        target.last_check = now
        target.checks += 1
        target.entry = None
        change = None
        was_down = not target.up
        real_was_down = self._real_down(target.key)
        if error is None:
            target.failures = 0
            target.passed_once = True
            offset = 0 if weight is None else weight - target.base if check.type == "command" else weight
            if offset != target.offset:
                target.offset = offset
                new = self._note_weight(target.key)
                change = Change(target.key, True, f"{check.type} check: weight", target.base if new is None else new)
            if not target.up:
                target.up, target.since = True, now
                change = Change(target.key, True, "check passed", self._weights.get(target.key))
            delay = check.interval
        else:
            target.failures += 1
            target.last_error = error
            if target.up and target.failures >= 1 + check.retry:
                target.up, target.since = False, now
                if target.offset:
                    target.offset = 0  # keepalived: a failed checker's weight share is taken back
                    self._note_weight(target.key)
                change = Change(target.key, False, error)
                delay = check.interval
            elif target.up:
                delay = check.retry_delay  # a retry before it counts as DOWN
            else:
                delay = check.interval
        if delay == check.interval and target.started is not None:
            # the next one an interval after this one was due, not after it ended: the checks keep the
            # places they were spread to, a slow answer or a busy moment does not push them into a bunch
            tick = math.ceil(((self.loop.time() if at is None else at)) / TICK)
            self._plan(target, max(tick, target.started + max(1, round(check.interval / TICK))))
        else:
            self._schedule(target, delay, at)
        self._note_state(target, was_down)
        flipped = self._real_down(target.key) != real_was_down  # the real server itself went UP or DOWN
        if change is not None:
            if not flipped and (change.weight is None or real_was_down):
                change = None  # another check of the real server keeps it DOWN: nothing changes for IPVS
            else:
                for other in self._by_real.get(target.key, ()):
                    other.entry = None  # every entry of the real server shows its weight
        # the quorum counts configured weights of UP real servers: only a real server's own UP/DOWN moves it
        lost = self.quorum.checked(target.key[0], target.key[1], flipped, self.is_down, now) \
            if target.quorum else None
        self._mark_dirty(now=change is not None or lost is not None)
        if change is not None:
            self.on_change([change])
        if lost is not None and self.on_quorum is not None:
            self.on_quorum([lost])

    # ------------------------------------------------------------------ health.json

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "service": str(t.service),
                "real": format_hostport(*t.key[1]),
                "check": str(t.check),
                "up": t.up,
                "since": t.since,
                "last_error": t.last_error,
                "last_check": t.last_check,
                "checks": t.checks,
                **({"weight": self._weights[t.key]} if t.key in self._weights else {}),
            }
            for t in self._sorted()
        ]

    def _sorted(self) -> list[Target]:
        if self._order is None:
            self._order = sorted(self.targets.values(), key=lambda t: (str(t.service), t.address.version,
                                                                       int(t.address), t.key[1][1], t.index))
        return self._order

    def _mark_dirty(self, now: bool) -> None:
        """Write health.json soon: a state change in this turn of the loop, anything else within WRITE_EVERY.

        The changes one tick's results bring are written once, not once each.
        """
        self._dirty = True
        if now:
            if self._soon is None and not self._stopped:
                self._soon = self.loop.call_soon(self._write)
        elif self._writer is None and self._soon is None and not self._stopped:
            self._writer = self.loop.call_later(WRITE_EVERY, self._write)

    def _write(self) -> None:
        for handle in (self._writer, self._soon):
            if handle is not None:
                handle.cancel()  # this write does for it (cancelling the handle that runs now is harmless)
        self._writer = self._soon = None
        if not self._dirty:
            return
        self._dirty = False
        # json.dumps of 10,000 dicts every 2 s was most of an idle checker's time: each entry is encoded again
        # only when its target changed, its fields that change only with the config once per config
        order = self._sorted()
        for t in order:
            if t.entry is None:
                t.entry = _entry(t, self._weights.get(t.key) if self._weights else None)
        reals = ",".join([t.entry for t in order])  # type: ignore[misc]  # every entry was just made
        late = ",".join(f'"{label}":{n}' for label, n in zip(_LATE_LABELS, self.late))
        quorum = json.dumps(self.quorum.snapshot())
        data = (f'{{"pid":{os.getpid()},"written":{self.clock()!r},"late":{{{late}}},"reals":[{reals}],'
                f'"quorum":{quorum}}}\n').encode()
        try:
            # not durable: rewritten every few seconds, and a crash of the machine loses the checks' state anyway
            replace_file(os.path.join(self.state_dir, HEALTH_FILE), data, durable=False)
        except OSError:
            pass  # status shows less; the checks and the IPVS work go on


def _raise_open_files(want: int = 65536) -> int:
    """Raise this process's soft limit of open files towards ``want`` (up to the hard limit); the new soft limit.

    keepalived's checker raises its own limit for its checkers the same way;
    the default soft limit (1024) is less than a burst of connects to 10,000
    real servers can need.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(hard, want)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (OSError, ValueError):
            pass
    return soft


def _prepare(target: Target) -> None:
    """What every check and every health.json write of ``target`` would otherwise compute again."""
    target.sockaddr = (str(target.check.address or target.address), target.port)
    target.bind = _checks._bind_to(target.check)
    target.static = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in (
        ("service", str(target.service)), ("real", format_hostport(*target.key[1])), ("check", str(target.check)))) + ","
    target.entry = None


def _entry(t: Target, weight: int | None) -> str:
    """``t``'s health.json entry: the JSON of its :meth:`Health.snapshot` item."""
    error = "null" if t.last_error is None else json.dumps(t.last_error)
    last = "null" if t.last_check is None else repr(t.last_check)
    return (f'{t.static}"up":{"true" if t.up else "false"},"since":{t.since!r},"last_error":{error},'
            f'"last_check":{last},"checks":{t.checks}' + ("" if weight is None else f',"weight":{weight}') + "}")


def _default_host(target: Target) -> str:
    """The Host header of a check without ``host``: the address (IPv6 in brackets), and the port unless the
    scheme's own (RFC 9110 7.2, as curl sends it: a server that routes by Host sees what a client would send)."""
    address = f"[{target.address}]" if target.address.version == 6 else str(target.address)
    default = 443 if target.check.type == "https" else 80
    return address if target.port == default else f"{address}:{target.port}"


def _errno_text(code: int) -> str:
    return {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "host unreachable",
            errno.ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "timed out"}.get(code, os.strerror(code))


def _status_error(line: bytes, check: HealthCheck) -> str | None:
    words = line.split()
    if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
        return f"not an HTTP answer: {line[:60]!r}" if line else "closed without an answer"
    code = int(words[1])
    return None if check.accepts(code) else f"status {code}"


__all__ = ["Change", "DownSet", "Health", "NONE_DOWN", "Target"]

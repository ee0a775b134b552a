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
watched by the loop, HTTP(S) a small coroutine, a command a subprocess killed
at its timeout.  One timer per due check.  ``<state_dir>/health.json`` has
every checked real server's state for ``kanotify status``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from .config import Config
from .model import HealthCheck, IPAddress, RealKey, ServiceKey, format_hostport

HEALTH_FILE = "health.json"
#: how often health.json is rewritten at most while only errors and times change (state changes: at once)
WRITE_EVERY = 2.0

Key = tuple[ServiceKey, RealKey]


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
    failures: int = 0
    last_error: str | None = None
    last_check: float | None = None
    checks: int = 0
    passed_once: bool = False
    handle: asyncio.TimerHandle | None = None
    busy: bool = False

    @property
    def service(self) -> ServiceKey:
        return self.key[0]


@dataclass(frozen=True)
class Change:
    """A real server went UP or DOWN."""

    key: Key
    up: bool
    why: str

    def __str__(self) -> str:
        service, (address, port) = self.key
        return f"{format_hostport(address, port)} of {service} {'UP' if self.up else 'DOWN'} ({self.why})"


class Health:
    """The checks of one config; implements :class:`kanotify.plan.HealthView` for the planner.

    ``on_change`` is called (in the loop thread) with the changes of one
    check result; ``state_dir`` receives ``health.json``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[list[Change]], None],
                 state_dir: str, clock: Callable[[], float] = time.time) -> None:
        self.loop = loop
        self.on_change = on_change
        self.state_dir = state_dir
        self.clock = clock
        self.targets: dict[Key, Target] = {}
        self._dirty = False
        self._writer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._tls_off: ssl.SSLContext | None = None
        self._tls_on: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ the planner's view (any thread)

    def is_down(self, service: ServiceKey, real: RealKey) -> bool:
        target = self.targets.get((service, real))
        return target is not None and not target.up

    # ------------------------------------------------------------------ configuration

    def configure(self, config: Config) -> None:
        """Check what ``config`` says; real servers that stay keep their state, removed ones stop."""
        wanted: dict[Key, tuple[IPAddress, int, HealthCheck]] = {}
        for inst in config.instances:
            for spec in inst.services:
                for real in spec.reals:
                    check = spec.check_for(real.key)
                    if check is not None:
                        wanted[(spec.service.key, real.key)] = (real.address, check.port or real.port, check)
        now = self.clock()
        for key in list(self.targets):
            if key not in wanted:
                self._forget(self.targets.pop(key))
        spread = 0
        for key, (address, port, check) in wanted.items():
            target = self.targets.get(key)
            if target is not None:
                if target.check != check or target.port != port:
                    target.check, target.port = check, port  # same state, new way of checking
                    self._schedule(target, 0.0)
                continue
            target = Target(key, address, port, check, up=check.initial == "up", since=now)
            self.targets[key] = target
            # spread the first checks over the interval: 10,000 real servers must not all connect at once
            spread += 1
            self._schedule(target, (spread * 0.618034 % 1.0) * min(check.interval, 5.0))
        self._mark_dirty(now=True)

    def stop(self) -> None:
        self._stopped = True
        for target in self.targets.values():
            self._forget(target)
        if self._writer is not None:
            self._writer.cancel()
        if self._dirty:
            self._write()

    def _forget(self, target: Target) -> None:
        if target.handle is not None:
            target.handle.cancel()
            target.handle = None

    def _schedule(self, target: Target, delay: float) -> None:
        if self._stopped:
            return
        if target.handle is not None:
            target.handle.cancel()
        target.handle = self.loop.call_later(delay, self._run, target)

    # ------------------------------------------------------------------ running one check

    def _run(self, target: Target) -> None:
        target.handle = None
        if target.busy or self._stopped:
            return
        target.busy = True
        kind = target.check.type
        if kind == "tcp":
            self._tcp(target)
        else:
            coro = self._http(target) if kind in ("http", "https") else self._command(target)
            self.loop.create_task(coro)

    def _tcp(self, target: Target) -> None:
        family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        except OSError as exc:
            self._result(target, f"socket: {exc.strerror}")
            return
        code = sock.connect_ex((str(target.address), target.port))
        if code == 0:
            sock.close()
            self._result(target, None)
            return
        if code != errno.EINPROGRESS:
            sock.close()
            self._result(target, _errno_text(code))
            return
        fd = sock.fileno()
        timeout = self.loop.call_later(target.check.timeout, self._tcp_done, target, sock, fd, None)
        self.loop.add_writer(fd, self._tcp_done, target, sock, fd, timeout)

    def _tcp_done(self, target: Target, sock: socket.socket, fd: int, timeout: asyncio.TimerHandle | None) -> None:
        self.loop.remove_writer(fd)
        if timeout is None:
            error: str | None = f"no connection within {target.check.timeout:g}s"
        else:
            timeout.cancel()
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            error = _errno_text(code) if code else None
        sock.close()
        self._result(target, error)

    async def _http(self, target: Target) -> None:
        check = target.check
        # the address as a Host header writes it (IPv6 in brackets), without the port
        host = check.host or (f"[{target.address}]" if target.address.version == 6 else str(target.address))
        tls = self._tls(check.verify) if check.type == "https" else None
        writer = None
        try:
            async with asyncio.timeout(check.timeout):
                reader, writer = await asyncio.open_connection(
                    str(target.address), target.port, ssl=tls,
                    server_hostname=(check.host or str(target.address)) if tls else None,
                )
                writer.write(f"GET {check.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kanotify\r\n"
                             "Connection: close\r\n\r\n".encode())
                line = await reader.readline()
            error = _status_error(line, check)
        except TimeoutError:
            error = f"no answer within {check.timeout:g}s"
        except ssl.SSLError as exc:
            error = f"TLS: {exc.reason or exc}"
        except OSError as exc:
            error = exc.strerror or str(exc)
        except ValueError:  # readline() past the stream's limit: not left unhandled, or the target stays busy
            error = "not an HTTP answer: no line end in the first 64 KiB"
        finally:
            if writer is not None:
                writer.close()
        self._result(target, error)

    async def _command(self, target: Target) -> None:
        check = target.check
        try:
            proc = await asyncio.create_subprocess_exec(
                *check.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:
            self._result(target, f"{check.command[0]}: {exc.strerror}")
            return
        try:
            code = await asyncio.wait_for(proc.wait(), check.timeout)
            error = None if code == 0 else f"exit status {code}" if code > 0 else f"killed by signal {-code}"
        except TimeoutError:
            try:
                os.killpg(proc.pid, 9)  # its own session: the whole job, not only the first process
            except ProcessLookupError:
                pass
            await proc.wait()
            error = f"killed after {check.timeout:g}s"
        except asyncio.CancelledError:  # the loop ends (the listener stops): the command must not outlive it
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            raise
        self._result(target, error)

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

    def _result(self, target: Target, error: str | None) -> None:
        target.busy = False
        if self._stopped or self.targets.get(target.key) is not target:
            return  # stopped, or the real server left the config while it was being checked
        check = target.check
        now = self.clock()
        target.last_check = now
        target.checks += 1
        change = None
        if error is None:
            target.failures = 0
            target.passed_once = True
            if not target.up:
                target.up, target.since = True, now
                change = Change(target.key, True, "check passed")
            delay = check.interval
        else:
            target.failures += 1
            target.last_error = error
            if target.up and target.failures >= 1 + check.retry:
                target.up, target.since = False, now
                change = Change(target.key, False, error)
                delay = check.interval
            elif target.up:
                delay = check.retry_delay  # a retry before it counts as DOWN
            else:
                delay = check.interval
        self._schedule(target, delay)
        self._mark_dirty(now=change is not None)
        if change is not None:
            self.on_change([change])

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
            }
            for t in sorted(self.targets.values(), key=lambda t: (str(t.service), t.address.version,
                                                                   int(t.address), t.key[1][1]))
        ]

    def _mark_dirty(self, now: bool) -> None:
        self._dirty = True
        if now:
            if self._writer is not None:
                self._writer.cancel()
                self._writer = None
            self._write()
        elif self._writer is None:
            self._writer = self.loop.call_later(WRITE_EVERY, self._write)

    def _write(self) -> None:
        self._writer = None
        if not self._dirty:
            return
        self._dirty = False
        data = (json.dumps({"pid": os.getpid(), "written": self.clock(), "reals": self.snapshot()},
                           separators=(",", ":")) + "\n").encode()
        path = os.path.join(self.state_dir, HEALTH_FILE)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            pass  # status shows less; the checks and the IPVS work go on


def _errno_text(code: int) -> str:
    return {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "host unreachable",
            errno.ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "timed out"}.get(code, os.strerror(code))


def _status_error(line: bytes, check: HealthCheck) -> str | None:
    words = line.split()
    if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
        return f"not an HTTP answer: {line[:60]!r}" if line else "closed without an answer"
    code = int(words[1])
    return None if check.accepts(code) else f"status {code}"


def read_health(state_dir: str) -> dict[str, object] | None:
    """``health.json`` as the listener last wrote it, or None."""
    try:
        with open(os.path.join(state_dir, HEALTH_FILE), "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = ["Change", "HEALTH_FILE", "Health", "Target", "read_health"]

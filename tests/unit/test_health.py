"""Health checks on their own: every checker type, keepalived's state machine, reloads; against loopback servers."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from kanotify.config.schema import parse_config
from kanotify.daemon import checks
from kanotify.daemon.health import Change, Health
from kanotify.daemon.healthreport import read_report
from kanotify.model import HealthCheck

LOOP = ipaddress.ip_address("127.0.0.1")


def config_for(port: int, check: str, real: str = "127.0.0.1") -> str:
    return f"""
[[instance]]
name = "VI_1"
  [[instance.service]]
  protocol = "tcp"
  address = "127.0.0.1"
  port = {port}
    [[instance.service.real]]
    address = "{real}"
    forward = "nat"
      [instance.service.real.check]
      {check}
"""


class Run:
    """A Health on its own event loop in a thread; ``changes`` in the order they came."""

    def __init__(self, tmp: Path) -> None:
        self.changes: list[Change] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.health = self.call(lambda: Health(self.loop, self.changes.extend, str(tmp)))
        self.tmp = tmp

    def call(self, fn: Any) -> Any:
        done: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(self._call(fn), self.loop)  # type: ignore[arg-type]
        return done.result(10)

    async def _call(self, fn: Any) -> Any:
        return fn()

    def configure(self, text: str) -> None:
        config = parse_config(text)
        self.call(lambda: self.health.configure(config))

    def target(self) -> Any:
        return next(iter(self.health.targets.values()))

    def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            # judged in the loop thread, between callbacks: a result's state and its on_change come together
            if self.call(predicate):
                return
            time.sleep(0.01)
        raise AssertionError(f"not in time: {self.health.snapshot()}")

    def close(self) -> None:
        self.call(self.health.stop)
        # the checks stop() cancelled end (a command's process group killed) before the loop does
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.1), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path)
    try:
        yield r
    finally:
        r.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listening:
    """A TCP port that accepts (and closes) connections, or stops doing so."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def start(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


FAST = "interval = 0.1\n      timeout = 0.5\n      retry = 1\n      retry_delay = 0.05"


def test_tcp_down_after_retry_plus_one_failures_up_after_one_success(run: Run) -> None:
    port = free_port()
    server = Listening(port)
    server.start()
    try:
        run.configure(config_for(port, f'type = "tcp"\n      {FAST}'))
        run.wait(lambda: run.target().checks >= 2)
        assert run.target().up and run.changes == []
        server.stop()
        run.wait(lambda: run.changes)  # the change is handed over just after the state flips
        target = run.target()
        assert target.failures >= 2 and "refused" in target.last_error  # 2 at the change; the next check may have counted one more
        assert [(c.up, c.why) for c in run.changes] == [(False, "connection refused")]
        server.start()
        run.wait(lambda: len(run.changes) == 2)
        assert run.target().up and [c.up for c in run.changes] == [False, True]
    finally:
        server.stop()


def test_a_single_failure_is_retried_not_reported(run: Run) -> None:
    port = free_port()
    run.configure(config_for(port, 'type = "tcp"\n      interval = 30\n      timeout = 0.5\n      retry = 3\n'
                                   '      retry_delay = 0.05'))
    run.wait(lambda: run.target().checks >= 4)
    assert not run.target().up and run.target().failures == 4  # 1 + retry failures, retry_delay apart
    assert len(run.changes) == 1


def test_initial_down_waits_for_the_first_success(run: Run) -> None:
    port = free_port()
    server = Listening(port)
    run.configure(config_for(port, f'type = "tcp"\n      initial = "down"\n      {FAST}'))
    assert run.target().up is False
    server.start()
    try:
        run.wait(lambda: run.changes)
        assert run.target().up and [c.up for c in run.changes] == [True]
    finally:
        server.stop()


class Handler(BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str | None]] = []
    hang = False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        Handler.seen.append((self.path, self.headers.get("Host")))
        if Handler.hang:
            time.sleep(5)
        self.send_response(Handler.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    Handler.status, Handler.seen, Handler.hang = 200, [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        Handler.hang = False
        server.shutdown()
        server.server_close()


def test_http_path_host_and_accepted_status(run: Run, http_server: ThreadingHTTPServer) -> None:
    port = http_server.server_address[1]
    run.configure(config_for(port, f'type = "http"\n      path = "/health"\n      host = "www.example.com"\n'
                                   f'      status = [200, 204]\n      {FAST}'))
    run.wait(lambda: run.target().checks >= 2)
    assert run.target().up and Handler.seen[0] == ("/health", "www.example.com")
    Handler.status = 503
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == "status 503"
    Handler.status = 204
    run.wait(lambda: run.target().up)


def test_a_server_that_accepts_but_never_answers_fails_at_timeout(run: Run, http_server: ThreadingHTTPServer) -> None:
    Handler.hang = True
    port = http_server.server_address[1]
    run.configure(config_for(port, 'type = "http"\n      interval = 0.1\n      timeout = 0.3\n      retry = 0'))
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == "no answer within 0.3s"


def test_https_without_verification_by_default_and_with_it_on_request(run: Run, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=rs.example"], check=True, capture_output=True)
    Handler.status, Handler.seen, Handler.hang = 200, [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        run.configure(config_for(port, f'type = "https"\n      {FAST}'))
        run.wait(lambda: run.target().checks >= 2)
        assert run.target().up  # a self-signed certificate is fine without verify
        run.configure(config_for(port, f'type = "https"\n      verify = true\n      {FAST}'))
        run.wait(lambda: not run.target().up)
        assert run.target().last_error.startswith("TLS")
    finally:
        server.shutdown()
        server.server_close()


def test_command_exit_status_and_a_hanging_command_is_killed(run: Run, tmp_path: Path) -> None:
    flag = tmp_path / "up"
    script = tmp_path / "check.sh"
    script.write_text(f"#!/bin/sh\n[ -e {flag} ] || exit 1\n[ \"$(cat {flag})\" = hang ] && exec sleep 30\nexit 0\n")
    script.chmod(0o755)
    flag.write_text("yes")
    run.configure(config_for(free_port(), f'type = "command"\n      command = ["{script}"]\n'
                                          '      interval = 0.1\n      timeout = 0.5\n      retry = 0'))
    run.wait(lambda: run.target().checks >= 2)
    assert run.target().up
    flag.unlink()
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == "exit status 1"
    flag.write_text("yes")
    run.wait(lambda: run.target().up)
    flag.write_text("hang")
    started = time.monotonic()
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == "killed after 0.5s" and time.monotonic() - started < 3
    out = subprocess.run(["pgrep", "-f", f"sleep 30"], capture_output=True, text=True).stdout.split()
    assert not [pid for pid in out if f"{script}" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]


def test_a_check_that_raises_is_a_failed_check_and_checked_again(run: Run, monkeypatch: pytest.MonkeyPatch,
                                                                  http_server: ThreadingHTTPServer) -> None:
    real_http = checks.http
    calls = []

    async def surprise(*args: Any) -> Any:
        calls.append(args)
        if len(calls) <= 2:
            raise RuntimeError("boom")  # a bug, or something no except clause foresaw
        return await real_http(*args)

    monkeypatch.setattr(checks, "http", surprise)
    run.configure(config_for(http_server.server_address[1], 'type = "http"\n      path = "/ok"\n'
                                                             '      interval = 0.1\n      retry = 0'))
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == "check failed: RuntimeError: boom"
    run.wait(lambda: run.target().up)  # not left busy: checked again, and passed
    assert len(calls) >= 3


def test_a_removed_real_servers_running_command_is_killed_at_once(run: Run, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = tmp_path / "check.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    script.chmod(0o755)
    port = free_port()
    run.configure(config_for(port, f'type = "command"\n      command = ["{script}"]\n      timeout = 20'))
    run.wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    pid = int(pidfile.read_text())
    run.configure(config_for(port, 'type = "tcp"', real="127.0.0.2"))  # the checked real server left the config
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
                break
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the command of a removed real server still runs")
    assert run.call(lambda: not run.health._tasks)


def test_a_reload_keeps_the_state_of_real_servers_that_stayed(run: Run) -> None:
    port = free_port()
    run.configure(config_for(port, f'type = "tcp"\n      {FAST}'))
    run.wait(lambda: not run.target().up)
    key = next(iter(run.health.targets))
    run.configure(config_for(port, 'type = "tcp"\n      interval = 0.2\n      retry = 0'))  # same real, new check
    assert not run.health.targets[key].up and run.health.targets[key].check.interval == 0.2
    run.configure(config_for(port, f'type = "tcp"\n      {FAST}', real="127.0.0.2"))  # that one left the config
    assert key not in run.health.targets and len(run.health.targets) == 1


def test_health_json_has_every_checked_real_server(run: Run) -> None:
    port = free_port()
    run.configure(config_for(port, f'type = "tcp"\n      {FAST}'))
    run.wait(lambda: not run.target().up)
    # the change queued health.json's write (call_soon) before this call: once it has run, the write has
    run.call(lambda: None)
    report = read_report(str(run.tmp))
    assert report is not None and report.pid == os.getpid()
    [real] = report.reals
    assert real.real == f"127.0.0.1:{port}" and real.up is False and "refused" in (real.last_error or "")
    assert real.service == f"tcp 127.0.0.1:{port}" and "tcp connect" in real.check
    assert report.down == {(real.service, real.real)}


# --------------------------------------------------------------------------- at scale: ticks, descriptors, health.json


def many_reals(ports: list[int], check: str) -> str:
    """One service on loopback with a real server per port (nat: the ports differ from the service's)."""
    reals = "".join(f'    [[instance.service.real]]\n    address = "127.0.0.1"\n    port = {p}\n    forward = "nat"\n'
                    for p in ports)
    return f"""
[[instance]]
name = "VI_1"
  [[instance.service]]
  protocol = "tcp"
  address = "127.0.0.1"
  port = {ports[0]}
    [instance.service.check]
    {check}
{reals}"""


def servers(count: int, backlog: int = 64) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        socks.append(sock)
    return socks


def test_checks_due_in_the_same_tick_start_in_one_wake_up(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    import kanotify.daemon.health as health_module

    socks = servers(100)
    wake_ups: list[float] = []  # the loop time each check was started at (read once per tick)
    original = health_module.Health._tcp

    def spy(self: Health, target: Any, now: float, started: float) -> None:
        wake_ups.append(started)
        original(self, target, now, started)

    monkeypatch.setattr(health_module.Health, "_tcp", spy)
    try:
        run.configure(many_reals([s.getsockname()[1] for s in socks], 'type = "tcp"\n    interval = 0.2'))
        run.wait(lambda: all(t.checks >= 1 for t in run.health.targets.values()))
        # the 100 first checks are spread over the interval (0.2 s): on the grid that is at most 11 wake-ups
        first = wake_ups[:100]
        assert len(set(first)) <= round(0.2 / health_module.TICK) + 1, sorted(set(first))
        assert all(t.up and t.last_error is None for t in run.health.targets.values())
    finally:
        for sock in socks:
            sock.close()


def test_connects_in_flight_stay_below_the_open_files_limit(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    import kanotify.daemon.health as health_module

    # servers whose accept queue is full: a connect to them hangs until the check's timeout
    socks = servers(40, backlog=0)
    fillers = []
    for sock in socks:
        filler = socket.create_connection(sock.getsockname())
        fillers.append(filler)
        fillers.append(socket.socket())
        fillers[-1].setblocking(False)
        fillers[-1].connect_ex(sock.getsockname())  # the queue of one is full now
    monkeypatch.setattr(health_module, "_raise_open_files", lambda: health_module.FD_RESERVE + 16)
    in_flight: list[int] = []
    original = health_module.Health._tcp

    def spy(self: Health, target: Any, now: float, started: float) -> None:
        in_flight.append(len(self._connecting))
        original(self, target, now, started)

    monkeypatch.setattr(health_module.Health, "_tcp", spy)
    try:
        check = 'type = "tcp"\n    interval = 30\n    timeout = 0.3\n    retry = 0'
        run.configure(many_reals([s.getsockname()[1] for s in socks], check))
        run.wait(lambda: all(t.checks >= 1 for t in run.health.targets.values()))
        assert max(in_flight) <= 16  # the rest waited for a tick with room, none failed for want of a descriptor
        assert {t.last_error for t in run.health.targets.values()} == {"no connection within 0.3s"}
    finally:
        for sock in socks + fillers:
            sock.close()


def test_a_check_this_host_cannot_make_is_not_counted(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import types

    import kanotify.daemon.health as health_module

    def no_descriptor(*args: Any) -> socket.socket:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    shim = types.SimpleNamespace(**{k: getattr(socket, k) for k in dir(socket) if not k.startswith("__")})
    shim.SocketType = no_descriptor
    monkeypatch.setattr(health_module, "socket", shim)
    run.configure(config_for(free_port(), f'type = "tcp"\n      {FAST}'))
    run.wait(lambda: run.target().last_error is not None)
    time.sleep(0.3)
    target = run.target()
    assert target.up and target.checks == 0 and target.failures == 0 and run.changes == []
    assert target.last_error.startswith("socket: Too many open files (not checked")


def test_health_json_is_the_snapshot_and_is_down_follows_the_state(run: Run) -> None:
    socks = servers(3)
    ports = [s.getsockname()[1] for s in socks]
    socks.pop(1).close()  # the second real server refuses
    try:
        run.configure(many_reals(ports, f'type = "tcp"\n    {FAST}'))
        run.wait(lambda: len(run.changes) == 1)
        service = next(iter(run.health.targets))[0]
        assert [run.health.is_down(service, (LOOP, p)) for p in ports] == [False, True, False]
        assert not run.health.is_down(service, (LOOP, 1))  # not checked: never DOWN
        data = run.call(lambda: (run.health._mark_dirty(False), run.health._write(), run.health.snapshot())[2])
        report = read_report(str(run.tmp))
        assert report is not None and [r.to_json() for r in report.reals] == data
        run.configure(many_reals([ports[0]], f'type = "tcp"\n    {FAST}'))  # the DOWN one left the config
        assert not run.health.is_down(service, (LOOP, ports[1]))
    finally:
        for sock in socks:
            sock.close()

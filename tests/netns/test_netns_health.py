"""Health checks over a real network: the checker in one namespace, real servers in another.

Namespace A (192.0.2.1, 2001:db8::1) is the director: ``health_driver.py`` runs
:class:`kanotify.health.Health` there as ``kanotify listen`` does (and one test runs
``kanotify listen`` itself).  Namespace B (192.0.2.2, 2001:db8::2) holds the real
servers: ``health_server.py`` processes (``http.server`` for HTTP and HTTPS, plain
sockets for the rest) that the tests kill, restart, pause, or make answer a status,
garbage or nothing at all.  The host kernel has no IPVS, so what is checked here is
the checker: its state machine, every checker type, its timeouts, its reloads, and
what it leaves for ``status`` -- the weights in IPVS are the guest test's job
(``tests/kernel/guest/test_guest_health.py``).

Every process a test starts is killed by its pid at the end, also when it fails.
Times are ``time.monotonic()`` everywhere (one clock for all namespaces); the bounds
are the state machine's own lower bounds and generous upper ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from netns_support import Netns, Pair, kanotify_script, process_gone, wait_for

pytestmark = pytest.mark.root

HERE = Path(__file__).resolve().parent
#: slack on top of what the state machine needs, for a loaded 2-core machine; lower bounds get none
SLACK = 2.0

HEAD = """\
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
reconcile_interval = 0

[[instance]]
name = "VI_1"
"""


def toml_table(name: str, keys: dict[str, Any]) -> str:
    # JSON's strings, numbers, booleans and arrays are TOML's too
    return f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())


def service(vip: str, *reals: str, port: int = 80, check: dict[str, Any] | None = None) -> str:
    """An ``[[instance.service]]`` with its real servers (from :func:`real`) and a service-wide check."""
    text = f'[[instance.service]]\nprotocol = "tcp"\naddress = "{vip}"\nport = {port}\n'
    if check:
        text += toml_table("instance.service.check", check)
    return text + "".join(reals)


def real(address: str, port: int, **check: Any) -> str:
    """A NAT real server (so its port may differ from the service's) with its own check keys."""
    text = f'[[instance.service.real]]\naddress = "{address}"\nport = {port}\nforward = "nat"\n'
    return text + (toml_table("instance.service.real.check", check) if check else "")


def write_config(tmp: Path, *services: str, name: str = "kanotify.toml") -> Path:
    (tmp / "state").mkdir(exist_ok=True)
    path = tmp / name
    path.write_text(HEAD.format(tmp=tmp) + "\n".join(services))
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------- processes


class Procs:
    """Every process a test starts; all are killed by pid when it ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, **kw)
        self.started.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[Any]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    def close(self) -> None:
        for proc in self.started:
            self.kill(proc)


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.close()


class Servers:
    """One ``health_server.py`` in ``ns`` serving SPECs (see that module); its log, read as events."""

    def __init__(self, procs: Procs, ns: Netns, log: Path, *specs: str) -> None:
        self.procs, self.ns, self.log, self.specs = procs, ns, log, specs
        self.proc: subprocess.Popen[Any] | None = None
        self.start()

    def start(self) -> None:
        ready = len(self.events("ready"))
        self.proc = self.procs.start(["ip", "netns", "exec", self.ns.name, sys.executable,
                                      str(HERE / "health_server.py"), str(self.log), *self.specs],
                                     stderr=subprocess.PIPE)
        wait_for(lambda: len(self.events("ready")) > ready or self.proc.poll() is not None, 20, "the servers")
        assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else ""

    def kill(self) -> float:
        """SIGKILL (the kernel closes its sockets: connections are refused from now on); the time."""
        assert self.proc is not None
        self.procs.kill(self.proc)
        return time.monotonic()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def events(self, event: str | None = None, port: int | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        found = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e for e in found if (event is None or e["event"] == event) and (port is None or e.get("port") == port)]


class Checker:
    """``health_driver.py CONFIG`` in ``ns``: its events as they come, commands through its stdin."""

    def __init__(self, procs: Procs, ns: Netns, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = procs.start(["ip", "netns", "exec", ns.name, sys.executable, str(HERE / "health_driver.py"),
                                 str(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.started = self.wait(lambda e: e["event"] == "configured", 20, "the checker")["t"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()
        with self.cond:
            self.events.append({"event": "eof", "t": time.monotonic()})
            self.cond.notify_all()

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str,
             after: int = 0) -> dict[str, Any]:
        """The first event from index ``after`` on that ``match``es; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events[after:]:
                    if match(event):
                        return event
                    if event["event"] == "eof":
                        stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                        raise AssertionError(f"the checker ended while waiting for {what}: {stderr}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout}s; events: {self.events}")
                self.cond.wait(left)

    def send(self, line: str) -> int:
        """Write a command; the index of the next event (where its answer will be)."""
        assert self.proc.stdin is not None
        with self.cond:
            count = len(self.events)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return count

    def changes(self, real: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events if e["event"] == "change" and real in (None, e["real"])]

    def change(self, real: str, up: bool, timeout: float, after: int = 0) -> dict[str, Any]:
        return self.wait(lambda e: e["event"] == "change" and e["real"] == real and e["up"] is up, timeout,
                         f"{real} {'UP' if up else 'DOWN'}", after)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The checker's state now, per real server (``service real`` when a real is in two services)."""
        index = self.send("snapshot")
        reals = self.wait(lambda e: e["event"] == "snapshot", 10, "a snapshot", index)["reals"]
        return {f"{r['service']} {r['real']}": r for r in reals} | {r["real"]: r for r in reals}

    def until(self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float, what: str) -> dict[str, Any]:
        """Poll snapshots until ``predicate`` holds; that snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}; last snapshot: {snap}")
            time.sleep(0.02)

    def reload(self, config: Path) -> float:
        """``configure()`` with ``config``; the time it was done."""
        index = self.send(f"reload {config}")
        return float(self.wait(lambda e: e["event"] == "configured", 10, "the reload", index)["t"])

    def stop(self) -> None:
        index = self.send("stop")
        self.wait(lambda e: e["event"] == "stopped", 10, "the checker to stop", index)
        self.proc.wait(10)


def checks_at_least(n: int, *reals: str) -> Callable[[dict[str, dict[str, Any]]], bool]:
    return lambda snap: all(r in snap and snap[r]["checks"] >= n for r in reals)


# ---------------------------------------------------------------------------- tcp


TCP = {"type": "tcp", "interval": 0.2, "timeout": 1, "retry": 2, "retry_delay": 0.4}


def test_tcp_down_after_retry_plus_one_failures_retry_delay_apart_and_up_after_one_success(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    v4, v6 = "192.0.2.2:8080", "[2001:db8::2]:8080"
    servers = Servers(procs, pair.b, tmp_path / "servers.log", "tcp:8080")
    config = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 8080), check=TCP),
                          service("2001:db8::100", real("2001:db8::2", 8080), check=TCP))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(3, v4, v6), 10, "three checks each")
    assert snap[v4]["up"] and snap[v6]["up"] and checker.changes() == []
    assert {e["peer"] for e in servers.events("accept")} == {"192.0.2.1", "2001:db8::1"}  # over the veth, both

    # one failure, then the server is back before the retry: not DOWN (the failures must be consecutive)
    servers.signal(signal.SIGUSR1)
    checker.until(lambda s: s[v4]["last_error"] == "connection refused", 10, "a refused check")
    servers.signal(signal.SIGUSR2)
    paused_at = servers.events("paused")[-1]["t"]
    listening_at = wait_for(lambda: servers.events("listening"), 5, "listening again")[-1]["t"]
    assert listening_at - paused_at < 2 * TCP["retry_delay"], "the blip was too long to prove anything"
    count = checker.snapshot()[v4]["checks"]
    checker.until(lambda s: s[v4]["checks"] >= count + 3, 10, "three more checks")
    assert checker.changes() == []

    killed = servers.kill()
    down4, down6 = checker.change(v4, False, 10), checker.change(v6, False, 10)
    for down in (down4, down6):
        took = down["t"] - killed
        # the first failure comes at most one interval after the kill, then `retry` more retry_delay apart
        assert TCP["retry"] * TCP["retry_delay"] - 0.02 <= took <= TCP["interval"] + 2 * TCP["retry_delay"] + SLACK, took
        assert down["why"] == "connection refused"
    snap = checker.snapshot()
    assert not snap[v4]["up"] and snap[v4]["last_error"] == "connection refused"
    assert abs(snap[v4]["since"] - time.time()) < 10  # wall clock for status

    index = len(checker.events)
    servers.start()
    restarted = servers.events("ready")[-1]["t"]
    up4, up6 = checker.change(v4, True, 10, index), checker.change(v6, True, 10, index)
    for up in (up4, up6):
        assert up["why"] == "check passed"
        # one success is enough: UP at the next check, one interval later at most (checks go on while DOWN)
        assert up["t"] - restarted <= TCP["interval"] + SLACK, up["t"] - restarted
    assert [c["up"] for c in checker.changes(v4)] == [c["up"] for c in checker.changes(v6)] == [False, True]
    print(f"tcp: killed -> DOWN {down4['t'] - killed:.2f}s (v4) {down6['t'] - killed:.2f}s (v6), "
          f"lower bound {TCP['retry'] * TCP['retry_delay']}s; restarted -> UP {up4['t'] - restarted:.2f}s")
    checker.stop()


# ---------------------------------------------------------------------------- http


FAST = {"interval": 0.2, "timeout": 1, "retry": 1, "retry_delay": 0.2}


def test_http_gets_the_path_with_the_host_header_and_accepts_the_configured_status(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    pair.b.ip("addr", "add", "2001:db8::80/64", "dev", "eth0", "nodad")
    codes = tmp_path / "codes.json"
    codes.write_text(json.dumps({"/": 204, "/health?deep=1": 302}))
    servers = Servers(procs, pair.b, tmp_path / "servers.log", f"http:8080:{codes}", f"http:8081:{codes}",
                      f"http:80:{codes}")
    plain, custom, v6 = "192.0.2.2:8080", "192.0.2.2:8081", "[2001:db8::80]:80"
    config = write_config(
        tmp_path,
        service("192.0.2.100",
                real("192.0.2.2", 8080, type="http", **FAST),  # path "/", any 2xx, Host: the real's address
                real("192.0.2.2", 8081, type="http", path="/health?deep=1", host="www.example.com",
                     status=[200, 302], **FAST)),
        service("2001:db8::100", real("2001:db8::80", 80, type="http", **FAST)))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(2, plain, custom, v6), 10, "two checks each")
    assert all(snap[r]["up"] for r in (plain, custom, v6)) and checker.changes() == []
    requests = {(e["port"], e["path"], e["host"], e["peer"], e["version"]) for e in servers.events("request")}
    assert requests == {(8080, "/", "192.0.2.2", "192.0.2.1", "HTTP/1.0"),
                        (8081, "/health?deep=1", "www.example.com", "192.0.2.1", "HTTP/1.0"),
                        (80, "/", "[2001:db8::80]", "2001:db8::1", "HTTP/1.0")}

    index = len(checker.events)
    codes.write_text(json.dumps({"/": 500, "/health?deep=1": 200}))  # 200 is in [200, 302]: still UP
    changed = time.monotonic()
    down = checker.change(plain, False, 10, index)
    assert down["why"] == "status 500"
    assert FAST["retry_delay"] - 0.02 <= down["t"] - changed <= FAST["interval"] + FAST["retry_delay"] + SLACK
    count = checker.snapshot()[custom]["checks"]
    snap = checker.until(lambda s: s[custom]["checks"] >= count + 2, 10, "two checks answered 200")
    assert snap[custom]["up"] and snap[custom]["last_error"] is None

    codes.write_text(json.dumps({"/": 200, "/health?deep=1": 204}))  # 2xx, but not one of [200, 302]
    assert checker.change(custom, False, 10, index)["why"] == "status 204"
    assert checker.change(plain, True, 10, index)["why"] == "check passed"
    checker.change(v6, True, 10, index)  # it is asked for "/" too
    assert [c["up"] for c in checker.changes(v6)] == [c["up"] for c in checker.changes(plain)] == [False, True]
    assert [c["up"] for c in checker.changes(custom)] == [False]
    checker.stop()


def test_http_down_on_an_answer_that_is_not_http(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    banner, long_line, nothing = "192.0.2.2:8082", "192.0.2.2:8083", "192.0.2.2:8084"
    servers = Servers(procs, pair.b, tmp_path / "servers.log", "raw:8082:" + b"SSH-2.0-OpenSSH_9.2\r\n".hex(),
                      "raw:8083:78:100000", "raw:8084:")
    check = {"type": "http", "interval": 0.2, "timeout": 1, "retry": 0}
    config = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 8082), real("192.0.2.2", 8083),
                                            real("192.0.2.2", 8084), check=check))
    checker = Checker(procs, pair.a, config)
    assert checker.change(banner, False, 10)["why"] == "not an HTTP answer: b'SSH-2.0-OpenSSH_9.2\\r\\n'"
    assert checker.change(nothing, False, 10)["why"] == "closed without an answer"
    # a line longer than the stream's limit: still a result, and the checks go on
    assert checker.change(long_line, False, 10)["why"] == "not an HTTP answer: no line end in the first 64 KiB"
    count = len(servers.events("accept", 8083))
    wait_for(lambda: len(servers.events("accept", 8083)) >= count + 2, 10, "more checks of the long line")
    checker.stop()

"""Health checks over a real network: the checker in one namespace, real servers in another.

Namespace A (192.0.2.1, 2001:db8::1) is the director: ``health_driver.py`` runs
:class:`kanotify.daemon.health.Health` there as ``kanotify listen`` does (and one test runs
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

from kanotify.daemon.healthreport import read_report
from netns_support import Netns, Pair, kanotify_script, process_gone, wait_for
from nstools import whole_lines

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
        stderr = self.log.with_suffix(".err")
        with open(stderr, "ab") as err:  # a file, not a pipe: nobody reads it while the test runs
            self.proc = self.procs.start(["ip", "netns", "exec", self.ns.name, sys.executable,
                                          str(HERE / "health_server.py"), str(self.log), *self.specs], stderr=err)
        proc = self.proc
        wait_for(lambda: len(self.events("ready")) > ready or proc.poll() is not None, 20, "the servers")
        assert proc.poll() is None, stderr.read_text()

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
        found = [json.loads(line) for line in whole_lines(self.log)]
        return [e for e in found if (event is None or e["event"] == event) and (port is None or e.get("port") == port)]


class Checker:
    """``health_driver.py CONFIG`` in ``ns``: its events as they come, commands through its stdin."""

    def __init__(self, procs: Procs, ns: Netns, config: Path, env: dict[str, str] | None = None) -> None:
        self.stderr = config.with_suffix(".checker.err")
        with open(self.stderr, "ab") as err:
            self.proc = procs.start(["ip", "netns", "exec", ns.name, sys.executable, str(HERE / "health_driver.py"),
                                     str(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
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
                        raise AssertionError(f"the checker ended while waiting for {what}: {self.stderr.read_text()}")
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

    def change(self, real: str, up: bool, timeout: float, after: int = 0, service: str | None = None) -> dict[str, Any]:
        """The first change of ``real`` (of ``service``, if given) to ``up``, from event ``after`` on."""
        return self.wait(lambda e: e["event"] == "change" and e["real"] == real and e["up"] is up
                         and service in (None, e["service"]), timeout, f"{service or ''} {real} {'UP' if up else 'DOWN'}",
                         after)

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


TCP: dict[str, Any] = {"type": "tcp", "interval": 0.2, "timeout": 1, "retry": 2, "retry_delay": 0.4}


def test_tcp_down_after_retry_plus_one_failures_retry_delay_apart_and_up_after_one_success(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    v4, v6 = "192.0.2.2:8080", "[2001:db8::2]:8080"
    servers = Servers(procs, pair.b, tmp_path / "servers.log", "tcp:8080")
    config = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 8080), check=TCP),
                          service("2001:db8::100", real("2001:db8::2", 8080), check=TCP))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(3, v4, v6), 10, "three checks each")
    assert snap[v4]["up"] and snap[v6]["up"] and checker.changes() == []
    peers = {"192.0.2.1", "2001:db8::1"}  # over the veth, both (each logged once the server got to its accept())
    wait_for(lambda: {e["peer"] for e in servers.events("accept")} == peers, 10, f"accepts from {peers}")

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


FAST: dict[str, Any] = {"interval": 0.2, "timeout": 1, "retry": 1, "retry_delay": 0.2}


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
                real("192.0.2.2", 8080, type="http", **FAST),  # path "/", any 2xx, Host: the real's address:port
                real("192.0.2.2", 8081, type="http", path="/health?deep=1", host="www.example.com",
                     status=[200, 302], **FAST)),
        service("2001:db8::100", real("2001:db8::80", 80, type="http", **FAST)))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(2, plain, custom, v6), 10, "two checks each")
    assert all(snap[r]["up"] for r in (plain, custom, v6)) and checker.changes() == []
    requests = {(e["port"], e["path"], e["host"], e["peer"], e["version"]) for e in servers.events("request")}
    assert requests == {(8080, "/", "192.0.2.2:8080", "192.0.2.1", "HTTP/1.0"),
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
    check: dict[str, Any] = {"type": "http", "interval": 0.2, "timeout": 1, "retry": 0}
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


# ---------------------------------------------------------------------------- https


def certificate(tmp: Path, name: str, *extensions: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
                    *[arg for ext in extensions for arg in ("-addext", ext)]], check=True, capture_output=True)
    return cert, key


def test_https_does_not_verify_by_default_and_verify_true_checks_the_certificate_and_its_name(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    untrusted = certificate(tmp_path, "self-signed.example")
    trusted = certificate(tmp_path, "rs.example", "subjectAltName=IP:192.0.2.2,DNS:rs.example")
    codes = tmp_path / "codes.json"
    codes.write_text("{}")
    servers = Servers(procs, pair.b, tmp_path / "servers.log", f"https:8443:{codes}:{untrusted[0]}:{untrusted[1]}",
                      f"https:8444:{codes}:{trusted[0]}:{trusted[1]}")
    https: dict[str, Any] = {"type": "https", "interval": 0.2, "timeout": 1, "retry": 1, "retry_delay": 0.2}
    one, two = "tcp 192.0.2.100:443", "tcp 192.0.2.101:443"
    config = write_config(
        tmp_path,
        service("192.0.2.100", real("192.0.2.2", 8443, **https), real("192.0.2.2", 8444, verify=True, **https),
                port=443),
        service("192.0.2.101", real("192.0.2.2", 8443, verify=True, **https),
                real("192.0.2.2", 8444, verify=True, host="other.example", **https), port=443))
    # the checker trusts the second certificate only (OpenSSL's default CA file, as create_default_context loads it)
    checker = Checker(procs, pair.a, config, env=dict(os.environ, SSL_CERT_FILE=str(trusted[0])))
    self_signed = checker.change("192.0.2.2:8443", False, 10, service=two)
    wrong_name = checker.change("192.0.2.2:8444", False, 10, service=two)
    # the error says why the certificate was refused, in OpenSSL's words
    assert self_signed["why"].startswith("TLS: CERTIFICATE_VERIFY_FAILED (self") and "signed" in self_signed["why"]
    assert wrong_name["why"].startswith("TLS: CERTIFICATE_VERIFY_FAILED (") and "other.example" in wrong_name["why"]
    snap = checker.until(checks_at_least(3, f"{one} 192.0.2.2:8443", f"{one} 192.0.2.2:8444"), 10, "three checks")
    assert snap[f"{one} 192.0.2.2:8443"]["up"] and snap[f"{one} 192.0.2.2:8443"]["last_error"] is None  # not verified
    assert snap[f"{one} 192.0.2.2:8444"]["up"] and snap[f"{one} 192.0.2.2:8444"]["last_error"] is None  # verified
    assert {c["service"] for c in checker.changes()} == {two}
    # the GET went over TLS to both (a refused certificate never gets that far)
    assert {(e["port"], e["host"]) for e in servers.events("request")} == {(8443, "192.0.2.2:8443"),
                                                                          (8444, "192.0.2.2:8444")}
    checker.stop()


# ---------------------------------------------------------------------------- timeouts


def test_timeouts_a_connect_nobody_answers_a_host_that_is_not_there_and_a_server_that_never_answers(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    # 198.51.100.7 is routed through B, which drops it without a word: the SYN is never answered
    pair.a.ip("route", "add", "198.51.100.0/24", "via", "192.0.2.2")
    pair.b.ip("route", "add", "blackhole", "198.51.100.0/24")
    # 192.0.2.99 is on the link but no host has it: ARP fails, quickly with these settings
    pair.a.set_sysctls({"net.ipv4.neigh.eth0.mcast_solicit": 2, "net.ipv4.neigh.eth0.retrans_time_ms": 100})
    servers = Servers(procs, pair.b, tmp_path / "servers.log", "silent:8090")
    dropped, absent, silent = "198.51.100.7:80", "192.0.2.99:80", "192.0.2.2:8090"
    tcp: dict[str, Any] = {"type": "tcp", "interval": 0.3, "timeout": 0.5, "retry": 1, "retry_delay": 0.2}
    http: dict[str, Any] = {"type": "http", "interval": 0.3, "timeout": 0.4, "retry": 1, "retry_delay": 0.2}
    config = write_config(
        tmp_path,
        service("198.51.100.100", real("198.51.100.7", 80, **tcp), real("192.0.2.99", 80, **dict(tcp, timeout=3)),
                real("192.0.2.2", 8090, **http)))
    checker = Checker(procs, pair.a, config)

    down = checker.change(dropped, False, 15)
    assert down["why"] == "no connection within 0.5s"
    took = down["t"] - checker.started  # two attempts of a full timeout each, retry_delay apart
    assert 2 * tcp["timeout"] + tcp["retry_delay"] - 0.02 <= took <= tcp["interval"] + 2 * 0.5 + 0.2 + SLACK, took

    unreachable = checker.change(absent, False, 15)
    assert unreachable["why"] == "host unreachable"  # the kernel's answer came before the 3 s timeout
    assert unreachable["t"] - checker.started < 2 * 3, unreachable["t"] - checker.started

    never = checker.change(silent, False, 15)
    assert never["why"] == "no answer within 0.4s"
    accepts, closes = servers.events("accept", 8090), servers.events("closed", 8090)
    assert len(accepts) >= 2 and len(closes) >= 2
    for accepted, closed in zip(accepts[:2], closes[:2]):  # each attempt is given up at its timeout
        assert http["timeout"] - 0.1 <= closed["t"] - accepted["t"] <= http["timeout"] + SLACK
        assert closed["received"].startswith("GET / HTTP/1.0\r\n")  # the request was sent, nothing came back
    assert accepts[1]["t"] - closes[0]["t"] >= http["retry_delay"] - 0.05
    assert never["t"] >= accepts[0]["t"] + 2 * http["timeout"] + http["retry_delay"] - 0.1
    assert [e["t"] for e in accepts[2:] if e["t"] < never["t"]] == []  # 1 + retry attempts, no more
    print(f"timeouts: dropped SYN -> DOWN {took:.2f}s after start (bound {2 * 0.5 + 0.2}s); ARP failed -> "
          f"DOWN {unreachable['t'] - checker.started:.2f}s; silent server: attempts of "
          + ", ".join(f"{c['t'] - a['t']:.2f}s" for a, c in zip(accepts[:2], closes[:2])))
    checker.stop()


# ---------------------------------------------------------------------------- command


def pids_of(path: Path) -> list[list[int]]:
    """The ``$$ $!`` lines the hanging check script wrote: its shell's pid and its child's, per run."""
    return [[int(p) for p in line.split()] for line in path.read_text().splitlines()] if path.exists() else []


def test_command_runs_argv_without_a_shell_and_a_hanging_one_is_killed_with_its_children(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    mode, argv_file, pids = tmp_path / "mode", tmp_path / "argv", tmp_path / "pids"
    script = tmp_path / "check-rs.sh"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$@" > {argv_file}
case "$(cat {mode})" in
  hang) sleep 600 & echo $$ $! >> {pids}; wait ;;
  *) exit "$(cat {mode})" ;;
esac
""")
    script.chmod(0o755)
    mode.write_text("0")
    args = ["192.0.2.2", "two words", f"$(touch {tmp_path}/injected); *"]
    config = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 80), check={
        "type": "command", "command": [str(script), *args], "interval": 0.3, "timeout": 0.5, "retry": 0}))
    rs = "192.0.2.2:80"
    try:
        checker = Checker(procs, pair.a, config)
        checker.until(checks_at_least(2, rs), 10, "two checks")
        assert checker.changes() == []
        assert argv_file.read_text().splitlines() == args  # each word as it was, no shell in between
        assert not (tmp_path / "injected").exists()

        mode.write_text("1")
        assert checker.change(rs, False, 10)["why"] == "exit status 1"
        mode.write_text("0")
        checker.change(rs, True, 10)

        index = len(checker.events)
        mode.write_text("hang")
        hung = time.monotonic()
        down = checker.change(rs, False, 10, index)
        assert down["why"] == "killed after 0.5s"
        assert 0.5 - 0.02 <= down["t"] - hung <= 0.3 + 0.5 + SLACK, down["t"] - hung
        first = pids_of(pids)[0]  # the run that was killed (retry = 0: the first hanging one)
        for pid in first:  # its process group was killed: the shell and the sleep it started
            wait_for(lambda: process_gone(pid), 2, f"pid {pid} gone")

        # stopped while a command hangs: the command does not outlive the checker
        wait_for(lambda: len(pids_of(pids)) >= 2, 10, "another hanging run")
        running = pids_of(pids)[-1]
        assert not any(process_gone(pid) for pid in running)
        checker.stop()
        for pid in running:
            wait_for(lambda: process_gone(pid), 2, f"pid {pid} gone after the checker stopped")
    finally:
        for group, _ in pids_of(pids):  # a failed test must not leave its hanging checks behind
            if not process_gone(group):
                os.killpg(group, signal.SIGKILL)


# ---------------------------------------------------------------------------- initial, reload


def test_initial_down_is_down_until_the_first_success(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    servers = Servers(procs, pair.b, tmp_path / "servers.log", "tcp:8080")
    listening, closed = "192.0.2.2:8080", "192.0.2.2:8081"
    check = dict(TCP, initial="down")
    config = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 8080), real("192.0.2.2", 8081),
                                            check=check))
    checker = Checker(procs, pair.a, config)
    snap = checker.snapshot()
    assert snap[listening]["up"] is False and snap[closed]["up"] is False  # before any check
    up = checker.change(listening, True, 10)
    # The check succeeds when the kernel completes the handshake from the listen backlog; the server
    # logs its accept() when it gets to it, which on a loaded host can be after the change was read.
    accepted = wait_for(lambda: servers.events("accept", 8080), 10, "the server's first accept")[0]
    assert up["t"] < accepted["t"] + SLACK  # at the first success, not later
    snap = checker.until(checks_at_least(4, closed), 10, "four failed checks")
    # never passed: DOWN all along, so there is no change to report (no DOWN "transition")
    assert snap[closed]["up"] is False and snap[closed]["last_error"] == "connection refused"
    assert checker.changes(closed) == []
    Servers(procs, pair.b, tmp_path / "servers-8081.log", "tcp:8081")
    assert checker.change(closed, True, 10)["why"] == "check passed"
    checker.stop()


def test_a_reload_keeps_the_state_of_real_servers_that_stayed_and_stops_checking_removed_ones(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    servers = Servers(procs, pair.b, tmp_path / "servers.log", "tcp:8080", "tcp:8082", "tcp:8083")
    up, down, removed, added = "192.0.2.2:8080", "192.0.2.2:8081", "192.0.2.2:8082", "192.0.2.2:8083"
    check: dict[str, Any] = {"type": "tcp", "interval": 0.2, "timeout": 1, "retry": 0}
    before = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 8080), real("192.0.2.2", 8081),
                                            real("192.0.2.2", 8082), check=check), name="before.toml")
    after = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 8080), real("192.0.2.2", 8081),
                                           real("192.0.2.2", 8083), check=dict(check, interval=0.3)),
                         name="after.toml")
    checker = Checker(procs, pair.a, before)
    checker.change(down, False, 10)
    old = checker.until(checks_at_least(3, up, removed), 10, "three checks")
    index = len(checker.events)
    reloaded = checker.reload(after)
    new = checker.snapshot()
    assert set(new) == {up, down, added, f"tcp 192.0.2.100:80 {up}", f"tcp 192.0.2.100:80 {down}",
                        f"tcp 192.0.2.100:80 {added}"}
    for rs in (up, down):  # same state, same since: a reload is no change
        assert (new[rs]["up"], new[rs]["since"]) == (old[rs]["up"], old[rs]["since"])
        assert "every 0.3s" in new[rs]["check"]  # checked the new way
    assert new[added]["up"] is True and new[added]["checks"] == 0  # new ones start as `initial` says
    checker.until(checks_at_least(2, added), 10, "the added one checked")
    time.sleep(1.0)  # five intervals of the old check
    # at most one check of the removed one was under way at the reload; none started after it
    assert [e for e in servers.events("accept", 8082) if e["t"] > reloaded + 0.1] == []
    assert [e for e in servers.events("accept", 8080) if e["t"] > reloaded + 0.1]  # the rest go on
    assert checker.events[index:] and [e for e in checker.events[index:] if e["event"] == "change"] == []
    snap = checker.snapshot()
    assert snap[down]["up"] is False and snap[down]["since"] == old[down]["since"]
    checker.stop()


# ---------------------------------------------------------------------------- health.json and status


def test_health_json_and_status_show_what_kanotify_listen_checks(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    """The real listener in A: health.json, ``status`` (text and --json), and a stop that leaves no check behind.

    Without IPVS on the host, the service is not desired here (VI_1 is BACKUP), so the
    listener only checks; what ``status`` can show without IPVS is the health part.
    """
    Servers(procs, pair.b, tmp_path / "servers.log", "tcp:8080")
    up, down, hanging = "192.0.2.2:8080", "192.0.2.2:8081", "192.0.2.2:8082"
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\nsleep 600 & echo $$ $! >> {pids}; wait\n")
    script.chmod(0o755)
    tcp: dict[str, Any] = {"type": "tcp", "interval": 0.2, "timeout": 1, "retry": 0}
    config = write_config(tmp_path, service("192.0.2.100", real("192.0.2.2", 8080), real("192.0.2.2", 8081),
                                            real("192.0.2.2", 8082, type="command", command=[str(script)],
                                                 timeout=60), check=tcp))
    log = tmp_path / "listen.log"
    try:
        with open(log, "wb") as out:
            listener = procs.start(["ip", "netns", "exec", pair.a.name, kanotify_script(), "--config", str(config),
                                    "listen"], stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: f"health: {down} of tcp 192.0.2.100:80 DOWN (connection refused)" in log.read_text()
                 or listener.poll() is not None, 20, "the listener's DOWN")
        assert listener.poll() is None, log.read_text()
        wait_for(lambda: pids_of(pids), 10, "the command running")

        def reals() -> dict[str, dict[str, Any]]:
            report = read_report(str(tmp_path / "state"))
            assert report is not None and report.pid == listener.pid  # `ip netns exec` execs: the same pid
            return {r.real: r.to_json() for r in report.reals}

        written = wait_for(lambda: (r := reals())[up]["checks"] >= 2 and r, 10, "health.json")
        assert set(written) == {up, down, hanging}
        assert (written[up]["up"], written[up]["last_error"]) == (True, None)
        assert (written[down]["up"], written[down]["last_error"]) == (False, "connection refused")
        assert (written[hanging]["up"], written[hanging]["last_error"], written[hanging]["checks"]) == (True, None, 0)
        assert all(abs(r["since"] - time.time()) < 30 for r in written.values())

        shown = json.loads(pair.a.exec(kanotify_script(), "--config", str(config), "status", "--json").stdout)
        assert shown["health"]["listener"] == listener.pid
        seen = {r["real"]: r for r in shown["health"]["reals"]}
        for rs in (up, down, hanging):
            assert (seen[rs]["up"], seen[rs]["since"], seen[rs]["last_error"]) == \
                (written[rs]["up"], written[rs]["since"], written[rs]["last_error"])
        # what the host cannot give: IPVS (the guest test shows the weights)
        assert shown["ipvs"]["available"] is False and "IPVS" in shown["ipvs"]["error"]
        text = pair.a.exec(kanotify_script(), "--config", str(config), "status").stdout
        assert f"health checks (kanotify listen, pid {listener.pid}):" in text
        assert f"DOWN {down} of tcp 192.0.2.100:80 since " in text and "; last error: connection refused" in text
        assert f"UP   {up} of tcp 192.0.2.100:80 since " in text

        listener.send_signal(signal.SIGTERM)
        assert listener.wait(15) == 0, log.read_text()
        for pid in pids_of(pids)[-1]:  # the command under way did not outlive the listener
            wait_for(lambda: process_gone(pid), 2, f"pid {pid} gone after the listener stopped")
        stopped = json.loads(pair.a.exec(kanotify_script(), "--config", str(config), "status", "--json").stdout)
        assert stopped["health"] == {"listener": None, "written": None, "reals": []}
        assert "health checks: not running" in pair.a.exec(kanotify_script(), "--config", str(config), "status").stdout
    finally:
        for group, _ in pids_of(pids):
            if not process_gone(group):
                os.killpg(group, signal.SIGKILL)

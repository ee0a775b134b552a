"""Health checks against real IPVS, under traffic (in the UML guest).

An LVS-DR LAN on a bridge: a client, two directors (one MASTER, one BACKUP,
each running ``kanotify listen``) and two real servers with HTTP servers.  One
real server's HTTP server is stopped while the client sends a request every
100 ms: its weight in the master's IPVS must be 0 within interval x (retry + 1)
+ timeout, and no request may fail after that; restarted, its weight comes
back and traffic spreads over both again.  The backup director writes nothing
to IPVS, but ``kanotify status --json`` shows the same health there.

Every request comes from a source port no earlier request used.  IPVS sends a
new connection whose client address and port match the entry of an earlier
one (kept about 2 minutes after it ended: FIN_WAIT in DR mode) where that one
went, weight 0 or not; and the guest kernel's ephemeral ports jump to a new
place now and then (once in each 10 s run of this test, 12 runs of 12), so they
can come back to ports used seconds before.  A request after the drain from a
port that had reached rs1 went to the stopped rs1 and was refused (a CI run had
one).  That rule of IPVS is checked on its own, with two reused ports.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from ipvs_guest_support import add_bridge, add_bridged_namespace, dr_real_server, run
from kanotify.backends.netns import call_in
from nstools import whole_lines

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))
VIP = "192.0.2.100"
INTERVAL, TIMEOUT, RETRY, RETRY_DELAY = 1.0, 1.0, 1, 0.5
BOUND = INTERVAL * (RETRY + 1) + TIMEOUT  # the bound for "DOWN -> weight 0"

HTTP = r"""
import http.server, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name))); self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", 80), H)
print("ready", flush=True)
srv.serve_forever()
"""

CONFIG = f"""
[settings]
state_dir = "{{tmp}}/state"
journal = "{{tmp}}/journal.jsonl"
hooks_dir = "{{tmp}}/hooks.d"
syslog = false
garp_count = 1
reconcile_interval = 0

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "{VIP}/24"
  dev = "eth0"
  [[instance.service]]
  protocol = "tcp"
  address = "{VIP}"
  port = 80
  scheduler = "rr"
    [instance.service.check]
    type = "http"
    path = "/"
    interval = {INTERVAL}
    timeout = {TIMEOUT}
    retry = {RETRY}
    retry_delay = {RETRY_DELAY}
    [[instance.service.real]]
    address = "192.0.2.21"
    [[instance.service.real]]
    address = "192.0.2.22"
"""



@dataclass
class Net:
    ns: dict[str, str]
    tmp: Path
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    listeners: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def exec(self, role: str, *argv: str, check: bool = True) -> str:
        return run(["ip", "netns", "exec", self.ns[role], *argv], check=check)

    def start_http(self, role: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[role], sys.executable, "-c", HTTP, role],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        self.servers[role] = proc

    def stop_http(self, role: str) -> None:
        proc = self.servers.pop(role)
        proc.kill()
        proc.wait()

    def config(self, role: str) -> Path:
        return self.tmp / role / "kanotify.toml"

    def kanotify(self, role: str, *args: str) -> str:
        return self.exec(role, KANOTIFY, "--config", str(self.config(role)), *args)

    def weights(self, role: str = "dir") -> dict[str, int]:
        result = {}
        for line in self.exec(role, "ipvsadm", "-Ln").splitlines():
            words = line.split()
            if len(words) >= 4 and words[0] == "->" and words[1] != "RemoteAddress:Port":
                result[words[1].split(":")[0]] = int(words[3])
        return result

    def health(self, role: str) -> dict[str, bool]:
        report = json.loads(self.kanotify(role, "status", "--json"))
        return {r["real"].split(":")[0]: r["up"] for r in report["health"]["reals"]}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    tag = secrets.token_hex(2)
    roles = ("dir", "dir2", "cl", "rs1", "rs2")
    addresses = {"dir": "192.0.2.1", "dir2": "192.0.2.2", "cl": "192.0.2.10", "rs1": "192.0.2.21",
                 "rs2": "192.0.2.22"}
    net = Net({role: f"kh-{tag}-{role}" for role in roles}, tmp_path)
    bridge = f"kh{tag}br"
    ends: list[str] = []
    try:
        add_bridge(bridge)
        for role in roles:
            # made: unused, the cleanup deletes every namespace of net.ns
            add_bridged_namespace(net.ns[role], f"kh{tag}{role}", bridge, addresses[role], [], ends)
        for role in ("rs1", "rs2"):
            dr_real_server(net.ns[role], VIP)
            net.start_http(role)
        for role in ("dir", "dir2"):
            (tmp_path / role).mkdir()
            net.config(role).write_text(CONFIG.format(tmp=tmp_path / role))
            net.config(role).chmod(0o600)
            with open(tmp_path / role / "listen.log", "wb") as log:
                net.listeners[role] = subprocess.Popen(
                    ["ip", "netns", "exec", net.ns[role], KANOTIFY, "--config", str(net.config(role)), "listen"],
                    stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while not (tmp_path / role / "state" / "control.sock").exists():
                assert time.monotonic() < deadline, (tmp_path / role / "listen.log").read_text()
                time.sleep(0.05)
        yield net
    finally:
        for proc in [*net.servers.values(), *net.listeners.values()]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for end in ends:
            subprocess.run(["ip", "link", "del", end], capture_output=True)
        for ns in net.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


class Client(threading.Thread):
    """One HTTP request to the VIP every 100 ms from the client's namespace: (time, source port, who answered or None).

    Each request binds a source port of its own (counting up from ``FIRST_PORT``, below the
    ephemeral range): a new connection, never one IPVS could take for an earlier one's.
    ``errors`` has, for each request that failed, its time, its source port and what went wrong.
    """

    FIRST_PORT = 20000

    def __init__(self, ns: str) -> None:
        super().__init__(daemon=True)
        self.ns = ns
        self.log: list[tuple[float, int, str | None]] = []
        self.errors: list[tuple[float, int, str]] = []
        self.done = threading.Event()
        self.next_port = self.FIRST_PORT

    def run(self) -> None:
        while not self.done.is_set():
            started, port = time.monotonic(), self.next_port
            self.next_port += 1
            self.log.append((started, port, request(self.ns, port, self.errors)))
            self.done.wait(max(0.0, 0.1 - (time.monotonic() - started)))


def request(ns: str, port: int, errors: list[tuple[float, int, str]], timeout: float = 1.0) -> str | None:
    """``GET /`` from 192.0.2.10:``port`` to the VIP: the name of the real server that answered, or None."""
    started = time.monotonic()

    def bound() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("192.0.2.10", port))
        return sock

    try:
        sock: socket.socket = call_in(ns, bound)
        with sock:
            sock.settimeout(timeout)
            sock.connect((VIP, 80))
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        if data.startswith(b"HTTP/1.0 200"):
            return data.rsplit(b"\r\n\r\n", 1)[-1].decode()
        errors.append((started, port, f"answer {data[:40]!r}"))
    except OSError as exc:
        errors.append((started, port, f"{type(exc).__name__}: {exc} after {time.monotonic() - started:.2f}s"))
    return None


def _wait(predicate: Any, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def test_a_stopped_real_server_is_drained_under_traffic_and_comes_back(net: Net) -> None:
    net.kanotify("dir", "master", "VI_1")
    net.kanotify("dir2", "backup", "VI_1")
    assert net.weights("dir") == {"192.0.2.21": 1, "192.0.2.22": 1}
    assert _wait(lambda: net.health("dir") == {"192.0.2.21": True, "192.0.2.22": True}, 10) is not None
    client = Client(net.ns["cl"])
    client.start()
    try:
        time.sleep(2)
        assert {who for _, _, who in client.log} == {"rs1", "rs2"}
        killed = time.monotonic()
        net.stop_http("rs1")
        took = _wait(lambda: net.weights("dir").get("192.0.2.21") == 0, BOUND + 5)
        drained = time.monotonic()
        assert took is not None and took <= BOUND + 0.5, (took, BOUND)
        time.sleep(3)
        after = [who for t, _, who in list(client.log) if t > drained + 0.2]
        # no request fails after the drain (what went wrong, when, and the director's connections, if one did)
        assert after and all(who == "rs2" for who in after), (
            [(round(t - drained, 2), port, who) for t, port, who in client.log if t > drained + 0.2 and who != "rs2"],
            [(round(t - drained, 2), port, why) for t, port, why in client.errors if t > drained + 0.2],
            net.exec("dir", "ipvsadm", "-Lnc", check=False))
        failed_before = sum(1 for t, _, who in client.log if killed <= t <= drained and who is None)
        # IPVS's rule the client steers clear of: a client address:port that went to rs1 before goes there again
        # (its entry is kept after the connection ended), weight 0 or not; expire_nodest_conn = 1 sends it to a
        # server with weight instead (docs/health.md)
        reused = [port for t, port, who in list(client.log) if who == "rs1" and t < killed]
        errors: list[tuple[float, int, str]] = []
        assert request(net.ns["cl"], reused[0], errors) is None and "ConnectionRefusedError" in errors[0][2], errors
        net.exec("dir", "sysctl", "-q", "-w", "net.ipv4.vs.expire_nodest_conn=1")
        # ip_vs_in_hook expires the old entry on the new SYN, but DROPS that SYN when the old flow still has a
        # confirmed conntrack entry (ip_vs loads nf_conntrack), and the entry is only gone once the expiry timer
        # could unlink it (ip_vs_conn_expire re-arms it while a reference is held): the connection is then made by
        # one of the client's SYN retransmissions (1 s, 3 s, 7 s). Seen here about once in eight runs with 1 s or
        # 3 s waits (both SYNs dropped); so this request waits for the retransmissions, and says how long it took.
        before = net.exec("dir", "ipvsadm", "-Lnc", check=False)
        asked = time.monotonic()
        assert request(net.ns["cl"], reused[1], errors, timeout=8.0) == "rs2", (
            errors, reused[1], before, net.exec("dir", "ipvsadm", "-Lnc", check=False),
            net.exec("dir", "cat", "/proc/net/nf_conntrack", check=False))
        rescheduled = time.monotonic() - asked
        # the backup director: the same health, nothing written to its IPVS
        assert _wait(lambda: net.health("dir2") == {"192.0.2.21": False, "192.0.2.22": True}, 10) is not None
        assert net.exec("dir2", "ipvsadm-save", "-n").strip() == ""
        net.start_http("rs1")
        back = _wait(lambda: net.weights("dir").get("192.0.2.21") == 1, INTERVAL * 2 + TIMEOUT + 5)
        assert back is not None
        restored = time.monotonic()
        time.sleep(2)
        assert {who for t, _, who in list(client.log) if t > restored + 0.2} == {"rs1", "rs2"}
    finally:
        client.done.set()
        client.join(5)
    journal = [json.loads(line) for line in whole_lines(net.tmp / "dir" / "journal.jsonl")]
    health_runs = [r for r in journal if r["command"] == "health" and r.get("record") != "started"]
    assert [any("weight 1 -> 0" in a["action"] for a in r["actions"]) for r in health_runs] == [True, False]
    assert not [r for r in json.loads("[" + ",".join(
        (net.tmp / "dir2" / "journal.jsonl").read_text().splitlines()) + "]") if r["command"] == "health"]
    print(f"HTTP server on rs1 stopped -> weight 0 after {took:.2f}s (bound {BOUND:g}s); "
          f"{failed_before} requests failed before that, none after; restarted -> weight back after {back:.2f}s; "
          f"a reused client port answered by rs2 after {rescheduled:.2f}s (expire_nodest_conn = 1)")

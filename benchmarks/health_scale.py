#!/usr/bin/env python3
"""Health checks at scale: ``kanotify listen`` against keepalived's checker, the same TCP checks in the same run.

    .venv/bin/python benchmarks/health_scale.py --guest       # boots a UML guest (IPVS) and runs it there
    .venv/bin/python benchmarks/health_scale.py --native      # host kernel, no IPVS: kanotify's checker alone

Run as root.  Inside the guest (a kernel with IPVS, a single virtual CPU), in
network namespaces and documentation addresses only:

* ``hs-rs``: the real servers -- one process with ``--services x --reals``
  listening sockets (addresses from 198.51.100.0/24 and 203.0.113.0/24, one
  port per service) that accepts and closes every connection and notes, per
  socket and per director, when it was checked;
* ``hs-kan``: ``kanotify listen FIFO`` with a config of ``--services``
  services of ``--reals`` real servers each, every one with a ``tcp`` check
  (``interval``/``timeout``/``retry``/``retry_delay`` from the options), made
  MASTER through the FIFO (so its IPVS has every real server), plus a second
  instance with one VIP only, for the FIFO latency;
* ``hs-ka``: ``keepalived -C`` (checker only) with a keepalived.conf of the
  same virtual_servers and real_servers, each with a TCP_CHECK of the same
  ``delay_loop``/``connect_timeout``/``retry``/``delay_before_retry`` and
  ``inhibit_on_failure`` (weight 0 on failure, as kanotify's ``drain``).

Each director checks the targets from its own address, so the targets tell
their checks apart.  The phases, in one run: kanotify alone, both at once,
keepalived alone (the listener stopped; a checker is never paused, which
would bunch its checks).  Measured, each over a ``--window`` after a
``--warmup``:

* CPU (utime + stime from /proc, and utime alone) of the listener process and
  of keepalived's checker child; checks per
  second actually done and lateness (the gap between two checks of the same
  target, minus ``interval``), both as the targets saw them; kanotify's own
  count of how late its checks started (``health.json`` "late"); RSS; a
  canary process's wake-up lateness (the guest's own stalls: the host runs
  other work);
* detection, each alone and both checking: ``--kills`` real servers stop listening, a few
  hundred milliseconds apart; the time until each one's weight is 0 in each
  director's IPVS (netlink, polled every 20 ms), and the same counted from
  its first failed check (its last check before the kill + interval: the
  part that is not the luck of where the kill fell in the interval); the
  listener's health runs as its journal timed them;
* the non-health path: FIFO line -> converged (the second instance's VIP
  bound, from rtnetlink) during kanotify's checks, against the same with a
  listener whose config has no checks (keepalived not running in either).

Absolute figures in the guest mean little (a syscall costs ~5-10x, a
connect() with the kernel's work for both ends ~300 us): compare within one
run.  ``--native`` runs kanotify's phases on the host kernel (no IPVS, no
keepalived): the figures for this 2-core machine itself.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import random
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
KANOTIFY = str(Path(sys.executable).with_name("kanotify"))

TAG = uuid.uuid4().hex[:4]  # namespaces of their own: another run (or engineer) may have its own
NS_RS, NS_KAN, NS_KA = f"hs-{TAG}-rs", f"hs-{TAG}-kan", f"hs-{TAG}-ka"
#: (director namespace, its address, the real servers' end, its address) per veth pair
LINKS = {NS_KAN: ("192.0.2.1", "rs-kan", "192.0.2.2"), NS_KA: ("192.0.2.5", "rs-ka", "192.0.2.6")}
SERVICE_VIP = "192.0.2.200"
FIRST_PORT = 10000
REAL_NETS = ("198.51.100.0/24", "203.0.113.0/24")
#: the FIFO instance: MASTER binds the first, BACKUP the second (last in its plan: "converged")
FIFO_VIPS = {"MASTER": ("192.0.2.100/24", "eth0"), "BACKUP": ("192.0.2.100/32", "lo")}


def sh(*argv: str, input: str | None = None) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def real_addresses(count: int) -> list[str]:
    hosts = [str(h) for net in REAL_NETS for h in ipaddress.ip_network(net).hosts()]
    if count > len(hosts):
        raise SystemExit(f"--reals {count}: at most {len(hosts)} real servers per service")
    return hosts[:count]


@dataclass(frozen=True)
class Layout:
    """Which targets there are: service s has real servers (address j, port FIRST_PORT + s)."""

    services: int
    reals: int

    @property
    def total(self) -> int:
        return self.services * self.reals

    def target(self, index: int) -> tuple[str, int]:
        service, real = divmod(index, self.reals)
        return real_addresses(self.reals)[real], FIRST_PORT + service


# --------------------------------------------------------------------------- the real servers (own process)


def serve_targets(layout: Layout) -> None:
    """``--targets``: listen on every target; accept and close; answer the orchestrator's lines on stdin.

    Commands: ``window`` (start counting), ``report`` (counts and gaps per
    checker address since ``window``), ``close I`` (stop listening on target
    I; answers the time and each checker's last check of it), ``open I``
    (listen on it again).
    """
    need = layout.total + 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
    epoll = select.epoll()
    socks: dict[int, tuple[int, socket.socket]] = {}
    by_index: dict[int, socket.socket] = {}

    def listen(index: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(layout.target(index))
        sock.listen(128)
        socks[sock.fileno()] = (index, sock)
        by_index[index] = sock
        epoll.register(sock.fileno(), select.EPOLLIN)

    for index in range(layout.total):
        listen(index)
    epoll.register(0, select.EPOLLIN)
    last: dict[tuple[int, str], float] = {}
    gaps: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    counting = False
    pending = b""
    print("ready", flush=True)
    while True:
        events = epoll.poll()
        now = time.monotonic()
        for fd, _mask in events:
            if fd == 0:
                data = os.read(0, 65536)
                if not data:
                    return
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    words = line.decode().split()
                    if words == ["window"]:
                        counting, gaps, counts = True, {}, {}
                        answer: object = "ok"
                    elif words == ["report"]:
                        counting = False
                        answer = {src: {"checks": counts.get(src, 0), "gaps": _percentiles(g)}
                                  for src, g in gaps.items()}
                    elif words[:1] == ["close"]:
                        index = int(words[1])
                        sock = by_index.pop(index)
                        epoll.unregister(sock.fileno())
                        socks.pop(sock.fileno())
                        sock.close()
                        answer = {"at": time.monotonic(),
                                  "last": {src: t for (i, src), t in last.items() if i == index}}
                    elif words[:1] == ["open"]:
                        listen(int(words[1]))
                        answer = "ok"
                    else:
                        answer = {"error": f"unknown command {line!r}"}
                    sys.stdout.write(json.dumps(answer) + "\n")
                    sys.stdout.flush()
                continue
            entry = socks.get(fd)
            if entry is None:
                continue
            index, sock = entry
            try:
                conn, (src, _port) = sock._accept()  # type: ignore[attr-defined]  # a bare fd: cheaper
            except BlockingIOError:
                continue
            os.close(conn)
            key = (index, src)
            before = last.get(key)
            last[key] = now
            if counting:
                counts[src] = counts.get(src, 0) + 1
                if before is not None:
                    gaps.setdefault(src, []).append(now - before)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values.sort()
    pick = lambda q: values[min(len(values) - 1, int(len(values) * q))]  # noqa: E731
    return {"n": len(values), "p50": pick(0.5), "p99": pick(0.99), "max": values[-1], "min": values[0]}


def canary() -> None:
    """``--canary``: wake every 10 ms and note how late; answers ``window``/``report`` on stdin.

    A process that does nothing else: the lateness it sees is the machine's
    (the guest's one CPU busy, or the host not running the guest at all),
    which every checker in the guest suffers too.
    """
    late: list[float] = []
    poller = select.poll()
    poller.register(0, select.POLLIN)
    print("ready", flush=True)
    while True:
        start = time.monotonic()
        if poller.poll(10):
            line = sys.stdin.readline()
            if not line:
                return
            if line.strip() == "window":
                late = []
                answer: object = "ok"
            else:
                answer = _percentiles(late)
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
            continue
        late.append(time.monotonic() - start - 0.01)


class Targets:
    """The real servers' process (or the canary), driven over its stdin/stdout."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{' '.join(argv)} did not start")

    @classmethod
    def real_servers(cls, layout: Layout) -> "Targets":
        return cls(["ip", "netns", "exec", NS_RS, sys.executable, __file__, "--targets", "--services",
                    str(layout.services), "--reals", str(layout.reals)])

    def ask(self, line: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# --------------------------------------------------------------------------- namespaces


def make_network(layout: Layout) -> None:
    sh("ip", "netns", "add", NS_RS)
    sh("ip", "-n", NS_RS, "link", "set", "lo", "up")
    for ns, (addr, rs_end, rs_addr) in LINKS.items():
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", rs_end, "netns", NS_RS)
        sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", NS_RS, "addr", "add", f"{rs_addr}/30", "dev", rs_end)
        sh("ip", "-n", NS_RS, "link", "set", rs_end, "up")
        for net in REAL_NETS:
            sh("ip", "-n", ns, "route", "add", net, "via", rs_addr)
    batch = "".join(f"addr add {a}/32 dev lo\n" for a in real_addresses(layout.reals))
    sh("ip", "-n", NS_RS, "-batch", "-", input=batch)


def remove_network() -> None:
    for ns in (NS_KAN, NS_KA, NS_RS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class Check:
    interval: float
    timeout: float
    retry: int
    retry_delay: float


def kanotify_config(tmp: Path, layout: Layout, check: Check | None) -> str:
    out = [f"""
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
garp_count = 0
reconcile_interval = 0

[[instance]]
name = "VI_1"
"""]
    addresses = real_addresses(layout.reals)
    for s in range(layout.services):
        out.append(f"""  [[instance.service]]
  protocol = "tcp"
  address = "{SERVICE_VIP}"
  port = {FIRST_PORT + s}
  scheduler = "rr"
""")
        if check is not None:
            out.append(f"""    [instance.service.check]
    type = "tcp"
    interval = {check.interval}
    timeout = {check.timeout}
    retry = {check.retry}
    retry_delay = {check.retry_delay}
""")
        out.extend(f'    [[instance.service.real]]\n    address = "{a}"\n' for a in addresses)
    out.append(f"""
[[instance]]
name = "VI_2"
  [[instance.vip]]
  address = "{FIFO_VIPS['MASTER'][0]}"
  dev = "{FIFO_VIPS['MASTER'][1]}"
  [[instance.vip]]
  address = "{FIFO_VIPS['BACKUP'][0]}"
  dev = "{FIFO_VIPS['BACKUP'][1]}"
  states = ["backup", "fault"]
""")
    return "".join(out)


def keepalived_config(layout: Layout, check: Check) -> str:
    out = ["global_defs {\n    router_id health_scale\n}\n"]
    addresses = real_addresses(layout.reals)
    for s in range(layout.services):
        port = FIRST_PORT + s
        out.append(f"virtual_server {SERVICE_VIP} {port} {{\n    delay_loop {check.interval:g}\n"
                   "    lb_algo rr\n    lb_kind DR\n    protocol TCP\n")
        for a in addresses:
            out.append(f"    real_server {a} {port} {{\n        weight 1\n        inhibit_on_failure\n"
                       f"        TCP_CHECK {{\n            connect_timeout {check.timeout:g}\n"
                       f"            retry {check.retry}\n            delay_before_retry {check.retry_delay:g}\n"
                       "        }\n    }\n")
        out.append("}\n")
    return "".join(out)


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- processes and /proc


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ipvs_counts(pid: int) -> tuple[int, int]:
    """(services, real servers) in the IPVS of ``pid``'s network namespace."""
    from scale import count_ipvs

    return count_ipvs(f"/proc/{pid}/net/ip_vs")


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> float:
    start = time.monotonic()
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: the process exited {proc.returncode}: "
                             + (log.read_text()[-2000:] if log else ""))
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{what}: not within {timeout:g}s" + (": " + log.read_text()[-2000:] if log else ""))
        time.sleep(0.05)
    return time.monotonic() - start


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Listener:
    """``kanotify listen FIFO`` in the kanotify director's namespace."""

    tmp: Path
    proc: subprocess.Popen[bytes]
    fifo: int  # a writer on its FIFO
    log: Path

    @classmethod
    def start(cls, tmp: Path, config: Path, profile: Path | None = None) -> "Listener":
        fifo = tmp / "notify.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        writer = os.open(fifo, os.O_RDWR)
        log = tmp / "listen.log"
        argv = [KANOTIFY]
        if profile is not None:  # the loop thread only: where the checks run
            argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "kanotify"]
        sock = tmp / "state" / "control.sock"
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", NS_KAN, *argv, "--config", str(config), "listen",
                                     str(fifo)], stdout=out, stderr=subprocess.STDOUT)
        listener = cls(tmp, proc, writer, log)
        wait_for("kanotify listen", sock.exists, 120, proc, log)
        return listener

    def line(self, text: str) -> None:
        os.write(self.fifo, (text + "\n").encode())

    def stop(self) -> None:
        stop(self.proc, 120)
        os.close(self.fifo)
        (self.tmp / "state" / "control.sock").unlink(missing_ok=True)


@dataclass
class Keepalived:
    proc: subprocess.Popen[bytes]
    pid_file: Path
    checker_pid_file: Path
    log: Path

    @classmethod
    def start(cls, tmp: Path, conf: Path) -> "Keepalived":
        log = tmp / "keepalived.log"
        pid, cpid = tmp / "keepalived.pid", tmp / "checkers.pid"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", NS_KA, "keepalived", "-n", "-l", "-C", "-f", str(conf),
                                     "-p", str(pid), "-c", str(cpid)], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        ka = cls(proc, pid, cpid, log)
        wait_for("keepalived's checker", lambda: cpid.exists() and cpid.read_text().strip() != "", 60, proc, log)
        return ka

    @property
    def checker(self) -> int:
        return int(self.checker_pid_file.read_text())

    def stop(self) -> None:
        stop(self.proc, 60)


# --------------------------------------------------------------------------- the figures


@dataclass
class Window:
    """One measuring window: per process CPU seconds and RSS, per checker its checks as the targets saw them."""

    seconds: float
    cpu: dict[str, float]  # user + system
    user: dict[str, float]  # user only: the checker's own code (system time is also where the kernel's network work
    # for both ends of each connection lands, shared out between processes by who happens to be running)
    rss: dict[str, float]
    checks: dict[str, dict[str, Any]]
    late: dict[str, int]  # kanotify's own count of the checks it started, by how late (health.json "late")
    canary: dict[str, float]  # how late a process that only sleeps 10 ms at a time woke up


@dataclass
class Figures:
    """Everything measured, for the table."""

    layout: Layout
    check: Check
    windows: dict[str, Window] = field(default_factory=dict)
    #: phase ("alone", "together") -> director -> seconds, for each real server stopped
    detect: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    detect_after_fail: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    undetected: dict[str, dict[str, int]] = field(default_factory=dict)
    fifo: dict[str, list[float]] = field(default_factory=dict)
    #: from kanotify's journal: how long its runs took (ms), by kind
    runs: dict[str, list[float]] = field(default_factory=dict)
    journal_read: int = 0
    fifo_written: list[float] = field(default_factory=list)  # wall clock of each FIFO line written
    fifo_runs: int = 0  # the FIFO instance's journal records seen
    setup: dict[str, float] = field(default_factory=dict)
    setup_names: set[str] = field(default_factory=set)  # the checkers that ran
    canary: Any = None  # the canary process (a Targets)


def kanotify_late(state_dir: Path) -> dict[str, int]:
    from kanotify.daemon.healthreport import read_report

    report = read_report(str(state_dir))
    return dict(report.late) if report is not None else {}


def measure_window(targets: Targets, canary: Targets, pids: dict[str, int], window: float,
                   state_dir: Path) -> Window:
    """CPU, checks and lateness over the same ``window`` seconds for every process in ``pids``."""
    targets.ask("window")
    canary.ask("window")
    late0 = kanotify_late(state_dir)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.monotonic()
    time.sleep(window)
    seconds = time.monotonic() - start
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu = {name: sum(after[name]) - sum(before[name]) for name in pids}
    user = {name: after[name][0] - before[name][0] for name in pids}
    rss = {name: rss_mib(pid) for name, pid in pids.items()}
    report = targets.ask("report")
    late = {bound: n - late0.get(bound, 0) for bound, n in kanotify_late(state_dir).items()}
    names = {LINKS[NS_KAN][0]: "kanotify", LINKS[NS_KA][0]: "keepalived"}
    return Window(seconds, cpu, user, rss, {names.get(src, src): data for src, data in report.items()}, late,
                  canary.ask("report"))


def measure_detection(fig: Figures, phase: str, targets: Targets, layout: Layout, check: Check, kills: int,
                      directors: dict[str, str], spacing: float) -> None:
    """Stop ``kills`` real servers ``spacing`` seconds apart (jittered); time their weight 0 in each director.

    ``phase`` is what else was checking: "alone" (only the one director) or
    "together"; each call stops other real servers.
    """
    from kanotify.backends.ipvs import IpvsBackend
    from kanotify.model import ServiceKey

    detect = fig.detect.setdefault(phase, {})
    after_fail = fig.detect_after_fail.setdefault(phase, {})
    undetected = fig.undetected.setdefault(phase, {})
    rng = random.Random(12 + sum(len(d) for d in fig.detect.values()))
    picked = sorted(rng.sample(range(layout.total), kills))
    backends = {name: IpvsBackend(netns=ns) for name, ns in directors.items()}
    source = {"kanotify": LINKS[NS_KAN][0], "keepalived": LINKS[NS_KA][0]}
    pending: dict[tuple[str, int], float] = {}  # (director, target) -> killed at
    first_fail: dict[tuple[str, int], float] = {}
    for name in directors:
        detect[name], after_fail[name] = [], []
    kill_at = time.monotonic()
    closed: list[int] = []
    schedule = []
    for index in picked:
        schedule.append((kill_at, index))
        kill_at += spacing * rng.uniform(0.5, 1.5)
    bound = check.interval * (check.retry + 1) + check.timeout + 30
    try:
        while schedule or pending:
            now = time.monotonic()
            while schedule and schedule[0][0] <= now:
                _, index = schedule.pop(0)
                answer = targets.ask(f"close {index}")
                closed.append(index)
                for name in directors:
                    pending[(name, index)] = answer["at"]
                    last = answer["last"].get(source[name])
                    if last is not None:
                        first_fail[(name, index)] = last + check.interval
            by_service: dict[tuple[str, int], list[int]] = {}
            for name, index in pending:
                by_service.setdefault((name, index // layout.reals), []).append(index)
            for (name, service), indexes in by_service.items():
                key = ServiceKey.inet("tcp", ipaddress.ip_address(SERVICE_VIP), FIRST_PORT + service)
                reals = backends[name].reals(key)
                seen = time.monotonic()
                for index in indexes:
                    address, port = layout.target(index)
                    entry = reals.get((ipaddress.ip_address(address), port))
                    killed = pending[(name, index)]
                    if entry is not None and entry[0].weight == 0:
                        detect[name].append(seen - killed)
                        if (name, index) in first_fail:
                            after_fail[name].append(seen - first_fail[(name, index)])
                        del pending[(name, index)]
                    elif seen - killed > bound:
                        undetected[name] = undetected.get(name, 0) + 1
                        del pending[(name, index)]
            time.sleep(0.02)
    finally:
        for backend in backends.values():
            backend.close()
        for index in closed:  # back, so that what is measured next checks 10,000 live ones again
            targets.ask(f"open {index}")


def measure_fifo(listener: Listener, events: int, written: list[float]) -> list[float]:
    """FIFO line -> the second instance's last VIP bound (its RTM_NEWADDR), ``events`` times, alternating."""
    from kanotify.backends.netns import call_in
    from listen_path import NewAddr

    def inner() -> list[float]:
        watch = NewAddr()
        samples = []
        try:
            for _ in range(events):
                state = ("MASTER", "BACKUP")[len(written) % 2]  # alternating across calls: a change each time
                watch.drain()
                start = time.perf_counter()
                written.append(time.time())
                listener.line(f'INSTANCE "VI_2" {state} 100')
                samples.append(watch.wait(*FIFO_VIPS[state], timeout=60) - start)
                time.sleep(0.3)  # its verify and journal, before the next line
        finally:
            watch.sock.close()
        return samples

    return call_in(NS_KAN, inner)


# --------------------------------------------------------------------------- the run


def journal_runs(fig: Figures, path: Path, phase: str, health: str = "") -> None:
    """The durations of the health runs and of the FIFO instance's runs journaled since the last call.

    ``phase`` names the FIFO runs, ``health`` (what else was checking) the health runs.
    """
    lines = path.read_text().splitlines()
    for line in lines[fig.journal_read:]:
        record = json.loads(line)
        if record.get("record") == "started":  # the same run's final record follows, with its duration
            continue
        if record.get("command") == "health":
            fig.runs.setdefault(f"health runs (drains){health}", []).append(record["duration_ms"])
        elif record.get("command") == "repair" and phase == "without checks":
            fig.runs.setdefault("start-up repair, no checks (restores)", []).append(record["duration_ms"])
        elif record.get("instance") == "VI_2":
            fig.runs.setdefault(f"FIFO runs, {phase}", []).append(record["duration_ms"])
            # from the line written to the run's start (its end, ts, less its duration)
            ended = datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
            if fig.fifo_runs < len(fig.fifo_written):
                waited = (ended - record["duration_ms"] / 1000 - fig.fifo_written[fig.fifo_runs]) * 1000
                fig.runs.setdefault(f"FIFO line -> run starts, {phase}", []).append(waited)
            fig.fifo_runs += 1
    fig.journal_read = len(lines)


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(args: argparse.Namespace, fig: Figures) -> None:
    """Every phase in order, filling ``fig``; namespaces and processes are removed even on failure.

    kanotify alone (a window, then the FIFO events), both together (a window,
    then the detection), keepalived alone (the listener stopped); last, the
    FIFO events again with a listener that has no checks (keepalived stopped
    too, as in the first FIFO phase).  A checker is never paused (SIGSTOP):
    resumed, all its checks would be due at once and stay bunched.
    """
    layout, check = fig.layout, fig.check
    tmp = Path(tempfile.mkdtemp(prefix="kanotify-hscale-"))
    state = tmp / "state"
    remove_network()
    make_network(layout)
    targets = Targets.real_servers(layout)
    fig.canary = Targets([sys.executable, __file__, "--canary"])
    listener: Listener | None = None
    keepalived: Keepalived | None = None
    try:
        conf = write_private(tmp / "kanotify.toml", kanotify_config(tmp, layout, check))
        started = time.monotonic()
        progress(f"kanotify listen: {layout.total} real servers")
        listener = Listener.start(tmp, conf, tmp / "listen.prof" if args.profile else None)
        fig.setup["kanotify listen start"] = time.monotonic() - started
        if not args.native:
            started = time.monotonic()
            listener.line('INSTANCE "VI_1" MASTER 100')
            proc = listener.proc
            wait_for("kanotify's IPVS", lambda: ipvs_counts(proc.pid) == (layout.services, layout.total),
                     600, proc, listener.log)
            fig.setup["kanotify: MASTER, every real server in IPVS"] = time.monotonic() - started
        progress(f"kanotify alone: warm-up {args.warmup:g}s, window {args.window:g}s")
        time.sleep(args.warmup)
        pids = {"kanotify": listener.proc.pid, "real servers": targets.proc.pid}
        fig.windows["kanotify alone"] = measure_window(targets, fig.canary, pids, args.window, state)
        progress("FIFO events during the checks (keepalived not running)")
        fig.fifo["during the checks"] = measure_fifo(listener, args.events, fig.fifo_written)
        journal_runs(fig, tmp / "journal.jsonl", "during the checks")
        if not args.native:
            progress(f"detection, kanotify alone: {args.kills} real servers stopped")
            measure_detection(fig, "alone", targets, layout, check, args.kills, {"kanotify": NS_KAN}, args.kill_spacing)
            journal_runs(fig, tmp / "journal.jsonl", "during the checks", ", kanotify alone")
            ka_conf = write_private(tmp / "keepalived.conf", keepalived_config(layout, check))
            progress("keepalived -C")
            started = time.monotonic()
            keepalived = Keepalived.start(tmp, ka_conf)
            ka_pid = keepalived.checker
            wait_for("keepalived's IPVS", lambda: ipvs_counts(ka_pid) == (layout.services, layout.total),
                     600, keepalived.proc, keepalived.log)
            fig.setup["keepalived -C: every real server in IPVS"] = time.monotonic() - started
            fig.setup_names.add("keepalived")
            pids.update({"keepalived": ka_pid, "keepalived parent": keepalived.proc.pid})
            progress(f"together: warm-up {args.warmup:g}s, window {args.window:g}s")
            time.sleep(args.warmup)
            fig.windows["together"] = measure_window(targets, fig.canary, pids, args.window, state)
            progress(f"detection: {args.kills} real servers stopped")
            measure_detection(fig, "together", targets, layout, check, args.kills,
                              {"kanotify": NS_KAN, "keepalived": NS_KA},
                              args.kill_spacing)
            journal_runs(fig, tmp / "journal.jsonl", "during the checks", ", both checking")
            listener.stop()
            listener = None
            del pids["kanotify"]
            progress(f"keepalived alone (the listener stopped): {args.settle:g}s, window {args.window:g}s")
            time.sleep(args.settle)
            fig.windows["keepalived alone"] = measure_window(targets, fig.canary, pids, args.window, state)
            progress(f"detection, keepalived alone: {args.kills} real servers stopped")
            measure_detection(fig, "alone", targets, layout, check, args.kills, {"keepalived": NS_KA},
                              args.kill_spacing)
            keepalived.stop()
            keepalived = None
        if listener is not None:
            listener.stop()
            listener = None
        if args.profile:
            print_profile(tmp / "listen.prof")
        plain = write_private(tmp / "kanotify-nocheck.toml", kanotify_config(tmp, layout, None))
        progress("FIFO events, a listener without checks (keepalived not running)")
        listener = Listener.start(tmp, plain)
        time.sleep(5)  # its start-up repair
        fig.fifo["without checks"] = measure_fifo(listener, args.events, fig.fifo_written)
        journal_runs(fig, tmp / "journal.jsonl", "without checks")
    except BaseException:
        for log in (tmp / "listen.log", tmp / "keepalived.log"):
            if log.exists():
                print(f"--- {log.name} (tail) ---\n" + "\n".join(log.read_text().splitlines()[-40:]))
        raise
    finally:
        if listener is not None:
            listener.stop()
        if keepalived is not None:
            keepalived.stop()
        targets.close()
        fig.canary.close()
        remove_network()


def print_profile(path: Path) -> None:
    import pstats

    if path.exists():
        print("--- the listener's loop thread, by own time ---")
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)


def report(fig: Figures) -> None:
    """The table (only what was measured, if the run stopped early)."""
    c, lay = fig.check, fig.layout
    print(f"\n{lay.total} real servers ({lay.services} services x {lay.reals}), tcp checks every {c.interval:g}s, "
          f"timeout {c.timeout:g}s, retry {c.retry}, retry_delay {c.retry_delay:g}s")
    for what, seconds in fig.setup.items():
        print(f"  setup: {what}: {seconds:.1f}s")

    def row(label: str, values: list[str], ratio: str = "") -> None:
        print(f"{label:<48}" + "".join(f"{v:>14}" for v in values) + (f"{ratio:>10}" if ratio else ""))

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a is not None and b else ""

    def pair(values: list[float | None]) -> str:
        return ratio(values[0], values[1]) if len(values) == 2 else ""

    names = ["kanotify", "keepalived"] if "keepalived" in fig.setup_names else ["kanotify"]
    for title, keys in (("each checking alone", [f"{n} alone" for n in names]),
                        ("both checking at once", ["together"] * len(names))):
        if not all(k in fig.windows for k in keys):
            continue
        ws = [fig.windows[k] for k in keys]
        # (no "how busy was the machine": a UML guest's idle counter does not count what its one CPU did)
        print(f"\n{title}: windows of {', '.join(f'{w.seconds:.0f}s' for w in ws)}")
        row("figure", names, "ratio" if len(names) == 2 else "")
        cpu: list[float | None] = [w.cpu[n] / w.seconds for n, w in zip(names, ws)]
        row("CPU % of one core (user + system)", [f"{v * 100:.1f}" for v in cpu if v is not None], pair(cpu))
        user: list[float | None] = [w.user[n] / w.seconds for n, w in zip(names, ws)]
        row("  of which user", [f"{v * 100:.1f}" for v in user if v is not None], pair(user))
        rate: list[float | None] = [w.checks.get(n, {}).get("checks", 0) / w.seconds for n, w in zip(names, ws)]
        row(f"checks/s done (due: {lay.total / c.interval:.0f})", [f"{v:.0f}" for v in rate if v is not None],
            pair(rate))
        per = [cu / ra * 1e6 if cu is not None and ra else None for cu, ra in zip(cpu, rate)]
        row("CPU microseconds per check", [f"{v:.0f}" if v else "-" for v in per], pair(per))
        for q in ("p50", "p99", "max"):
            late = [w.checks.get(n, {}).get("gaps", {}).get(q) for n, w in zip(names, ws)]
            row(f"lateness {q} (gap between checks - interval), s",
                [f"{v - c.interval:+.3f}" if v is not None else "-" for v in late])
        rss: list[float | None] = [w.rss[n] for n, w in zip(names, ws)]
        row("RSS MiB", [f"{v:.1f}" for v in rss if v is not None], pair(rss))
        mine = ws[0]
        if mine.late:
            total = sum(mine.late.values()) or 1
            print("  kanotify's own count of the checks it started, by how late after their tick: " + ", ".join(
                f"<= {k}s {n / total * 100:.1f}%" if k != "more" else f"later {n / total * 100:.1f}%"
                for k, n in mine.late.items()))
        if "keepalived parent" in ws[-1].cpu:
            print(f"  (keepalived's parent process: {ws[-1].cpu['keepalived parent'] / ws[-1].seconds * 100:.1f}% "
                  f"of a core, {ws[-1].rss['keepalived parent']:.1f} MiB)")
        print("  (a process that only sleeps 10 ms at a time woke late by: " + "; ".join(
            f"p50 {w.canary.get('p50', 0) * 1000:.1f} ms, p99 {w.canary.get('p99', 0) * 1000:.1f} ms, "
            f"max {w.canary.get('max', 0) * 1000:.0f} ms" for w in ws) + ")")
        print("  (the real servers' process: " + ", ".join(
            f"{w.cpu['real servers'] / w.seconds * 100:.1f}%" for w in ws) + " of a core)")
    for phase, title in (("alone", "each checking alone"), ("together", "both checking at once")):
        detect = fig.detect.get(phase)
        if not detect:
            continue
        print()
        row(f"detection, {title}", names, "ratio")
        for label, data in (("stopped -> weight 0", detect),
                            ("first failed check -> weight 0", fig.detect_after_fail[phase])):
            for what, fn in (("mean", statistics.mean), ("median", statistics.median), ("max", max)):
                values: list[float | None] = [fn(data[n]) if data.get(n) else None for n in names]
                row(f"  {label}, {what} s", [f"{v:.2f}" if v is not None else "-" for v in values], pair(values))
        undetected = fig.undetected.get(phase) or "none"
        print(f"  ({len(detect['kanotify']) + fig.undetected[phase].get('kanotify', 0)} real servers stopped for each; "
              f"bound interval x (retry + 1) + timeout = {c.interval * (c.retry + 1) + c.timeout:g}s; "
              f"not detected: {undetected})")
    if fig.fifo:
        print("\nFIFO line -> converged (another instance's VIP bound), ms:")
        medians = []
        for name, samples in fig.fifo.items():
            ms = sorted(s * 1000 for s in samples)
            medians.append(statistics.median(ms))
            print(f"  {name:<20} median {medians[-1]:8.1f}  p90 {ms[min(len(ms) - 1, int(len(ms) * 0.9))]:8.1f}  "
                  f"max {ms[-1]:8.1f}  ({len(ms)} events)")
        if len(medians) == 2:
            print(f"  ratio during the checks / without: {ratio(*medians)}")
    if fig.runs:
        print("\nkanotify's runs as its journal timed them (duration_ms):")
        for name, ms in fig.runs.items():
            print(f"  {name:<32} median {statistics.median(ms):8.1f}  max {max(ms):8.1f}  ({len(ms)} runs)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--reals", type=int, default=100, help="real servers per service")
    parser.add_argument("--interval", type=float, default=6.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--retry", type=int, default=1)
    parser.add_argument("--retry-delay", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after both started checking")
    parser.add_argument("--window", type=float, default=40.0, help="seconds measured (each window)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds between stopping the listener and keepalived's window alone")
    parser.add_argument("--kills", type=int, default=20, help="real servers stopped for the detection times")
    parser.add_argument("--kill-spacing", type=float, default=0.4, help="mean seconds between two kills")
    parser.add_argument("--events", type=int, default=20, help="FIFO events, with and without checks")
    parser.add_argument("--profile", action="store_true", help="run the listener under cProfile, print its top")
    parser.add_argument("--native", action="store_true",
                        help="host kernel without IPVS: kanotify's checker alone (CPU, checks/s, lateness)")
    parser.add_argument("--guest", action="store_true", help="boot a user-mode Linux guest and run it there")
    parser.add_argument("--mem", default="2G", help="the guest's memory")
    parser.add_argument("--ptrace", action="store_true",
                        help="the guest's processes traced with ptrace (UML's default; twice the cost per syscall "
                             "of seccomp=on, which the guest runs with otherwise)")
    parser.add_argument("--targets", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--canary", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.targets:
        serve_targets(Layout(args.services, args.reals))
        return 0
    if args.canary:
        canary()
        return 0
    if args.guest:
        from run_in_uml import run_script

        inner = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--guest", "--ptrace")]
        inner = [a for i, a in enumerate(inner) if not (a == "--mem" or (i and inner[i - 1] == "--mem"))]
        return run_script([sys.executable, __file__, *inner], timeout=1800, mem=args.mem,
                          kernel_args=() if args.ptrace else ("seccomp=on",))
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates network namespaces)")
    if not args.native and not os.path.exists("/proc/net/ip_vs"):
        raise SystemExit("no IPVS in this kernel: use --guest (or --native for kanotify's checker alone)")
    fig = Figures(Layout(args.services, args.reals), Check(args.interval, args.timeout, args.retry, args.retry_delay))
    try:
        run(args, fig)
    finally:
        report(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())

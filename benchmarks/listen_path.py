#!/usr/bin/env python3
"""Benchmark the resident listener against the one-shot notify path, measured in the same run.

    .venv/bin/python benchmarks/listen_path.py [--events 100] [--ipvs] [--soak 10000]
    .venv/bin/python benchmarks/listen_path.py --guest [--ipvs]     # the same inside a UML guest
    .venv/bin/python benchmarks/listen_path.py --started-cost [--events 100] [--blocks 4]

Run as root.  Everything happens in a throw-away network namespace (a veth
end named eth0, documentation addresses only).  Config: 1 VIP (on eth0 as
MASTER, /32 on lo otherwise) and the 4 ARP sysctls; ``--ipvs`` adds one
service with 2 real servers (the guest has IPVS, the host does not).  GARP
is off, so neither side sends anything.  Figures, all from this run:

* FIFO line written -> converged, median of ``--events`` events alternating
  MASTER and BACKUP.  "Converged" is the kernel's own RTM_NEWADDR for the VIP
  that is bound last in each direction (eth0 on MASTER, lo on BACKUP: both
  come after the IPVS changes in kanotify's plan order), read on an rtnetlink
  socket in the namespace -- no polling;
* one-shot ``kanotify master|backup`` in its own process (``--no-daemon``), the
  same figure measured the same way;
* one-shot ``kanotify master|backup`` handed over to the running listener,
  against ``python -c pass`` (Python's own start-up);
* with ``--soak N``: the listener's RSS and open file descriptors before and
  after N more FIFO events.

``--started-cost`` measures only what the journal's ``started`` record costs on
the FIFO path: the same FIFO events against a listener as shipped and against
one whose engine writes no started record (``Engine._journal_started``
replaced by a no-op in that listener process only: a benchmark switch, not a
user-facing one), in alternating blocks (ABBA), in the same run.  It reports
FIFO line -> converged and the journal's ``duration_ms`` of those runs (from the
run's start to its final record: the started record's write is inside it), for
both, and the size of a started record.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KANOTIFY = str(Path(sys.executable).with_name("kanotify"))

from kanotify.backends.netlink import framing as nl  # noqa: E402
from kanotify.backends.netlink import rtaddr  # noqa: E402

CONFIG = """
[settings]
state_dir = "{state}"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
garp_count = 0
reconcile_interval = 0

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2
"net.ipv4.conf.lo.arp_ignore" = 1
"net.ipv4.conf.lo.arp_announce" = 2

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  label = "eth0:0"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  label = "lo:0"
  states = ["backup", "fault"]
"""

IPVS = """
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "rr"
    [[instance.service.real]]
    address = "192.0.2.21"
    [[instance.service.real]]
    address = "192.0.2.22"
"""

#: the address bound last when entering each state: its RTM_NEWADDR says "converged"
LAST = {"MASTER": ("192.0.2.100/24", "eth0"), "BACKUP": ("192.0.2.100/32", "lo")}


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


class NewAddr:
    """An rtnetlink socket in this process's namespace that reports addresses as they are added."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, rtaddr.RTMGRP_IPV4_IFADDR))

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(1 << 16)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def wait(self, address: str, dev: str, timeout: float = 30.0) -> float:
        """Block until ``address`` is added on ``dev``; the monotonic time it was read."""
        index = socket.if_nametoindex(dev)
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(1 << 16)
            now = time.perf_counter()
            for msg in nl.iter_messages(data):
                if msg.type == rtaddr.RTM_NEWADDR:
                    found = rtaddr.decode(msg.payload)
                    if found is not None and found.index == index and found.interface.with_prefixlen == address:
                        return now


def start_listener(command: list[str], conf: Path, fifo: Path, state: Path, logfile: Path) -> subprocess.Popen[bytes]:
    """``kanotify listen FIFO`` with its output appended to ``logfile``, once its control socket is there."""
    with open(logfile, "ab") as log:
        listener = subprocess.Popen([*command, "--config", str(conf), "listen", str(fifo)], stdout=log,
                                    stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (state / "control.sock").exists():
        if listener.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the listener did not start: " + logfile.read_text()[-2000:])
        time.sleep(0.01)
    time.sleep(1.0)  # its start-up reconcile
    return listener


def inner(args: argparse.Namespace) -> None:
    """The measurements; runs inside the namespace."""
    tmp = Path(args.tmp)
    conf = tmp / "kanotify.toml"
    watch = NewAddr()
    results: dict[str, list[float]] = {"one-shot, in-process": [], "FIFO line -> converged": [],
                                       "one-shot, handed to the listener": [], "python -c pass": []}

    def one_shot(state: str, *extra: str) -> float:
        """The whole process, from exec to exit (its answer printed)."""
        start = time.perf_counter()
        proc = subprocess.run([KANOTIFY, "--config", str(conf), *extra, state.lower()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise SystemExit(f"kanotify {state} failed: {proc.stderr.decode()[-500:]}")
        return time.perf_counter() - start

    states = ["MASTER", "BACKUP"]
    one_shot("BACKUP", "--no-daemon")  # warm caches
    for i in range(args.events):
        state = states[i % 2]
        watch.drain()
        start = time.perf_counter()
        proc = subprocess.Popen([KANOTIFY, "--config", str(conf), "--no-daemon", state.lower()],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        done = watch.wait(*LAST[state])
        if proc.wait() != 0:
            raise SystemExit(f"kanotify {state} failed: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
        results["one-shot, in-process"].append(done - start)

    fifo = tmp / "notify.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)
    listener = start_listener([KANOTIFY], conf, fifo, Path(args.state), tmp / "listen.log")
    try:
        for i in range(args.events):
            state = states[i % 2]
            watch.drain()
            start = time.perf_counter()
            os.write(writer, f'INSTANCE "VI_1" {state} 100\n'.encode())
            results["FIFO line -> converged"].append(watch.wait(*LAST[state]) - start)
            time.sleep(0.02)  # let it verify and journal before the next line
        for i in range(args.rounds):
            results["one-shot, handed to the listener"].append(one_shot(states[i % 2]))
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            results["python -c pass"].append(time.perf_counter() - start)
        soak = None
        if args.soak:
            before = _proc_status(listener.pid)
            batch = 200
            for start_i in range(0, args.soak, batch):
                lines = "".join(f'INSTANCE "VI_1" {states[(start_i + j) % 2]} 100\n' for j in range(batch))
                os.write(writer, lines.encode())
                time.sleep(0.05)
            _wait_journal(tmp / "journal.jsonl", args.soak + 2 * args.events + args.rounds)
            time.sleep(1.0)
            soak = (before, _proc_status(listener.pid))
    finally:
        listener.terminate()
        listener.wait(30)
        os.close(writer)

    print(f"listener vs one-shot, {args.events} events, config: 1 VIP + 4 sysctls"
          + (" + 1 IPVS service x 2 reals" if args.ipvs else "") + " (ms):")
    print(f"{'figure':<36} {'median':>8} {'p90':>8} {'min':>8}")
    for name, samples in results.items():
        ms = sorted(s * 1000 for s in samples)
        p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
        print(f"{name:<36} {statistics.median(ms):8.2f} {p90:8.2f} {ms[0]:8.2f}")
    fifo_ms = statistics.median(results["FIFO line -> converged"])
    one_ms = statistics.median(results["one-shot, in-process"])
    handed = statistics.median(results["one-shot, handed to the listener"])
    python = statistics.median(results["python -c pass"])
    print(f"ratio FIFO -> converged / one-shot in-process: {fifo_ms / one_ms:.3f}x (target <= 0.1x)")
    print(f"ratio one-shot handed over / python -c pass: {handed / python:.2f}x (target <= 2x)")
    if soak is not None:
        (rss0, fds0), (rss1, fds1) = soak
        print(f"soak: {args.soak} more FIFO events: listener RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
              f"({(rss1 - rss0) / 1024:+.2f} MiB, target < 5), open fds {fds0} -> {fds1}")


#: the listener without started records: the engine's method replaced in that process only
NO_STARTED = ("import sys; import kanotify.engine as e; e.Engine._journal_started = lambda self, run: None; "
              "from kanotify.__main__ import main; sys.argv[0] = 'kanotify'; main()")


def started_cost(args: argparse.Namespace) -> None:
    """FIFO line -> converged with and without the started record, ABBA blocks, the same run."""
    tmp = Path(args.tmp)
    conf = tmp / "kanotify.toml"
    journal = tmp / "journal.jsonl"
    watch = NewAddr()
    states = ["MASTER", "BACKUP"]
    variants = {"with started record (as shipped)": [KANOTIFY],
                "without (monkeypatched off)": [sys.executable, "-c", NO_STARTED]}
    latency: dict[str, list[float]] = {name: [] for name in variants}
    duration: dict[str, list[float]] = {name: [] for name in variants}
    started_bytes: list[int] = []
    fifo = tmp / "notify.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)
    order = list(variants)
    blocks = [order[i % 2] if (i // 2) % 2 == 0 else order[1 - i % 2] for i in range(args.blocks * 2)]  # ABBA...
    try:
        for name in blocks:
            listener = start_listener(variants[name], conf, fifo, Path(args.state), tmp / "listen.log")
            try:
                lines_before = _lines(journal)
                for i in range(args.events):
                    state = states[i % 2]
                    watch.drain()
                    start = time.perf_counter()
                    os.write(writer, f'INSTANCE "VI_1" {state} 100\n'.encode())
                    latency[name].append(watch.wait(*LAST[state]) - start)
                    time.sleep(0.02)  # let it verify and journal before the next line
                deadline = time.monotonic() + 60
                while len(_fifo_finals(journal, lines_before)) < args.events:  # the last one's final record
                    if time.monotonic() > deadline:
                        raise SystemExit("the listener did not journal every event")
                    time.sleep(0.05)
            finally:
                listener.terminate()
                listener.wait(30)
            with open(journal) as fh:
                records = [json.loads(line) for line in list(fh)[lines_before:]]
            duration[name] += [r["duration_ms"] for r in records
                               if r.get("record") != "started" and r["command"].startswith("fifo")]
            started = [len(json.dumps(r, separators=(",", ":"))) + 1 for r in records if r.get("record") == "started"]
            if (name == order[0]) != bool(started):
                raise SystemExit(f"{name}: {len(started)} started records in its block")
            started_bytes += started
    finally:
        os.close(writer)
    print(f"the journal's started record on the FIFO path: {args.blocks * 2} blocks of {args.events} events, "
          "ABBA, config: 1 VIP + 4 sysctls" + (" + 1 IPVS service x 2 reals" if args.ipvs else "") + " (ms):")
    print(f"{'figure':<58} {'median':>8} {'p90':>8} {'min':>8}")
    for label, table in (("FIFO line -> converged", latency), ("journal duration_ms", duration)):
        for name, samples in table.items():
            ms = sorted(s * 1000 for s in samples) if table is latency else sorted(samples)
            p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
            print(f"{label + ', ' + name:<58} {statistics.median(ms):8.2f} {p90:8.2f} {ms[0]:8.2f}")
    with_, without = (statistics.median(latency[name]) * 1000 for name in variants)
    print(f"started record: {with_ - without:+.2f} ms on the median FIFO line -> converged "
          f"({(with_ / without - 1) * 100:+.1f}%); {statistics.median(started_bytes):.0f} bytes per started record")
    # the append alone: one of the listener's started records, and the same with 300 VIPs to bind
    from kanotify.journal import Journal

    with open(journal) as fh:
        record = next(r for r in map(json.loads, fh) if r.get("record") == "started")
    big = {**record, "actions": [{"action": f"bind 198.51.100.{k % 250}/32 dev lo label lo:{k}", "status": "pending"}
                                 for k in range(300)]}
    for label, sample in (("this config's", record), ("a 300-VIP master's", big)):
        scratch = Journal(str(tmp / "append.jsonl"))
        times = []
        for _ in range(2000):
            start = time.perf_counter()
            scratch.append(sample)
            times.append(time.perf_counter() - start)
        times.sort()
        size = len(json.dumps(sample, separators=(",", ":"))) + 1
        print(f"Journal.append of {label} started record ({size} bytes), 2000 times: median "
              f"{statistics.median(times) * 1e6:.0f} us, p90 {times[1800] * 1e6:.0f} us")
        os.unlink(scratch.path)


def _fifo_finals(path: Path, skip: int) -> list[dict[str, object]]:
    with open(path) as fh:
        records = [json.loads(line) for line in list(fh)[skip:] if line.endswith("\n")]
    return [r for r in records if r.get("record") != "started" and str(r.get("command")).startswith("fifo")]


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def _proc_status(pid: int) -> tuple[int, int]:
    rss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _wait_journal(path: Path, count: int, timeout: float = 600) -> None:
    """Until the journal has ``count`` final records (the started records of the runs that changed something
    are not counted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as fh:
            if sum(1 for line in fh if b'"record":"started"' not in line) >= count:
                return
        time.sleep(0.2)
    raise SystemExit(f"the journal did not reach {count} final records")


def outer(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates a network namespace)")
    ns = f"kbench-{uuid.uuid4().hex[:6]}"
    tmp = tempfile.mkdtemp(prefix="kanotify-bench-")
    # state_dir on tmpfs, as the default /run/kanotify is: its fsyncs cost nothing there (the journal stays on disk)
    state = tempfile.mkdtemp(prefix="kanotify-bench-state-", dir="/dev/shm" if os.path.isdir("/dev/shm") else "/run")
    conf = Path(tmp) / "kanotify.toml"
    conf.write_text(CONFIG.format(tmp=tmp, state=state) + (IPVS if args.ipvs else ""))
    os.chmod(conf, 0o600)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        for dev in ("lo", "eth0", "peer0"):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "eth0")
        argv = [sys.executable, __file__, "--inner", "--tmp", tmp, "--state", state, "--events", str(args.events),
                "--rounds", str(args.rounds), "--soak", str(args.soak), "--blocks", str(args.blocks)] + (
                    ["--ipvs"] if args.ipvs else []) + (["--started-cost"] if args.started_cost else [])
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=40, help="one-shots handed over, python -c pass")
    parser.add_argument("--soak", type=int, default=0, help="FIFO events for the RSS / fd check")
    parser.add_argument("--ipvs", action="store_true", help="add an IPVS service (needs IPVS: the guest)")
    parser.add_argument("--started-cost", action="store_true",
                        help="only the journal's started record: FIFO events with and without it (ABBA blocks)")
    parser.add_argument("--blocks", type=int, default=4, help="with --started-cost: blocks per variant")
    parser.add_argument("--guest", action="store_true", help="run inside a user-mode Linux guest")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner and args.started_cost:
        started_cost(args)
    elif args.inner:
        inner(args)
    elif args.guest:
        sys.path.insert(0, str(ROOT / "tests"))
        from uml import run_in_guest

        argv = [sys.executable, __file__, "--events", str(args.events), "--rounds", str(args.rounds),
                "--soak", str(args.soak), "--blocks", str(args.blocks)] + (["--ipvs"] if args.ipvs else []) + (
                    ["--started-cost"] if args.started_cost else [])
        result = run_in_guest(argv, timeout=3600, mem="1G")
        sys.stdout.write(result.output)
        print(f"[UML guest {result.console.split('Linux version ')[-1].split()[0] if 'Linux version' in result.console else ''}: "
              f"exit {result.returncode}, {result.seconds:.0f} s]")
        sys.exit(result.returncode)
    else:
        outer(args)


if __name__ == "__main__":
    main()

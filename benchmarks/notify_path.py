#!/usr/bin/env python3
"""Benchmark the failover path: ``kanotify master``/``backup`` vs a plain notify.sh.

Run as root: ``.venv/bin/python benchmarks/notify_path.py [--rounds N] [--installed /usr/bin/kanotify]``.

``--installed PATH`` times another kanotify beside the venv's, in the same rounds and the
same namespace, with a config and state of its own: the Debian package's ``/usr/bin/kanotify``
(scripts/build-deb), to show that the packaged one starts and converges as fast.

Both sides do the same job inside a throw-away network namespace (a veth end
named eth0, documentation addresses only): on MASTER bind 192.0.2.100/24 on
eth0 with a label and set the four ARP sysctls; on BACKUP remove it and bind
192.0.2.100/32 on lo.  The shell script is what operators write by hand
(``ip addr add/del``, ``echo > /proc/sys``), without any checking, journal or
idempotency.  kanotify's GARP is turned off so both sides send nothing.
Both are timed in the same run, alternately, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
garp_count = 0

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

SHELL = """#!/bin/sh
# the classic hand-written notify.sh for the same two-node setup
case "$1" in
master)
    echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
    echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce
    echo 1 > /proc/sys/net/ipv4/conf/lo/arp_ignore
    echo 2 > /proc/sys/net/ipv4/conf/lo/arp_announce
    ip addr del 192.0.2.100/32 dev lo 2>/dev/null
    ip addr add 192.0.2.100/24 dev eth0 label eth0:0
    ;;
backup)
    echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
    echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce
    echo 1 > /proc/sys/net/ipv4/conf/lo/arp_ignore
    echo 2 > /proc/sys/net/ipv4/conf/lo/arp_announce
    ip addr del 192.0.2.100/24 dev eth0 2>/dev/null
    ip addr add 192.0.2.100/32 dev lo label lo:0
    ;;
esac
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="master+backup pairs per contender")
    parser.add_argument("--installed", metavar="PATH",
                        help="also time this kanotify (e.g. the Debian package's /usr/bin/kanotify)")
    args = parser.parse_args()
    if args.installed and not os.access(args.installed, os.X_OK):
        raise SystemExit(f"--installed {args.installed}: not an executable (install the package first)")
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates a network namespace)")

    ns = f"kbench-{uuid.uuid4().hex[:6]}"
    tmp = tempfile.mkdtemp(prefix="kanotify-bench-")
    conf = Path(tmp) / "kanotify.toml"
    conf.write_text(CONFIG.format(tmp=tmp))
    os.chmod(conf, 0o600)
    # the installed one: its own state, journal and config cache (another build may key it differently)
    other = Path(tmp) / "installed"
    other.mkdir()
    conf2 = other / "kanotify.toml"
    conf2.write_text(CONFIG.format(tmp=other))
    os.chmod(conf2, 0o600)
    script = Path(tmp) / "notify.sh"
    script.write_text(SHELL)
    os.chmod(script, 0o700)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        for dev in ("lo", "eth0", "peer0"):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        inns = ["ip", "netns", "exec", ns]
        results: dict[str, list[float]] = {"kanotify": [], "notify.sh": [], "kanotify (no-op)": [],
                                           "no-op, no launcher": [], "python -c pass": [],
                                           "ip netns exec true": []}
        installed_python = ""
        if args.installed:
            results["installed"] = []
            results["installed (no-op)"] = []
            results["its python -c pass"] = []  # the interpreter the installed launcher execs
            installed_python = os.path.join(os.path.dirname(os.path.realpath(args.installed)), "python3")
        # the interpreter started directly, as bin/kanotify does after its shell: the launcher's own cost
        direct = [sys.executable, "-P", "-c", "import sys; sys.argv[0] = sys.argv.pop(1); "
                  "from kanotify.__main__ import main; main()", KANOTIFY]
        timed([*inns, KANOTIFY, "--config", str(conf), "backup"])  # warm caches
        if args.installed:
            timed([*inns, args.installed, "--config", str(conf2), "backup"])
        for _ in range(args.rounds):
            for state in ("master", "backup"):
                results["kanotify"].append(timed([*inns, KANOTIFY, "--config", str(conf), state]))
            results["kanotify (no-op)"].append(timed([*inns, KANOTIFY, "--config", str(conf), "backup"]))
            if args.installed:
                for state in ("master", "backup"):
                    results["installed"].append(timed([*inns, args.installed, "--config", str(conf2), state]))
                results["installed (no-op)"].append(timed([*inns, args.installed, "--config", str(conf2), "backup"]))
                results["its python -c pass"].append(timed([*inns, installed_python, "-c", "pass"]))
            results["no-op, no launcher"].append(timed([*inns, *direct, "--config", str(conf), "backup"]))
            for state in ("master", "backup"):
                results["notify.sh"].append(timed([*inns, str(script), state]))
            results["python -c pass"].append(timed([*inns, sys.executable, "-c", "pass"]))
            results["ip netns exec true"].append(timed([*inns, "true"]))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)

    print(f"notify path, {args.rounds} rounds, one transition per sample (ms):")
    print(f"{'contender':<22} {'median':>8} {'p90':>8} {'min':>8}")
    for name, samples in results.items():
        ms = sorted(s * 1000 for s in samples)
        p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
        print(f"{name:<22} {statistics.median(ms):8.1f} {p90:8.1f} {ms[0]:8.1f}")
    k = statistics.median(results["kanotify"])
    s = statistics.median(results["notify.sh"])
    print(f"ratio kanotify / notify.sh (median transition): {k / s:.2f}x")
    noop = statistics.median(results["kanotify (no-op)"])
    print(f"ratio kanotify no-op / notify.sh: {noop / s:.2f}x")
    if args.installed:
        print(f"installed = {args.installed} -> {os.path.realpath(args.installed)} "
              f"(python {os.path.realpath(installed_python)}); venv = {KANOTIFY} (python {os.path.realpath(sys.executable)})")
        for what, venv_key, inst_key in (("transition", "kanotify", "installed"),
                                         ("no-op (start-up)", "kanotify (no-op)", "installed (no-op)")):
            v, i = statistics.median(results[venv_key]), statistics.median(results[inst_key])
            print(f"ratio installed / venv, {what}: {i / v:.2f}x ({i * 1000:.1f} vs {v * 1000:.1f} ms median)")
    print(f"the shell launcher (bin/kanotify): +{(noop - statistics.median(results['no-op, no launcher'])) * 1000:.1f} ms"
          f" a start ({noop / statistics.median(results['no-op, no launcher']):.3f}x)")


if __name__ == "__main__":
    main()

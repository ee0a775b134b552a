#!/usr/bin/env python3
"""Speed at scale: every figure of issue 15 as a ratio to its anchor, measured in the same run.

    python benchmarks/run_in_uml.py --script scale.py [--json OUT.json]   # in a UML guest (IPVS)
    .venv/bin/python benchmarks/scale.py --json OUT.json                  # natively: the rows without IPVS
    .venv/bin/python benchmarks/plot.py OUT.json docs/benchmarks-scaling.png

Needs root.  Where the kernel has IPVS it FLUSHES the IPVS table of the
namespace it runs in (``ipvsadm -C``): run it in a throwaway kernel, i.e. the
UML guest.  Every contender does the same job on the same rules, alternately,
and each row prints kanotify's median, its anchor's median and the ratio:

1. ``kanotify master`` from an empty IPVS table (services x reals, default
   1000 x 10) vs ``ipvsadm-restore`` of the same rules, the table flushed
   before each sample -- and the same again with each sample in a network
   namespace of its own, a table that never held the rules (a flush leaves the
   real servers in the kernel's dest trash, which every later add walks);
2. ``kanotify reconcile`` with nothing to do vs ``ipvsadm -Ln`` (a one-shot process, and
   handed over to a running ``kanotify listen``, which holds the config and sockets);
3. ``kanotify master`` for 1 VIP + 20 services x 4 reals + 4 sysctls, in a
   network namespace, vs the shell script an operator writes for it (``ip``,
   ``ipvsadm``, ``echo``), from the same state (VIP unbound, IPVS empty,
   sysctls 0);
4. ``kanotify check`` (start-up) vs ``python -c "import typer"``;

plus keepalived's own checker loading the same services (``keepalived -n -l
-D -C`` in a fresh namespace, timed until the kernel has every rule, against
``ipvsadm-restore`` into a fresh namespace), the peak RSS
of the kanotify process at the largest size, and a scaling series (10 .. 1000
services x 10 reals: ``kanotify master`` from empty, the no-op reconcile and
``ipvsadm-restore``) for ``benchmarks/plot.py``.  Without IPVS (a stock host
kernel without ``ip_vs``) only the rows that need none run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
KANOTIFY = str(Path(sys.executable).with_name("kanotify"))

SYSCTLS = ("net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce",
           "net.ipv4.conf.lo.arp_ignore", "net.ipv4.conf.lo.arp_announce")
SYSCTL_VALUES = (1, 2, 1, 2)
VIP, VIP_DEV, VIP_LABEL = "198.51.100.1/24", "eth0", "eth0:0"
SERVICE_ADDRESS = "198.51.100.1"
FIRST_PORT = 10000


@dataclass
class Sample:
    """One process run: its wall time."""

    seconds: float


@dataclass
class Row:
    """One figure: kanotify's samples and its anchor's."""

    name: str
    kanotify: list[Sample] = field(default_factory=list)
    anchor_name: str = ""
    anchor: list[Sample] = field(default_factory=list)
    target: float | None = None
    note: str = ""

    def median(self, samples: list[Sample]) -> float:
        return statistics.median(s.seconds for s in samples) * 1000 if samples else float("nan")

    def to_json(self) -> dict[str, object]:
        k, a = self.median(self.kanotify), self.median(self.anchor)
        return {
            "name": self.name, "anchor_name": self.anchor_name, "target": self.target, "note": self.note,
            "kanotify_ms": k, "anchor_ms": a, "ratio": k / a if self.anchor else None,
            "kanotify_samples_ms": [s.seconds * 1000 for s in self.kanotify],
            "anchor_samples_ms": [s.seconds * 1000 for s in self.anchor],
        }


# --------------------------------------------------------------------------- running things


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None) -> Sample:
    """Run ``argv`` to its end; its wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status = os.waitpid(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
    return Sample(elapsed)


def peak_rss_kb(argv: Sequence[str], *, stdin: str | None = None) -> int:
    """The peak RSS of ``argv`` alone, in KiB, as GNU time reports it.

    Not ``wait4`` on our own child: Linux starts a child's ``ru_maxrss`` at its
    parent's RSS when it forks (the mm it execs away from counts), so a child of
    this big benchmark would report this benchmark's size.  ``time`` is small.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        run(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv], stdin=stdin)
        return int(out.read().split()[-1])


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def has_ipvs() -> bool:
    if not shutil.which("ipvsadm"):
        return False
    return subprocess.run(["ipvsadm", "-Ln"], capture_output=True).returncode == 0


def count_ipvs(proc_net: str = "/proc/net/ip_vs") -> tuple[int, int]:
    """(services, real servers) in the kernel, from one read of /proc/net/ip_vs (cheap)."""
    try:
        with open(proc_net) as fh:
            text = fh.read()
    except OSError:
        return 0, 0
    return count_ipvs_text(text)


def count_ipvs_text(text: str) -> tuple[int, int]:
    """(services, real servers) listed in the text of a /proc/net/ip_vs."""
    services = reals = 0
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("->"):
            if not stripped.startswith("-> RemoteAddress"):
                reals += 1
        elif stripped.startswith(("TCP ", "UDP ", "SCTP ", "FWM ")):
            services += 1
    return services, reals


# --------------------------------------------------------------------------- inputs


def config_text(tmp: Path, services: int, reals: int, *, vip: bool, sysctls: bool) -> str:
    out = [f'[settings]\nstate_dir = "{tmp}/state"\njournal = "{tmp}/journal.jsonl"\nsyslog = false\ngarp_count = 0\n'
           'reconcile_interval = 0\n\n']
    if sysctls:
        out.append("[sysctl]\n" + "".join(f'"{k}" = {v}\n' for k, v in zip(SYSCTLS, SYSCTL_VALUES)) + "\n")
    out.append('[[instance]]\nname = "VI_1"\n')
    if vip:
        out.append(f'\n  [[instance.vip]]\n  address = "{VIP}"\n  dev = "{VIP_DEV}"\n  label = "{VIP_LABEL}"\n')
    for i in range(services):
        port = FIRST_PORT + i
        out.append(f'\n  [[instance.service]]\n  protocol = "tcp"\n  address = "{SERVICE_ADDRESS}"\n'
                   f'  port = {port}\n  scheduler = "wrr"\n')
        for j in range(reals):
            out.append(f'\n    [[instance.service.real]]\n    address = "{real_address(j)}"\n    port = {port}\n'
                       f"    weight = {1 + j % 5}\n")
    return "".join(out)


def real_address(j: int) -> str:
    return f"203.0.113.{j % 250 + 1}" if j < 250 else f"198.51.100.{j % 250 + 2}"


def restore_text(services: int, reals: int) -> str:
    lines = []
    for i in range(services):
        where = f"{SERVICE_ADDRESS}:{FIRST_PORT + i}"
        lines.append(f"-A -t {where} -s wrr")
        lines.extend(f"-a -t {where} -r {real_address(j)}:{FIRST_PORT + i} -g -w {1 + j % 5}" for j in range(reals))
    return "\n".join(lines) + "\n"


def shell_script(services: int, reals: int) -> str:
    """What an operator writes for the small notify_master: echo, ipvsadm per rule, ip addr add."""
    lines = ["#!/bin/sh", "# the hand-written notify_master for the same job"]
    lines += [f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in zip(SYSCTLS, SYSCTL_VALUES)]
    for i in range(services):
        where = f"{SERVICE_ADDRESS}:{FIRST_PORT + i}"
        lines.append(f"ipvsadm -A -t {where} -s wrr")
        lines += [f"ipvsadm -a -t {where} -r {real_address(j)}:{FIRST_PORT + i} -g -w {1 + j % 5}" for j in range(reals)]
    lines.append(f"ip addr add {VIP} dev {VIP_DEV} label {VIP_LABEL}")
    return "\n".join(lines) + "\n"


def keepalived_conf(services: int, reals: int) -> str:
    out = ["global_defs {\n  router_id kanotify_bench\n}\n"]
    for i in range(services):
        port = FIRST_PORT + i
        out.append(f"virtual_server {SERVICE_ADDRESS} {port} {{\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP\n")
        out += [f"  real_server {real_address(j)} {port} {{\n    weight {1 + j % 5}\n  }}\n" for j in range(reals)]
        out.append("}\n")
    return "".join(out)


def write_config(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


# --------------------------------------------------------------------------- the rows


def big_rows(tmp: Path, services: int, reals: int, rounds: int) -> tuple[list[Row], dict[str, object]]:
    """Rows 1 and 2 on services x reals in this namespace; returns the rows and the extras (RSS, cold run)."""
    directory = tmp / f"big-{services}x{reals}"
    directory.mkdir()
    (directory / "state").mkdir(mode=0o700)
    conf = write_config(directory, "kanotify.toml", config_text(directory, services, reals, vip=False, sysctls=False))
    rules = restore_text(services, reals)
    objects = services * (1 + reals)
    master = Row(f"kanotify master from empty ({services} x {reals})", anchor_name="ipvsadm-restore", target=0.25)
    noop = Row(f"kanotify reconcile, nothing to do ({services} x {reals})", anchor_name="ipvsadm -Ln", target=1.5)

    def flush() -> None:
        sh("ipvsadm", "-C")

    def loaded() -> None:
        got = count_ipvs()
        if got != (services, services * reals):
            raise SystemExit(f"expected {services} services and {services * reals} reals, the kernel has {got}")

    flush()
    cold = run([KANOTIFY, "--config", conf, "master"])  # the first run ever: validates, writes the config cache
    loaded()
    for _ in range(rounds):
        flush()
        master.anchor.append(run(["ipvsadm-restore"], stdin=rules))
        loaded()
        flush()
        master.kanotify.append(run([KANOTIFY, "--config", conf, "master"]))
        loaded()
    for _ in range(rounds):
        noop.anchor.append(run(["ipvsadm", "-Ln"]))
        noop.kanotify.append(run([KANOTIFY, "--config", conf, "reconcile"]))
    loaded()
    handed = Row(f"kanotify reconcile, nothing to do, handed to kanotify listen ({services} x {reals})",
                 anchor_name="ipvsadm -Ln", target=1.5)
    with listening(conf, directory / "state"):
        for _ in range(rounds):
            handed.anchor.append(run(["ipvsadm", "-Ln"]))
            handed.kanotify.append(run([KANOTIFY, "--config", conf, "reconcile"]))
    loaded()
    flush()
    rss_master = peak_rss_kb([KANOTIFY, "--config", conf, "master"])
    loaded()
    rss_reconcile = peak_rss_kb([KANOTIFY, "--config", conf, "reconcile"])
    journal = [json.loads(line) for line in (directory / "journal.jsonl").read_text().splitlines()]
    last = journal[-1]
    assert last["command"] == "reconcile" or not last["actions"], last
    extras = {
        "objects": objects,
        "cold_master_ms": cold.seconds * 1000,
        "peak_rss_kb": max(rss_master, rss_reconcile),
        "peak_rss_master_kb": rss_master,
        "peak_rss_reconcile_kb": rss_reconcile,
        "reconcile_writes": sum(a["status"] == "applied" for a in last.get("actions", ())),
    }
    flush()
    return [master, noop, handed], extras


def fresh_row(tmp: Path, services: int, reals: int, rounds: int, settle: float = 3.0) -> Row:
    """Row 1 again, each sample in a network namespace of its own: an IPVS table that never held these rules.

    ``ipvsadm -C`` leaves every real server it removed in the kernel's dest
    trash for minutes, and every later add of a real server first walks that
    list (``ip_vs_trash_get_dest``): after a flush of 10,000 real servers,
    refilling them costs the kernel ~450 ms more in the guest than into a fresh
    table, for any tool.  keepalived's row loads into a fresh namespace too.
    ``settle``: after a namespace is deleted the kernel frees its table in the
    background; the next sample waits for that, off the clock.
    """
    directory = tmp / f"fresh-{services}x{reals}"
    directory.mkdir()
    (directory / "state").mkdir(mode=0o700)
    conf = write_config(directory, "kanotify.toml", config_text(directory, services, reals, vip=False, sysctls=False))
    rules = restore_text(services, reals)
    row = Row(f"kanotify master from empty, fresh namespace ({services} x {reals})",
              anchor_name="ipvsadm-restore, fresh namespace", target=0.25)

    def sample(argv: Sequence[str], stdin: str | None = None) -> Sample:
        with Namespace() as ns:
            taken = run(ns.argv(*argv), stdin=stdin)
            got = count_ipvs_text(sh(*ns.argv("cat", "/proc/net/ip_vs")))
            if got != (services, services * reals):
                raise SystemExit(f"expected {services} services and {services * reals} reals, the namespace has {got}")
        time.sleep(settle)
        return taken

    sample([KANOTIFY, "--config", conf, "master"])  # warm: page cache, the config cache entry
    for _ in range(rounds):
        row.anchor.append(sample(["ipvsadm-restore"], rules))
        row.kanotify.append(sample([KANOTIFY, "--config", conf, "master"]))
    return row


def scaling(
    tmp: Path, sizes: Sequence[int], reals: int, rounds: int, done: dict[int, tuple[list[Row], dict[str, object]]]
) -> list[dict[str, object]]:
    """The big rows at each size (``done``: sizes already measured, reused)."""
    series = []
    for services in sizes:
        rows, extras = done[services] if services in done else big_rows(tmp, services, reals, rounds)
        master, noop, _handed = rows
        series.append({
            "services": services, "reals": services * reals,
            "master_ms": master.median(master.kanotify), "restore_ms": master.median(master.anchor),
            "reconcile_ms": noop.median(noop.kanotify), "ipvsadm_ln_ms": noop.median(noop.anchor),
            "peak_rss_kb": extras["peak_rss_kb"],
        })
        print(f"  scaling {services:5d} x {reals}: master {series[-1]['master_ms']:8.0f} ms, "
              f"restore {series[-1]['restore_ms']:8.0f} ms, reconcile {series[-1]['reconcile_ms']:7.0f} ms, "
              f"ipvsadm -Ln {series[-1]['ipvsadm_ln_ms']:7.0f} ms, peak RSS {extras['peak_rss_kb'] / 1024:.0f} MB",
              flush=True)
    return series


class listening:
    """``kanotify listen`` running on ``conf`` (the one-shot commands hand their work to it), stopped at the end."""

    def __init__(self, conf: str, state_dir: Path) -> None:
        self.conf, self.socket = conf, state_dir / "control.sock"

    def __enter__(self) -> "listening":
        self.proc = subprocess.Popen([KANOTIFY, "--config", self.conf, "listen"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"kanotify listen did not start (exit {self.proc.returncode})")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Namespace:
    """A throwaway network namespace with a veth end named eth0 (documentation addresses only)."""

    def __init__(self) -> None:
        self.name = f"kscale-{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> "Namespace":
        sh("ip", "netns", "add", self.name)
        try:
            sh("ip", "-n", self.name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
            for dev in ("lo", "eth0", "peer0"):
                sh("ip", "-n", self.name, "link", "set", dev, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


def small_row(tmp: Path, rounds: int, ipvs: bool) -> Row:
    """Row 3: 1 VIP + 20 x 4 + 4 sysctls (without IPVS: 1 VIP + 4 sysctls), from the same state each time."""
    services, reals = (20, 4) if ipvs else (0, 0)
    directory = tmp / "small"
    directory.mkdir()
    (directory / "state").mkdir(mode=0o700)
    conf = write_config(directory, "kanotify.toml", config_text(directory, services, reals, vip=True, sysctls=True))
    script = directory / "notify_master.sh"
    script.write_text(shell_script(services, reals))
    script.chmod(0o700)
    what = f"1 VIP + {services} x {reals} + 4 sysctls" if ipvs else "1 VIP + 4 sysctls (no IPVS here)"
    row = Row(f"kanotify master, {what}", anchor_name="equivalent shell script", target=0.5)
    with Namespace() as ns:
        def reset() -> None:
            if ipvs:
                sh(*ns.argv("ipvsadm", "-C"))
            subprocess.run(ns.argv("ip", "addr", "del", VIP, "dev", VIP_DEV), capture_output=True)
            sh(*ns.argv("sh", "-c", "; ".join(f"echo 0 > /proc/sys/{k.replace('.', '/')}" for k in SYSCTLS)))

        def done() -> None:
            out = sh(*ns.argv("ip", "-4", "addr", "show", "dev", VIP_DEV))
            assert VIP in out, out
            if ipvs:
                listing = sh(*ns.argv("ipvsadm", "-Ln"))
                assert listing.count("->") - 1 == services * reals, listing

        reset()
        run(ns.argv(KANOTIFY, "--config", conf, "master"))  # warm: page cache, __pycache__, state dir
        for _ in range(rounds):
            reset()
            row.kanotify.append(run(ns.argv(KANOTIFY, "--config", conf, "master")))
            done()
            reset()
            row.anchor.append(run(ns.argv(str(script))))
            done()
    return row


def keepalived_row(tmp: Path, services: int, reals: int, restore_ms: float, timeout: float = 600) -> Row:
    """keepalived's checker loading the same virtual_servers, until the kernel has every rule."""
    directory = tmp / "keepalived"
    directory.mkdir()
    conf = write_config(directory, "keepalived.conf", keepalived_conf(services, reals))
    row = Row(f"keepalived -C loading {services} x {reals} (until all rules are in)",
              anchor_name="ipvsadm-restore (row 2)")
    row.anchor = [Sample(restore_ms / 1000)]
    with Namespace() as ns:
        start = time.perf_counter()
        log = open(directory / "keepalived.log", "wb")
        proc = subprocess.Popen(
            ns.argv("keepalived", "-n", "-l", "-D", "-C", "-f", conf, "-p", str(directory / "k.pid"),
                    "-c", str(directory / "c.pid")),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            # /proc/PID/net shows the network namespace of PID: keepalived's, not ours
            proc_net = f"/proc/{proc.pid}/net/ip_vs"
            while time.perf_counter() - start < timeout:
                if count_ipvs(proc_net) == (services, services * reals):
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"keepalived exited {proc.returncode}: {(directory / 'keepalived.log').read_text()[-800:]}")
                time.sleep(0.01)
            else:
                raise SystemExit(f"keepalived did not load every rule within {timeout:g}s")
            row.kanotify.append(Sample(time.perf_counter() - start))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return row


def startup_row(tmp: Path, rounds: int) -> tuple[Row, Row, Row]:
    directory = tmp / "check"
    directory.mkdir()
    (directory / "state").mkdir(mode=0o700)
    small = write_config(directory, "small.toml", config_text(directory, 20, 4, vip=True, sysctls=True))
    big = write_config(directory, "big.toml", config_text(directory, 1000, 10, vip=True, sysctls=True))
    check = Row("kanotify check start-up (1 VIP + 20 x 4)", anchor_name='python -c "import typer"', target=1.5)
    helps = Row("kanotify --help", anchor_name='python -c "import typer"')
    bigcheck = Row("kanotify check of 1000 x 10 (validated, never cached)", anchor_name='python -c "import typer"')
    typer = [sys.executable, "-c", "import typer"]
    for argv in (typer, [KANOTIFY, "--config", small, "check"], [KANOTIFY, "--help"]):
        run(argv)  # warm
    for _ in range(rounds):
        check.anchor.append(run(typer))
        check.kanotify.append(run([KANOTIFY, "--config", small, "check"]))
        helps.kanotify.append(run([KANOTIFY, "--help"]))
    helps.anchor = check.anchor
    for _ in range(max(3, rounds // 4)):
        bigcheck.kanotify.append(run([KANOTIFY, "--config", big, "check"]))
    bigcheck.anchor = check.anchor
    return check, helps, bigcheck


# --------------------------------------------------------------------------- report


def machine() -> dict[str, object]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "uname": " ".join(platform.uname()), "kernel": platform.release(), "cpu": cpu,
        "cores": os.cpu_count(), "python": platform.python_version(),
        "in_uml_guest": os.environ.get("KANOTIFY_IN_GUEST") == "1",
    }


def print_row(row: Row) -> None:
    data = row.to_json()
    ratio = data["ratio"]
    target = row.target
    verdict = ""
    if isinstance(ratio, float) and target is not None:
        verdict = "met" if ratio <= target else "MISSED"
    text = f"{row.name:<58} {data['kanotify_ms']:9.0f} ms | {row.anchor_name:<26} {data['anchor_ms']:9.0f} ms"
    if isinstance(ratio, float):
        text += f" | {ratio:5.2f}"
        if target is not None:
            text += f" (target <= {target:g}: {verdict})"
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reals", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="samples per contender for the big rows")
    parser.add_argument("--small-rounds", type=int, default=10, help="samples per contender for the small rows")
    parser.add_argument("--sizes", default="10,50,100,500", help="services for the scaling series (plus --services)")
    parser.add_argument("--no-keepalived", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write every figure here (benchmarks/plot.py reads it)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces; IPVS in a UML guest: benchmarks/run_in_uml.py --script scale.py)")

    ipvs = has_ipvs()
    info = machine()
    print(f"machine: {info['uname']}; CPU {info['cpu']} x {info['cores']}; python {info['python']}; "
          f"{'UML guest' if info['in_uml_guest'] else 'native'}; IPVS {'yes' if ipvs else 'no'}", flush=True)
    results: dict[str, object] = {"machine": info, "ipvs": ipvs}
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="kanotify-scale-"))
    try:
        check, helps, bigcheck = startup_row(tmp, args.small_rounds)
        if ipvs:
            big, extras = big_rows(tmp, args.services, args.reals, args.rounds)
            rows += big
            results["big"] = extras
            fresh = fresh_row(tmp, args.services, args.reals, args.rounds)
            rows.insert(1, fresh)
        rows.append(small_row(tmp, args.small_rounds, ipvs))
        rows += [check, helps, bigcheck]
        if ipvs and not args.no_keepalived and shutil.which("keepalived"):
            # like for like: keepalived loads into a fresh namespace, so its anchor is restore's into one
            rows.append(keepalived_row(tmp, args.services, args.reals, fresh.median(fresh.anchor)))
        print("figure" + " " * 53 + "kanotify     | anchor                             | ratio")
        for row in rows:
            print_row(row)
        if ipvs:
            extras = results["big"]
            assert isinstance(extras, dict)
            print(f"first kanotify master ever (config validated, cache written): {extras['cold_master_ms']:.0f} ms")
            print(f"peak RSS of kanotify at {args.services * args.reals} real servers: "
                  f"{extras['peak_rss_kb'] / 1024:.1f} MB (target <= 150 MB)")
            sizes = [int(s) for s in args.sizes.split(",") if s] + [args.services]
            print("scaling series (median of %d):" % max(1, args.rounds // 2 + 1))
            results["scaling"] = scaling(tmp, sorted(set(sizes)), args.reals, max(1, args.rounds // 2 + 1),
                                         {args.services: (big, extras)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["rows"] = [row.to_json() for row in rows]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

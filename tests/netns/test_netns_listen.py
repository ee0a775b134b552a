"""``kanotify listen`` as a real process in a network namespace: the kernel is the judge.

The listener runs as ``ip netns exec NS kanotify --config CONF listen FIFO``,
as keepalived's ``vrrp_notify_fifo_script`` (or a systemd unit) would start it;
the test writes keepalived's lines into the FIFO, runs one-shot commands that
hand over to it, removes VIPs and resets sysctls behind its back, signals it,
and reads the namespace's addresses and sysctls and the journal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from kanotify.daemon import control
from netns_support import Netns, kanotify_script, wait_for
from nstools import whole_lines

pytestmark = pytest.mark.root

CONFIG = """\
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
garp_count = 2
garp_interval = 0.05
lock_timeout = {lock_timeout}
reconcile_interval = {interval}
keepalived_pidfile = "{tmp}/keepalived.pid"

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2

[[instance]]
name = "VI_1"

  [[instance.vip]]
  address = "{vip}/24"
  dev = "eth0"
  label = "eth0:0"

  [[instance.vip]]
  address = "{vip}/32"
  dev = "lo"
  label = "lo:0"
  states = ["backup", "fault"]
"""

VIP = "192.0.2.100"



class Daemon:
    """One ``kanotify listen`` process inside ``ns``, with its FIFO, config, journal and log."""

    def __init__(self, ns: Netns, tmp: Path, *, interval: float = 0, lock_timeout: float = 2,
                 log: str = "listen.log", fifo: bool = True) -> None:
        self.ns, self.tmp = ns, tmp
        self.config = tmp / "kanotify.toml"
        if not self.config.exists():
            self.write_config(interval=interval, lock_timeout=lock_timeout)
        self.fifo = tmp / "notify.fifo"
        if fifo and not self.fifo.exists():
            os.mkfifo(self.fifo)
        self.writer = os.open(self.fifo, os.O_RDWR) if fifo else -1  # as keepalived holds it
        self.log = tmp / log
        argv = ["ip", "netns", "exec", ns.name, kanotify_script(), "--config", str(self.config), "listen"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv + ([str(self.fifo)] if fifo else []), stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: "listening" in self.log.read_text() or self.proc.poll() is not None, 20, "the listener")
        assert self.proc.poll() is None, self.log.read_text()
        wait_for(lambda: self.journal() or self.proc.poll() is not None, 10, "its start-up reconcile")

    def write_config(self, *, interval: float = 0, lock_timeout: float = 2, vip: str = VIP) -> None:
        self.config.write_text(CONFIG.format(tmp=self.tmp, interval=interval, lock_timeout=lock_timeout, vip=vip))
        self.config.chmod(0o600)

    def write(self, *lines: str) -> None:
        os.write(self.writer, "".join(line + "\n" for line in lines).encode())

    def journal(self) -> list[dict[str, Any]]:
        """The final record of each run (not the ``started`` records of the runs that changed something)."""
        path = self.tmp / "journal.jsonl"
        records = [json.loads(line) for line in whole_lines(path)] if path.exists() else []
        return [r for r in records if r.get("record") != "started"]

    def kanotify(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ns.exec(kanotify_script(), "--config", str(self.config), *args, check=False)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1
        return self.proc.returncode


def vips(ns: Netns) -> set[str]:
    found = set()
    for link in ns.ip_json("addr"):
        for info in link.get("addr_info", ()):
            if info.get("local") == VIP:
                found.add(f"{VIP}/{info['prefixlen']} {link['ifname']}")
    return found


MASTER = {f"{VIP}/24 eth0"}
BACKUP = {f"{VIP}/32 lo"}


@pytest.fixture
def daemon(ns_a: Netns, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(ns_a, tmp_path)
    try:
        yield d
    finally:
        d.stop()


def test_a_fifo_line_converges_the_kernel_and_a_second_one_changes_nothing(daemon: Daemon, ns_a: Netns) -> None:
    assert vips(ns_a) == BACKUP  # the start-up reconcile: unrecorded counts as BACKUP
    started = time.monotonic()
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: vips(ns_a) == MASTER, 5, "the VIP on eth0")
    took = time.monotonic() - started
    assert ns_a.sysctl("net/ipv4/conf/all/arp_ignore") == "1"
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: len([r for r in daemon.journal() if r["command"] == "fifo INSTANCE master"]) == 2, 5)
    second = daemon.journal()[-1]
    assert {a["status"] for a in second["actions"]} == {"noop"}
    print(f"FIFO line -> VIP bound (polled): {took * 1000:.1f} ms")


def test_a_burst_of_1000_lines_ends_in_the_last_state(daemon: Daemon, ns_a: Netns) -> None:
    lines = [f'INSTANCE "VI_1" {"MASTER" if i % 2 else "BACKUP"} 100' for i in range(1000)]  # ends MASTER
    for start in range(0, 1000, 50):
        daemon.write(*lines[start:start + 50])
    wait_for(lambda: len([r for r in daemon.journal() if r["command"].startswith("fifo")]) == 1000, 60, "1000 records")
    assert vips(ns_a) == MASTER
    last = [r for r in daemon.journal() if r["command"].startswith("fifo")][-1]
    assert last["to"] == "master" and last["outcome"] == "converged"


def test_a_one_shot_hands_over_with_the_same_output_and_journal_line(daemon: Daemon, ns_a: Netns) -> None:
    handed = daemon.kanotify("master", "VI_1")
    assert handed.returncode == 0, handed.stderr
    assert vips(ns_a) == MASTER
    record = daemon.journal()[-1]
    assert record["trigger"] == [kanotify_script(), "--config", str(daemon.config), "master", "VI_1"][1:] or \
        record["trigger"][1:] == ["--config", str(daemon.config), "master", "VI_1"]
    assert record["pid"] == daemon.proc.pid  # the listener did it
    here = daemon.kanotify("--no-daemon", "backup", "VI_1")
    back = daemon.kanotify("master", "VI_1")
    assert here.returncode == back.returncode == 0
    assert daemon.journal()[-2]["pid"] != daemon.proc.pid  # --no-daemon ran in its own process
    strip = [line for line in handed.stdout.splitlines() if not line.startswith("VI_1 ")]
    assert strip == [line for line in back.stdout.splitlines() if not line.startswith("VI_1 ")]
    usage = daemon.kanotify("master", "NOPE")
    assert usage.returncode == 2 and "unknown instance 'NOPE'" in usage.stderr


def test_a_wedged_listener_is_given_up_after_lock_timeout_and_the_fallback_is_journaled(
        ns_a: Netns, tmp_path: Path) -> None:
    d = Daemon(ns_a, tmp_path, lock_timeout=1)
    try:
        d.proc.send_signal(signal.SIGSTOP)  # wedged: the socket accepts, nobody answers
        started = time.monotonic()
        done = d.kanotify("master", "VI_1")
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert vips(ns_a) == MASTER
        assert 0.9 <= took < 5, took
        record = d.journal()[-1]
        assert record["pid"] != d.proc.pid
        assert any("did not answer within 1s" in w for w in record.get("warnings", ())), record
        d.proc.send_signal(signal.SIGCONT)
        d.write('INSTANCE "VI_1" BACKUP 100')  # it carries on
        wait_for(lambda: vips(ns_a) == BACKUP, 10, "the listener working again")
    finally:
        d.proc.send_signal(signal.SIGCONT)
        d.stop()


def test_a_vip_removed_by_hand_is_repaired_at_once(daemon: Daemon, ns_a: Netns) -> None:
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: vips(ns_a) == MASTER, 5)
    count = len(daemon.journal())
    started = time.monotonic()
    ns_a.ip("addr", "del", f"{VIP}/24", "dev", "eth0")
    wait_for(lambda: vips(ns_a) == MASTER, 5, "the repair")
    took = time.monotonic() - started
    repair = wait_for(lambda: [r for r in daemon.journal()[count:] if r["command"] == "repair"], 5)[-1]
    assert "removed from eth0" in " ".join(repair["trigger"]) and repair["outcome"] == "converged"
    assert any(a["status"] == "applied" and a["action"].startswith("bind") for a in repair["actions"])
    print(f"ip addr del -> VIP back (polled): {took * 1000:.1f} ms")
    assert took < 1.0


def test_a_reset_sysctl_is_repaired_by_the_periodic_reconcile(ns_a: Netns, tmp_path: Path) -> None:
    d = Daemon(ns_a, tmp_path, interval=0.5)
    try:
        ns_a.set_sysctls({"net.ipv4.conf.all.arp_ignore": 0})
        wait_for(lambda: ns_a.sysctl("net/ipv4/conf/all/arp_ignore") == "1", 5, "the periodic repair")
        assert [r for r in d.journal() if r["command"] == "repair" and "reconcile_interval" in " ".join(r["trigger"])]
    finally:
        d.stop()


def test_sighup_with_a_broken_config_keeps_the_old_one(daemon: Daemon, ns_a: Netns) -> None:
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace('dev = "eth0"', 'dev = "eth0/x"', 1))
    daemon.proc.send_signal(signal.SIGHUP)
    record = wait_for(lambda: [r for r in daemon.journal() if r["command"] == "reload"], 5, "the reload record")[-1]
    assert record["outcome"] == "failed" and "instance[0].vip[0].dev" in record["note"]
    assert "config error" in daemon.log.read_text()
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: vips(ns_a) == MASTER, 5, "the old config at work")
    daemon.config.write_text(text.replace(VIP + "/24", "192.0.2.101/24"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "192.0.2.101/24" in ns_a.ip("addr", "show", "dev", "eth0"), 5, "the new config at work")


def test_sigterm_mid_burst_applies_the_stop_lines_written_after_it_and_exits_0(daemon: Daemon, ns_a: Netns) -> None:
    daemon.write(*[f'INSTANCE "VI_1" {"MASTER" if i % 2 else "BACKUP"} 100' for i in range(200)])
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # keepalived signals its fifo script first, then writes the STOP lines
    daemon.write('INSTANCE "VI_1" STOP 100')
    assert daemon.proc.wait(10) == 0
    assert vips(ns_a) == set()
    assert daemon.journal()[-1]["to"] == "stop"


def test_a_newer_listener_takes_over(daemon: Daemon, ns_a: Netns, tmp_path: Path) -> None:
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: vips(ns_a) == MASTER, 5)
    newer = Daemon(ns_a, tmp_path, log="newer.log")
    try:
        assert daemon.proc.wait(15) == 0
        newer.write('INSTANCE "VI_1" BACKUP 100')
        wait_for(lambda: vips(ns_a) == BACKUP, 5, "the newer listener at work")
        assert (tmp_path / "state" / "listen.lock").read_text().strip() == str(newer.proc.pid)
    finally:
        newer.stop()


def test_a_recreated_fifo_is_followed(daemon: Daemon, ns_a: Netns) -> None:
    os.close(daemon.writer)
    os.unlink(daemon.fifo)
    os.mkfifo(daemon.fifo)  # keepalived reloaded and made a new one
    daemon.writer = os.open(daemon.fifo, os.O_RDWR)
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: vips(ns_a) == MASTER, 10, "the event on the new FIFO")


def test_without_a_fifo_it_serves_the_control_socket_only(ns_a: Netns, tmp_path: Path) -> None:
    d = Daemon(ns_a, tmp_path, fifo=False)
    try:
        done = d.kanotify("master", "VI_1")
        assert done.returncode == 0 and vips(ns_a) == MASTER
        assert d.journal()[-1]["pid"] == d.proc.pid
    finally:
        d.stop()


def test_a_non_root_peer_is_refused_and_nothing_is_applied(daemon: Daemon, ns_a: Netns) -> None:
    path = control.socket_path(str(daemon.tmp / "state"))
    # Get past the file modes (a 0700 state dir, a 0600 socket): the peer-credential check must hold on its own.
    opened = {d: os.stat(d).st_mode & 0o7777 for d in (daemon.tmp / "state", daemon.tmp, daemon.tmp.parent,
                                                     daemon.tmp.parent.parent)}
    for d, mode in opened.items():
        os.chmod(d, mode | 0o011)
    os.chmod(path, 0o666)
    before = vips(ns_a), len(daemon.journal())
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                try:
                    sock.sendall(control.encode({"op": "run", "argv": ["master", "VI_1"],
                                                 "config": str(daemon.config)}))
                except BrokenPipeError:
                    pass  # the listener may refuse (and close) before reading: its answer is there
                os.write(write_fd, sock.recv(65536))
        except BaseException as exc:  # the parent's assertion shows it
            os.write(write_fd, f"the unprivileged client failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    reply = os.read(read_fd, 65536)
    os.close(read_fd)
    os.waitpid(pid, 0)
    for d, mode in opened.items():
        os.chmod(d, mode)
    assert b"root only" in reply
    assert (vips(ns_a), len(daemon.journal())) == before


# --------------------------------------------------------------------------- keepalived gone without a STOP


class StandIn:
    """A stand-in keepalived: ``sleep`` run through a symlink named keepalived (its comm is then
    keepalived's), with the pidfile the listener's config names; killed by its pid only."""

    def __init__(self, tmp: Path) -> None:
        self.pidfile = tmp / "keepalived.pid"
        exe = tmp / "bin" / "keepalived"
        if not exe.exists():
            exe.parent.mkdir(exist_ok=True)
            sleep = shutil.which("sleep")
            assert sleep is not None
            exe.symlink_to(sleep)
        self.proc = subprocess.Popen([str(exe), "600"])
        wait_for(lambda: _comm(self.proc.pid) == "keepalived", 10, "the stand-in to exec")
        tmp_file = self.pidfile.with_suffix(".new")
        tmp_file.write_text(f"{self.proc.pid}\n")
        tmp_file.chmod(0o644)
        os.replace(tmp_file, self.pidfile)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[list[StandIn]]:
    made: list[StandIn] = []
    try:
        yield made
    finally:
        for k in made:
            k.kill()


def keepalived_gone(d: Daemon) -> list[dict[str, Any]]:
    return [r for r in d.journal() if r["command"] == "keepalived-gone"]


def watching(d: Daemon, k: StandIn) -> bool:
    return f"watching keepalived (pid {k.pid}," in d.log.read_text()


def master_watched_by(d: Daemon, ns: Netns, k: StandIn) -> None:
    """The listener watches the stand-in keepalived, and VI_1 is MASTER with its VIP bound."""
    wait_for(lambda: watching(d, k), 5, "the listener to watch the stand-in")
    d.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: vips(ns) == MASTER, 5, "the VIP on eth0")


def test_keepalived_killed_releases_the_vip_at_once_and_a_new_one_brings_it_back(
        ns_a: Netns, tmp_path: Path, stand_ins: list[StandIn]) -> None:
    first = StandIn(tmp_path)
    stand_ins.append(first)
    d = Daemon(ns_a, tmp_path)
    try:
        master_watched_by(d, ns_a, first)
        started = time.monotonic()
        first.kill()
        wait_for(lambda: vips(ns_a) == set(), 5, "the VIPs released")
        took = time.monotonic() - started
        record, = wait_for(lambda: keepalived_gone(d), 5, "the keepalived-gone record")
        assert record["instances"] == [{"instance": "VI_1", "from": "master", "to": "stop"}]
        assert record["outcome"] == "converged" and record["pid"] == d.proc.pid
        assert any(a["status"] == "applied" and a["action"].startswith("remove") for a in record["actions"])
        print(f"keepalived SIGKILLed -> VIP released (polled): {took * 1000:.1f} ms")
        assert took < 2.0, took

        # idempotent: nothing left to do, and a reconcile (handed over) keeps it released
        plan = d.kanotify("plan", "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        again = d.kanotify("reconcile")
        assert again.returncode == 0 and vips(ns_a) == set()
        assert len(keepalived_gone(d)) == 1

        # keepalived comes back (a new pid) and re-sends its state
        second = StandIn(tmp_path)
        stand_ins.append(second)
        wait_for(lambda: watching(d, second), 5, "the listener to watch the new stand-in")
        d.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: vips(ns_a) == MASTER, 5, "the VIP back on eth0")
        second.kill()  # and the new one is watched too
        wait_for(lambda: vips(ns_a) == set(), 5, "the VIPs released again")
        assert [r["trigger"][-1] for r in keepalived_gone(d)] == [
            f"keepalived (pid {first.pid}) exited", f"keepalived (pid {second.pid}) exited"]
        assert d.proc.poll() is None  # the listener lives on, as it should between two keepalived
    finally:
        assert d.stop() == 0


def test_sigterm_as_every_keepalived_process_dies_releases_before_the_exit(
        ns_a: Netns, tmp_path: Path, stand_ins: list[StandIn]) -> None:
    """FIFO mode: keepalived's death and the SIGTERM to its fifo script come together."""
    k = StandIn(tmp_path)
    stand_ins.append(k)
    d = Daemon(ns_a, tmp_path)
    try:
        master_watched_by(d, ns_a, k)
        d.proc.send_signal(signal.SIGSTOP)  # both events wait for it: the pid's exit and the SIGTERM
        k.kill()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.send_signal(signal.SIGCONT)
        assert d.proc.wait(15) == 0
        assert vips(ns_a) == set()
        assert len(keepalived_gone(d)) == 1
    finally:
        d.proc.send_signal(signal.SIGCONT)
        d.stop()


def test_sigterm_with_a_pidfile_naming_a_dead_pid_releases_before_the_exit(
        ns_a: Netns, tmp_path: Path, stand_ins: list[StandIn]) -> None:
    dead = StandIn(tmp_path)
    stand_ins.append(dead)
    dead.kill()  # before the listener starts: it watches nothing and does nothing at start
    d = Daemon(ns_a, tmp_path)
    try:
        d.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: vips(ns_a) == MASTER, 5, "the VIP on eth0")
        assert keepalived_gone(d) == [] and "which is not running" in d.log.read_text()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(15) == 0
        assert vips(ns_a) == set()
        record, = keepalived_gone(d)
        assert f"names pid {dead.pid}, which is not running" in record["trigger"][-1]
    finally:
        d.stop()


def test_sigterm_while_keepalived_lives_is_a_reload_and_keeps_the_vip(
        ns_a: Netns, tmp_path: Path, stand_ins: list[StandIn]) -> None:
    k = StandIn(tmp_path)
    stand_ins.append(k)
    d = Daemon(ns_a, tmp_path)
    try:
        master_watched_by(d, ns_a, k)
        d.proc.send_signal(signal.SIGTERM)  # keepalived reloads: it restarts its fifo script
        assert d.proc.wait(15) == 0
        assert vips(ns_a) == MASTER and keepalived_gone(d) == []
    finally:
        d.stop()


def test_a_pidfile_with_junk_is_reported_and_releases_nothing(ns_a: Netns, tmp_path: Path) -> None:
    (tmp_path / "keepalived.pid").write_text("\x00\x01 junk 12\n")
    d = Daemon(ns_a, tmp_path)
    try:
        problem = wait_for(lambda: [r for r in d.journal() if r["command"] == "keepalived-watch"], 5)[0]
        assert problem["outcome"] == "failed" and "expected a process id" in problem["note"]
        assert "not watched" in d.log.read_text()
        d.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: vips(ns_a) == MASTER, 5, "the VIP on eth0")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(15) == 0
        assert vips(ns_a) == MASTER and keepalived_gone(d) == []
        assert len([r for r in d.journal() if r["command"] == "keepalived-watch"]) == 1
    finally:
        d.stop()


def test_reconcile_state_stop_without_a_listener_keeps_the_director_released(ns_a: Netns, tmp_path: Path) -> None:
    """What the keepalived.service drop-in's ExecStopPost runs: STOP recorded, not only applied."""
    config = tmp_path / "kanotify.toml"
    config.write_text(CONFIG.format(tmp=tmp_path, interval=0, lock_timeout=2, vip=VIP))
    config.chmod(0o600)

    def kanotify(*args: str) -> subprocess.CompletedProcess[str]:
        return ns_a.exec(kanotify_script(), "--config", str(config), *args, check=False)

    assert kanotify("master", "VI_1").returncode == 0 and vips(ns_a) == MASTER
    done = kanotify("reconcile", "--state", "stop")
    assert done.returncode == 0, done.stderr
    assert vips(ns_a) == set()
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["instances"]["VI_1"]["state"] == "stop" and state["instances"]["VI_1"]["ticket"] is not None
    assert kanotify("reconcile").returncode == 0 and vips(ns_a) == set()  # the timer's reconcile
    d = Daemon(ns_a, tmp_path, fifo=False)  # a listener's start-up reconcile
    try:
        assert vips(ns_a) == set()
        assert kanotify("master", "VI_1").returncode == 0 and vips(ns_a) == MASTER  # keepalived says otherwise
    finally:
        d.stop()

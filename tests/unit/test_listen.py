"""The listener in this process, on the in-memory backend: FIFO order, coalescing, hand-over, takeover, reload, stop.

The same behaviour against the real kernel, with the real command in a
network namespace, is in tests/netns/test_netns_listen.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kanotify.daemon import control
from kanotify.backends.memory import MemoryBackend
from kanotify.commands import hooks_for, run_handed_over
from kanotify.daemon.listener import Listener, event_ticket
from nstools import whole_lines

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
reconcile_interval = 0
lock_timeout = 2
keepalived_pidfile = "{tmp}/keepalived.pid"

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  states = ["backup", "fault"]

[[instance]]
name = "VI_2"
  [[instance.vip]]
  address = "198.51.100.100/24"
  dev = "eth0"

[[group]]
name = "VG_1"
instances = ["VI_1", "VI_2"]
"""



class Running:
    """A listener in a thread of this test, with its FIFO and backend."""

    def __init__(self, tmp: Path, backend: MemoryBackend, name: str = "k.toml") -> None:
        self.tmp = tmp
        self.config = tmp / name
        self.fifo = tmp / "notify.fifo"
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        self.writer = os.open(self.fifo, os.O_RDWR)  # as keepalived holds it
        self.backend = backend
        self.listener = Listener(str(self.config), str(self.fifo), allow_insecure=True, handler=run_handed_over,
                                 hooks_for=lambda config: hooks_for(config, True),
                                 backend_factory=lambda: backend, watch_addresses=False, signals=False)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.listener.started.wait(10), "the listener did not start"
        wait_for(lambda: self.listener.runs >= 1)  # its start-up reconcile is done

    def _run(self) -> None:
        self.code = self.listener.run()

    def write(self, *lines: str) -> None:
        os.write(self.writer, "".join(line + "\n" for line in lines).encode())

    def stop(self) -> int | None:
        if self.thread.is_alive():
            self.listener.stop()
            self.thread.join(15)
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1
        return self.code

    def journal_lines(self) -> list[dict[str, Any]]:
        """Every journal record, ``started`` ones too."""
        path = self.tmp / "journal.jsonl"
        return [json.loads(line) for line in whole_lines(path)] if path.exists() else []

    def journal(self) -> list[dict[str, Any]]:
        """The final record of each run."""
        return [r for r in self.journal_lines() if r.get("record") != "started"]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    (tmp_path / "k.toml").write_text(CONFIG.format(tmp=tmp_path))
    r = Running(tmp_path, MemoryBackend(devices={"lo", "eth0"}))
    try:
        yield r
    finally:
        r.stop()


def bound(backend: MemoryBackend) -> set[str]:
    return {str(v) for v in backend.addresses}


def fifo_records(r: Running) -> list[dict[str, Any]]:
    return [rec for rec in r.journal() if rec["command"].startswith("fifo")]


def test_events_apply_in_order_and_every_one_is_journaled(running: Running) -> None:
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))
    running.write('INSTANCE "VI_1" BACKUP 100', 'GROUP "VG_1" MASTER 0')
    wait_for(lambda: len(fifo_records(running)) == 3)
    assert bound(running.backend) == {"192.0.2.100/24 dev eth0", "198.51.100.100/24 dev eth0"}
    records = fifo_records(running)
    assert [r["command"] for r in records] == ["fifo INSTANCE master", "fifo INSTANCE backup", "fifo GROUP master"]
    assert records[0]["trigger"][-1] == 'INSTANCE "VI_1" MASTER 100' and records[0]["priority"] == 100
    assert all(r["outcome"] in ("converged", "superseded") for r in records)
    # the listener's runs are journaled like the one-shots': a started record right before each changing run's final
    lines = running.journal_lines()
    for i, record in enumerate(lines):
        changed = any(a["status"] == "applied" for a in record["actions"])
        if record["record"] == "final" and changed:
            assert lines[i - 1]["record"] == "started" and lines[i - 1]["run"] == record["run"], record
        elif record["record"] == "final":
            assert lines[i - 1]["run"] != record["run"]


def test_a_burst_of_1000_events_coalesces_and_ends_in_the_last_state(running: Running) -> None:
    states = ["MASTER", "BACKUP", "FAULT"]
    lines = [f'INSTANCE "VI_1" {states[i % 3]} 100' for i in range(999)] + ['INSTANCE "VI_1" MASTER 100']
    for start in range(0, 1000, 100):
        running.write(*lines[start:start + 100])
    wait_for(lambda: len(fifo_records(running)) == 1000, timeout=60)
    records = fifo_records(running)
    assert records[-1]["to"] == "master" and records[-1]["outcome"] == "converged"
    applied = [r for r in records if r["outcome"] == "converged"]
    coalesced = [r for r in records if r["outcome"] == "superseded"]
    assert len(applied) + len(coalesced) == 1000 and coalesced  # a backlog coalesces
    assert all("coalesced" in r["note"] for r in coalesced)
    assert bound(running.backend) == {"192.0.2.100/24 dev eth0"}


def test_priority_checker_and_garbage_lines_never_stop_it(running: Running) -> None:
    running.write('INSTANCE "VI_1" MASTER_PRIORITY 110', "VS [192.0.2.100]:tcp:80 UP", "garbage",
                  "x" * 100_000, 'INSTANCE "VI_9" MASTER 100', 'INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))
    # the VIP is bound while the run applies; its journal line is written once the run has ended
    wait_for(lambda: len(fifo_records(running)) == 3)  # the priority note, VI_9 ignored, VI_1's run
    commands = [(r["command"], r.get("note", "")) for r in fifo_records(running)]
    assert commands[0][0] == "fifo INSTANCE master_priority" and "priority changed" in commands[0][1]
    assert ("fifo INSTANCE master", "instance 'VI_9' is not managed by " + str(running.config) + "; ignored") \
        in commands
    assert commands[-1][0] == "fifo INSTANCE master"


def test_master_rx_lower_pri_announces_the_bound_vips_again(running: Running) -> None:
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: len(running.backend.garps) == 1)
    running.write('INSTANCE "VI_1" MASTER_RX_LOWER_PRI 100')
    wait_for(lambda: len(running.backend.garps) == 2)
    # the GARP goes out while the run applies; its journal line is written once the run has ended
    wait_for(lambda: len(fifo_records(running)) == 2)
    assert fifo_records(running)[-1]["command"] == "fifo INSTANCE master_rx_lower_pri"


def test_a_one_shot_is_handed_over_and_answered_as_in_process(running: Running) -> None:
    answer = control.hand_over(["--config", str(running.config), "master", "VI_1"], str(running.config),
                               ("boot", 1, os.getpid()))
    assert answer.code == 0, answer.stderr
    assert "+ bind 192.0.2.100/24 dev eth0" in answer.stdout and "VI_1 - -> master: converged" in answer.stdout
    record = running.journal()[-1]
    assert record["trigger"] == ["kanotify", "--config", str(running.config), "master", "VI_1"]
    usage = control.hand_over(["master", "VI_9"], str(running.config), ("boot", 2, os.getpid()))
    assert usage.code == 2 and "unknown instance 'VI_9'" in usage.stderr
    reconcile = control.hand_over(["reconcile", "--instance", "VI_1"], str(running.config), ("boot", 3, 1))
    assert reconcile.code == 0 and running.journal()[-1]["command"] == "reconcile"


def test_another_config_is_refused_so_the_client_runs_it_itself(running: Running, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(running.config.read_text())
    answer = control.hand_over(["master", "VI_1"], str(other), ("boot", 1, 1))
    assert answer.code is None and "serves" in answer.fallback


def _raw(path: str, data: bytes, shutdown: bool = False) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply)


@pytest.mark.parametrize("data, why", [
    (b"hello\n", "not a JSON object"),
    (b"[1, 2]\n", "not a JSON object"),
    (b'{"op": "format c:"}\n', "unknown op"),
    (b'{"op": "run", "argv": "master", "config": "/x"}\n', "argv must be"),
    (b'{"op": "run", "argv": ["master"], "config": "relative"}\n', "absolute path"),
    (b'{"op": "run", "argv": ' + json.dumps(["x"] * 100).encode() + b', "config": "/x"}\n', "argv must be"),
    (b"x" * (control.MAX_MESSAGE + 100) + b"\n", "longer than"),
])
def test_control_socket_abuse_is_refused_and_changes_nothing(running: Running, data: bytes, why: str) -> None:
    before = set(running.backend.addresses), len(running.journal())
    reply = _raw(control.socket_path(str(running.tmp / "state")), data)
    assert why in reply["error"]
    assert (set(running.backend.addresses), len(running.journal())) == before


def test_half_a_request_is_dropped(running: Running) -> None:
    reply = _raw(control.socket_path(str(running.tmp / "state")), b'{"op": "run", "argv": ["master"', shutdown=True)
    assert "half a request" in reply["error"] or "no whole request" in reply["error"]


def test_reload_with_a_broken_config_keeps_the_old_one_and_journals_why(running: Running) -> None:
    running.config.write_text(CONFIG.format(tmp=running.tmp).replace('dev = "eth0"', 'dev = "eth0/bad"', 1))
    running.listener.reload()
    wait_for(lambda: any(r["command"] == "reload" for r in running.journal()))
    record = [r for r in running.journal() if r["command"] == "reload"][-1]
    assert record["outcome"] == "failed" and "instance[0].vip[0].dev" in record["note"]
    running.write('INSTANCE "VI_1" MASTER 100')  # the old config still works
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))


def test_reload_with_a_good_config_takes_it_into_use(running: Running) -> None:
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))
    running.config.write_text(CONFIG.format(tmp=running.tmp).replace("192.0.2.100/24", "192.0.2.101/24"))
    running.listener.reload()
    wait_for(lambda: "192.0.2.101/24 dev eth0" in bound(running.backend))
    # the VIP is bound before the run's journal line is written: wait for the line
    records = wait_for(lambda: [r for r in running.journal() if r["command"] == "reload"])
    assert isinstance(records, list) and records[-1]["outcome"] == "converged"


def test_a_handed_over_request_sees_an_edited_config(running: Running) -> None:
    running.config.write_text(CONFIG.format(tmp=running.tmp).replace("192.0.2.100/24", "192.0.2.102/24"))
    answer = control.hand_over(["master", "VI_1"], str(running.config), ("boot", 1, 1))
    assert answer.code == 0 and "192.0.2.102/24" in answer.stdout
    running.config.write_text(CONFIG.format(tmp=running.tmp).replace('dev = "eth0"', 'dev = "eth0/bad"', 1))
    broken = control.hand_over(["master", "VI_1"], str(running.config), ("boot", 2, 1))
    assert broken.code == 78 and "instance[0].vip[0].dev" in broken.stderr  # as in-process: the file is wrong
    assert "192.0.2.102/24 dev eth0" in bound(running.backend)  # and nothing changed


def test_stop_applies_what_was_read_and_exits_0(running: Running) -> None:
    running.write(*[f'INSTANCE "VI_1" {"MASTER" if i % 2 else "BACKUP"} 100' for i in range(50)],
                  'INSTANCE "VI_1" STOP 100')
    assert running.stop() == 0
    records = fifo_records(running)
    assert records and records[-1]["to"] == "stop"
    assert bound(running.backend) == set()


def test_a_second_listener_takes_over_from_the_first(running: Running, tmp_path: Path) -> None:
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))
    second = Running(tmp_path, running.backend)
    try:
        running.thread.join(10)
        assert not running.thread.is_alive() and running.code == 0
        second.write('INSTANCE "VI_1" BACKUP 100')
        wait_for(lambda: bound(running.backend) == {"192.0.2.100/32 dev lo"})
        assert (tmp_path / "state" / "listen.lock").read_text().strip() == str(os.getpid())
    finally:
        second.stop()


def test_file_descriptors_stay_flat_over_many_events(running: Running) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: len(fifo_records(running)) == 1)
    before = fds()
    for i in range(300):
        running.write(f'INSTANCE "VI_1" {"BACKUP" if i % 2 else "MASTER"} 100')
        if i % 50 == 0:
            control.hand_over(["reconcile"], str(running.config), ("boot", i, 1))
    wait_for(lambda: len(fifo_records(running)) == 301, timeout=60)
    assert fds() <= before + 2


# --------------------------------------------------------------------------- keepalived gone without a STOP


class StandIn:
    """A stand-in keepalived: ``sleep`` run through a symlink named keepalived, and its pidfile."""

    def __init__(self, tmp: Path) -> None:
        self.pidfile = tmp / "keepalived.pid"
        self.exe = tmp / "bin" / "keepalived"
        if not self.exe.exists():
            self.exe.parent.mkdir(exist_ok=True)
            sleep = shutil.which("sleep")
            assert sleep is not None
            self.exe.symlink_to(sleep)
        self.proc = subprocess.Popen([str(self.exe), "600"])
        wait_for(lambda: _comm(self.proc.pid) == "keepalived")
        self.pidfile.write_text(f"{self.proc.pid}\n")
        self.pidfile.chmod(0o644)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _comm(pid: int) -> str | None:
    from kanotify.daemon.keepalived_watch import process_name

    name = process_name(pid)
    return name[0] if name else None


@pytest.fixture
def keepalived(tmp_path: Path) -> Iterator[StandIn]:
    k = StandIn(tmp_path)
    try:
        yield k
    finally:
        k.kill()


def gone_records(r: Running) -> list[dict[str, Any]]:
    return [rec for rec in r.journal() if rec["command"] == "keepalived-gone"]


def test_keepalived_killed_releases_what_it_drove_once(keepalived: StandIn, running: Running) -> None:
    wait_for(lambda: running.listener.keepalived_pid == keepalived.proc.pid)
    running.write('INSTANCE "VI_1" MASTER 100')  # VI_2: never notified, keepalived never drove it here
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))
    keepalived.kill()
    record = wait_for(lambda: gone_records(running), timeout=5)[0]  # type: ignore[index]
    assert record["instances"] == [{"instance": "VI_1", "from": "master", "to": "stop"}]
    assert record["outcome"] == "converged" and f"keepalived (pid {keepalived.proc.pid}) exited" in record["trigger"]
    assert bound(running.backend) == set()  # STOP: neither the LAN VIP nor the one on lo
    state = json.loads((running.tmp / "state" / "state.json").read_text())
    assert state["instances"]["VI_1"]["state"] == "stop" and "VI_2" not in state["instances"]
    running.listener.reload()  # a reconcile to the recorded states changes nothing
    wait_for(lambda: [r for r in running.journal() if r["command"] == "reload"])
    assert running.stop() == 0  # SIGTERM: the pidfile still names the dead pid, already handled
    assert len(gone_records(running)) == 1 and bound(running.backend) == set()


def test_a_notification_the_dead_keepalived_issued_before_it_died_is_superseded(
        keepalived: StandIn, running: Running) -> None:
    from kanotify.procinfo import ticket_fields

    wait_for(lambda: running.listener.keepalived_pid == keepalived.proc.pid)
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))
    boot, _ticks, _pid = ticket_fields()
    keepalived.kill()
    wait_for(lambda: gone_records(running), timeout=5)
    late = control.hand_over(["master", "VI_1"], str(running.config), (boot, 1, 4242))  # started long ago
    assert late.code == 0
    assert running.journal()[-1]["outcome"] == "superseded" and bound(running.backend) == set()
    now = event_ticket()  # a notify script keepalived, back, starts now
    back = control.hand_over(["master", "VI_1"], str(running.config), (now.boot_id, now.start_ticks + 1, now.pid))
    assert back.code == 0 and "192.0.2.100/24 dev eth0" in bound(running.backend)


def test_sigterm_while_keepalived_lives_is_a_reload_and_releases_nothing(keepalived: StandIn,
                                                                          running: Running) -> None:
    wait_for(lambda: running.listener.keepalived_pid == keepalived.proc.pid)
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(running.backend))
    assert running.stop() == 0
    assert gone_records(running) == [] and "192.0.2.100/24 dev eth0" in bound(running.backend)


def test_sigterm_with_keepalived_dead_releases_before_the_exit(tmp_path: Path) -> None:
    """As keepalived's FIFO script when every keepalived process died: SIGTERM at once, pid dead."""
    (tmp_path / "k.toml").write_text(CONFIG.format(tmp=tmp_path))
    dead = StandIn(tmp_path)
    dead.kill()  # its pidfile stays behind, naming a dead pid: never watched, nothing done at start
    r = Running(tmp_path, MemoryBackend(devices={"lo", "eth0"}))
    try:
        r.write('GROUP "VG_1" MASTER 0')
        wait_for(lambda: len(bound(r.backend)) == 2)
        assert r.listener.keepalived_pid is None and gone_records(r) == []
        assert r.stop() == 0
        record, = gone_records(r)
        assert [i["instance"] for i in record["instances"]] == ["VI_1", "VI_2"]
        assert "which is not running" in " ".join(record["trigger"])
        assert bound(r.backend) == set()
    finally:
        r.stop()


def test_a_pidfile_with_junk_is_journaled_once_and_nothing_is_released(tmp_path: Path) -> None:
    (tmp_path / "k.toml").write_text(CONFIG.format(tmp=tmp_path))
    (tmp_path / "keepalived.pid").write_text("not a pid\n")
    r = Running(tmp_path, MemoryBackend(devices={"lo", "eth0"}))
    try:
        r.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: "192.0.2.100/24 dev eth0" in bound(r.backend))
        problem = wait_for(lambda: [x for x in r.journal() if x["command"] == "keepalived-watch"])
        assert isinstance(problem, list) and problem[0]["outcome"] == "failed"
        assert "expected a process id, got 'not a pid'" in problem[0]["note"]
        assert str(tmp_path / "keepalived.pid") in problem[0]["note"]
        assert r.stop() == 0  # a SIGTERM with junk in the pidfile: nothing known, nothing released
        # the pidfile was looked at again during the stop's second of FIFO reading: said once only
        assert len([x for x in r.journal() if x["command"] == "keepalived-watch"]) == 1
        assert gone_records(r) == [] and "192.0.2.100/24 dev eth0" in bound(r.backend)
    finally:
        r.stop()

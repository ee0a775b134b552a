"""Engine tests with the in-memory backend: apply twice, journal, ordering, failures."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

import pytest

from kanotify.actions import BindVip
from kanotify.backends.memory import MemoryBackend
from kanotify.config.schema import parse_config
from kanotify.engine import Engine
from kanotify.journal import Journal
from kanotify.model import State
from kanotify.run import RunKind
from kanotify.store import StateStore, Ticket

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
lock_timeout = 0.3
drain_timeout = 60

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2

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
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "wrr"
    [[instance.service.real]]
    address = "192.0.2.21"
    [[instance.service.real]]
    address = "192.0.2.22"

[[instance]]
name = "VI_2"
  [[instance.vip]]
  address = "198.51.100.100/24"
  dev = "eth0"

[[group]]
name = "VG_1"
instances = ["VI_1", "VI_2"]
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = parse_config(CONFIG.format(tmp=tmp_path), str(tmp_path / "k.toml"))
    backend = MemoryBackend(devices={"lo", "eth0"})
    clock = Clock()
    engine = Engine(config, backend_factory=lambda: backend, clock=clock)
    return engine, backend, clock, tmp_path


def _ticket(n: int) -> Ticket:
    return Ticket("boot-a", 100 + n, 5000 + n)


def _journal_lines(tmp: Path) -> list[dict]:
    """Every journal record, ``started`` ones too."""
    lines = (tmp / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _journal(tmp: Path) -> list[dict]:
    """The final record of each run."""
    return [r for r in _journal_lines(tmp) if r.get("record") != "started"]


def _statuses(record: dict) -> list[str]:
    return [a["status"] for a in record["actions"]]


def test_master_applies_then_second_run_is_all_noops(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    first = engine.transition(["VI_1"], State.MASTER, argv=["kanotify", "master", "VI_1"], kind=RunKind.MASTER,
                              ticket=_ticket(1))
    assert first.outcome == "converged" and first.exit_code == 0
    writes = len(backend.writes)
    assert writes == 2 + 3 + 1  # sysctls, service + 2 reals, bind
    assert len(backend.garps) == 1
    second = engine.transition(["VI_1"], State.MASTER, argv=["kanotify", "master", "VI_1"], kind=RunKind.MASTER,
                               ticket=_ticket(2))
    assert second.outcome == "converged"
    assert not second.plan.has_changes
    assert set(_statuses(second.record)) == {"noop"}
    assert len(backend.writes) == writes and len(backend.garps) == 1
    records = _journal(tmp)
    assert len(records) == 2
    assert records[0]["instance"] == "VI_1" and records[0]["from"] is None and records[0]["to"] == "master"
    assert records[1]["from"] == "master"
    for key in ("ts", "trigger", "instance", "from", "to", "dry_run", "actions", "outcome", "duration_ms"):
        assert key in records[0]
    assert records[0]["trigger"] == ["kanotify", "master", "VI_1"]
    # the first run wrote a started record before changing anything; the second (all no-ops) did not
    lines = _journal_lines(tmp)
    assert [r["record"] for r in lines] == ["started", "final", "final"]
    started = lines[0]
    assert started["run"] == records[0]["run"] == first.record["run"] != records[1]["run"]
    assert "outcome" not in started and "duration_ms" not in started and started["dry_run"] is False
    assert [a["action"] for a in started["actions"]] == [a["action"] for a in records[0]["actions"]]
    assert {a["status"] for a in started["actions"] if a["status"] != "noop"} == {"pending"}
    assert [a["status"] == "noop" for a in started["actions"]] == [
        a["status"] == "noop" for a in records[0]["actions"]]
    assert started["process"][2] == started["pid"] == os.getpid()
    # the run's kind is a field of both records, beside the free-text command
    assert [(r["kind"], r["command"]) for r in lines] == [("master", "master")] * 3


def test_each_state_applied_twice_converges_with_no_second_write(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    n = 0
    for state in (State.MASTER, State.BACKUP, State.FAULT, State.STOP, State.MASTER, State.BACKUP):
        n += 1
        engine.transition(["VI_1"], state, argv=["t"], kind=RunKind.of_state(state), ticket=_ticket(n))
        writes = len(backend.writes)
        n += 1
        again = engine.transition(["VI_1"], state, argv=["t"], kind=RunKind.of_state(state), ticket=_ticket(n))
        assert again.outcome == "converged", again.record
        assert len(backend.writes) == writes, f"second {state} run wrote something"
    assert len(_journal(tmp)) == n


def test_backup_binds_lo_vip_and_leaves_no_managed_service(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, _ = env
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    backend.add_foreign_service(__import__("kanotify.model", fromlist=["ServiceKey"]).ServiceKey.mark(9))
    engine.transition(["VI_1"], State.BACKUP, argv=["t"], kind=RunKind.BACKUP, ticket=_ticket(2))
    assert {str(a) for a in backend.addresses} == {"192.0.2.100/32 dev lo label lo:0"}
    assert [str(k) for k in backend.services] == ["fwmark 9"]  # the foreign one survives


def test_dry_run_changes_nothing_and_is_journaled(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    result = engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, dry_run=True,
                               ticket=_ticket(1))
    assert result.outcome == "converged" and result.plan.has_changes
    assert backend.writes == [] and backend.garps == []
    assert set(_statuses(result.record)) == {"pending", "noop"}
    assert _journal(tmp)[0]["dry_run"] is True
    # and the state was not recorded
    assert StateStore(str(tmp / "state")).load()[0].instances == {}


def test_stale_notification_is_superseded_and_changes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(5))
    writes = len(backend.writes)
    stale = engine.transition(["VI_1"], State.BACKUP, argv=["t"], kind=RunKind.BACKUP, ticket=_ticket(3))
    assert stale.outcome == "superseded" and stale.exit_code == 0
    assert len(backend.writes) == writes
    assert StateStore(str(tmp / "state")).load()[0].states() == {"VI_1": State.MASTER}
    assert _journal(tmp)[-1]["outcome"] == "superseded"


def test_ticket_from_an_earlier_boot_never_wins() -> None:
    old = Ticket("boot-a", 99999, 1)
    assert Ticket("boot-b", 1, 1).newer_than(old)
    assert not Ticket("boot-a", 5, 1).newer_than(old)
    assert Ticket("boot-a", 99999, 2).newer_than(old)


def test_reconcile_uses_recorded_state_and_unrecorded_counts_as_backup(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, _ = env
    result = engine.reconcile(argv=["kanotify", "reconcile"])
    assert result.outcome == "converged"
    assert {str(a) for a in backend.addresses} == {"192.0.2.100/32 dev lo label lo:0"}
    assert result.record["instances"] == [
        {"instance": "VI_1", "from": None, "to": "backup"}, {"instance": "VI_2", "from": None, "to": "backup"}
    ]
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    backend.addresses.clear()  # someone flushed the addresses
    fixed = engine.reconcile(["VI_1"], argv=["kanotify", "reconcile"])
    assert "bind 192.0.2.100/24 dev eth0 label eth0:0" in [str(r.action) for r in fixed.results if r.status == "applied"]


def test_reconcile_with_state_records_it(env) -> None:  # type: ignore[no-untyped-def]
    engine, _, _, tmp = env
    engine.reconcile(["VI_2"], State.MASTER, argv=["t"])
    assert StateStore(str(tmp / "state")).load()[0].states() == {"VI_2": State.MASTER}


def test_group_notification_applies_to_every_instance(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    result = engine.transition(["VI_1", "VI_2"], State.MASTER, argv=["t"], kind=RunKind.NOTIFY, ticket=_ticket(1))
    assert result.outcome == "converged"
    assert {str(a) for a in backend.addresses} == {
        "192.0.2.100/24 dev eth0 label eth0:0", "198.51.100.100/24 dev eth0"}
    assert StateStore(str(tmp / "state")).load()[0].states() == {"VI_1": State.MASTER, "VI_2": State.MASTER}
    assert result.record["instance"] is None and len(result.record["instances"]) == 2


def test_failing_ipvs_call_does_not_stop_the_vip_release(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    backend.fail["delete ipvs service tcp 192.0.2.100:80 (not desired in this state)"] = errno.EBUSY
    result = engine.transition(["VI_1"], State.BACKUP, argv=["t"], kind=RunKind.BACKUP, ticket=_ticket(2))
    assert result.outcome == "failed" and result.exit_code == 1
    assert {str(a) for a in backend.addresses} == {"192.0.2.100/32 dev lo label lo:0"}
    failed = [a for a in _journal(tmp)[-1]["actions"] if a["status"] == "failed"]
    assert failed == [{
        "action": "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
        "status": "failed",
        "error": "delete ipvs service tcp 192.0.2.100:80 (not desired in this state): injected failure",
        "errno": errno.EBUSY,
    }]
    # the drift is visible, and the next reconcile converges once the failure is gone
    del backend.fail["delete ipvs service tcp 192.0.2.100:80 (not desired in this state)"]
    assert engine.reconcile(argv=["t"]).outcome == "converged"
    assert backend.services == {}


def test_failed_bind_skips_its_garp_and_other_actions_still_apply(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    backend.devices.discard("eth0")
    result = engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    assert result.exit_code == 1
    by_status = {r.status for r in result.results}
    assert {"applied", "failed", "skipped"} <= by_status
    statuses = {str(r.action): r.status for r in result.results}
    assert statuses["bind 192.0.2.100/24 dev eth0 label eth0:0"] == "failed"
    assert statuses["send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)"] == "skipped"
    assert statuses["add ipvs service tcp 192.0.2.100:80 scheduler wrr"] == "applied"
    assert backend.garps == []
    record = _journal(tmp)[-1]
    assert record["outcome"] == "failed"
    assert "device eth0 does not exist" in json.dumps(record)


def test_silent_apply_failure_is_caught_by_verification(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    real_apply = backend.apply

    def lying_apply(action):  # type: ignore[no-untyped-def]  # a bind that claims success and does nothing
        if not isinstance(action, BindVip):
            real_apply(action)

    backend.apply = lying_apply  # type: ignore[method-assign]
    result = engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    assert result.outcome == "failed"
    assert result.verify == ["bind 192.0.2.100/24 dev eth0 label eth0:0"]
    assert _journal(tmp)[-1]["verify"] == result.verify


def test_lock_timeout_is_a_clear_failure(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    StateStore(str(tmp / "state")).ensure_dir()
    fd = os.open(tmp / "state" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    finally:
        os.close(fd)
    assert result.outcome == "failed" and result.exit_code == 1
    assert "lock_timeout" in result.record["note"]
    assert backend.writes == []


def test_corrupt_state_file_is_recovered(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    StateStore(str(tmp / "state")).ensure_dir()
    (tmp / "state" / "state.json").write_text('{"instances": {"VI_1": {"state": "mast')
    result = engine.reconcile(argv=["t"])
    assert result.outcome == "converged"
    assert any("corrupt" in w for w in result.record["warnings"])
    assert list((tmp / "state").glob("state.json.corrupt-*"))


def test_torn_journal_line_is_repaired_and_never_read(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.jsonl"))
    journal.append({"n": 1})
    with open(tmp_path / "j.jsonl", "ab") as fh:
        fh.write(b'{"n": 2, "half')  # what kill -9 in the middle of a write leaves
    assert [r["n"] for r in journal.records()] == [1]
    journal.append({"n": 3})
    assert [r["n"] for r in journal.records()] == [1, 3]
    assert (tmp_path / "j.jsonl").read_bytes().count(b"\n") == 2


def test_drain_then_delete_after_timeout(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, clock, tmp = env
    from kanotify.model import ServiceKey
    import ipaddress

    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    key = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 80)
    backend.set_connections(key, (ipaddress.ip_address("192.0.2.22"), 80), active=3)
    config_text = CONFIG.format(tmp=tmp).replace('    [[instance.service.real]]\n    address = "192.0.2.22"\n', "")
    engine.config = parse_config(config_text, "k.toml")
    first = engine.reconcile(["VI_1"], argv=["t"])
    assert [str(r.action) for r in first.results if r.status == "applied"] == [
        "edit real server 192.0.2.22:80 of tcp 192.0.2.100:80: weight 1 -> 0 (drain: 3 connections)"]
    clock.now += 30
    assert not engine.reconcile(["VI_1"], argv=["t"]).plan.has_changes  # still draining, within 60 s
    clock.now += 31
    last = engine.reconcile(["VI_1"], argv=["t"])
    assert [str(r.action) for r in last.results if r.status == "applied"] == [
        "delete real server 192.0.2.22:80 from tcp 192.0.2.100:80 (drain timeout 60s reached)"]
    assert StateStore(str(tmp / "state")).load()[0].draining == {}


def test_ignored_notification_is_journaled(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    engine.ignored(argv=["kanotify", "notify", "INSTANCE", "OTHER", "MASTER", "100"], kind=RunKind.NOTIFY,
                   command="notify INSTANCE master", note="instance 'OTHER' is not managed")
    record = _journal(tmp)[-1]
    assert record["outcome"] == "converged" and record["actions"] == [] and "not managed" in record["note"]
    assert (record["kind"], record["command"]) == ("notify", "notify INSTANCE master")
    assert backend.writes == []


def test_state_dir_and_files_are_private(env) -> None:  # type: ignore[no-untyped-def]
    engine, _, _, tmp = env
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    assert (tmp / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp / "state" / "state.json").stat().st_mode & 0o777 == 0o600
    assert (tmp / "journal.jsonl").stat().st_mode & 0o777 == 0o600


def test_symlinked_state_dir_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, _, tmp = env
    (tmp / "elsewhere").mkdir()
    os.symlink(tmp / "elsewhere", tmp / "state")
    result = engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    assert result.outcome == "failed" and "symlink" in result.record["note"]
    assert backend.writes == []


def test_one_syslog_line_per_transition(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import socket

    engine, _, _, tmp = env
    path = str(tmp / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    monkeypatch.setattr("kanotify.journal.SYSLOG_SOCKET", path)
    object.__setattr__(engine.config.settings, "syslog", True)
    try:
        engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
        line = server.recv(9000).decode()
        engine.backend_factory().devices.discard("eth0")
        engine.transition(["VI_1"], State.BACKUP, argv=["t"], kind=RunKind.BACKUP, ticket=_ticket(2))
        second = server.recv(9000).decode()
    finally:
        server.close()
    assert line.startswith("<29>kanotify[") and "VI_1 - -> master: converged" in line
    assert "VI_1 master -> backup" in second


def test_no_syslog_socket_is_fine(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine, _, _, tmp = env
    monkeypatch.setattr("kanotify.journal.SYSLOG_SOCKET", str(tmp / "missing.sock"))
    object.__setattr__(engine.config.settings, "syslog", True)
    assert engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1)).exit_code == 0


# --------------------------------------------------------------------------- IPVS sync daemons

SYNC_CONFIG = CONFIG + '\n[sync_daemon]\ninterface = "eth0"\ninstance = "VI_1"\nsync_id = 51\n'
MASTER_51 = "master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)"
BACKUP_51 = "backup sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)"


@pytest.fixture
def sync_env(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = parse_config(SYNC_CONFIG.format(tmp=tmp_path), str(tmp_path / "k.toml"))
    backend = MemoryBackend(devices={"lo", "eth0"})
    return Engine(config, backend_factory=lambda: backend), backend, tmp_path


def _running(backend: MemoryBackend) -> dict[str, int]:
    return {state: d.sync_id for state, d in backend.daemons.items()}


def test_sync_daemons_follow_every_state_and_writes_nothing_twice(sync_env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, tmp = sync_env
    expected = {State.BACKUP: {"backup": 51}, State.MASTER: {"master": 51}, State.FAULT: {"backup": 51},
                State.STOP: {}}
    n = 0
    for state in (State.BACKUP, State.MASTER, State.FAULT, State.MASTER, State.STOP, State.BACKUP, State.STOP):
        n += 1
        first = engine.transition(["VI_1"], state, argv=["t"], kind=RunKind.of_state(state), ticket=_ticket(n))
        assert first.outcome == "converged", first.record
        assert _running(backend) == expected[state], state
        writes = len(backend.writes)
        n += 1
        again = engine.transition(["VI_1"], state, argv=["t"], kind=RunKind.of_state(state), ticket=_ticket(n))
        assert again.outcome == "converged" and not again.plan.has_changes
        assert len(backend.writes) == writes, f"second {state} run wrote something"
    master = [r["actions"] for r in _journal(tmp) if r["to"] == "master"][0]
    applied = [a["action"] for a in master if a["status"] == "applied"]
    assert applied.index("add ipvs service tcp 192.0.2.100:80 scheduler wrr") < applied.index(
        "stop backup sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) "
        "(not wanted in this state)") < applied.index(f"start {MASTER_51}") < applied.index(
        "bind 192.0.2.100/24 dev eth0 label eth0:0")


def test_a_daemon_started_by_hand_with_other_parameters_is_restarted(sync_env) -> None:  # type: ignore[no-untyped-def]
    from kanotify.actions import StartSyncDaemon
    from kanotify.model import SyncDaemon

    engine, backend, _ = sync_env
    backend.apply(StartSyncDaemon(SyncDaemon("backup", "eth0", 9)))  # "ipvsadm --start-daemon backup --syncid 9"
    result = engine.reconcile(argv=["t"])
    assert result.outcome == "converged"
    assert [str(r.action) for r in result.results if r.action.domain == "sync" and r.status == "applied"] == [
        "stop backup sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) "
        "(other parameters than configured: restarted)",
        f"start {BACKUP_51}",
    ]
    assert _running(backend) == {"backup": 51}


def test_a_failed_restart_stop_skips_its_start(sync_env) -> None:  # type: ignore[no-untyped-def]
    from kanotify.actions import StartSyncDaemon
    from kanotify.model import SyncDaemon

    engine, backend, _ = sync_env
    backend.apply(StartSyncDaemon(SyncDaemon("backup", "eth0", 9)))
    stop = ("stop backup sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) "
            "(other parameters than configured: restarted)")
    backend.fail[stop] = errno.EPERM
    result = engine.reconcile(argv=["t"])
    statuses = {str(r.action): (r.status, r.error) for r in result.results}
    assert statuses[stop][0] == "failed"
    assert statuses[f"start {BACKUP_51}"] == ("skipped", f"not applied: {stop} failed")
    assert result.exit_code == 1 and _running(backend) == {"backup": 9}


def test_a_failing_daemon_leaves_the_vip_and_ipvs_work_converged(sync_env) -> None:  # type: ignore[no-untyped-def]
    """ENODEV (a wrong [sync_daemon].interface): exit 1, the journal names the action, errno and hint."""
    engine, backend, tmp = sync_env
    engine.config = parse_config(SYNC_CONFIG.format(tmp=tmp).replace('interface = "eth0"', 'interface = "eth7"'),
                                 "k.toml")
    result = engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    assert result.outcome == "failed" and result.exit_code == 1
    assert {str(a) for a in backend.addresses} == {"192.0.2.100/24 dev eth0 label eth0:0"}
    assert [str(k) for k in backend.services] == ["tcp 192.0.2.100:80"] and len(backend.garps) == 1
    failed = [a for a in _journal(tmp)[-1]["actions"] if a["status"] == "failed"]
    start = "start master sync daemon (mcast=eth7, syncid=51, group=224.0.0.81, port=8848, ttl=1)"
    assert failed == [{"action": start, "status": "failed", "errno": errno.ENODEV,
                       "error": f"{start}: No such device [ENODEV] (no such interface eth7)"}]
    applied = [r for r in result.results if r.status == "applied"]
    assert len(applied) == 7  # 2 sysctls, service + 2 reals, bind, garp


def test_without_ipvs_the_daemon_fails_and_the_vips_converge(tmp_path: Path) -> None:
    config = parse_config(SYNC_CONFIG.format(tmp=tmp_path), str(tmp_path / "k.toml"))
    backend = MemoryBackend(devices={"lo", "eth0"}, ipvs_available=False)
    result = Engine(config, backend_factory=lambda: backend).transition(
        ["VI_1"], State.BACKUP, argv=["t"], kind=RunKind.BACKUP, ticket=_ticket(1))
    assert result.exit_code == 1
    assert {str(a) for a in backend.addresses} == {"192.0.2.100/32 dev lo label lo:0"}
    failed = [(str(r.action), r.errno) for r in result.results if r.status == "failed"]
    assert failed == [(f"start {BACKUP_51}", errno.ENOPROTOOPT)]
    assert "IPVS is not available" in result.record["warnings"][0]


def test_a_notification_for_another_instance_leaves_the_daemons_alone(sync_env) -> None:  # type: ignore[no-untyped-def]
    from kanotify.actions import StartSyncDaemon
    from kanotify.model import SyncDaemon

    engine, backend, _ = sync_env
    backend.apply(StartSyncDaemon(SyncDaemon("master", "eth0", 3)))  # not what VI_1 wants, but VI_2 is notified
    result = engine.transition(["VI_2"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    assert result.outcome == "converged"
    assert not [r for r in result.results if r.action.domain == "sync" or "sync daemon" in str(r.action)]
    assert _running(backend) == {"master": 3}


def test_dry_run_shows_the_daemon_actions_and_changes_nothing(sync_env) -> None:  # type: ignore[no-untyped-def]
    engine, backend, tmp = sync_env
    result = engine.transition(["VI_1"], State.BACKUP, argv=["t"], kind=RunKind.BACKUP, dry_run=True, ticket=_ticket(1))
    assert {"action": f"start {BACKUP_51}", "status": "pending"} in _journal(tmp)[-1]["actions"]
    assert backend.daemons == {} and backend.writes == []
    assert result.outcome == "converged"


def test_reconcile_repairs_a_daemon_stopped_by_hand(sync_env) -> None:  # type: ignore[no-untyped-def]
    from kanotify.actions import StopSyncDaemon
    from kanotify.model import SyncDaemon

    engine, backend, _ = sync_env
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=_ticket(1))
    backend.apply(StopSyncDaemon(SyncDaemon("master", "eth0", 51)))  # "ipvsadm --stop-daemon master"
    repaired = engine.reconcile(argv=["t"])
    assert [str(r.action) for r in repaired.results if r.status == "applied"] == [f"start {MASTER_51}"]
    assert _running(backend) == {"master": 51}


def test_reconcile_with_a_state_records_it_with_its_ticket(env) -> None:  # type: ignore[no-untyped-def]
    """``reconcile --state stop`` (the keepalived.service drop-in) is ordered like a notification:
    a notification issued before it (a dead keepalived's notify script) that runs after it changes nothing."""
    engine, backend, _, tmp = env
    engine.transition(["VI_1"], State.MASTER, argv=["kanotify", "master", "VI_1"], kind=RunKind.MASTER,
                      ticket=_ticket(1))
    stop = engine.reconcile(None, State.STOP, argv=["kanotify", "reconcile", "--state", "stop"], ticket=_ticket(3))
    assert stop.outcome == "converged" and "192.0.2.100/24 dev eth0" not in {str(a) for a in backend.addresses}
    saved, _ = StateStore(str(tmp / "state")).load()
    assert saved.instances["VI_1"].state is State.STOP and saved.instances["VI_1"].ticket == _ticket(3)
    late = engine.transition(["VI_1"], State.MASTER, argv=["kanotify", "master", "VI_1"], kind=RunKind.MASTER,
                             ticket=_ticket(2))
    assert late.outcome == "superseded" and not {str(a) for a in backend.addresses}
    assert engine.reconcile(argv=["kanotify", "reconcile"]).plan.has_changes is False  # and it stays released

"""Metrics: what is counted, the listener's /metrics (in a thread, on the in-memory backend), ``kanotify metrics``.

The same with the real ``kanotify listen`` in a network namespace, scraped by a
real Prometheus, is in tests/netns/test_netns_metrics.py; ``kanotify metrics``
reading weights and sync daemons from a real IPVS in tests/kernel/guest/.
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kanotify.daemon import metricskeeper
from kanotify.daemon.worker import Repair
from kanotify.metrics import facts as metrics_mod
from kanotify.backends.memory import MemoryBackend
from kanotify.commands import split_fast
from kanotify.config.schema import parse_config
from kanotify.config.values import ListenAddress
from kanotify.engine import Engine
from kanotify.errors import ConfigError
from kanotify.metrics.exposition import render
from kanotify.metrics.server import MAX_CLIENTS
from kanotify.daemon.healthreport import HEALTH_FILE
from kanotify.metrics.facts import (
    Counts, ListenerMetrics, Tally, collect_facts, count_journal, kind_of_command, run_kind,
)
from kanotify.model import (
    ObservedService, RealServer, RealServerStats, ServiceKey, State, SyncDaemon, VirtualService,
)
from kanotify.run import RunKind
from kanotify.store import LISTEN_LOCK, StateStore, Ticket

from test_listen import Running, wait_for

SERVICE = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 80)

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
reconcile_interval = 0
lock_timeout = 2
{metrics}

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
    [[instance.service.real]]
    address = "192.0.2.21"
    weight = 3
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

[sync_daemon]
interface = "eth0"
instance = "VI_1"
sync_id = 7
"""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` ports nobody listens on, all different (two free_port() calls in a row may give the same one)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of an exposition, parsed by prometheus_client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        assert answer.status == 200
        return str(answer.read().decode())


# --------------------------------------------------------------------------- what counts


@pytest.mark.parametrize(("command", "counted"), [
    ("master", True), ("stop", True), ("notify INSTANCE master", True), ("notify GROUP stop", True),
    ("fifo INSTANCE backup", True), ("fifo GROUP fault", True), ("fifo INSTANCE master_rx_lower_pri", True),
    ("fifo INSTANCE master_priority", False), ("fifo INSTANCE backup_priority", False),
    ("reconcile", False), ("repair", False), ("health", False), ("reload", False), ("plan", False),
    ("metrics", False), ("master extra", False),
])
def test_which_commands_of_old_journal_lines_are_notifications(command: str, counted: bool) -> None:
    """A line without ``kind`` (written before it was journaled): its kind is read from its command."""
    kind = kind_of_command(command)
    assert (kind is not None and kind.is_notification) is counted


def test_the_journaled_kind_wins_over_the_command() -> None:
    assert run_kind({"kind": "fifo", "command": "fifo GROUP master"}) is RunKind.FIFO
    assert run_kind({"kind": "repair", "command": "master"}) is RunKind.REPAIR  # the field, never the text
    assert run_kind({"command": "fifo VI_1 master_priority"}) is RunKind.PRIORITY  # an old line
    assert run_kind({"kind": "from-the-future", "command": "master"}) is None


def _engine(tmp: Path, backend: MemoryBackend, on_result: Any = None) -> Engine:
    config = parse_config(CONFIG.format(tmp=tmp, metrics=""), str(tmp / "k.toml"))
    return Engine(config, backend_factory=lambda: backend, on_result=on_result)


def test_the_listener_and_the_journal_count_the_same(tmp_path: Path) -> None:
    """Every kind of run once; the listener's tally (fed by the engine) equals the one-shot's (read from the journal)."""
    backend = MemoryBackend(devices={"lo", "eth0"})
    fed = ListenerMetrics()
    engine = _engine(tmp_path, backend, fed.on_result)
    t = lambda n: Ticket("b", n, 1)  # noqa: E731
    engine.transition(["VI_1"], State.MASTER, argv=["kanotify", "master"], kind=RunKind.MASTER, ticket=t(10))
    engine.transition(["VI_1"], State.BACKUP, argv=["x"], kind=RunKind.NOTIFY, command="notify INSTANCE backup",
                      ticket=t(5))  # older
    engine.transition(["VI_1", "VI_2"], State.MASTER, argv=["x"], kind=RunKind.NOTIFY, command="notify GROUP master",
                      ticket=t(20))
    engine.ignored(argv=["x"], kind=RunKind.NOTIFY, command="notify INSTANCE master", note="not ours", name="VI_9")
    engine.transition(["VI_2"], State.BACKUP, argv=["x"], kind=RunKind.BACKUP, dry_run=True, ticket=t(30))
    backend.fail["bind 198.51.100.100/24 dev eth0"] = 99
    backend.addresses.clear()  # drift
    engine.reconcile(argv=["kanotify", "reconcile"])  # repairs VI_1, fails on VI_2's VIP: still a repair
    backend.fail.clear()
    engine.reconcile(argv=["kanotify", "listen", "tick"], kind=RunKind.REPAIR, quiet=True)  # repairs VI_2
    engine.reconcile(argv=["kanotify", "listen", "tick"], kind=RunKind.REPAIR, quiet=True)  # nothing: no line
    engine.transition(["VI_2"], State.FAULT, argv=["x"], kind=RunKind.FIFO, command="fifo INSTANCE fault", ticket=t(40))

    counts = fed.tally.counts()
    assert counts.transitions == (
        ("VI_1", "converged", 2), ("VI_1", "superseded", 1), ("VI_2", "converged", 2),
    )
    assert counts.repairs == 2
    assert sum(counts.buckets) == 3  # the superseded one did nothing, the group line ran once
    assert counts.duration_sum > 0
    journaled, warnings = count_journal(engine.config)
    assert warnings == [] and journaled == counts


def test_a_lock_timeout_counts_as_failed(tmp_path: Path) -> None:
    backend = MemoryBackend(devices={"lo", "eth0"})
    fed = ListenerMetrics()
    engine = _engine(tmp_path, backend, fed.on_result)
    store = StateStore(engine.config.settings.state_dir)
    store.ensure_dir()
    config = dataclasses.replace(engine.config, settings=dataclasses.replace(engine.config.settings, lock_timeout=0.05))
    with store.lock(1):
        engine = Engine(config, backend_factory=lambda: backend, on_result=fed.on_result)
        engine.transition(["VI_1"], State.MASTER, argv=["x"], kind=RunKind.MASTER, ticket=Ticket("b", 1, 1))
    assert fed.tally.counts().transitions == (("VI_1", "failed", 1),)


def test_durations_land_in_their_buckets() -> None:
    tally = Tally()
    for ms in (1, 7, 40, 40, 900, 45_000, 600_000):
        tally.add({"command": "master", "dry_run": False, "outcome": "converged", "duration_ms": ms,
                   "instances": [{"instance": "VI_1", "to": "master"}]}, ("VI_1",))
    counts = tally.counts()
    bounds = (*metrics_mod.DURATION_BUCKETS, float("inf"))
    assert {bounds[i]: n for i, n in enumerate(counts.buckets) if n} == {
        0.005: 1, 0.01: 1, 0.05: 2, 1.0: 1, 60.0: 1, float("inf"): 1}
    assert counts.duration_sum == pytest.approx(645.988)
    assert Counts.from_json(json.loads(json.dumps(counts.to_json()))) == counts


def test_observed_weights_and_daemons_follow_each_instances_last_run(tmp_path: Path) -> None:
    backend = MemoryBackend(devices={"lo", "eth0"})
    fed = ListenerMetrics()
    engine = _engine(tmp_path, backend, fed.on_result)
    facts = fed.facts(engine.config, None)
    assert facts.weights == () and facts.sync_daemons == ()  # nothing observed yet: nothing guessed
    engine.transition(["VI_1"], State.MASTER, argv=["x"], kind=RunKind.MASTER, ticket=Ticket("b", 1, 1))
    facts = fed.facts(engine.config, None)
    assert facts.weights == (("tcp 192.0.2.100:80", "192.0.2.21:80", 3), ("tcp 192.0.2.100:80", "192.0.2.22:80", 1))
    assert facts.sync_daemons == (("master", True), ("backup", False))
    assert dict(facts.instances) == {"VI_1": State.MASTER, "VI_2": None}
    engine.transition(["VI_1"], State.BACKUP, argv=["x"], kind=RunKind.BACKUP, ticket=Ticket("b", 2, 1))
    facts = fed.facts(engine.config, None)
    assert facts.weights == () and facts.sync_daemons == (("master", False), ("backup", True))


# --------------------------------------------------------------------------- settings.metrics


@pytest.mark.parametrize(("written", "why"), [
    ('"127.0.0.1"', "no port"),
    ('"127.0.0.1:0"', "1..65535"),
    ('"127.0.0.1:65536"', "1..65535"),
    ('"127.0.0.1:http"', "1..65535"),
    ('"localhost:9650"', "host names are not accepted"),
    ('"metrics.example.com:9650"', "host names are not accepted"),
    ('"::1:9650"', "in brackets"),
    ('"[::1]"', "]:PORT"),
    ('"[192.0.2.1]:9650"', "only IPv6"),
    ('"224.0.0.1:9650"', "multicast"),
    ('"garbage"', "no port"),
    ('":9650"', "no address"),
    ('""', "ADDRESS:PORT"),
    ("9650", "got integer 9650"),
    ("true", "got boolean"),
])
def test_a_wrong_metrics_address_is_a_config_error_at_its_key_path(written: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[settings]\nmetrics = {written}\n[[instance]]\nname = "VI_1"\n', "k.toml")
    [problem] = caught.value.problems
    assert problem.path == "settings.metrics" and why in problem.message and problem.line == 2, problem
    assert 'e.g. "127.0.0.1:9650" or "[::1]:9650"' in problem.message


@pytest.mark.parametrize(("written", "address", "port"), [
    ("127.0.0.1:9650", "127.0.0.1", 9650), ("[::1]:9650", "::1", 9650), ("0.0.0.0:1", "0.0.0.0", 1),
    ("[2001:db8::1]:65535", "2001:db8::1", 65535),
])
def test_a_metrics_address(written: str, address: str, port: int) -> None:
    config = parse_config(f'[settings]\nmetrics = "{written}"\n[[instance]]\nname = "VI_1"\n')
    assert config.settings.metrics == ListenAddress(ipaddress.ip_address(address), port)
    assert str(config.settings.metrics) == written


def test_the_bad_address_exits_78_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text(CONFIG.format(tmp=tmp_path, metrics='metrics = "localhost:9650"'))
    for argv in (["check"], ["metrics"]):
        done = subprocess.run([sys.executable, "-m", "kanotify", "--config", str(path), "--allow-insecure", *argv],
                              capture_output=True, text=True)
        assert done.returncode == 78, done
        assert "settings.metrics" in done.stderr and "localhost" in done.stderr and done.stdout == ""


# --------------------------------------------------------------------------- the listener's /metrics


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, int]]:
    port = free_port()
    (tmp_path / "k.toml").write_text(CONFIG.format(tmp=tmp_path, metrics=f'metrics = "127.0.0.1:{port}"'))
    r = Running(tmp_path, MemoryBackend(devices={"lo", "eth0"}))
    try:
        wait_for(lambda: r.listener.metrics_server is not None)
        yield r, port
    finally:
        r.stop()


def test_the_listener_serves_its_numbers_and_they_follow_the_transitions(served: tuple[Running, int]) -> None:
    running, port = served
    text = scrape(port)
    assert value(text, "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 0
    assert value(text, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") == 0
    assert value(text, "kanotify_build_info", version=metrics_mod.__version__) == 1
    assert value(text, "kanotify_listener_running") == 1
    assert value(text, "kanotify_sync_daemon_running", state="backup") == 1  # the start-up repair: unrecorded = BACKUP
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: value(scrape(port), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1)
    # the state is recorded before the run applies; the run is counted once it has ended
    wait_for(lambda: value(scrape(port), "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") == 1)
    text = scrape(port)
    assert [value(text, "kanotify_instance_state", vrrp_instance="VI_1", state=s.value) for s in State] == [1, 0, 0, 0]
    assert value(text, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") == 1
    assert value(text, "kanotify_transition_duration_seconds_count") == 1
    assert value(text, "kanotify_real_server_weight", service="tcp 192.0.2.100:80", real="192.0.2.21:80") == 3
    assert value(text, "kanotify_sync_daemon_running", state="master") == 1
    assert value(text, "kanotify_sync_daemon_running", state="backup") == 0
    running.write('GROUP "VG_1" BACKUP 0')
    wait_for(lambda: value(scrape(port), "kanotify_transitions_total", vrrp_instance="VI_2", outcome="converged") == 1)
    text = scrape(port)
    assert value(text, "kanotify_instance_state", vrrp_instance="VI_1", state="backup") == 1
    assert value(text, "kanotify_real_server_weight", service="tcp 192.0.2.100:80", real="192.0.2.21:80") is None
    running.backend.addresses.clear()
    running.listener.loop.call_soon_threadsafe(running.listener._submit, "repair", Repair("test"))
    wait_for(lambda: value(scrape(port), "kanotify_drift_repairs_total") == 1)


def test_only_slash_metrics_is_served(served: tuple[Running, int]) -> None:
    _running, port = served
    for path in ("/", "/metrics/", "/favicon.ico", "/index.html", "/metricsx"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            scrape(port, path)
        assert caught.value.code == 404, path
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 405


def test_stalled_scrapers_do_not_hold_up_transitions_or_other_scrapes(served: tuple[Running, int]) -> None:
    running, port = served
    stalled = []
    for _ in range(MAX_CLIENTS - 1):  # connect, send half a request, never read
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        stalled.append(sock)
    try:
        started = time.monotonic()
        running.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: "192.0.2.100/24 dev eth0" in {str(v) for v in running.backend.addresses})
        assert time.monotonic() - started < 2
        assert value(scrape(port), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1
        time.sleep(0.3)  # the scrape's thread gives its slot back just after the answer went out
        stalled.append(socket.create_connection(("127.0.0.1", port)))  # all MAX_CLIENTS slots taken now
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # past MAX_CLIENTS: closed
        for sock in extra:
            sock.settimeout(5)
            assert sock.recv(100) == b""
            sock.close()
    finally:
        for sock in stalled:
            sock.close()

    def served_again() -> bool:
        try:
            return value(scrape(port), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1
        except OSError:  # its threads have not all seen their client go yet: every slot still taken, closed at once
            return False

    wait_for(served_again)


def test_reload_moves_the_server_and_unset_stops_it(served: tuple[Running, int], tmp_path: Path) -> None:
    running, port = served
    other = free_port()
    running.config.write_text(CONFIG.format(tmp=tmp_path, metrics=f'metrics = "[::1]:{other}"'))
    running.listener.reload()
    wait_for(lambda: running.listener.metrics_server is not None and running.listener.metrics_server.address.port == other)
    with urllib.request.urlopen(f"http://[::1]:{other}/metrics", timeout=5) as answer:
        assert b"kanotify_instance_state" in answer.read()
    with pytest.raises(OSError):
        scrape(port)
    running.config.write_text(CONFIG.format(tmp=tmp_path, metrics=""))
    running.listener.reload()
    wait_for(lambda: running.listener.metrics_server is None)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://[::1]:{other}/metrics", timeout=5)


def test_a_port_in_use_leaves_the_listener_running_without_metrics_until_it_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(metricskeeper, "METRICS_RETRY", 0.2)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    (tmp_path / "k.toml").write_text(CONFIG.format(tmp=tmp_path, metrics=f'metrics = "127.0.0.1:{port}"'))
    running = Running(tmp_path, MemoryBackend(devices={"lo", "eth0"}))
    try:
        running.write('INSTANCE "VI_1" MASTER 100')  # the failover path works without metrics
        wait_for(lambda: "192.0.2.100/24 dev eth0" in {str(v) for v in running.backend.addresses})
        [record] = [r for r in running.journal() if r["command"] == "metrics"]
        assert record["outcome"] == "failed" and f"127.0.0.1:{port}/metrics" in record["note"]
        assert "Address already in use" in record["note"] and "WITHOUT metrics" in record["note"]
        assert f"cannot serve http://127.0.0.1:{port}/metrics" in capfd.readouterr().err
        holder.close()
        wait_for(lambda: running.listener.metrics_server is not None)
        assert value(scrape(port), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1
        assert len([r for r in running.journal() if r["command"] == "metrics"]) == 1  # said once
    finally:
        holder.close()
        running.stop()


def test_health_checks_show_as_real_server_up(tmp_path: Path) -> None:
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen()
    good, (bad, port) = up.getsockname()[1], free_ports(2)  # the metrics port must not be the refusing one
    check = 'type = "tcp"\n      interval = 0.1\n      timeout = 0.5\n      retry = 0\n      retry_delay = 0.05'
    (tmp_path / "k.toml").write_text(f"""
[settings]
state_dir = "{tmp_path}/state"
journal = "{tmp_path}/journal.jsonl"
syslog = false
reconcile_interval = 0
metrics = "127.0.0.1:{port}"
[[instance]]
name = "VI_1"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
    [[instance.service.real]]
    address = "127.0.0.1"
    port = {good}
    forward = "nat"
      [instance.service.real.check]
      {check}
    [[instance.service.real]]
    address = "127.0.0.1"
    port = {bad}
    forward = "nat"
      [instance.service.real.check]
      {check}
    [[instance.service.real]]
    address = "127.0.0.2"
    forward = "nat"
""")
    running = Running(tmp_path, MemoryBackend(devices={"lo", "eth0"}))
    try:
        wait_for(lambda: running.listener.metrics_server is not None)
        service = "tcp 192.0.2.100:80"
        wait_for(lambda: value(scrape(port), "kanotify_real_server_up", service=service, real=f"127.0.0.1:{bad}") == 0)
        text = scrape(port)
        assert value(text, "kanotify_real_server_up", service=service, real=f"127.0.0.1:{good}") == 1
        assert value(text, "kanotify_real_server_up", service=service, real="127.0.0.2:80") is None  # not checked
        # the one-shot shows the listener's health from health.json
        config = running.listener.engine.config  # type: ignore[union-attr]
        # a scrape shows the checker's state at once; health.json is written in the loop's next turn
        wait_for(lambda: (service, f"127.0.0.1:{bad}", False)
                 in collect_facts(config, backend_factory=lambda: running.backend)[0].reals_up)
        facts, _warnings = collect_facts(config, backend_factory=lambda: running.backend)
        assert (service, f"127.0.0.1:{bad}", False) in facts.reals_up and facts.listener
        assert (service, f"127.0.0.1:{good}", True) in facts.reals_up
    finally:
        running.stop()
        up.close()
    facts, _warnings = collect_facts(config, backend_factory=lambda: MemoryBackend())
    assert facts.reals_up == () and not facts.listener  # no listener: no check runs, nothing to show


# --------------------------------------------------------------------------- kanotify metrics


def _journal_lines(tmp: Path, *records: dict[str, Any]) -> None:
    with open(tmp / "journal.jsonl", "a") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


def _record(ts: str = "2999-01-01T00:00:00.000Z", instance: str = "VI_1", outcome: str = "converged",
            pad: int = 0) -> dict[str, Any]:
    return {"ts": ts, "command": "master", "dry_run": False, "outcome": outcome, "duration_ms": 12.0,
            "instances": [{"instance": instance, "from": None, "to": "master"}], "pad": "x" * pad}


def _converged(counts: Counts) -> int:
    return sum(n for i, o, n in counts.transitions if o == "converged")


def test_the_journal_is_read_on_from_the_cursor(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(tmp=tmp_path, metrics=""))
    _journal_lines(tmp_path, _record("1970-01-01T00:00:00.000Z"), _record(), _record(outcome="failed"))
    counts, warnings = count_journal(config)
    assert warnings == [] and _converged(counts) == 1 and ("VI_1", "failed", 1) in counts.transitions  # since boot
    assert count_journal(config)[0] == counts  # nothing new: the same
    with open(tmp_path / "journal.jsonl", "a") as fh:
        fh.write(json.dumps(_record()) + "\n" + json.dumps(_record())[:20])  # one whole, one being written
    assert _converged(count_journal(config)[0]) == 2
    with open(tmp_path / "journal.jsonl", "a") as fh:
        fh.write(json.dumps(_record())[20:] + "\n")
    assert _converged(count_journal(config)[0]) == 3
    os.rename(tmp_path / "journal.jsonl", tmp_path / "journal.jsonl.1")  # rotated: counts kept, new file from 0
    _journal_lines(tmp_path, _record())
    assert _converged(count_journal(config)[0]) == 4
    (tmp_path / "state" / metrics_mod.CURSOR_FILE).write_text("{garbage")  # lost: from the boot's records again
    assert _converged(count_journal(config)[0]) == 1


def test_a_new_boot_starts_the_counts_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(CONFIG.format(tmp=tmp_path, metrics=""))
    _journal_lines(tmp_path, _record(), _record())
    assert _converged(count_journal(config)[0]) == 2
    monkeypatch.setattr(metrics_mod, "ticket_fields", lambda: ("another-boot", 1, 1))
    monkeypatch.setattr(metrics_mod, "_boot_iso", lambda: "3000-01-01T00:00:00.000Z")
    assert count_journal(config)[0] == Counts()


def test_one_run_reads_at_most_max_read_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_mod, "MAX_READ", 4096)
    config = parse_config(CONFIG.format(tmp=tmp_path, metrics=""))
    _journal_lines(tmp_path, *[_record(pad=900) for _ in range(20)])
    started = time.monotonic()
    counts, [warning] = count_journal(config)
    assert 0 < _converged(counts) <= 4 and "bytes not counted" in warning
    assert time.monotonic() - started < 1
    _journal_lines(tmp_path, _record())
    assert _converged(count_journal(config)[0]) == _converged(counts) + 1


def test_kanotify_metrics_without_a_writable_state_dir_still_prints(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    config = parse_config(CONFIG.format(tmp=tmp_path, metrics=""))
    _journal_lines(tmp_path, _record())
    counts, warnings = count_journal(config)
    assert _converged(counts) == 1 and "without a cursor" in warnings[0]


def test_collect_facts_reads_weights_and_daemons_from_the_backend(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(tmp=tmp_path, metrics=""))
    real = RealServer(ipaddress.ip_address("192.0.2.21"), 80, "dr", 0)
    other = ServiceKey.inet("tcp", ipaddress.ip_address("203.0.113.1"), 80)  # not kanotify's: not shown
    backend = MemoryBackend(
        services={key: ObservedService(VirtualService(key, "wrr"), {real.key: (real, RealServerStats())})
                  for key in (SERVICE, other)},
        daemons=[SyncDaemon("backup", "eth0", 7)])
    facts, warnings = collect_facts(config, backend_factory=lambda: backend)
    assert warnings == []
    assert facts.weights == (("tcp 192.0.2.100:80", "192.0.2.21:80", 0),)
    assert facts.sync_daemons == (("master", False), ("backup", True))
    facts, warnings = collect_facts(config, backend_factory=lambda: MemoryBackend(ipvs_available=False))
    assert facts.weights == () and facts.sync_daemons == () and "not available" in warnings[0]


def _a_listener_holds_the_lock(state: Path) -> int:
    state.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(state / LISTEN_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def test_kanotify_metrics_passes_promtool(tmp_path: Path) -> None:
    """The command's own output, checked by Prometheus's linter of the exposition format."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup installs Debian's prometheus package"
    # no IPVS service and no [sync_daemon]: the command runs on the host, whose kernel has no IPVS
    (tmp_path / "k.toml").write_text(f'[settings]\nstate_dir = "{tmp_path}/state"\njournal = "{tmp_path}/journal.jsonl"\n'
                                     'syslog = false\n[[instance]]\nname = "VI_1"\n')
    backend = MemoryBackend(devices={"lo", "eth0"})
    engine = Engine(parse_config((tmp_path / "k.toml").read_text()), backend_factory=lambda: backend)
    engine.transition(["VI_1"], State.MASTER, argv=["x"], kind=RunKind.MASTER, ticket=Ticket("b", 1, 1))
    lock = _a_listener_holds_the_lock(tmp_path / "state")
    try:
        (tmp_path / "state" / HEALTH_FILE).write_text(json.dumps({"pid": os.getpid(), "reals": []}))
        done = subprocess.run([sys.executable, "-m", "kanotify", "--config", str(tmp_path / "k.toml"),
                               "--allow-insecure", "metrics"], capture_output=True, text=True)
    finally:
        os.close(lock)
    assert done.returncode == 0 and done.stderr == "", done
    assert value(done.stdout, "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1
    assert value(done.stdout, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") == 1
    assert value(done.stdout, "kanotify_listener_running") == 1
    lint = subprocess.run([promtool, "check", "metrics"], input=done.stdout, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == "", lint
    full = render(metrics_mod.Facts(
        instances=(("VI_1", State.MASTER),), counts=Counts(transitions=(("VI_1", "converged", 2),)),
        reals_up=(("tcp 192.0.2.100:80", "192.0.2.21:80", True), ("fwmark 5", "[2001:db8::1]:0", False)),
        weights=(("tcp 192.0.2.100:80", "192.0.2.21:80", 1),), sync_daemons=(("master", True), ("backup", False)),
    )).decode()
    lint = subprocess.run([promtool, "check", "metrics"], input=full, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == "", lint


def test_textfile_is_written_whole_and_readable(tmp_path: Path) -> None:
    (tmp_path / "k.toml").write_text(f'[settings]\nstate_dir = "{tmp_path}/state"\njournal = "{tmp_path}/j"\n'
                                     '[[instance]]\nname = "VI_1"\n')
    target = tmp_path / "kanotify.prom"
    done = subprocess.run([sys.executable, "-m", "kanotify", "--config", str(tmp_path / "k.toml"), "--allow-insecure",
                           "metrics", "--textfile", str(target)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "", done
    assert target.stat().st_mode & 0o777 == 0o644
    assert value(target.read_text(), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("kanotify.prom")] == ["kanotify.prom"]


@pytest.mark.parametrize("argv", [["metrics"], ["metrics", "--textfile", "/x.prom"], ["--json", "metrics", "--textfile=/x"]])
def test_the_fast_path_runs_metrics_without_typer(argv: list[str]) -> None:
    parsed = split_fast(argv)
    assert parsed is not None
    assert parsed[1][0] == "metrics" and parsed[1][1] in ("", "/x.prom", "/x")
    assert split_fast(["metrics", "--bogus"]) is None  # typer explains


def test_a_newer_listener_takes_over_the_port_without_a_bind_failure(
        served: tuple[Running, int], tmp_path: Path) -> None:
    """keepalived starts its fifo script again on every reload: the old listener frees the port before its lock."""
    running, port = served
    running.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: value(scrape(port), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1)
    second = Running(tmp_path, running.backend)
    try:
        running.thread.join(10)
        assert not running.thread.is_alive() and running.code == 0
        wait_for(lambda: second.listener.metrics_server is not None)
        assert value(scrape(port), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1
        assert not [r for r in second.journal() if r["command"] == "metrics"]  # no failure to bind
    finally:
        second.stop()


def test_a_scrape_that_fails_is_a_500_and_the_next_one_works(served: tuple[Running, int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    running, port = served
    calls = []

    def broken(config: Any, health: Any) -> Any:
        calls.append(1)
        raise RuntimeError("boom")

    monkeypatch.setattr(running.listener.metrics, "facts", broken)
    with pytest.raises(urllib.error.HTTPError) as caught:
        scrape(port)
    assert caught.value.code == 500 and calls
    monkeypatch.undo()
    assert value(scrape(port), "kanotify_listener_running") == 1


# --------------------------------------------------------------------------- started records and interrupted runs

DEAD = ["some-other-boot", 1, 1]  # a process that cannot be running


def _started(run: str, command: str = "master", process: Any = None, ts: str = "2999-01-01T00:00:00.000Z",
             instance: str = "VI_1") -> dict[str, Any]:
    from kanotify.journal import writer_process

    return {"ts": ts, "record": "started", "run": run, "command": command, "dry_run": False,
            "instances": [{"instance": instance, "from": None, "to": "master"}],
            "actions": [{"action": "bind x", "status": "pending"}],
            "process": writer_process() if process is None else process}


def _final(run: str, **kw: Any) -> dict[str, Any]:
    return {**_record(**kw), "record": "final", "run": run}


def test_a_started_record_is_never_a_transition_and_one_without_its_final_one_is_interrupted() -> None:
    tally = Tally()
    declared = ("VI_1", "VI_2")
    tally.add(_started("a"), declared)
    tally.add(_final("a"), declared)
    assert tally.counts().transitions == (("VI_1", "converged", 1),) and sum(tally.counts().buckets) == 1
    assert tally.counts().interrupted == 0 and tally.counts().pending == ()
    tally.add(_started("b"), declared)  # this process runs: it may be under way
    assert tally.counts().interrupted == 0 and [p.run for p in tally.counts().pending] == ["b"]
    tally.settle()
    assert [p.run for p in tally.counts().pending] == ["b"]
    tally.add(_started("c", command="reconcile", instance="VI_2"), declared)  # a later run started: b is over
    counts = tally.counts()
    assert counts.interrupted == 1 and ("VI_1", "interrupted", 1) in counts.transitions
    tally.settle(alive=lambda process: False)  # c's process is gone: a reconcile, not a transition
    counts = tally.counts()
    assert counts.interrupted == 2 and counts.pending == ()
    assert counts.transitions == (("VI_1", "converged", 1), ("VI_1", "interrupted", 1))
    assert sum(counts.buckets) == 1 and counts.repairs == 0  # no duration, no repair for what never ended
    tally.add({**_started("d"), "dry_run": True}, declared)  # a dry-run never writes one; one that says so is ignored
    assert tally.counts().pending == ()
    assert Counts.from_json(json.loads(json.dumps(tally.counts().to_json()))) == tally.counts()
    old = tally.counts().to_json()
    del old["interrupted"], old["pending"]  # a cursor written before started records
    assert Counts.from_json(old).interrupted == 0


def test_the_cursor_keeps_a_started_run_until_its_final_record_or_its_end(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(tmp=tmp_path, metrics=""))
    _journal_lines(tmp_path, _started("a"))  # under way (this process)
    counts, warnings = count_journal(config)
    assert warnings == [] and counts.interrupted == 0 and [p.run for p in counts.pending] == ["a"]
    _journal_lines(tmp_path, _final("a"))  # read in another run of kanotify metrics: paired through the cursor
    counts = count_journal(config)[0]
    assert counts.interrupted == 0 and counts.pending == () and _converged(counts) == 1
    _journal_lines(tmp_path, _started("b", process=DEAD))
    counts = count_journal(config)[0]
    assert counts.interrupted == 1 and ("VI_1", "interrupted", 1) in counts.transitions and counts.pending == ()
    assert count_journal(config)[0] == counts  # counted once
    text = render(metrics_mod.Facts(instances=(("VI_1", State.MASTER),), counts=counts)).decode()
    assert value(text, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="interrupted") == 1
    assert value(text, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") == 1
    assert value(text, "kanotify_interrupted_runs_total") == 1


def test_a_listener_counts_the_runs_its_killed_predecessor_left_interrupted(tmp_path: Path) -> None:
    from kanotify.journal import Journal, writer_process

    boot = writer_process()[0]
    dead_listener = [boot, 1, 999_999_999]  # no such pid
    journal = Journal(str(tmp_path / "journal.jsonl"))
    for record in (_started("x", process=[boot, 1, 12345]), _started("a", process=dead_listener),
                   _final("a"), _started("b", process=dead_listener, command="fifo INSTANCE master")):
        journal.append(record)
    fed = ListenerMetrics()
    assert fed.count_predecessor(journal, 999_999_999, ("VI_1",)) == 1  # b only: x was another process's
    counts = fed.tally.counts()
    assert counts.interrupted == 1 and counts.transitions == (("VI_1", "interrupted", 1),)
    assert ListenerMetrics().count_predecessor(journal, 4242, ("VI_1",)) == 0


def test_docs_metrics_md_lists_exactly_the_metrics_shown() -> None:
    import re

    shown = set()
    for family in text_string_to_metric_families(render(metrics_mod.Facts(instances=(("VI_1", None),))).decode()):
        shown.add(family.name + {"counter": "_total", "info": "_info"}.get(family.type, ""))
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(kanotify_\w+)` \|", text, re.MULTILINE))
    assert documented == shown

"""``[sync_daemon]`` in a real kernel: the IPVS sync daemons follow the VRRP state (``ipvsadm -L --daemon``).

Every test gets its own network namespace (sync daemons, IPVS tables and
addresses are per namespace) with a veth ``eth0`` (peer ``eth1``), both up.
The engine runs with the system backend pointed at that namespace, the real
command line runs inside it with ``ip netns exec``; what runs is read back
with ``ipvsadm -L --daemon``, the tool operators trust.  Every state change is
applied twice: the second run must plan nothing.
"""

from __future__ import annotations

import errno
import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from ipvs_guest_support import run
from kanotify.backends.system import SystemBackend
from kanotify.config.schema import parse_config
from kanotify.config.values import Config
from kanotify.engine import Engine
from kanotify.model import State
from kanotify.run import RunKind, RunResult

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
{sysctls}
[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  garp = false
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "rr"
    [[instance.service.real]]
    address = "192.0.2.21"

[[instance]]
name = "VI_2"
  [[instance.vip]]
  address = "198.51.100.100/24"
  dev = "eth0"
  garp = false
{sync}"""
SYNC = '\n[sync_daemon]\ninterface = "{interface}"\ninstance = "VI_1"\nsync_id = 51\n'
KNOBS = '\n[sysctl]\n"net.ipv4.vs.expire_nodest_conn" = 1\n"net.ipv4.vs.expire_quiescent_template" = 1\n'

MASTER = "master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
BACKUP = "backup sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
#: what ``ipvsadm -L --daemon`` lists in each state
LISTED = {State.MASTER: [MASTER], State.BACKUP: [BACKUP], State.FAULT: [BACKUP], State.STOP: []}


@dataclass
class Node:
    """One director's namespace, its kanotify config and an engine on the system backend there."""

    ns: str
    tmp: Path
    ticket: int = 0

    def write_config(self, *, sync: bool = True, interface: str = "eth0", sysctls: str = "", extra: str = "") -> Path:
        text = CONFIG.format(tmp=self.tmp, sysctls=sysctls,
                             sync=SYNC.format(interface=interface) + extra if sync else "")
        path = self.tmp / "kanotify.toml"
        path.write_text(text)
        return path

    def config(self, **kw: Any) -> Config:
        return parse_config(self.write_config(**kw).read_text(), "kanotify.toml")

    def engine(self, config: Config) -> Engine:
        return Engine(config, backend_factory=lambda: SystemBackend(netns=self.ns))

    def notify(self, config: Config, state: State, instance: str = "VI_1") -> RunResult:
        return self.engine(config).transition([instance], state, argv=["kanotify", state.value, instance],
                                              kind=RunKind.of_state(state))

    def ipvsadm(self, *args: str) -> str:
        return run(["ip", "netns", "exec", self.ns, "ipvsadm", *args])

    def listed(self) -> list[str]:
        """``ipvsadm -L --daemon``, one line per running daemon (master first)."""
        return [line.strip() for line in self.ipvsadm("-L", "--daemon").splitlines() if line.strip()]

    def cli(self, config: Path, *args: str, expect: int = 0) -> dict[str, Any]:
        """The real command line inside the namespace, with --json: its record."""
        proc = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "kanotify", "--config",
                               str(config), "--json", *args], capture_output=True, text=True)
        assert proc.returncode == expect, f"kanotify {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    name = f"kt-{secrets.token_hex(3)}-sd"
    run(["ip", "netns", "add", name])
    try:
        for cmd in ("link set lo up", "link add eth0 type veth peer name eth1", "link set eth0 up",
                    "link set eth1 up"):
            run(["ip", "-n", name, *cmd.split()])
        yield Node(name, tmp_path)
    finally:
        for state in ("master", "backup"):
            subprocess.run(["ip", "netns", "exec", name, "ipvsadm", "--stop-daemon", state], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _sync_actions(result: RunResult, status: str | None = None) -> list[str]:
    return [str(r.action) for r in result.results
            if "sync daemon" in str(r.action) and r.status != "noop" and (status is None or r.status == status)]


def test_every_state_change_applied_twice(node: Node) -> None:
    config = node.config()
    for state in (State.BACKUP, State.MASTER, State.FAULT, State.MASTER, State.BACKUP, State.STOP, State.MASTER,
                  State.STOP, State.FAULT):
        first = node.notify(config, state)
        assert first.outcome == "converged", first.record
        assert node.listed() == LISTED[state], state
        again = node.notify(config, state)
        assert again.outcome == "converged" and not again.plan.has_changes, again.record
        assert node.listed() == LISTED[state]


def test_entering_master_orders_services_backup_stop_master_start_then_the_vip(node: Node) -> None:
    config = node.config()
    node.notify(config, State.BACKUP)
    up = node.notify(config, State.MASTER)
    applied = [str(r.action) for r in up.results if r.status == "applied"]
    assert applied == [
        "add ipvs service tcp 192.0.2.100:80 scheduler rr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        f"stop {BACKUP} (not wanted in this state)",
        "start master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)",
        "bind 192.0.2.100/24 dev eth0",
    ]
    down = node.notify(config, State.BACKUP)
    applied = [str(r.action) for r in down.results if r.status == "applied"]
    assert applied == [
        "remove 192.0.2.100/24 dev eth0",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
        f"stop {MASTER} (not wanted in this state)",
        "start backup sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)",
    ]


def test_a_daemon_started_by_hand_with_other_parameters_is_restarted(node: Node) -> None:
    node.ipvsadm("--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "9")
    node.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth1", "--syncid", "51", "--mcast-port", "9000")
    config = node.config()
    result = node.engine(config).reconcile(argv=["kanotify", "reconcile"])  # unrecorded: backup
    assert result.outcome == "converged", result.record
    assert _sync_actions(result, "applied") == [
        "stop master sync daemon (mcast=eth1, syncid=51, maxlen=1472, group=224.0.0.81, port=9000, ttl=1) "
        "(not wanted in this state)",
        "stop backup sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) "
        "(other parameters than configured: restarted)",
        "start backup sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)",
    ]
    assert node.listed() == [BACKUP]
    assert not node.engine(config).reconcile(argv=["kanotify", "reconcile"]).plan.has_changes
    # the master, running with another maxlen than the configured one
    node.ipvsadm("--stop-daemon", "backup")
    node.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "51", "--sync-maxlen", "1000")
    config = node.config(extra="maxlen = 1400\n")
    result = node.notify(config, State.MASTER)
    assert _sync_actions(result, "applied") == [
        "stop master sync daemon (mcast=eth0, syncid=51, maxlen=1000, group=224.0.0.81, port=8848, ttl=1) "
        "(other parameters than configured: restarted)",
        "start master sync daemon (mcast=eth0, syncid=51, maxlen=1400, group=224.0.0.81, port=8848, ttl=1)",
    ]
    assert node.listed() == [MASTER.replace("maxlen=1472", "maxlen=1400")]
    assert not node.notify(config, State.MASTER).plan.has_changes


def test_no_maxlen_configured_takes_any_running_maxlen(node: Node) -> None:
    """The kernel reports a maxlen for every daemon: without one configured, whatever runs is the kernel's choice."""
    node.ipvsadm("--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "51", "--sync-maxlen", "1200")
    result = node.engine(node.config()).reconcile(argv=["kanotify", "reconcile"])
    assert not _sync_actions(result) and result.outcome == "converged"
    assert node.listed() == [BACKUP.replace("maxlen=1472", "maxlen=1200")]


def test_foreign_daemons_survive_without_sync_daemon(node: Node) -> None:
    node.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "3")
    node.ipvsadm("--start-daemon", "backup", "--mcast-interface", "eth1", "--syncid", "4")
    before = node.listed()
    config = node.config(sync=False)
    for state in (State.MASTER, State.BACKUP, State.STOP, State.FAULT):
        result = node.notify(config, state)
        assert result.outcome == "converged" and not _sync_actions(result)
        assert not any("sync daemon" in str(a) for a in result.plan.actions)  # not even a no-op
        assert node.listed() == before
    assert node.engine(config).reconcile(argv=["t"]).outcome == "converged" and node.listed() == before


def test_a_notification_for_another_instance_leaves_the_daemons_alone(node: Node) -> None:
    node.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "3")
    result = node.notify(node.config(), State.MASTER, instance="VI_2")
    assert result.outcome == "converged" and not any("sync daemon" in str(a) for a in result.plan.actions)
    assert node.listed() == ["master sync daemon (mcast=eth0, syncid=3, maxlen=1472, group=224.0.0.81, port=8848, "
                             "ttl=1)"]


def test_reconcile_repairs_a_daemon_stopped_by_hand(node: Node) -> None:
    config = node.config()
    node.notify(config, State.MASTER)
    node.ipvsadm("--stop-daemon", "master")
    assert node.listed() == []
    repaired = node.engine(config).reconcile(argv=["kanotify", "reconcile"])
    assert repaired.outcome == "converged"
    assert [str(r.action) for r in repaired.results if r.status == "applied"] == [
        "start master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)"]
    assert node.listed() == [MASTER]


def test_no_such_interface_fails_the_daemon_only(node: Node) -> None:
    result = node.notify(node.config(interface="nope0"), State.MASTER)
    assert result.outcome == "failed" and result.exit_code == 1
    failed = [a for a in result.record["actions"] if a["status"] == "failed"]
    start = "start master sync daemon (mcast=nope0, syncid=51, group=224.0.0.81, port=8848, ttl=1)"
    assert failed == [{"action": start, "status": "failed", "errno": errno.ENODEV,
                       "error": f"{start}: No such device [ENODEV] (no such interface nope0)"}]
    # the VIP and the IPVS work converged all the same
    assert "192.0.2.100/24" in run(["ip", "-n", node.ns, "addr", "show", "dev", "eth0"])
    assert "-A -t 192.0.2.100:80 -s rr" in run(["ip", "netns", "exec", node.ns, "ipvsadm-save", "-n"])
    assert node.listed() == []


def test_mixed_family_destinations_fail_the_daemon_only(node: Node) -> None:
    node.ipvsadm("-A", "-t", "203.0.113.5:80", "-s", "rr")  # a foreign service with an IPv6 real server
    node.ipvsadm("-a", "-t", "203.0.113.5:80", "-r", "[2001:db8::21]:80", "-i")
    result = node.notify(node.config(), State.BACKUP)
    assert result.outcome == "failed" and result.exit_code == 1
    (failed,) = [a for a in result.record["actions"] if a["status"] == "failed"]
    assert failed["errno"] == errno.EINVAL
    assert failed["error"].startswith("start backup sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, "
                                      "ttl=1): Invalid argument [EINVAL] (mixed IPv4/IPv6 destinations")
    assert "192.0.2.100" not in run(["ip", "-n", node.ns, "addr", "show", "dev", "eth0"])  # backup: no VIP
    assert node.listed() == []


def test_the_real_command_line_dry_run_status_and_the_ipvs_sysctls(node: Node) -> None:
    conf = node.write_config(sysctls=KNOBS)
    dry = node.cli(conf, "--dry-run", "master", "VI_1")
    pending = [a["action"] for a in dry["actions"] if a["status"] == "pending"]
    assert "start master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)" in pending
    assert "set sysctl net.ipv4.vs.expire_nodest_conn = 1 (was 0)" in pending
    assert node.listed() == []  # a dry-run changes nothing
    record = node.cli(conf, "master", "VI_1")
    assert record["outcome"] == "converged" and node.listed() == [MASTER]
    again = node.cli(conf, "master", "VI_1")
    assert {a["status"] for a in again["actions"]} == {"noop"}
    assert f"master sync daemon already running ({MASTER.split('(', 1)[1]}" in [a["action"] for a in again["actions"]]
    status = subprocess.run(["ip", "netns", "exec", node.ns, sys.executable, "-m", "kanotify", "--config", str(conf),
                             "status"], capture_output=True, text=True, check=True).stdout
    assert f"sync daemons (follow VI_1, master):\n  ok    {MASTER}\n  ok    backup sync daemon stopped" in status
    assert "  net.ipv4.vs.expire_nodest_conn = 1 (want 1)\n  net.ipv4.vs.expire_quiescent_template = 1 (want 1)\n" \
           "  net.ipv4.vs.sync_threshold = 3 50\n  net.ipv4.vs.sync_refresh_period = 0\n" in status
    assert "drift: none" in status
    node.cli(conf, "backup", "VI_1")
    assert node.listed() == [BACKUP]

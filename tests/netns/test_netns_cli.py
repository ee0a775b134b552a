"""End to end through the real command line, inside a network namespace.

``ip netns exec A .../kanotify --config CONF master VI_1``, exactly as
keepalived would run it on a node whose LAN interface is ``eth0``.  The kernel
is the judge: ``ip -j addr`` and ``/proc/sys`` read from inside the namespace,
the peer namespace's neighbour table for the GARP, and the journal for what
kanotify says it did.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from netns_support import Netns, Pair, kanotify_script, wait_for
from nstools import whole_lines

pytestmark = pytest.mark.root

SYSCTLS = {
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
    "net.ipv4.conf.lo.arp_ignore": "1",
    "net.ipv4.conf.lo.arp_announce": "2",
}

CONFIG = """\
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
garp_count = 2
garp_interval = 0.05

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
  states = ["master"]

  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  label = "lo:0"
  states = ["backup", "fault"]
{extra}"""

V6_VIP = """
  [[instance.vip]]
  address = "2001:db8::100/64"
  dev = "eth0"
  states = ["master"]
"""

BAD_DEVICE = """
  [[instance.vip]]
  address = "198.51.100.100/24"
  dev = "eth9"
  states = ["master"]
"""

SYNC_DAEMON = """
[sync_daemon]
interface = "eth0"
sync_id = 51
"""



class Node:
    """Namespace ``a`` as a keepalived node running kanotify, with its config and journal."""

    def __init__(self, ns: Netns, tmp: Path, extra: str = "") -> None:
        self.ns = ns
        self.tmp = tmp
        self.config = tmp / "kanotify.toml"
        self.config.write_text(CONFIG.format(tmp=tmp, extra=extra))
        os.chmod(self.config, 0o644)
        self.journal = tmp / "journal.jsonl"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.ns.name, kanotify_script(), "--config", str(self.config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def records(self) -> list[dict]:
        """The final record of each run (not the ``started`` records of the runs that changed something)."""
        if not self.journal.exists():
            return []
        records = [json.loads(line) for line in whole_lines(self.journal)]
        return [r for r in records if r.get("record") != "started"]

    def addr(self) -> list[dict]:
        """``ip -j addr`` of the namespace, minus the lifetimes the kernel counts down."""
        data = self.ns.ip_json("addr")
        for link in data:
            for info in link.get("addr_info", []):
                info.pop("valid_life_time", None)
                info.pop("preferred_life_time", None)
        return data

    def sysctls(self) -> dict[str, str]:
        return {key: self.ns.sysctl(key.replace(".", "/")) for key in SYSCTLS}


def _has(ns: Netns, dev: str, local: str, prefixlen: int) -> dict | None:
    for info in ns.addresses(dev):
        if info["local"] == local and info["prefixlen"] == prefixlen:
            return info
    return None


def _statuses(record: dict) -> list[str]:
    return [a["status"] for a in record["actions"]]


def _host_sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        with open("/proc/sys/" + key.replace(".", "/")) as fh:
            out[key] = fh.read().strip()
    return out


def _neigh_mac(ns: Netns, ip: str) -> str | None:
    for entry in ns.ip_json("neigh", "show", "dev", "eth0"):
        if entry.get("dst") == ip and "lladdr" in entry:
            return entry["lladdr"]
    return None


def test_two_node_master_then_backup_twice_each(pair: Pair, tmp_path: Path) -> None:
    node = Node(pair.a, tmp_path)
    host_before = _host_sysctls()
    # foreign addresses kanotify must never touch
    pair.a.ip("addr", "add", "192.0.2.50/24", "dev", "eth0", "label", "eth0:f")
    pair.a.ip("addr", "add", "203.0.113.7/32", "dev", "lo")
    pair.b.set_sysctls({"net.ipv4.conf.all.arp_accept": 1, "net.ipv4.conf.eth0.arp_accept": 1})

    # ---- master
    t0 = time.monotonic()
    first = node.run("master", "VI_1")
    master_ms = (time.monotonic() - t0) * 1000
    assert first.returncode == 0, first.stdout + first.stderr
    eth0_vip = _has(pair.a, "eth0", "192.0.2.100", 24)
    assert eth0_vip is not None and eth0_vip["label"] == "eth0:0"
    assert _has(pair.a, "lo", "192.0.2.100", 32) is None
    assert node.sysctls() == SYSCTLS
    assert _host_sysctls() == host_before
    # the peer learned the VIP at a's MAC from the gratuitous ARP
    assert wait_for(lambda: _neigh_mac(pair.b, "192.0.2.100") == pair.a.mac(), what="GARP learned by the peer")

    record = node.records()[-1]
    assert record["outcome"] == "converged" and record["to"] == "master" and record["dry_run"] is False
    texts = [a["action"] for a in record["actions"]]
    assert "bind 192.0.2.100/24 dev eth0 label eth0:0" in texts
    assert any(t.startswith("send gratuitous ARP for 192.0.2.100 on eth0") for t in texts)
    assert "applied" in _statuses(record)
    after_first = node.addr()

    second = node.run("master", "VI_1")
    assert second.returncode == 0, second.stdout + second.stderr
    record = node.records()[-1]
    assert record["outcome"] == "converged"
    assert set(_statuses(record)) == {"noop"}, record["actions"]
    assert node.addr() == after_first

    # ---- backup: the VIP leaves eth0 and lands on lo (real-server role)
    third = node.run("backup", "VI_1")
    assert third.returncode == 0, third.stdout + third.stderr
    assert _has(pair.a, "eth0", "192.0.2.100", 24) is None
    lo_vip = _has(pair.a, "lo", "192.0.2.100", 32)
    assert lo_vip is not None and lo_vip["label"] == "lo:0"
    assert node.sysctls() == SYSCTLS
    record = node.records()[-1]
    assert record["from"] == "master" and record["to"] == "backup" and record["outcome"] == "converged"
    assert not any("gratuitous" in a["action"] for a in record["actions"])  # never on lo
    after_backup = node.addr()

    fourth = node.run("backup", "VI_1")
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert set(_statuses(node.records()[-1])) == {"noop"}
    assert node.addr() == after_backup

    # foreign addresses survived all of it
    assert _has(pair.a, "eth0", "192.0.2.50", 24)["label"] == "eth0:f"
    assert _has(pair.a, "eth0", "192.0.2.1", 24) is not None
    assert _has(pair.a, "lo", "203.0.113.7", 32) is not None
    assert _host_sysctls() == host_before
    assert len(node.records()) == 4
    print(f"kanotify master (first, cold) via ip netns exec: {master_ms:.0f} ms")


def test_ipv6_vip_next_to_an_ipv4_one(pair: Pair, tmp_path: Path) -> None:
    """An instance with both families: bound NODAD, announced with an NA, removed at backup."""
    node = Node(pair.a, tmp_path, extra=V6_VIP)
    first = node.run("master", "VI_1")
    assert first.returncode == 0, first.stdout + first.stderr
    v6 = _has(pair.a, "eth0", "2001:db8::100", 64)
    assert v6 is not None and v6.get("nodad") and not v6.get("tentative") and not v6.get("dadfailed")
    assert _has(pair.a, "eth0", "192.0.2.100", 24) is not None
    texts = [a["action"] for a in node.records()[-1]["actions"]]
    assert any(t.startswith("send unsolicited NA for 2001:db8::100 on eth0") for t in texts)
    after_first = node.addr()
    assert node.run("master", "VI_1").returncode == 0
    assert set(_statuses(node.records()[-1])) == {"noop"}
    assert node.addr() == after_first
    assert node.run("backup", "VI_1").returncode == 0
    assert _has(pair.a, "eth0", "2001:db8::100", 64) is None
    assert _has(pair.a, "eth0", "2001:db8::1", 64) is not None  # the node's own address stays


def test_bad_device_fails_that_action_only(pair: Pair, tmp_path: Path) -> None:
    node = Node(pair.a, tmp_path, extra=BAD_DEVICE)
    result = node.run("master", "VI_1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "eth9" in result.stdout + result.stderr
    record = node.records()[-1]
    assert record["outcome"] == "failed"
    by_text = {a["action"]: a for a in record["actions"]}
    failed = by_text["bind 198.51.100.100/24 dev eth9"]
    assert failed["status"] == "failed"
    assert "device eth9 does not exist" in failed["error"]
    # everything else was still applied
    assert by_text["bind 192.0.2.100/24 dev eth0 label eth0:0"]["status"] == "applied"
    assert _has(pair.a, "eth0", "192.0.2.100", 24) is not None
    assert node.sysctls() == SYSCTLS
    garp = [a for t, a in by_text.items() if "198.51.100.100" in t and "gratuitous" in t]
    assert garp and garp[0]["status"] == "skipped"  # no GARP for a VIP that could not be bound


def test_sync_daemon_without_ipvs_fails_clearly_and_the_vips_still_converge(pair: Pair, tmp_path: Path) -> None:
    """This host's kernel has no IPVS: the daemon's start fails (ENOPROTOOPT, with the fix), the rest is done."""
    node = Node(pair.a, tmp_path, extra=SYNC_DAEMON)
    result = node.run("master", "VI_1")
    assert result.returncode == 1, result.stdout + result.stderr
    record = node.records()[-1]
    failed = [a for a in record["actions"] if a["status"] == "failed"]
    start = "start master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)"
    assert [a["action"] for a in failed] == [start] and failed[0]["errno"] == errno.ENOPROTOOPT
    assert "IPVS is not available in this kernel (modprobe ip_vs)" in failed[0]["error"]
    assert start in result.stdout + result.stderr
    assert _has(pair.a, "eth0", "192.0.2.100", 24) is not None and node.sysctls() == SYSCTLS
    status = node.run("status")
    assert status.returncode == 0, status.stderr
    assert "sync daemons (follow VI_1, master): not available (IPVS is not available" in status.stdout
    assert "net.ipv4.vs.expire_nodest_conn = missing (ip_vs not loaded)" in status.stdout


def test_dry_run_changes_nothing(pair: Pair, tmp_path: Path) -> None:
    node = Node(pair.a, tmp_path)
    pair.b.set_sysctls({"net.ipv4.conf.all.arp_accept": 1, "net.ipv4.conf.eth0.arp_accept": 1})
    before_addr, before_sysctls = node.addr(), node.sysctls()
    result = node.run("master", "VI_1", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bind 192.0.2.100/24 dev eth0 label eth0:0" in result.stdout
    assert "send gratuitous ARP for 192.0.2.100 on eth0" in result.stdout  # listed, not sent
    assert node.addr() == before_addr
    assert node.sysctls() == before_sysctls
    record = node.records()[-1]
    assert record["dry_run"] is True
    assert "applied" not in _statuses(record)
    assert _neigh_mac(pair.b, "192.0.2.100") is None
    # a real run afterwards still sees everything to do
    assert node.run("master", "VI_1").returncode == 0
    assert "applied" in _statuses(node.records()[-1])


def test_status_shows_recorded_state_vips_effective_arp_and_drift(pair: Pair, tmp_path: Path) -> None:
    """`status` reads the real kernel: effective ARP policy = max(all, interface), drift after a hand edit."""
    node = Node(pair.a, tmp_path)
    assert node.run("backup").returncode == 0
    pair.a.set_sysctls({"net.ipv4.conf.all.arp_ignore": 0, "net.ipv4.conf.eth0.arp_ignore": 2})
    pair.a.ip("addr", "del", "192.0.2.100/32", "dev", "lo")
    done = node.run("--json", "status")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["instances"] == [
        {"instance": "VI_1", "state": "backup", "effective": "backup", "since": report["instances"][0]["since"]}]
    assert report["arp"]["eth0"] == {"arp_ignore": 2, "arp_announce": 2}  # max(all 0, eth0 2); announce from all
    assert report["arp"]["lo"]["arp_ignore"] == 1
    assert {v["vip"]: v["bound"] for v in report["vips"]} == {
        "192.0.2.100/24 dev eth0 label eth0:0": False, "192.0.2.100/32 dev lo label lo:0": False}
    assert report["drift"] == [
        "set sysctl net.ipv4.conf.all.arp_ignore = 1 (was 0)", "bind 192.0.2.100/32 dev lo label lo:0"]
    text = node.run("status").stdout
    assert "drift (what reconcile would change):" in text and "eth0" in text
    assert node.run("reconcile").returncode == 0
    assert json.loads(node.run("--json", "status").stdout)["drift"] == []


def test_a_large_config_is_served_from_the_cache_and_never_stale(pair: Pair, tmp_path: Path) -> None:
    """Real runs of the console script with a config over the cache's size threshold.

    The first run creates the state dir (no entry yet), the second validates and writes
    the entry, later runs load it (its inode stays) and converge the kernel as the file
    says; an edited file is validated again and its new value reaches the kernel.
    """
    from kanotify.config.cache import CACHE_FILE, MIN_SIZE

    # 600 IPv6 VIPs on lo declared for the STOP state only: managed, never desired here
    padding = "".join(
        f'\n  [[instance.vip]]\n  address = "2001:db8:ffff::{i:x}/128"\n  dev = "lo"\n  states = ["stop"]\n'
        for i in range(1, 601)
    )
    node = Node(pair.a, tmp_path, extra=padding)
    assert node.config.stat().st_size > MIN_SIZE
    entry = tmp_path / "state" / CACHE_FILE

    def run_ok(*args: str) -> None:
        done = node.run(*args)
        assert done.returncode == 0, done.stdout + done.stderr

    run_ok("master", "VI_1")
    assert not entry.exists(), "the first run found no state dir yet: nothing written"
    run_ok("master", "VI_1")
    assert entry.exists() and entry.stat().st_mode & 0o777 == 0o600
    inode = entry.stat().st_ino

    run_ok("backup", "VI_1")  # from the cache
    assert entry.stat().st_ino == inode, "a hit leaves the entry alone"
    assert _has(pair.a, "lo", "192.0.2.100", 32)["label"] == "lo:0"
    assert _has(pair.a, "eth0", "192.0.2.100", 24) is None
    run_ok("check")
    assert entry.stat().st_ino == inode, "check neither reads nor writes the entry"

    node.config.write_text(node.config.read_text().replace('label = "eth0:0"', 'label = "eth0:9"'))
    run_ok("master", "VI_1")
    assert entry.stat().st_ino != inode, "an edited file is a miss: validated and rewritten"
    assert _has(pair.a, "eth0", "192.0.2.100", 24)["label"] == "eth0:9"
    assert set(_statuses(node.records()[-1])) != {"noop"}
    run_ok("master", "VI_1")
    assert set(_statuses(node.records()[-1])) == {"noop"}

"""IPVS through the real command line, as keepalived runs it: ``kanotify --config CONF master VI_1``.

Each test writes a TOML config (parsed by kanotify's own loader) into its tmp
dir, runs the installed package as a subprocess, and checks the kernel with
``ipvsadm-save -n`` and the run's JSON record.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipvs_guest_support import ipvsadm, run, save

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
ipvs_exclusive = {exclusive}

[[instance]]
name = "VI_1"

  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "wrr"
  persistence = 300
  persistence_netmask = 24

    [[instance.service.real]]
    address = "192.0.2.21"
    forward = "dr"
    weight = 2

    [[instance.service.real]]
    address = "192.0.2.22"
    forward = "tun"
    weight = 1
    upper_threshold = 100
    lower_threshold = 10

  [[instance.service]]
  protocol = "udp"
  address = "2001:db8::100"
  port = 53
  scheduler = "sh"
  flags = ["sh-port"]

    [[instance.service.real]]
    address = "2001:db8::21"
    forward = "dr"

  [[instance.service]]
  fwmark = 9
  family = "inet6"
  scheduler = "rr"

    [[instance.service.real]]
    address = "2001:db8::31"
    forward = "dr"

  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 8080
  scheduler = "rr"
  states = ["backup"]

    [[instance.service.real]]
    address = "127.0.0.1"
    port = 8081
    forward = "nat"
"""

MASTER_RULES = sorted([
    "-A -t 192.0.2.100:80 -s wrr -p 300 -M 255.255.255.0",
    "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 2",
    "-a -t 192.0.2.100:80 -r 192.0.2.22:80 -i -w 1 --tun-type ipip",
    "-A -u [2001:db8::100]:53 -s sh -b sh-port",
    "-a -u [2001:db8::100]:53 -r [2001:db8::21]:53 -g -w 1",
    "-A -f 9 -6 -s rr",
    "-a -f 9 -6 -r [2001:db8::31]:0 -g -w 1",
])
BACKUP_RULES = sorted([
    "-A -t 192.0.2.100:8080 -s rr",
    "-a -t 192.0.2.100:8080 -r 127.0.0.1:8081 -m -w 1",
])
FOREIGN = ["-A -t 198.51.100.50:25 -s lc"]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    ipvsadm("-C")
    path = tmp_path / "kanotify.toml"
    path.write_text(CONFIG.format(tmp=tmp_path, exclusive="false"))
    yield path
    ipvsadm("-C")


def kanotify(conf: Path, *args: str, expect: int = 0) -> dict[str, Any]:
    """Run the real CLI with --json; return its record."""
    proc = subprocess.run(
        [sys.executable, "-m", "kanotify", "--config", str(conf), "--json", *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == expect, f"kanotify {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def ipvs_actions(record: dict[str, Any], status: str | None = None) -> list[dict[str, Any]]:
    words = ("ipvs service", "real server")
    return [
        a for a in record["actions"]
        if any(w in a["action"] for w in words) and (status is None or a["status"] == status)
    ]


def test_master_applies_then_reconcile_writes_nothing(conf: Path) -> None:
    record = kanotify(conf, "master", "VI_1")
    assert record["outcome"] == "converged"
    assert len(ipvs_actions(record, "applied")) == 7  # 3 services, 4 real servers
    assert sorted(save()) == MASTER_RULES

    again = kanotify(conf, "reconcile")
    assert again["outcome"] == "converged"
    assert ipvs_actions(again, "applied") == []  # nothing written to the kernel
    assert all(a["status"] == "noop" for a in again["actions"]), again["actions"]
    assert sorted(save()) == MASTER_RULES


def test_backup_leaves_no_managed_service(conf: Path) -> None:
    kanotify(conf, "master", "VI_1")
    for rule in FOREIGN:
        ipvsadm(*rule.split())
    record = kanotify(conf, "backup", "VI_1")
    assert record["outcome"] == "converged"
    assert sorted(save()) == sorted(BACKUP_RULES + FOREIGN)  # the backup-only service, the foreign one


def test_master_after_flush_restores_everything(conf: Path) -> None:
    kanotify(conf, "master", "VI_1")
    ipvsadm("-C")
    record = kanotify(conf, "master", "VI_1")
    assert len(ipvs_actions(record, "applied")) == 7
    assert sorted(save()) == MASTER_RULES
    assert ipvs_actions(kanotify(conf, "reconcile"), "applied") == []


def test_edit_through_the_cli_is_in_place(conf: Path) -> None:
    kanotify(conf, "master", "VI_1")
    conf.write_text(conf.read_text().replace('scheduler = "wrr"', 'scheduler = "lc"').replace("weight = 2", "weight = 7"))
    record = kanotify(conf, "reconcile")
    applied = [a["action"] for a in ipvs_actions(record, "applied")]
    assert len(applied) == 2, applied
    assert applied[0].startswith("edit ipvs service tcp 192.0.2.100:80: scheduler wrr -> lc")
    assert applied[1].startswith("edit real server 192.0.2.21:80 of tcp 192.0.2.100:80: weight 2 -> 7")
    rules = save()
    assert "-A -t 192.0.2.100:80 -s lc -p 300 -M 255.255.255.0" in rules
    assert "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 7" in rules


def test_dry_run_changes_nothing(conf: Path) -> None:
    record = kanotify(conf, "--dry-run", "master", "VI_1")
    assert record["dry_run"] is True
    assert len(ipvs_actions(record, "pending")) == 7  # planned, not applied
    assert save() == []


def test_exclusive_deletes_foreign_services(conf: Path, tmp_path: Path) -> None:
    for rule in FOREIGN:
        ipvsadm(*rule.split())
    kanotify(conf, "master", "VI_1")
    assert sorted(save()) == sorted(MASTER_RULES + FOREIGN)
    conf.write_text(CONFIG.format(tmp=tmp_path, exclusive="true"))
    record = kanotify(conf, "reconcile")
    assert [a["action"] for a in ipvs_actions(record, "applied")] == [
        "delete ipvs service tcp 198.51.100.50:25 (not in config, ipvs_exclusive)"
    ]
    assert sorted(save()) == MASTER_RULES


def test_status_shows_ipvs(conf: Path) -> None:
    kanotify(conf, "master", "VI_1")
    out = run([sys.executable, "-m", "kanotify", "--config", str(conf), "status"])
    assert "192.0.2.100:80" in out and "2001:db8::100" in out, out


def test_tunnels_through_the_cli(conf: Path) -> None:
    """A gue real server: dry-run text, applied, read back by status, an edit to gre in place, re-runs write nothing."""
    gue = 'forward = "tun"\n    tun_type = "gue"\n    tun_port = 6080\n    tun_flags = "csum"\n'
    conf.write_text(conf.read_text().replace('forward = "tun"\n', gue, 1))
    dry = kanotify(conf, "--dry-run", "master", "VI_1")
    assert "add real server 192.0.2.22:80 tun gue port 6080 csum weight 1 thresholds 10-100 to tcp 192.0.2.100:80" \
        in [a["action"] for a in ipvs_actions(dry, "pending")]
    assert save() == []
    kanotify(conf, "master", "VI_1")
    tunnelled = "-a -t 192.0.2.100:80 -r 192.0.2.22:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum"
    assert tunnelled in save()
    assert ipvs_actions(kanotify(conf, "reconcile"), "applied") == []
    out = run([sys.executable, "-m", "kanotify", "--config", str(conf), "status"])
    assert "-> 192.0.2.22:80 tun gue port 6080 csum weight 1 thresholds 10-100" in out and "drift: none" in out, out

    conf.write_text(conf.read_text().replace('tun_type = "gue"\n    tun_port = 6080\n', 'tun_type = "gre"\n'))
    record = kanotify(conf, "reconcile")
    assert [a["action"] for a in ipvs_actions(record, "applied")] == [
        "edit real server 192.0.2.22:80 of tcp 192.0.2.100:80: tun_type gue -> gre, tun_port 6080 -> 0"]
    assert "-a -t 192.0.2.100:80 -r 192.0.2.22:80 -i -w 1 --tun-type gre --tun-csum" in save()
    assert ipvs_actions(kanotify(conf, "reconcile"), "applied") == []

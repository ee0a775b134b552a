"""``kanotify doctor`` through the real CLI inside network namespaces: each check fails, then passes after its fix.

The doctor runs as ``ip netns exec NS kanotify doctor --json ...``, so every
host fact (sysctls, addresses on lo, interfaces) is the namespace's own.  Where
a row carries a ``command``, the test runs exactly that command in the
namespace -- the fix the doctor prints is the fix that works.  Config mistakes
are fixed by editing the file the row points at.  The sysctl.d search starts at
a directory of the test (``--sysctl-root``), never the host's ``/etc``.

keepalived 2.2.7 is installed (CI installs it), so ``keepalived -t`` runs too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from netns_support import Netns, Pair, kanotify_script

pytestmark = pytest.mark.root

BIN = os.path.dirname(sys.executable)


def doctor(ns: Netns, kconf: Path, root: Path, config: Path | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "KANOTIFY_CONFIG"}
    argv = [kanotify_script(), "doctor", "--json", "--keepalived-conf", str(kconf), "--sysctl-root", str(root)]
    if config is not None:
        argv[1:1] = ["--config", str(config)]
    done = ns.exec(*argv, check=False, env=env)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (1 if report["summary"]["fail"] else 0)
    report["exit"] = done.returncode
    if config is None:
        assert report["config"] is None, "the host has /etc/kanotify/kanotify.toml: doctor would read it"
    return report


def rows(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    found = [r for r in report["rows"] if r["check"] == check]
    assert found, f"no {check} row in {report['rows']}"
    return found


def worst(report: dict[str, Any], check: str) -> str:
    statuses = {r["status"] for r in rows(report, check)}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"


def apply_fixes(ns: Netns, report: dict[str, Any], check: str) -> None:
    commands = [r["command"] for r in rows(report, check) if r["status"] != "pass" and r["command"]]
    assert commands, f"{check}: no command to run in {rows(report, check)}"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
    for command in commands:
        ns.exec("sh", "-ec", command, env=env)


KEEPALIVED = """\
global_defs {{
    router_id rs1
    script_user root
    enable_script_security
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    notify "{script} notify"
{extra}
}}
{services}
"""

KANOTIFY = """\
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
{sysctl}
[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  states = ["backup", "fault"]
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    script = tmp_path / "bin" / "kanotify"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return {"root": tmp_path / "sysroot", "kconf": tmp_path / "keepalived.conf", "config": tmp_path / "kanotify.toml",
            "script": script, "tmp": tmp_path}


def write(files: dict[str, Path], extra: str = "", services: str = "", sysctl: str = "") -> None:
    files["kconf"].write_text(KEEPALIVED.format(script=files["script"], extra=extra, services=services))
    files["config"].write_text(KANOTIFY.format(tmp=files["tmp"], sysctl=sysctl))


def test_a_real_server_node_fails_then_passes_after_the_printed_fixes(pair: Pair, files: dict[str, Path]) -> None:
    """ARP policy, VIP on lo as /24, persisted sysctls -- the seed write-ups' real-server mistakes."""
    ns = pair.a
    write(files, sysctl='[sysctl]\n"net.ipv4.conf.all.arp_ignore" = 1\n"net.ipv4.conf.all.arp_announce" = 2\n')
    ns.ip("addr", "add", "192.0.2.100/24", "dev", "lo")  # the seed 003 mistake
    ns.set_sysctls({"net.ipv4.conf.lo.arp_ignore": 1, "net.ipv4.conf.lo.arp_announce": 2})  # lo only: seed 001
    before = doctor(ns, files["kconf"], files["root"], files["config"])
    assert before["exit"] == 1
    assert worst(before, "vip on lo") == "fail"
    arp = [r for r in rows(before, "arp") if r["status"] == "fail"]
    assert len(arp) == 2 and "eth0=0 (all 0, eth0 0)" in arp[0]["what"]  # lo=1 does not help eth0
    assert worst(before, "persisted") == "warn" and "not set now" in rows(before, "persisted")[0]["what"]

    apply_fixes(ns, before, "vip on lo")
    apply_fixes(ns, before, "arp")
    assert ns.sysctl("net/ipv4/conf/all/arp_ignore") == "1" and ns.sysctl("net/ipv4/conf/all/arp_announce") == "2"
    assert [a["prefixlen"] for a in ns.addresses("lo") if a["local"] == "192.0.2.100"] == [32]
    middle = doctor(ns, files["kconf"], files["root"], files["config"])
    assert worst(middle, "vip on lo") == "pass" and worst(middle, "arp") == "pass"
    lost = rows(middle, "persisted")[0]
    assert lost["status"] == "warn" and "lost at reboot" in lost["what"]
    assert f"--path {files['root']}/etc/sysctl.d/90-kanotify.conf" in lost["command"]

    apply_fixes(ns, middle, "persisted")  # kanotify --config ... sysctl --persist --path ROOT/etc/sysctl.d/...
    written = (files["root"] / "etc/sysctl.d/90-kanotify.conf").read_text()
    assert "net.ipv4.conf.lo.arp_ignore = 1" in written  # the lo twin
    after = doctor(ns, files["kconf"], files["root"], files["config"])
    assert worst(after, "persisted") == "pass"
    assert after["summary"]["fail"] == 0 and after["exit"] == 0, [r for r in after["rows"] if r["status"] != "pass"]


def test_nat_director_ip_forward(pair: Pair, files: dict[str, Path]) -> None:
    ns = pair.a
    write(files, services="virtual_server 198.51.100.1 80 {\n  protocol TCP\n  lvs_method NAT\n"
                          "  real_server 192.0.2.2 8080 {\n  }\n}\n")
    before = doctor(ns, files["kconf"], files["root"])
    assert worst(before, "ip_forward") == "fail" and ns.sysctl("net/ipv4/ip_forward") == "0"
    apply_fixes(ns, before, "ip_forward")
    assert worst(doctor(ns, files["kconf"], files["root"]), "ip_forward") == "pass"


def test_dr_real_server_strict_rp_filter(pair: Pair, files: dict[str, Path]) -> None:
    ns = pair.a
    write(files, services="virtual_server 198.51.100.1 80 {\n  protocol TCP\n  lvs_method DR\n"
                          "  real_server 192.0.2.2 80 {\n  }\n}\n")
    ns.set_sysctls({"net.ipv4.conf.all.rp_filter": 1})
    before = doctor(ns, files["kconf"], files["root"])
    assert worst(before, "rp_filter") == "warn" and "eth0" in rows(before, "rp_filter")[0]["what"]
    apply_fixes(ns, before, "rp_filter")
    assert ns.sysctl("net/ipv4/conf/all/rp_filter") == "2"
    assert worst(doctor(ns, files["kconf"], files["root"]), "rp_filter") == "pass"


def test_ip_vs_on_this_host(pair: Pair, files: dict[str, Path]) -> None:
    """The host kernel here has no IPVS: fail (the pass side runs in the UML guest)."""
    write(files, services="virtual_server 198.51.100.1 80 {\n  protocol TCP\n  lvs_method DR\n"
                          "  real_server 192.0.2.2 80 {\n  }\n}\n")
    report = doctor(pair.a, files["kconf"], files["root"])
    (row,) = rows(report, "ip_vs")
    has_ipvs = os.path.exists("/proc/net/ip_vs") or any(
        "ip_vs.ko" in line for name in ("modules.builtin", "modules.dep")
        for line in _lines(f"/lib/modules/{os.uname().release}/{name}"))
    assert row["status"] == ("pass" if os.path.exists("/proc/net/ip_vs") else "warn" if has_ipvs else "fail")
    assert report["exit"] == 1 if row["status"] == "fail" else True


def _lines(path: str) -> list[str]:
    try:
        with open(path) as fh:
            return fh.readlines()
    except OSError:
        return []


def test_sync_daemon_interface(pair: Pair, files: dict[str, Path]) -> None:
    write(files)
    text = files["kconf"].read_text().replace("enable_script_security\n",
                                              "enable_script_security\n    lvs_sync_daemon eth9 inst VI_1\n")
    files["kconf"].write_text(text)
    before = doctor(pair.a, files["kconf"], files["root"])
    (row,) = rows(before, "sync daemon")
    assert row["status"] == "fail" and row["where"] == f"{files['kconf']}:5" and "eth0" in row["fix"]
    files["kconf"].write_text(text.replace("eth9", "eth0"))  # the interface the fix names
    assert worst(doctor(pair.a, files["kconf"], files["root"]), "sync daemon") == "pass"


def test_scripts_missing_not_executable_refused_then_fixed(pair: Pair, files: dict[str, Path]) -> None:
    ns, script = pair.a, files["script"]
    write(files)
    script.unlink()
    before = doctor(ns, files["kconf"], files["root"])
    (row,) = [r for r in rows(before, "scripts") if r["what"].startswith("notify:")]
    assert row["status"] == "fail" and "no such file" in row["what"] and row["where"] == f"{files['kconf']}:11"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    not_exec = doctor(ns, files["kconf"], files["root"])
    (row,) = [r for r in rows(not_exec, "scripts") if r["what"].startswith("notify:")]
    assert row["status"] == "fail" and "not executable" in row["what"]
    apply_fixes(ns, not_exec, "scripts")  # chmod 0755 SCRIPT
    script.parent.chmod(0o777)  # anyone can replace it now
    refused = doctor(ns, files["kconf"], files["root"])
    (row,) = [r for r in rows(refused, "scripts") if r["what"].startswith("notify:")]
    assert row["status"] == "fail" and "refused by enable_script_security" in row["what"]
    assert str(script.parent) in row["what"]
    apply_fixes(ns, refused, "scripts")  # chown root:root DIR && chmod go-w DIR
    assert worst(doctor(ns, files["kconf"], files["root"]), "scripts") == "pass"


BROKEN_KEEPALIVED = """\
global_defs {{
    router_id lb1
    vrrp_strict
    notify_fifo /run/kt.fifo
    notify_fifo_script "{script} listen"
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {{
        192.0.2.100/24 dev eth0
    }}
}}
virtual_server 192.0.2.100 80 {{
    protocol TCP
    lvs_method DR
    real_server 192.0.2.2 80 {{
    }}
}}
"""

FIXED_KEEPALIVED = """\
global_defs {{
    router_id lb1
    script_user root
    enable_script_security
    vrrp_notify_fifo /run/kt.fifo
    vrrp_notify_fifo_script "{script} listen"
    fifo_write_vrrp_states_on_reload
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
}}
"""

DIRECTOR = """\
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
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
    address = "192.0.2.2"
[[instance]]
name = "VI_2"
"""


def test_keepalived_conf_mistakes_then_the_fixed_files(pair: Pair, files: dict[str, Path]) -> None:
    """vrrp_strict, FIFO wiring, instance names, two owners for a VIP and a service."""
    files["kconf"].write_text(BROKEN_KEEPALIVED.format(script=files["script"]))
    files["config"].write_text(DIRECTOR.format(tmp=files["tmp"]))
    before = doctor(pair.a, files["kconf"], files["root"], files["config"])
    where = str(files["kconf"])
    assert [(r["status"], r["where"]) for r in rows(before, "vrrp_strict")] == [("fail", f"{where}:3")]
    fifo = {r["what"].split(":")[0]: r for r in rows(before, "fifo")}
    assert fifo["kanotify listen is the global notify_fifo_script"]["status"] == "fail"
    assert worst(before, "instances") == "fail"
    assert any("VI_2 is not a vrrp_instance" in r["what"] for r in rows(before, "instances"))
    assert [(r["status"], r["where"]) for r in rows(before, "vips")] == [("fail", f"{where}:13")]
    assert [(r["status"], r["where"]) for r in rows(before, "services")] == [("fail", f"{where}:16")]
    keepalived_t = rows(before, "keepalived -t")
    assert keepalived_t  # keepalived's own verdict is shown, whatever it is

    # the fixes the rows name: delete vrrp_strict, vrrp_notify_fifo(_script) + states on reload,
    # the VIP and the virtual_server owned by kanotify only, VI_2 dropped from the kanotify config
    files["kconf"].write_text(FIXED_KEEPALIVED.format(script=files["script"]))
    files["config"].write_text(DIRECTOR.format(tmp=files["tmp"]).split("[[instance]]\nname = \"VI_2\"")[0])
    after = doctor(pair.a, files["kconf"], files["root"], files["config"])
    for check in ("vrrp_strict", "fifo", "instances", "vips", "services", "scripts", "keepalived -t"):
        assert worst(after, check) == "pass", rows(after, check)

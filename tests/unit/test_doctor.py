"""``kanotify doctor`` logic with a fake host: each check failing, then passing after the fix it prints.

The same checks against real namespaces (and the real CLI) are in
tests/netns/test_netns_doctor.py; the ip_vs pass side runs in the UML guest.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kanotify.config.schema import parse_config
from kanotify.keepalived import doctor
from kanotify.keepalived.conf import parse_text
from kanotify.keepalived.doctor import FAIL, PASS, WARN, Context, Row, run_checks
from kanotify.model import IPInterface
from kanotify.security import insecure_component

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))


@dataclass
class FakeHost:
    """A host without I/O: sysctls, interfaces, addresses, IPVS and keepalived -t as the test sets them."""

    sysctls: dict[str, str] = field(default_factory=dict)
    ifaces: list[str] = field(default_factory=lambda: ["eth0", "lo"])
    addrs: dict[str, list[str]] = field(default_factory=dict)
    ipvs_state: tuple[str, str] = ("loaded", "loaded")
    keepalived: tuple[int, list[str]] | None = (0, [])

    def sysctl(self, key: str) -> str | None:
        if key in self.sysctls:
            return self.sysctls[key]
        parts = key.split(".")
        if len(parts) == 5 and parts[2] == "conf" and parts[3] not in self.ifaces + ["all", "default"]:
            return None
        return "0"

    def interfaces(self) -> list[str]:
        return list(self.ifaces)

    def addresses(self, dev: str) -> list[IPInterface]:
        return [ipaddress.ip_interface(a) for a in self.addrs.get(dev, [])]

    def ipvs(self) -> tuple[str, str]:
        return self.ipvs_state

    def keepalived_test(self, path: str, config_id: str | None) -> tuple[int, list[str]] | None:
        return self.keepalived


def ctx(keepalived: str, config: str | None = None, host: FakeHost | None = None, root: str = "/nonexistent") -> Context:
    cfg = parse_config(config, "/etc/kanotify/kanotify.toml") if config is not None else None
    return Context(parse_text(keepalived, "keepalived.conf", "lb1"), cfg, host or FakeHost(),
                   cfg.path if cfg else None, [], root)


def rows(check: object, c: Context) -> list[Row]:
    return check(c)  # type: ignore[operator, no-any-return]


def status(found: list[Row]) -> str:
    return FAIL if any(r.status == FAIL for r in found) else WARN if any(r.status == WARN for r in found) else PASS


INSTANCE = "vrrp_instance VI_1 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n" \
           '  notify "/usr/local/bin/kanotify notify"\n}\n'
CONFIG = '[[instance]]\nname = "VI_1"\n'


def test_vrrp_strict_fails_then_passes() -> None:
    bad = rows(doctor.check_vrrp_strict, ctx("global_defs {\n  router_id a\n  vrrp_strict\n}\n" + INSTANCE))
    assert bad[0].status == FAIL and bad[0].where == "keepalived.conf:3" and "delete the vrrp_strict" in bad[0].fix
    strict_mode = rows(doctor.check_vrrp_strict, ctx(INSTANCE.replace("state BACKUP", "strict_mode on")))
    assert strict_mode[0].status == FAIL and "strict_mode" in strict_mode[0].what
    assert status(rows(doctor.check_vrrp_strict, ctx("global_defs {\n  router_id a\n}\n" + INSTANCE))) == PASS


def test_scripts_missing_not_executable_and_bare_names() -> None:
    conf = 'vrrp_instance VI_1 {\n  notify_master "/nonexistent/kanotify master VI_1"\n' \
           '  notify_backup "/etc/passwd backup"\n  notify_fault "no-such-program-kt fault"\n' \
           '  notify_stop "</etc/passwd"\n}\n'
    found = rows(doctor.check_scripts, ctx("global_defs {\n enable_script_security\n}\n" + conf))
    by_kw = {r.what.split(":")[0]: r for r in found}
    assert by_kw["notify_master"].status == FAIL and "no such file" in by_kw["notify_master"].what
    assert by_kw["notify_backup"].status == FAIL and by_kw["notify_backup"].command == "chmod 0755 /etc/passwd"
    assert by_kw["notify_fault"].status == FAIL and "not in PATH" in by_kw["notify_fault"].what
    assert by_kw["notify_stop"].status == PASS  # a "</path" file test is not run
    assert by_kw["notify_master"].where == "keepalived.conf:5"
    no_security = rows(doctor.check_scripts, ctx(conf))
    assert no_security[0].status == WARN and "enable_script_security" in no_security[0].fix


def test_kanotify_must_run_as_root() -> None:
    conf = 'global_defs {\n  script_user nobody\n}\nvrrp_instance VI_1 {\n  notify "/bin/sh -c true"\n' \
           '  notify_master "/usr/local/bin/kanotify master VI_1"\n}\n'
    found = rows(doctor.check_scripts, ctx(conf))
    assert any(r.status == FAIL and "needs root" in r.what and "script_user root" in r.fix for r in found)
    as_root = conf.replace('master VI_1"', 'master VI_1" root')
    assert not any("needs root" in r.what for r in rows(doctor.check_scripts, ctx(as_root)))


def fake_lstat(tree: dict[str, tuple[int, int, int]]):  # type: ignore[no-untyped-def]
    def lstat(path: str) -> os.stat_result:
        if path not in tree:
            raise FileNotFoundError(2, "No such file or directory")
        mode, uid, gid = tree[path]
        return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))
    return lstat


D, F, L = stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK


def test_script_security_rule_is_keepaliveds() -> None:
    good = {"/": (D | 0o755, 0, 0), "/opt": (D | 0o755, 0, 0), "/opt/k": (F | 0o755, 0, 0)}
    assert insecure_component("/opt/k", fake_lstat(good)) is None
    cases = {
        "/opt": (D | 0o777, 0, 0),  # world-writable directory
        "/opt/k": (F | 0o775, 0, 50),  # group-writable, group not root
    }
    for path, entry in cases.items():
        assert insecure_component("/opt/k", fake_lstat({**good, path: entry}))[0] == path  # type: ignore[index]
    assert insecure_component("/opt/k", fake_lstat({**good, "/opt": (D | 0o1777, 0, 0)})) is None  # sticky: ok
    assert insecure_component("/opt/k", fake_lstat({**good, "/opt/k": (F | 0o775, 0, 0)})) is None  # root group: ok
    assert "uid 1000" in insecure_component("/opt/k", fake_lstat({**good, "/opt/k": (F | 0o755, 1000, 0)}))[1]  # type: ignore[index]
    assert "wrong file type" in insecure_component("/opt/k", fake_lstat({**good, "/opt": (L | 0o777, 0, 0)}))[1]  # type: ignore[index]
    assert insecure_component("/opt/k", fake_lstat({**good, "/opt/k": (L | 0o777, 0, 0)})) is None  # last: a link is ok


def test_fifo_mistakes_then_the_right_wiring() -> None:
    bad = ("global_defs {\n  notify_fifo /run/k.fifo\n  notify_fifo_script \"/usr/local/bin/kanotify listen\"\n"
           "  vrrp_notify_fifo /run/k.fifo\n  vrrp_notify_fifo /run/other.fifo\n}\n")
    found = rows(doctor.check_fifo, ctx(bad))
    texts = " | ".join(f"{r.status} {r.what}" for r in found)
    assert "fail vrrp_notify_fifo and notify_fifo" in texts  # the same FIFO twice
    assert "warn vrrp_notify_fifo given twice" in texts
    assert "fail kanotify listen is the global notify_fifo_script" in texts
    assert "warn no fifo_write_vrrp_states_on_reload" in texts
    assert any(r.where == "keepalived.conf:3" and "vrrp_notify_fifo_script instead" in r.fix for r in found)
    good = ("global_defs {\n  vrrp_notify_fifo /run/k.fifo\n  vrrp_notify_fifo_script \"/usr/local/bin/kanotify "
            "listen\"\n  fifo_write_vrrp_states_on_reload\n}\n")
    assert status(rows(doctor.check_fifo, ctx(good))) == PASS
    orphan = rows(doctor.check_fifo, ctx("global_defs {\n  vrrp_notify_fifo_script \"/x listen\"\n}\n"))
    assert orphan[0].status == FAIL and "without vrrp_notify_fifo" in orphan[0].what


def test_instances_names_on_both_sides() -> None:
    two = CONFIG + '[[instance]]\nname = "VI_2"\n'
    found = rows(doctor.check_instances, ctx(INSTANCE, two))
    assert any(r.status == FAIL and "VI_2 is not a vrrp_instance" in r.what for r in found)
    fixed = INSTANCE + INSTANCE.replace("VI_1", "VI_2").replace("51", "52")
    assert status(rows(doctor.check_instances, ctx(fixed, two))) == PASS
    unwired = rows(doctor.check_instances, ctx(INSTANCE.replace('notify "', 'notify "/bin/echo '), CONFIG))
    assert any(r.status == FAIL and "never runs kanotify" in r.what for r in unwired)
    specific = ('vrrp_instance VI_1 {\n  notify_master "/usr/local/bin/kanotify master"\n'
                '  notify_backup "/usr/local/bin/kanotify master VI_1"\n}\n')
    found = rows(doctor.check_instances, ctx(specific + INSTANCE.replace("VI_1", "VI_2"), two))
    texts = " | ".join(r.what for r in found)
    assert "'kanotify master' without an instance" in texts
    assert "notify_backup runs 'kanotify master'" in texts
    assert "no notify_fault, notify_stop" in texts
    unknown = rows(doctor.check_instances, ctx('vrrp_instance VI_1 {\n notify_master "/k/kanotify master VI_9"\n}\n',
                                              CONFIG))
    assert any("no instance VI_9" in r.what for r in unknown)
    assert status(rows(doctor.check_instances, ctx(INSTANCE))) == PASS  # no config: nothing to compare
    extra = rows(doctor.check_instances, ctx(fixed, CONFIG))  # VI_2 notifies kanotify, which does not know it
    assert any(r.status == WARN and "no instance VI_2: its notifications are journaled and ignored" in r.what
               for r in extra)
    grouped = rows(doctor.check_instances, ctx(INSTANCE, CONFIG + '[[group]]\nname = "VG_1"\ninstances = ["VI_1"]\n'))
    assert any(r.status == WARN and "group VG_1 is not a vrrp_sync_group" in r.what for r in grouped)


def test_a_fifo_listener_notifies_every_instance() -> None:
    conf = ('global_defs {\n  vrrp_notify_fifo /run/k.fifo\n  vrrp_notify_fifo_script "/usr/local/bin/kanotify '
            'listen"\n}\nvrrp_instance VI_1 {\n  interface eth0\n}\n')
    assert status(rows(doctor.check_instances, ctx(conf, CONFIG))) == PASS


VIP_CONFIG = CONFIG + '[[instance.vip]]\naddress = "192.0.2.100/24"\ndev = "eth0"\n'


def test_a_vip_in_keepalived_and_kanotify_fails() -> None:
    conf = INSTANCE.replace("}\n", "  virtual_ipaddress {\n    192.0.2.100/24 dev eth0\n  }\n}\n")
    found = rows(doctor.check_vips, ctx(conf, VIP_CONFIG))
    assert found[0].status == FAIL and found[0].where == "keepalived.conf:7"
    assert status(rows(doctor.check_vips, ctx(INSTANCE, VIP_CONFIG))) == PASS


SERVICE_CONFIG = CONFIG + ('[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.100"\nport = 80\n'
                           '[[instance.service.real]]\naddress = "192.0.2.21"\n')
VS = "virtual_server 192.0.2.100 80 {\n  protocol TCP\n  lvs_method DR\n  real_server 192.0.2.21 80 {\n  }\n}\n"


def test_a_virtual_server_for_a_kanotify_service_fails() -> None:
    found = rows(doctor.check_services, ctx(INSTANCE + VS, SERVICE_CONFIG))
    assert found[0].status == FAIL and found[0].where == "keepalived.conf:7" and "two owners" in found[0].what
    assert status(rows(doctor.check_services, ctx(INSTANCE + VS.replace(" 80 {", " 81 {"), SERVICE_CONFIG))) == PASS


def test_vip_on_lo_must_be_a_host_route() -> None:
    conf = INSTANCE.replace("}\n", "  virtual_ipaddress {\n    192.0.2.10/24 dev lo label lo:0\n  }\n}\n")
    found = rows(doctor.check_lo_prefix, ctx(conf))
    assert found[0].status == FAIL and "use 192.0.2.10/32" in found[0].fix
    host = FakeHost(addrs={"lo": ["127.0.0.1/8", "::1/128", "192.0.2.10/24"]})
    found = rows(doctor.check_lo_prefix, ctx(INSTANCE, host=host))
    assert found[0].status == FAIL and found[0].command == \
        "ip addr del 192.0.2.10/24 dev lo && ip addr add 192.0.2.10/32 dev lo"
    host.addrs["lo"] = ["127.0.0.1/8", "192.0.2.10/32"]
    assert status(rows(doctor.check_lo_prefix, ctx(conf.replace("/24", "/32"), host=host))) == PASS


def test_arp_effective_is_the_max_of_all_and_the_interface() -> None:
    lo_vip = CONFIG + '[[instance.vip]]\naddress = "192.0.2.100/32"\ndev = "lo"\nstates = ["backup"]\n'
    lo_only = lo_vip + '[sysctl]\n"net.ipv4.conf.lo.arp_ignore" = 1\n'
    host = FakeHost(sysctls={"net.ipv4.conf.lo.arp_ignore": "1", "net.ipv4.conf.eth0.arp_announce": "2"})
    found = rows(doctor.check_arp, ctx(INSTANCE, lo_only, host))
    texts = " | ".join(f"{r.status} {r.what}" for r in found)
    assert "fail the config sets net.ipv4.conf.lo.arp_ignore but not net.ipv4.conf.all.arp_ignore" in texts
    assert "fail real server (kanotify puts 192.0.2.100 on lo), effective arp_ignore" in texts
    assert "eth0=0 (all 0, eth0 0)" in texts
    assert "effective arp_announce: eth0=2 (all 0, eth0 2)" in texts  # the interface's own value counts too
    fix = next(r for r in found if "effective arp_ignore" in r.what).command
    assert fix == "sysctl -q -w net.ipv4.conf.all.arp_ignore=1"
    host.sysctls.update({"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"})
    good = lo_vip + '[sysctl]\n"net.ipv4.conf.all.arp_ignore" = 1\n'
    assert status(rows(doctor.check_arp, ctx(INSTANCE, good, host))) == PASS
    assert status(rows(doctor.check_arp, ctx(INSTANCE))) == PASS  # no VIP on lo: not a real server


def test_rp_filter_tun_strict_fails_dr_strict_warns() -> None:
    tun = INSTANCE.replace("}\n", "  virtual_ipaddress {\n    192.0.2.10/32 dev lo\n  }\n}\n") + \
        VS.replace("DR", "TUN")
    host = FakeHost(ifaces=["eth0", "lo"], sysctls={"net.ipv4.conf.all.rp_filter": "1"})
    found = rows(doctor.check_rp_filter, ctx(tun, host=host))
    assert found[0].status == FAIL and found[0].command == "modprobe ipip"
    host.ifaces.append("tunl0")
    found = rows(doctor.check_rp_filter, ctx(tun, host=host))
    assert [r.status for r in found] == [FAIL, WARN] and "tunl0" in found[0].what
    host.sysctls = {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.eth0.rp_filter": "2"}
    assert status(rows(doctor.check_rp_filter, ctx(tun, host=host))) == PASS
    host.sysctls = {"net.ipv4.conf.eth0.rp_filter": "1"}
    dr = rows(doctor.check_rp_filter, ctx(INSTANCE + VS, host=host))
    assert dr[0].status == WARN and dr[0].command == \
        "sysctl -q -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth0.rp_filter=2"


def test_ip_forward_for_nat() -> None:
    nat = INSTANCE + VS.replace("DR", "NAT")
    host = FakeHost()
    found = rows(doctor.check_ip_forward, ctx(nat, host=host))
    assert found[0].status == FAIL and found[0].command == "sysctl -q -w net.ipv4.ip_forward=1"
    host.sysctls["net.ipv4.ip_forward"] = "1"
    assert status(rows(doctor.check_ip_forward, ctx(nat, host=host))) == PASS
    assert status(rows(doctor.check_ip_forward, ctx(INSTANCE + VS))) == PASS  # DR: no forwarding needed


def test_ip_vs_missing_loadable_loaded() -> None:
    host = FakeHost(ipvs_state=("missing", "no ip_vs"))
    assert rows(doctor.check_ip_vs, ctx(INSTANCE + VS, host=host))[0].status == FAIL
    assert rows(doctor.check_ip_vs, ctx(INSTANCE, SERVICE_CONFIG, host=host))[0].status == FAIL
    host.ipvs_state = ("loadable", "ip_vs not loaded")
    assert rows(doctor.check_ip_vs, ctx(INSTANCE + VS, host=host))[0].command == "modprobe ip_vs"
    host.ipvs_state = ("loaded", "loaded")
    assert status(rows(doctor.check_ip_vs, ctx(INSTANCE + VS, host=host))) == PASS
    assert status(rows(doctor.check_ip_vs, ctx(INSTANCE, host=FakeHost(ipvs_state=("missing", "x"))))) == PASS


def test_sync_daemon_interface_must_exist() -> None:
    conf = "global_defs {\n  lvs_sync_daemon eth9 inst VI_1 id 5\n}\n" + INSTANCE
    found = rows(doctor.check_sync_daemon, ctx(conf))
    assert found[0].status == FAIL and found[0].where == "keepalived.conf:2" and "eth9" in found[0].what
    legacy = INSTANCE.replace("interface eth0", "interface eth0\n  lvs_sync_daemon_interface eth9")
    assert rows(doctor.check_sync_daemon, ctx(legacy))[0].status == FAIL
    assert status(rows(doctor.check_sync_daemon, ctx(conf.replace("eth9", "eth0")))) == PASS


def test_sync_daemon_of_the_kanotify_config_must_exist_and_have_one_owner() -> None:
    config = CONFIG + '[sync_daemon]\ninterface = "eth7"\n'
    found = rows(doctor.check_sync_daemon, ctx(INSTANCE, config))
    assert [r.status for r in found] == [FAIL] and "[sync_daemon] interface names eth7" in found[0].what
    assert found[0].where == "/etc/kanotify/kanotify.toml"
    assert status(rows(doctor.check_sync_daemon, ctx(INSTANCE, config.replace("eth7", "eth0")))) == PASS
    both = "global_defs {\n  lvs_sync_daemon eth0 VI_1\n}\n" + INSTANCE
    found = rows(doctor.check_sync_daemon, ctx(both, config.replace("eth7", "eth0")))
    assert found[0].status == WARN and "both drive the IPVS sync daemon" in found[0].what
    assert found[0].where == "keepalived.conf:2" and found[0].fix.startswith("delete lvs_sync_daemon")
    assert [r.status for r in found[1:]] == [PASS, PASS]


def test_sysctls_set_but_not_persisted(tmp_path: Path) -> None:
    config = CONFIG + '[sysctl]\n"net.ipv4.conf.all.arp_ignore" = 1\n'
    host = FakeHost(sysctls={"net.ipv4.conf.all.arp_ignore": "1"})
    found = rows(doctor.check_persisted, ctx(INSTANCE, config, host, str(tmp_path)))
    assert found[0].status == WARN and "lost at reboot" in found[0].what
    assert found[0].command == f"kanotify sysctl --persist --path {tmp_path}/etc/sysctl.d/90-kanotify.conf"
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / "etc/sysctl.d/90-kanotify.conf").write_text("net.ipv4.conf.all.arp_ignore = 1\n")
    assert status(rows(doctor.check_persisted, ctx(INSTANCE, config, host, str(tmp_path)))) == PASS
    host.sysctls.clear()
    drift = rows(doctor.check_persisted, ctx(INSTANCE, config, host, str(tmp_path)))
    assert drift[0].status == WARN and "kanotify reconcile" in drift[0].fix
    # without a kanotify config: the ARP keys set by hand are checked
    by_hand = FakeHost(sysctls={"net.ipv4.conf.lo.arp_announce": "2"})
    assert rows(doctor.check_persisted, ctx(INSTANCE, None, by_hand, str(tmp_path)))[0].status == WARN


def test_keepalived_t_verdicts() -> None:
    def verdict(result: tuple[int, list[str]] | None) -> list[Row]:
        return rows(doctor.check_keepalived_test, ctx(INSTANCE, host=FakeHost(keepalived=result)))

    assert verdict(None)[0].status == WARN
    assert verdict((0, []))[0].status == PASS
    assert verdict((5, ["(VI_1) No VIP specified; at least one is sensible"]))[0].status == PASS
    bad = verdict((5, ["(/etc/k/keepalived.conf: Line 41) Unknown keyword 'nb_get_retry'", "(Line 3) bad"]))
    assert [(r.status, r.what, r.where) for r in bad] == [
        (FAIL, "Unknown keyword 'nb_get_retry'", "/etc/k/keepalived.conf:41"), (FAIL, "bad", "keepalived.conf:3")]
    assert verdict((5, ["nb_get_retry is deprecated - please use 'retry'"]))[0].status == WARN


def test_a_broken_check_is_a_row_not_a_traceback() -> None:
    def broken(c: Context) -> list[Row]:
        raise RuntimeError("boom")

    (row,) = run_checks(ctx(INSTANCE), [broken])
    assert row.status == FAIL and "boom" in row.what and row.check == "broken"


def test_all_checks_run_on_every_test_config() -> None:
    configs = Path(__file__).parent / "keepalived_configs"
    for path in sorted(configs.glob("*.conf")):
        c = Context(parse_text(path.read_text(), str(path), "lb1"), None, FakeHost(), None, [], "/nonexistent")
        found = run_checks(c)
        assert not any("the check itself failed" in r.what for r in found), path


def test_cli_missing_keepalived_conf_is_a_fail_row(tmp_path: Path) -> None:
    done = subprocess.run([KANOTIFY, "doctor", "--json", "--keepalived-conf", str(tmp_path / "nope.conf"),
                           "--sysctl-root", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KANOTIFY_CONFIG": str(tmp_path / "none.toml")})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)
    first = data["rows"][0]
    assert (first["status"], first["check"]) == ("fail", "keepalived.conf") and "No such file" in first["what"]
    assert data["summary"]["fail"] >= 1
    # an explicitly named kanotify config that does not exist is a fail row too
    assert any(r["check"] == "config" and r["status"] == "fail" for r in data["rows"])


def test_format_rows_prints_fix_under_failures() -> None:
    text = doctor.format_rows([Row(PASS, "a", "fine"), Row(FAIL, "bb", "broken", "do this", "f:1")])
    assert text.splitlines() == ["PASS  a   fine", "FAIL  bb  broken  [f:1]", "          fix: do this",
                                 "1 pass, 0 warn, 1 fail"]



def test_docs_describe_every_check_and_the_three_commands() -> None:
    import re

    root = Path(__file__).resolve().parents[2]
    source = (root / "kanotify" / "keepalived" / "doctor.py").read_text()
    names = set(re.findall(r'Row\((?:PASS|WARN|FAIL|status), "([^"]+)"', source))
    assert len(names) >= 15
    doc = (root / "docs" / "doctor.md").read_text()
    missing = [n for n in sorted(names) if f"| `{n}` |" not in doc]
    assert not missing, f"checks without a row in docs/doctor.md: {missing}"
    readme = (root / "README.md").read_text()
    for command in ("kanotify doctor", "kanotify import KEEPALIVED_CONF", "kanotify sysctl --persist"):
        assert f"| `{command}" in readme
    for argv in (["doctor", "--help"], ["import", "--help"], ["sysctl", "--help"]):
        done = subprocess.run([KANOTIFY, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    helptext = subprocess.run([KANOTIFY, "doctor", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--keepalived-conf" in helptext and "--config-id" in helptext and "--sysctl-root" not in helptext


CHECKED_CONFIG = SERVICE_CONFIG + '[instance.service.real.check]\ntype = "tcp"\n'
CHECKED_VS = VS.replace("  }\n}\n", "    TCP_CHECK {\n      connect_timeout 3\n    }\n  }\n}\n")
LISTEN = ('global_defs {\n  vrrp_notify_fifo /run/k.fifo\n  vrrp_notify_fifo_script "/usr/local/bin/kanotify '
          'listen"\n}\n')


def test_a_service_checked_by_keepalived_and_kanotify_warns() -> None:
    found = rows(doctor.check_health_twice, ctx(INSTANCE + CHECKED_VS, CHECKED_CONFIG))
    assert [(r.status, r.check, r.where) for r in found] == [(WARN, "health checked twice", "keepalived.conf:11")]
    assert "tcp 192.0.2.100:80: keepalived's virtual_server (keepalived.conf:7) runs 1 health checker(s)" in found[0].what
    assert found[0].fix == ("remove the checkers from keepalived.conf or the [check] from kanotify's config: two "
                            "checkers would fight over the weight")
    # either side alone checks it: pass
    for keepalived, config in ((INSTANCE + VS, CHECKED_CONFIG), (INSTANCE + CHECKED_VS, SERVICE_CONFIG),
                               (INSTANCE + CHECKED_VS.replace(" 80 {", " 81 {"), CHECKED_CONFIG),
                               (INSTANCE + CHECKED_VS, None)):
        assert status(rows(doctor.check_health_twice, ctx(keepalived, config))) == PASS
    # a checker kanotify cannot import still runs in keepalived: it counts
    smtp = CHECKED_VS.replace("TCP_CHECK", "SMTP_CHECK")
    assert status(rows(doctor.check_health_twice, ctx(INSTANCE + smtp, CHECKED_CONFIG))) == WARN
    # a fwmark service, checked through its service-level [check]
    fwm = CONFIG + ('[[instance.service]]\nfwmark = 5\n[instance.service.check]\ntype = "tcp"\nport = 80\n'
                    '[[instance.service.real]]\naddress = "192.0.2.21"\n')
    fwm_vs = CHECKED_VS.replace("192.0.2.100 80", "fwmark 5").replace("connect_timeout 3", "connect_port 80")
    assert status(rows(doctor.check_health_twice, ctx(INSTANCE + fwm_vs, fwm))) == WARN


def test_checks_without_a_listener_warn() -> None:
    found = rows(doctor.check_health_listener, ctx(INSTANCE, CHECKED_CONFIG))
    assert [(r.status, r.check, r.where) for r in found] == [(WARN, "health checks", "/etc/kanotify/kanotify.toml")]
    assert "checks run only in the listener" in found[0].what and "systemd service" in found[0].what
    assert "kanotify-listen.service" in found[0].fix
    passed = rows(doctor.check_health_listener, ctx(LISTEN + INSTANCE, CHECKED_CONFIG))
    assert [(r.status, r.where) for r in passed] == [(PASS, "keepalived.conf:3")]
    assert "1 real server(s) health-checked by kanotify listen" in passed[0].what
    # the global notify_fifo_script runs a listener too (the fifo row fails it for starting it twice)
    assert status(rows(doctor.check_health_listener, ctx(LISTEN.replace("vrrp_notify", "notify"),
                                                         CHECKED_CONFIG))) == PASS
    # a fifo script without its FIFO is never started; another program on the FIFO is no listener
    assert status(rows(doctor.check_health_listener, ctx(LISTEN.replace("vrrp_notify_fifo /", "# "),
                                                         CHECKED_CONFIG))) == WARN
    assert status(rows(doctor.check_health_listener, ctx(LISTEN.replace("kanotify listen", "other listen"),
                                                         CHECKED_CONFIG))) == WARN
    assert status(rows(doctor.check_health_listener, ctx(LISTEN.replace("listen", "notify"), CHECKED_CONFIG))) == WARN
    # no checks: nothing to run
    assert status(rows(doctor.check_health_listener, ctx(INSTANCE, SERVICE_CONFIG))) == PASS
    assert status(rows(doctor.check_health_listener, ctx(INSTANCE))) == PASS


def test_sloppy_tcp_with_mh_services() -> None:
    from kanotify.keepalived.doctor_active import check_sloppy_tcp

    mh = CONFIG + ('[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.10"\nport = 80\nscheduler = "mh"\n'
                   '[[instance.service.real]]\naddress = "192.0.2.21"\n')
    assert rows(check_sloppy_tcp, ctx(INSTANCE, CONFIG)) == []  # no mh/sh service: nothing to say
    found = rows(check_sloppy_tcp, ctx(INSTANCE, mh, FakeHost(sysctls={"net.ipv4.vs.sloppy_tcp": "0"})))
    assert status(found) == WARN and "reset" in found[0].what and "[sysctl]" in found[0].fix
    fixed = '[sysctl]\n"net.ipv4.vs.sloppy_tcp" = 1\n' + mh
    assert status(rows(check_sloppy_tcp, ctx(INSTANCE, fixed, FakeHost(sysctls={"net.ipv4.vs.sloppy_tcp": "0"})))) == PASS
    assert status(rows(check_sloppy_tcp, ctx(INSTANCE, mh, FakeHost(sysctls={"net.ipv4.vs.sloppy_tcp": "1"})))) == PASS


BGP = '[bgp]\ninterface = "kav0"\n'
MH = ('[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.10"\nport = 80\nscheduler = "mh"\n'
      '[[instance.service.real]]\naddress = "192.0.2.21"\n')


def test_sloppy_tcp_behind_bgp_is_one_row_that_fails_with_the_command() -> None:
    """With [bgp] the director is behind ECMP for sure: sloppy_tcp off on the host fails (the bgp rows no
    longer say it a second time); configured but not applied yet: the fix is kanotify's next run."""
    from kanotify.keepalived.doctor_active import check_sloppy_tcp

    off = FakeHost(sysctls={"net.ipv4.vs.sloppy_tcp": "0"})
    found = rows(check_sloppy_tcp, ctx(INSTANCE, BGP + CONFIG + MH, off))
    assert status(found) == FAIL and found[0].command == "sysctl -w net.ipv4.vs.sloppy_tcp=1", found
    assert found[0].what.startswith("net.ipv4.vs.sloppy_tcp = 0: a flow that ECMP moves")
    wanted = rows(check_sloppy_tcp, ctx(INSTANCE, '[sysctl]\n"net.ipv4.vs.sloppy_tcp" = 1\n' + BGP + CONFIG + MH, off))
    assert status(wanted) == FAIL and wanted[0].command == "kanotify reconcile", wanted
    on = FakeHost(sysctls={"net.ipv4.vs.sloppy_tcp": "1"})
    assert status(rows(check_sloppy_tcp, ctx(INSTANCE, BGP + CONFIG + MH, on))) == PASS


def test_sync_mode_row_behind_bgp() -> None:
    """The sync daemon's mode is one row (``sync mode``), read from [sync_daemon] mode; with [bgp] no table or
    mode follow warns whatever the scheduler."""
    from kanotify.keepalived.doctor_active import check_sync_mode
    from kanotify.keepalived.doctor_bgp import bgp_rows

    none = rows(check_sync_mode, ctx(INSTANCE, BGP + CONFIG))
    assert status(none) == WARN and none[0].what.startswith("no [sync_daemon] behind ECMP"), none
    follow = rows(check_sync_mode, ctx(INSTANCE, BGP + CONFIG + '[sync_daemon]\ninterface = "eth0"\n'))
    assert status(follow) == WARN and "none hears the others" in follow[0].what, follow
    both = rows(check_sync_mode, ctx(INSTANCE, BGP + CONFIG + '[sync_daemon]\ninterface = "eth0"\nmode = "both"\n'))
    assert status(both) == PASS, both
    # the bgp rows say neither
    config = ctx(INSTANCE, BGP + CONFIG + MH).config
    assert config is not None

    class Facts:
        def link(self, name: str) -> None:
            return None

        def wiring(self, spec: object) -> dict[str, object]:
            return {"sessions": [], "exported": {}, "graceful_restart": False, "bfd": {}}

    found = bgp_rows(config, FakeHost(sysctls={"net.ipv4.vs.sloppy_tcp": "0"}), Facts())
    assert not [r for r in found if "sloppy" in r[2] or "sync" in r[2]], found


def test_sync_mode_row() -> None:
    from kanotify.keepalived.doctor_active import check_sync_mode

    mh = CONFIG + ('[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.10"\nport = 80\nscheduler = "mh"\n'
                   '[[instance.service.real]]\naddress = "192.0.2.21"\n')
    assert rows(check_sync_mode, ctx(INSTANCE, mh)) == []  # no [sync_daemon]
    follow = mh + '[sync_daemon]\ninterface = "eth0"\n'
    found = rows(check_sync_mode, ctx(INSTANCE, follow))
    assert status(found) == WARN and 'mode = "both"' in found[0].fix
    assert status(rows(check_sync_mode, ctx(INSTANCE, CONFIG + '[sync_daemon]\ninterface = "eth0"\n'))) == PASS
    both = rows(check_sync_mode, ctx(INSTANCE, mh + '[sync_daemon]\ninterface = "eth0"\nmode = "both"\n'))
    assert status(both) == PASS and "backup (sync id 0)" in both[0].what

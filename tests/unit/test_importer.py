"""``kanotify import``: keepalived's virtual_server blocks -> kanotify TOML that passes ``kanotify check``.

The real proof -- keepalived and kanotify loading the same IPVS table -- is the
round trip in tests/kernel/guest/test_guest_import_roundtrip.py; here: the
mapping rules, and that nothing is dropped without a comment.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kanotify.config.schema import parse_config
from kanotify.keepalived.conf import parse_text, read_config
from kanotify.keepalived.imported import ImportResult
from kanotify.keepalived.importer import import_conf, import_file, render
from kanotify.model import HealthCheck, RealServer, ServiceKey, SyncDaemonSpec

CONFIGS = Path(__file__).parent / "keepalived_configs"
ALL = sorted(p.name for p in CONFIGS.glob("*.conf")) + ["includes/main.conf"]
KANOTIFY = str(Path(sys.executable).with_name("kanotify"))
ip = ipaddress.ip_address


def imported(name: str, instance: str | None = None) -> tuple[ImportResult, str]:
    return import_file(str(CONFIGS / name), instance, "lb1")


def services(result: ImportResult) -> dict[str, list[str]]:
    return {str(s.service): [str(r.real) for r in s.reals] for s in result.services}


def all_notes(result: ImportResult) -> list[str]:
    notes = list(result.notes) + [n for s in result.services for n in s.notes] + [
        n for s in result.services for r in s.reals for n in r.notes]
    return [f"{n.keyword} ({n.where})" for n in notes]


@pytest.mark.parametrize("name", ALL)
def test_every_config_imports_to_toml_the_loader_accepts(name: str) -> None:
    result, text = imported(name)
    config = parse_config(text, "imported.toml")
    assert [inst.name for inst in config.instances] == [result.instance]
    assert len(config.instances[0].services) == len(result.services)
    assert {spec.service.key for spec in config.instances[0].services} == result.keys


@pytest.mark.parametrize("name", ["seed004.conf", "group.conf", "nat_ipv6.conf"])
def test_kanotify_check_accepts_the_output(name: str, tmp_path: Path) -> None:
    out = subprocess.run([KANOTIFY, "import", str(CONFIGS / name), "--config-id", "lb1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "kanotify.toml"
    path.write_text(out.stdout)
    check = subprocess.run([KANOTIFY, "--allow-insecure", "--config", str(path), "check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("name", ALL)
def test_no_keyword_is_dropped_silently(name: str) -> None:
    """Every line inside a virtual_server, and every sync daemon line, is mapped or named in a '# not imported'."""
    conf = read_config(str(CONFIGS / name), "lb1")
    result, text = imported(name)
    mapped = {"lvs_sched", "lvs_method", "protocol", "persistence_timeout", "persistence_granularity", "ip_family",
              "weight", "uthreshold", "lthreshold", "real_server", "ops", "sh-port", "sh-fallback", "mh-port",
              "mh-fallback", "flag-1", "flag-2"}
    noted = {line.split("(")[-1].rstrip(")") for line in all_notes(result)}
    lines = set(text.splitlines())
    for vs in conf.top("virtual_server"):
        for stmt in vs.walk():
            if stmt is vs or stmt.keyword in mapped or (stmt.keyword in ("lb_algo", "lb_kind")):
                continue
            if stmt.keyword == "url":
                continue  # its path is named where the check uses it
            # a checker, or an option a check takes, is named in the comment of the check's line
            shown = re.search(rf"[( ]{re.escape(str(stmt.where))}[,)]", text)
            assert str(stmt.where) in noted or shown, f"{stmt.words} at {stmt.where} is neither imported nor noted"
    syncd = [s for s in conf.walk() if s.keyword in ("lvs_sync_daemon", "lvs_sync_daemon_interface")]
    for stmt in syncd:
        table = f"[sync_daemon]    # {stmt.keyword} ({stmt.where})"
        assert str(stmt.where) in noted or table in lines, f"{stmt.words} at {stmt.where} is neither imported nor noted"
    sync_keys = ("interface", "instance", "sync_id", "maxlen", "port", "ttl", "group") if result.sync_daemon else ()
    assert all(line.startswith(("#", "[", " ", "name", *(f"{k} = " for k in sync_keys))) or not line for line in lines)


def test_seed_004_director() -> None:
    result, text = imported("seed004.conf")
    assert result.instance == "LVSha"  # the file's first vrrp_instance
    assert services(result) == {"tcp 192.0.2.21:80 scheduler rr": [
        "192.0.2.12:80 dr weight 1", "192.0.2.13:80 dr weight 1", "192.0.2.14:80 dr weight 1"]}
    notes = all_notes(result)
    where = str(CONFIGS / "seed004.conf")
    assert f"nb_get_retry 3 ({where}:41)" in notes  # keepalived 2.2.7 does not know it there
    assert f"digest c2e7b1048523a6fc9a1a78d5fd783605 ({where}:48)" not in notes  # a check's digest now
    assert f'digest = "c2e7b1048523a6fc9a1a78d5fd783605"    # url digest ({where}:48' in text
    assert "# not imported: nb_get_retry 3" in text and "not a virtual_server keyword" in text
    # each HTTP_GET compares its own page's digest: a check per real server, with the cascaded options
    assert text.count("[instance.service.real.check]    # HTTP_GET") == 3
    assert f'interval = 6    # virtual_server delay_loop ({where}:35)' in text
    assert f'timeout = 3    # virtual_server connect_timeout ({where}:40)' in text
    assert "retry = 1    # keepalived's default" in text  # nb_get_retry 3 was ignored there
    assert f"retry_delay = 3    # virtual_server delay_before_retry ({where}:42)" in text
    (spec,) = parse_config(text).instances[0].services
    assert {check for _, check in spec.checks} == {
        HealthCheck("http", path="/", interval=6, timeout=3, retry=1, retry_delay=3, on_failure="remove", digest=d)
        for d in ("c2e7b1048523a6fc9a1a78d5fd783605", "e7b87c254505fecdedd3545af2160950",
                  "09c990685febab223b6dafd74de1f7ec")}
    assert len(spec.checks) == 3
    assert 'states = ["master"]' in text


def test_dr_basic_persistence_thresholds_flags_and_checks() -> None:
    result, text = imported("dr_basic.conf", instance="WEB")
    assert result.instance == "WEB"
    by_key = {s.service.key: s for s in result.services}
    web = by_key[ServiceKey.inet("tcp", ip("192.0.2.100"), 80)]
    assert (web.service.scheduler, web.service.persistence, web.service.netmask) == ("wrr", 600, 24)
    assert [r.real for r in web.reals] == [
        RealServer(ip("192.0.2.21"), 80, "dr", 3, 1000, 100), RealServer(ip("192.0.2.22"), 80, "dr", 1)]
    tls = by_key[ServiceKey.inet("tcp", ip("192.0.2.100"), 443)]
    assert tls.service.flags == frozenset({"sh-port", "sh-fallback"}) and tls.service.scheduler == "sh"
    # keepalived's weight 0 with sh: added at 1 and drained (an sh/mh destination added at 0 gets no slots)
    assert [(r.real.weight, r.drain) for r in tls.reals] == [(1, False), (1, True)]
    assert {r.real.forward for r in tls.reals} == {"tun"}
    assert "drain = true" in text and [r.weight for r in tls.spec.reals] == [1, 0]
    assert tls.spec.add_weight(tls.spec.reals[1]) == 1
    checks = dict(parse_config(text).instances[0].services[0].checks)
    assert checks == {
        (ip("192.0.2.21"), 80): HealthCheck("tcp", interval=10, timeout=4, retry=2, retry_delay=2, on_failure="remove"),
        (ip("192.0.2.22"), 80): HealthCheck("tcp", port=8080, interval=10, timeout=5, retry=1, retry_delay=1,
                                            on_failure="drain"),
    }
    assert "retry = 2    # retry" in text and "port = 8080    # connect_port" in text
    assert 'on_failure = "drain"    # real_server inhibit_on_failure' in text
    assert text.count("[instance.service.real.check]") == 2  # the two checks differ: one per real server


def test_fwmark_families() -> None:
    result, text = imported("fwmark.conf")
    keys = [s.service.key for s in result.services]
    assert keys == [ServiceKey.mark(5, 4), ServiceKey.mark(9, 6), ServiceKey.mark(10, 6)]
    assert [r.real.port for r in result.services[0].reals] == [0, 0]
    assert 'family = "inet6"' in text and "persistence = 300" in text


def test_group_expands_to_one_service_per_address_port_and_fwmark() -> None:
    result, _ = imported("group.conf")
    keys = [str(s.service.key) for s in result.services]
    assert keys == [
        "tcp 192.0.2.100:80", "tcp 192.0.2.101:80", "tcp 192.0.2.102:80", "tcp 192.0.2.100:8080", "fwmark 7",
        "udp [2001:db8::53]:53", "udp [2001:db8::54]:53", "udp [2001:db8::55]:53"]
    web8080 = result.services[3]
    assert [str(r.real) for r in web8080.reals] == ["192.0.2.21:8080 dr weight 1", "192.0.2.22:8080 dr weight 2"]
    fwm = result.services[4]
    assert [r.real.port for r in fwm.reals] == [0, 0]  # DR to a fwmark service: port 0
    dns = result.services[5]
    assert dns.service.flags == frozenset({"one-packet"}) and {r.real.forward for r in dns.reals} == {"tun"}


def test_includes_nat_ports() -> None:
    result, _ = imported("includes/main.conf")
    assert result.instance == "VI_1"
    assert services(result) == {
        "tcp 203.0.113.10:80 scheduler rr": ["192.0.2.21:8080 nat weight 1", "192.0.2.22:8080 nat weight 1"],
        "tcp 203.0.113.10:25 scheduler wlc": ["192.0.2.25:25 nat weight 1"],
    }


def test_nat_ipv6_default_weight_persistence_and_sctp() -> None:
    result, text = imported("nat_ipv6.conf")
    tls, v6, sctp = result.services
    assert tls.service.persistence == 360  # "persistence_timeout" without a value
    assert [r.real.weight for r in v6.reals] == [4, 2]  # virtual_server weight 4 is the default
    assert v6.service.netmask == 64 and v6.service.persistence == 360  # granularity turns persistence on
    assert sctp.service.key.protocol == "sctp"
    checks = dict(parse_config(text).instances[0].services[0].checks)
    assert checks == {
        (ip("192.0.2.21"), 8443): HealthCheck("https", path="/status", verify=False, interval=60, timeout=5,
                                              retry=1, retry_delay=3, on_failure="remove"),
        # MISC_CHECK: keepalived's retry default is 0 there
        (ip("192.0.2.22"), 8443): HealthCheck("command", command=("/bin/true", "192.0.2.22"), interval=60,
                                              timeout=5, retry=0, retry_delay=1, on_failure="remove"),
    }
    assert "verify = false    # keepalived's SSL_GET does not verify the certificate" in text


def test_legacy_names_and_the_legacy_sync_daemon() -> None:
    result, text = imported("legacy.conf")
    (svc,) = result.services
    assert svc.service.scheduler == "wlc" and svc.reals[0].real.forward == "dr"
    assert "retry = 4    # nb_get_retry" in text  # legacy alias inside HTTP_GET
    (check,) = {c for _, c in parse_config(text).instances[0].services[0].checks}
    assert check == HealthCheck("http", path="/health", status=(200,), interval=3, timeout=2, retry=4, retry_delay=1,
                                on_failure="remove")
    # keepalived 2.2.7 gives the legacy form sync id 0, not the virtual_router_id (91): vrrp.c vrrp_complete_init
    assert parse_config(text).sync_daemon == SyncDaemonSpec("VI_OLD", "eth1", 0)


def test_sync_daemon_global_form() -> None:
    result, text = imported("sync_fifo.conf")
    assert parse_config(text).sync_daemon == SyncDaemonSpec("VI_1", "eth0", 51, 1400, ip("224.0.0.81"), 8848, 1)
    assert not result.notes


def test_sync_daemon_of_another_instance_and_a_second_line() -> None:
    result, text = imported("sync_defaults.conf")
    assert result.instance == "VI_1" and parse_config(text).sync_daemon is None
    assert "import with --instance VI_2 to get it as [sync_daemon]" in text
    assert "sync_defaults.conf:7): keepalived takes the sync daemon from the first line" in text
    _, text = imported("sync_defaults.conf", "VI_2")
    assert parse_config(text).sync_daemon == SyncDaemonSpec("VI_2", "eth0", 52, 1200, ip("224.0.0.82"), 8850, 2)


def test_keepalived_defaults_are_applied() -> None:
    conf = parse_text("virtual_server 192.0.2.1 53 {\n  real_server 192.0.2.2 53 {\n  }\n}\n", "d.conf")
    result = import_conf(conf)
    (svc,) = result.services
    # keepalived: no protocol -> UDP, no scheduler -> wlc, no forwarding -> NAT, weight 1
    assert str(svc.service) == "udp 192.0.2.1:53 scheduler wlc"
    assert str(svc.reals[0].real) == "192.0.2.2:53 nat weight 1"
    assert "no protocol: keepalived defaults to UDP" in svc.comments


def test_dr_ignores_the_real_servers_port_and_says_so() -> None:
    conf = parse_text("virtual_server 192.0.2.1 80 {\n protocol TCP\n lvs_method DR\n"
                      " real_server 192.0.2.2 8080 {\n }\n}\n", "p.conf")
    (svc,) = import_conf(conf).services
    assert svc.reals[0].real.port == 80
    assert "port 8080: with DR keepalived uses the service's port (80)" in svc.reals[0].notes[0].reason


def test_what_keepalived_would_not_create_is_noted() -> None:
    conf = parse_text(
        "virtual_server 192.0.2.1 80 {\n protocol TCP\n}\n"  # no real server
        "virtual_server 192.0.2.1 0 {\n protocol TCP\n real_server 192.0.2.2 80 {\n }\n}\n"  # port 0: imported
        "virtual_server group NOPE {\n real_server 192.0.2.2 80 {\n }\n}\n"
        "virtual_server 192.0.2.3 80 {\n protocol TCP\n real_server 192.0.2.2 80 {\n }\n"
        " real_server 192.0.2.2 80 {\n }\n real_server 2001:db8::2 80 {\n }\n sorry_server 192.0.2.9 80\n}\n"
        "virtual_server 192.0.2.3 80 {\n protocol TCP\n real_server 192.0.2.4 80 {\n }\n}\n", "n.conf")
    result = import_conf(conf)
    # port 0 (every port) is imported now, made persistent as keepalived does
    assert [str(s.service.key) for s in result.services] == ["tcp 192.0.2.1:0", "tcp 192.0.2.3:80"]
    assert result.services[0].service.persistence == 360
    reasons = " | ".join(n.reason for n in result.notes) + " | " + " | ".join(
        n.reason for n in result.services[1].notes)
    for fragment in ("no real servers", "no virtual_server_group 'NOPE'", "duplicate of the real server",
                     "address family differs", "the same IPVS service"):
        assert fragment in reasons
    assert 'address = "192.0.2.9"' in render(result)  # the sorry server is imported now
    parse_config(render(result))


def test_lthreshold_needs_a_uthreshold() -> None:
    conf = parse_text("virtual_server 192.0.2.1 80 {\n protocol TCP\n real_server 192.0.2.2 80 {\n  lthreshold 5\n }\n"
                      " real_server 192.0.2.3 80 {\n  uthreshold 10\n  lthreshold 5\n }\n}\n", "t.conf")
    result = import_conf(conf)
    first, second = result.services[0].reals
    assert (first.real.u_threshold, first.real.l_threshold) == (0, 0) and "ERANGE" in first.notes[-1].reason
    assert (second.real.u_threshold, second.real.l_threshold) == (10, 5)
    parse_config(render(result))


def test_ops_needs_udp_and_sh_flags_need_sh_first() -> None:
    conf = parse_text("virtual_server 192.0.2.1 80 {\n protocol TCP\n ops\n sh-port\n lvs_sched sh\n sh-fallback\n"
                      " real_server 192.0.2.2 80 {\n }\n}\n", "f.conf")
    (svc,) = import_conf(conf).services
    assert svc.service.flags == frozenset({"sh-fallback"})  # sh-port came before lvs_sched sh
    assert any("ops dropped" in c for c in svc.comments)
    assert any("only with lvs_sched sh" in n.reason for n in svc.notes)


def test_cli_json_and_errors(tmp_path: Path) -> None:
    out = subprocess.run([KANOTIFY, "import", "--json", str(CONFIGS / "seed004.conf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["services"] == ["tcp 192.0.2.21:80 scheduler rr"] and data["instance"] == "LVSha"
    assert data["checks"][0] == {"service": "tcp 192.0.2.21:80", "real": "192.0.2.12:80", "checker": "HTTP_GET",
                                 "where": str(CONFIGS / "seed004.conf") + ":45", "check": {
                                     "type": "http", "path": "/", "digest": "c2e7b1048523a6fc9a1a78d5fd783605",
                                     "interval": 6, "timeout": 3, "retry": 1, "retry_delay": 3,
                                     "on_failure": "remove"}}
    assert not any(n["keyword"].startswith("digest") for n in data["not_imported"])
    missing = subprocess.run([KANOTIFY, "import", str(tmp_path / "nope.conf")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 78 and "nope.conf" in missing.stderr and "Traceback" not in missing.stderr
    bad = subprocess.run([KANOTIFY, "import", str(CONFIGS / "seed004.conf"), "--instance", "bad name"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--instance" in bad.stderr


def test_output_is_plain_toml_comments_and_tables() -> None:
    _, text = imported("comments_quotes.conf")
    assert re.search(r"^\[\[instance\]\]$", text, re.M)
    assert "lb quoted" not in text  # only virtual_server blocks are imported

"""The config loader: the spec's example, defaults, every kind of mistake, and no crash on any input."""

from __future__ import annotations

import copy
import ipaddress
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanotify.config.schema import build_config, load_config, parse_config
from kanotify.config.values import Config, HookSettings, Settings
from kanotify.errors import ConfigError, Problem
from kanotify.model import (
    RealServer,
    ServiceKey,
    ServiceSpec,
    State,
    SyncDaemonSpec,
    VirtualService,
    Vip,
    VipSpec,
)

CONFIGS = Path(__file__).parent / "configs"
SPEC_EXAMPLE = CONFIGS / "spec_example.toml"

ip = ipaddress.ip_address
iface = ipaddress.ip_interface

MIN = '[[instance]]\nname = "VI_1"\n'


def problems(text: str) -> list[Problem]:
    """The problems of an invalid config (fails the test if it is valid)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def service(body: str, reals: str = "") -> str:
    """A config with one instance holding one service (and its reals)."""
    return MIN + "[[instance.service]]\n" + body + reals


def real(body: str) -> str:
    return "[[instance.service.real]]\n" + body


TCP80 = 'protocol = "tcp"\naddress = "192.0.2.100"\nport = 80\n'


REAL21 = real('address = "192.0.2.21"\n')


def svc_check(body: str) -> str:
    """One service of one real server whose service-level ``check`` table is ``body``."""
    return service(TCP80 + "[instance.service.check]\n" + body, REAL21)


def vip(body: str) -> str:
    return MIN + "[[instance.vip]]\n" + body


def sync(body: str, before: str = MIN) -> str:
    """A config with a [sync_daemon] table (after the instances in ``before``)."""
    return before + "[sync_daemon]\n" + body


ETH0 = 'interface = "eth0"\n'
VI_2 = '[[instance]]\nname = "VI_2"\n'


# --------------------------------------------------------------------------- valid files


def test_spec_example_parses_into_the_expected_values() -> None:
    cfg = load_config(str(SPEC_EXAMPLE))

    assert cfg.path == str(SPEC_EXAMPLE)
    assert cfg.settings == Settings(
        state_dir="/run/kanotify",
        journal="/var/lib/kanotify/journal.jsonl",
        hooks_dir="/etc/kanotify/hooks.d",
        syslog=True,
        ipvs_exclusive=False,
        lock_timeout=10.0,
    )
    assert cfg.sysctls == (
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.lo.arp_ignore", "1"),
        ("net.ipv4.conf.lo.arp_announce", "2"),
    )
    assert cfg.instance_names == ("VI_1",)
    inst = cfg.instance("VI_1")
    assert inst is not None
    assert inst.vips == (
        VipSpec(Vip(iface("192.0.2.100/24"), "eth0", "eth0:0"), frozenset({State.MASTER}), True),
        VipSpec(Vip(iface("192.0.2.100/32"), "lo", "lo:0"), frozenset({State.BACKUP, State.FAULT}), False),
    )
    assert inst.services == (
        ServiceSpec(
            VirtualService(ServiceKey.inet("tcp", ip("192.0.2.100"), 80), "wrr", 0, None, frozenset()),
            (RealServer(ip("192.0.2.21"), 80, "dr", 1, 0, 0),),
            frozenset({State.MASTER}),
        ),
    )
    grp = cfg.group("VG_1")
    assert grp is not None and grp.instances == ("VI_1",)
    assert dict(cfg.hooks) == {}


def test_minimal_file_gets_every_default() -> None:
    cfg = parse_config(
        MIN
        + '[[instance.vip]]\naddress = "192.0.2.1"\ndev = "eth0"\n'
        + '[[instance.vip]]\naddress = "2001:db8::1"\ndev = "lo"\n'
        + "[[instance.service]]\n" + TCP80 + real('address = "192.0.2.21"\n')
    )
    assert cfg == Config(path="<config>", instances=cfg.instances)
    assert cfg.settings == Settings()
    (inst,) = cfg.instances
    eth0, lo = inst.vips
    assert eth0 == VipSpec(Vip(iface("192.0.2.1/32"), "eth0"), frozenset({State.MASTER}), garp=True)
    assert lo == VipSpec(Vip(iface("2001:db8::1/128"), "lo"), frozenset({State.MASTER}), garp=False)
    (svc,) = inst.services
    assert svc.service == VirtualService(ServiceKey.inet("tcp", ip("192.0.2.100"), 80))
    assert svc.service.scheduler == "wlc" and svc.service.persistence == 0 and svc.service.netmask is None
    assert svc.reals == (RealServer(ip("192.0.2.21"), 80, "dr", 1, 0, 0),)
    assert svc.states == frozenset({State.MASTER})
    assert cfg.groups == ()


def test_every_settings_key() -> None:
    cfg = parse_config(
        "[settings]\n"
        'state_dir = "/tmp/k"\njournal = "/tmp/k/j.jsonl"\nhooks_dir = "/tmp/k/hooks"\n'
        "syslog = false\nipvs_exclusive = true\nlock_timeout = 2.5\ngarp_count = 0\n"
        "garp_interval = 0\ndrain_timeout = 0\nhook_timeout = 600\n" + MIN
    )
    assert cfg.settings == Settings("/tmp/k", "/tmp/k/j.jsonl", "/tmp/k/hooks", False, True, 2.5, 0, 0.0, 0.0, 600.0)
    assert isinstance(cfg.settings.hook_timeout, float)


def test_sysctl_values_and_names() -> None:
    cfg = parse_config(
        "[sysctl]\n"
        '"net.ipv4.conf.eth0/100.arp_ignore" = 1\n'
        '"net.ipv4.ip_local_port_range" = "  32768 \\t 60999 "\n'
        '"net.ipv4.conf.all.rp_filter" = -1\n' + MIN
    )
    assert cfg.sysctls == (
        ("net.ipv4.conf.eth0/100.arp_ignore", "1"),
        ("net.ipv4.ip_local_port_range", "32768 60999"),
        ("net.ipv4.conf.all.rp_filter", "-1"),
    )


def test_label_equal_to_dev_is_the_kernel_default() -> None:
    cfg = parse_config(vip('address = "192.0.2.1/24"\ndev = "eth0"\nlabel = "eth0"\n'))
    assert cfg.instances[0].vips[0].vip.label is None


def test_ipv6_and_fwmark_services() -> None:
    cfg = parse_config(
        MIN
        + '[[instance.service]]\nprotocol = "udp"\naddress = "2001:db8::100"\nport = 53\nscheduler = "sh"\n'
        + 'flags = ["sh-port", "sh-fallback"]\npersistence = 300\npersistence_netmask = 64\nstates = ["master", "backup"]\n'
        + real('address = "2001:db8::21"\nforward = "nat"\nport = 5353\nweight = 3\ndrain = true\n'
               "upper_threshold = 100\nlower_threshold = 50\n")
        + '[[instance.service]]\nfwmark = 7\nfamily = "inet6"\npersistence = 60\npersistence_netmask = 128\n'
        + real('address = "2001:db8::22"\n')
        + "[[instance.service]]\nfwmark = 4294967295\n"
        + real('address = "192.0.2.23"\nforward = "nat"\nport = 8080\n')
    )
    udp, mark6, mark4 = cfg.instances[0].services
    assert udp.service == VirtualService(
        ServiceKey.inet("udp", ip("2001:db8::100"), 53), "sh", 300, 64, frozenset({"sh-port", "sh-fallback"})
    )
    assert udp.reals == (RealServer(ip("2001:db8::21"), 5353, "nat", 0, 100, 50),)  # drained
    assert udp.add_weight(udp.reals[0]) == 3  # added at its weight first: sh gives one added at 0 no slots
    assert udp.states == frozenset({State.MASTER, State.BACKUP})
    # a full-length netmask is stored as None: what the kernel reports back
    assert mark6.service == VirtualService(ServiceKey.mark(7, 6), "wlc", 60, None)
    assert mark6.reals == (RealServer(ip("2001:db8::22"), 0, "dr", 1),)
    assert mark4.service.key == ServiceKey.mark(4294967295, 4)
    assert mark4.reals[0].port == 8080


def test_empty_real_list_and_states_for_everything() -> None:
    cfg = parse_config(service(TCP80 + 'states = ["stop"]\nreal = []\n'))
    assert cfg.instances[0].services[0].reals == ()
    assert cfg.instances[0].services[0].states == frozenset({State.STOP})


def test_hooks_keep_plugin_options_read_only() -> None:
    cfg = parse_config(
        MIN
        + '[hooks.mail]\nenabled = false\nrequired = true\ntimeout = 2\nto = "ops@example.org"\nports = [1, 2]\n'
        + "[hooks.\"a.b-c_1\"]\n"
    )
    mail = cfg.hooks["mail"]
    assert mail == HookSettings(False, True, 2.0, mail.options)
    assert dict(mail.options) == {"to": "ops@example.org", "ports": [1, 2]}
    assert cfg.hooks["a.b-c_1"] == HookSettings()
    with pytest.raises(TypeError):
        mail.options["to"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.hooks["new"] = HookSettings()  # type: ignore[index]


def test_groups() -> None:
    cfg = parse_config(MIN + '[[instance]]\nname = "VI_2"\n[[group]]\nname = "VG_1"\ninstances = ["VI_2", "VI_1"]\n')
    assert cfg.group("VG_1") is not None and cfg.group("VG_1").instances == ("VI_2", "VI_1")  # type: ignore[union-attr]
    assert cfg.group("nope") is None and cfg.instance("nope") is None


def test_sync_daemon_every_key_and_the_defaults() -> None:
    cfg = parse_config(sync(ETH0))
    assert cfg.sync_daemon == SyncDaemonSpec("VI_1", "eth0")  # the only instance drives it
    spec = cfg.sync_daemon
    assert (spec.sync_id, spec.maxlen, str(spec.group), spec.port, spec.ttl) == (0, None, "224.0.0.81", 8848, 1)
    full = parse_config(sync('interface = "bond0"\ninstance = "VI_2"\nsync_id = 255\nmaxlen = 1024\n'
                             'group = "ff02::81"\nport = 65535\nttl = 255\n', MIN + VI_2))
    assert full.sync_daemon == SyncDaemonSpec("VI_2", "bond0", 255, 1024, ip("ff02::81"), 65535, 255)
    assert parse_config(sync(ETH0 + "maxlen = 65487\n" + 'group = "ff05::1"\n')).sync_daemon is not None
    assert parse_config(sync(ETH0 + "maxlen = 65507\n")).sync_daemon is not None
    assert parse_config(MIN).sync_daemon is None


def test_build_config_from_a_dict() -> None:
    data = tomllib.loads(SPEC_EXAMPLE.read_text())
    assert build_config(data, "x") == parse_config(SPEC_EXAMPLE.read_text(), "x")


# --------------------------------------------------------------------------- broken files

# (id, text, key path, a word of the message, number of problems)
BROKEN: list[tuple[str, str, str, str, int]] = [
    # ---- whole file / top level
    ("empty-file", "", "instance", "at least one", 1),
    ("no-instance", '[settings]\nsyslog = false\n', "instance", "at least one", 1),
    ("instance-not-array", '[instance]\nname = "VI_1"\n', "instance", "array of tables", 1),
    ("top-unknown-key", "colour = 1\n" + MIN, "colour", "unknown", 1),
    ("top-unknown-table", MIN + "[vips]\n", "vips", "unknown", 1),
    # ---- [settings]
    ("settings-not-table", "settings = 5\n" + MIN, "settings", "table", 1),
    ("settings-unknown-key", "[settings]\nlock_timout = 3\n" + MIN, "settings.lock_timout", "lock_timeout", 1),
    ("lock-timeout-bool", "[settings]\nlock_timeout = true\n" + MIN, "settings.lock_timeout", "boolean", 1),
    ("lock-timeout-zero", "[settings]\nlock_timeout = 0\n" + MIN, "settings.lock_timeout", "> 0", 1),
    ("lock-timeout-big", "[settings]\nlock_timeout = 3601\n" + MIN, "settings.lock_timeout", "3600", 1),
    ("lock-timeout-nan", "[settings]\nlock_timeout = nan\n" + MIN, "settings.lock_timeout", "nan", 1),
    ("journal-relative", '[settings]\njournal = "j.jsonl"\n' + MIN, "settings.journal", "absolute", 1),
    ("state-dir-empty", '[settings]\nstate_dir = ""\n' + MIN, "settings.state_dir", "absolute", 1),
    ("garp-count-big", "[settings]\ngarp_count = 101\n" + MIN, "settings.garp_count", "0..100", 1),
    ("garp-count-float", "[settings]\ngarp_count = 1.5\n" + MIN, "settings.garp_count", "float", 1),
    ("garp-interval-negative", "[settings]\ngarp_interval = -0.1\n" + MIN, "settings.garp_interval", ">= 0", 1),
    ("syslog-string", '[settings]\nsyslog = "yes"\n' + MIN, "settings.syslog", "true or false", 1),
    ("hook-timeout-big", "[settings]\nhook_timeout = 601\n" + MIN, "settings.hook_timeout", "600", 1),
    # ---- [sysctl]
    ("sysctl-unquoted", "[sysctl]\nnet.ipv4.conf.all.arp_ignore = 1\n" + MIN, "sysctl.net", "quote", 1),
    ("sysctl-bad-name", '[sysctl]\n"net..ipv4" = 1\n' + MIN, 'sysctl."net..ipv4"', "dotted", 1),
    ("sysctl-no-dot", '[sysctl]\n"kernel" = 1\n' + MIN, "sysctl.kernel", "dotted", 1),
    ("sysctl-dotdot", '[sysctl]\n"net.ipv4.conf.//.x" = 1\n' + MIN, 'sysctl."net.ipv4.conf.//.x"', "'..'", 1),
    ("sysctl-bool", '[sysctl]\n"net.ipv4.ip_forward" = true\n' + MIN, 'sysctl."net.ipv4.ip_forward"', "boolean", 1),
    ("sysctl-float", '[sysctl]\n"net.ipv4.ip_forward" = 1.0\n' + MIN, 'sysctl."net.ipv4.ip_forward"', "float", 1),
    ("sysctl-empty", '[sysctl]\n"net.ipv4.ip_forward" = "  "\n' + MIN, 'sysctl."net.ipv4.ip_forward"', "empty", 1),
    ("sysctl-multiline", '[sysctl]\n"net.a.b" = """1\n2"""\n' + MIN, 'sysctl."net.a.b"', "multi-line", 1),
    # ---- [[instance]]
    ("instance-unknown-key", MIN + "priority = 100\n", "instance[0].priority", "unknown", 1),
    ("instance-no-name", "[[instance]]\n", "instance[0].name", "missing", 1),
    ("instance-bad-name", '[[instance]]\nname = "VI 1"\n', "instance[0].name", "letters", 1),
    ("instance-name-int", "[[instance]]\nname = 1\n", "instance[0].name", "got integer 1", 1),
    ("instance-duplicate", MIN + MIN, "instance[1].name", "duplicate", 1),
    ("vip-not-array", MIN + '[instance.vip]\naddress = "192.0.2.1"\ndev = "eth0"\n', "instance[0].vip",
     "array of tables", 1),
    # ---- [[instance.vip]]
    ("vip-unknown-key", vip('address = "192.0.2.1"\ndev = "eth0"\ngarp_count = 3\n'), "instance[0].vip[0].garp_count",
     "unknown", 1),
    ("vip-missing-dev", vip('address = "192.0.2.1"\n'), "instance[0].vip[0].dev", "missing", 1),
    ("vip-bad-address", vip('address = "192.0.2.300/24"\ndev = "eth0"\n'), "instance[0].vip[0].address",
     "IPv4 or IPv6", 1),
    ("vip-prefix-33", vip('address = "192.0.2.1/33"\ndev = "eth0"\n'), "instance[0].vip[0].address", "1..32", 1),
    ("vip-prefix-129", vip('address = "2001:db8::1/129"\ndev = "eth0"\n'), "instance[0].vip[0].address", "1..128", 1),
    ("vip-prefix-zero", vip('address = "192.0.2.1/0"\ndev = "eth0"\n'), "instance[0].vip[0].address", "1..32", 1),
    ("vip-netmask-notation", vip('address = "192.0.2.1/255.255.255.0"\ndev = "eth0"\n'),
     "instance[0].vip[0].address", "prefix length", 1),
    ("vip-multicast", vip('address = "239.1.1.1"\ndev = "eth0"\n'), "instance[0].vip[0].address", "unicast", 1),
    ("vip-address-int", vip('address = 3221225985\ndev = "eth0"\n'), "instance[0].vip[0].address", "integer", 1),
    ("vip-dev-long", vip('address = "192.0.2.1"\ndev = "abcdefghijklmnop"\n'), "instance[0].vip[0].dev", "15", 1),
    ("vip-dev-slash", vip('address = "192.0.2.1"\ndev = "eth/0"\n'), "instance[0].vip[0].dev", "interface name", 1),
    ("vip-dev-dotdot", vip('address = "192.0.2.1"\ndev = ".."\n'), "instance[0].vip[0].dev", "interface name", 1),
    ("label-not-dev", vip('address = "192.0.2.1/24"\ndev = "eth0"\nlabel = "eth1:0"\n'),
     "instance[0].vip[0].label", "start", 1),
    ("label-ipv6", vip('address = "2001:db8::1/64"\ndev = "eth0"\nlabel = "eth0:0"\n'),
     "instance[0].vip[0].label", "IPv6", 1),
    ("label-long", vip('address = "192.0.2.1/24"\ndev = "eth0"\nlabel = "eth0:0123456789ab"\n'),
     "instance[0].vip[0].label", "15", 1),
    ("lo-wide-prefix", vip('address = "192.0.2.1/24"\ndev = "lo"\n'), "instance[0].vip[0].address", "/32", 1),
    ("lo-wide-prefix-v6", vip('address = "2001:db8::1/64"\ndev = "lo"\n'), "instance[0].vip[0].address", "/128", 1),
    ("garp-on-lo", vip('address = "192.0.2.1"\ndev = "lo"\ngarp = true\n'), "instance[0].vip[0].garp",
     "never sent on lo", 1),
    ("garp-string", vip('address = "192.0.2.1"\ndev = "eth0"\ngarp = "yes"\n'), "instance[0].vip[0].garp",
     "true or false", 1),
    ("state-unknown", vip('address = "192.0.2.1"\ndev = "eth0"\nstates = ["master", "active"]\n'),
     "instance[0].vip[0].states[1]", "backup", 1),
    ("state-upper-case", vip('address = "192.0.2.1"\ndev = "eth0"\nstates = ["MASTER"]\n'),
     "instance[0].vip[0].states[0]", "master", 1),
    ("states-empty", vip('address = "192.0.2.1"\ndev = "eth0"\nstates = []\n'), "instance[0].vip[0].states",
     "non-empty", 1),
    ("states-duplicate", vip('address = "192.0.2.1"\ndev = "eth0"\nstates = ["backup", "backup"]\n'),
     "instance[0].vip[0].states[1]", "duplicate", 1),
    ("states-string", vip('address = "192.0.2.1"\ndev = "eth0"\nstates = "master"\n'), "instance[0].vip[0].states",
     "array", 1),
    ("vip-duplicate-across-instances",
     vip('address = "192.0.2.1/24"\ndev = "eth0"\n') + '[[instance]]\nname = "VI_2"\n'
     '[[instance.vip]]\naddress = "192.0.2.1/24"\ndev = "eth0"\nstates = ["backup"]\n',
     "instance[1].vip[0]", "instance[0].vip[0]", 1),
    ("vip-v6-same-address-other-prefix",
     vip('address = "2001:db8::1/64"\ndev = "eth0"\n[[instance.vip]]\naddress = "2001:db8::1/128"\ndev = "eth0"\n'),
     "instance[0].vip[1]", "once per device", 1),
    ("vip-not-table", MIN + 'vip = ["192.0.2.1"]\n', "instance[0].vip[0]", "table", 1),
    # ---- [[instance.service]]
    ("service-unknown-key", service(TCP80 + "timeout = 5\n"), "instance[0].service[0].timeout", "unknown", 1),
    ("protocol-unknown", service('protocol = "icmp"\naddress = "192.0.2.1"\nport = 80\n'),
     "instance[0].service[0].protocol", "sctp", 1),
    ("protocol-missing", service('address = "192.0.2.1"\nport = 80\n'), "instance[0].service[0].protocol",
     "missing", 1),
    ("service-address-prefix", service('protocol = "tcp"\naddress = "192.0.2.1/32"\nport = 80\n'),
     "instance[0].service[0].address", "without /prefix", 1),
    ("service-address-unspecified", service('protocol = "tcp"\naddress = "0.0.0.0"\nport = 80\n'),
     "instance[0].service[0].address", "unicast", 1),
    ("port-zero", service('protocol = "tcp"\naddress = "192.0.2.1"\nport = 0\n'), "instance[0].service[0].port",
     "1..65535", 1),
    ("port-65536", service('protocol = "tcp"\naddress = "192.0.2.1"\nport = 65536\n'), "instance[0].service[0].port",
     "0..65535", 1),
    ("port-string", service('protocol = "tcp"\naddress = "192.0.2.1"\nport = "80"\n'),
     "instance[0].service[0].port", 'got string "80"', 1),
    ("port-datetime", service('protocol = "tcp"\naddress = "192.0.2.1"\nport = 1979-05-27T07:32:00Z\n'),
     "instance[0].service[0].port", "date-time", 1),
    ("scheduler-unknown", service(TCP80 + 'scheduler = "roundrobin"\n'), "instance[0].service[0].scheduler",
     "wrr", 1),
    ("fwmark-with-address", service('fwmark = 1\naddress = "192.0.2.1"\n'), "instance[0].service[0].address",
     "fwmark", 1),
    ("fwmark-with-port", service("fwmark = 1\nport = 80\n"), "instance[0].service[0].port", "fwmark", 1),
    ("fwmark-with-protocol", service('fwmark = 1\nprotocol = "tcp"\n'), "instance[0].service[0].protocol",
     "fwmark", 1),
    ("fwmark-zero", service("fwmark = 0\n"), "instance[0].service[0].fwmark", "1..4294967295", 1),
    ("fwmark-too-big", service("fwmark = 4294967296\n"), "instance[0].service[0].fwmark", "1..4294967295", 1),
    ("family-without-fwmark", service(TCP80 + 'family = "inet"\n'), "instance[0].service[0].family", "fwmark", 1),
    ("family-unknown", service('fwmark = 1\nfamily = "ipv6"\n'), "instance[0].service[0].family", "inet6", 1),
    ("persistence-negative", service(TCP80 + "persistence = -1\n"), "instance[0].service[0].persistence",
     "0..2678400", 1),
    ("netmask-without-persistence", service(TCP80 + "persistence_netmask = 24\n"),
     "instance[0].service[0].persistence_netmask", "persistence > 0", 1),
    ("netmask-out-of-range", service(TCP80 + "persistence = 60\npersistence_netmask = 33\n"),
     "instance[0].service[0].persistence_netmask", "0..32", 1),
    ("flag-unknown", service(TCP80 + 'flags = ["ops"]\n'), "instance[0].service[0].flags[0]", "one-packet", 1),
    ("flag-sh-with-wrr", service(TCP80 + 'scheduler = "wrr"\nflags = ["sh-port"]\n'),
     "instance[0].service[0].flags[0]", "scheduler sh", 1),
    ("flag-sh-with-mh", service(TCP80 + 'scheduler = "mh"\nflags = ["sh-port"]\n'),
     "instance[0].service[0].flags[0]", '"mh-port" with scheduler mh', 1),
    ("flag-mh-with-sh", service(TCP80 + 'scheduler = "sh"\nflags = ["mh-fallback"]\n'),
     "instance[0].service[0].flags[0]", '"sh-fallback" with scheduler sh', 1),
    ("mh-weight-zero", service(TCP80 + 'scheduler = "mh"\n', REAL21 + real('address = "192.0.2.22"\nweight = 0\n')),
     "instance[0].service[0].real[1].weight", "drain = true", 1),
    ("sh-on-failure-remove", service(TCP80 + 'scheduler = "sh"\n[instance.service.check]\ntype = "tcp"\n'
                                     'on_failure = "remove"\n', REAL21),
     "instance[0].service[0].check.on_failure", "reshuffle", 1),
    ("mh-real-on-failure-remove", service(TCP80 + 'scheduler = "mh"\n', REAL21 + '[instance.service.real.check]\n'
                                          'type = "tcp"\non_failure = "remove"\n'),
     "instance[0].service[0].real[0].check.on_failure", "drain", 1),
    ("mh-one-of-several-checks-on-failure-remove",
     service(TCP80 + 'scheduler = "mh"\n[[instance.service.check]]\ntype = "tcp"\non_failure = "remove"\n'
             '[[instance.service.check]]\ntype = "tcp"\nport = 81\non_failure = "remove"\n', REAL21),
     "instance[0].service[0].check[0].on_failure", "reshuffle", 2),
    ("drain-not-boolean", service(TCP80, real('address = "192.0.2.22"\ndrain = 1\n')),
     "instance[0].service[0].real[0].drain", "true or false", 1),
    ("flag-duplicate", service(TCP80 + 'flags = ["one-packet", "one-packet"]\n'), "instance[0].service[0].flags[1]",
     "duplicate", 1),
    ("service-duplicate-across-instances",
     service(TCP80) + '[[instance]]\nname = "VI_2"\n[[instance.service]]\n' + TCP80 + 'states = ["backup"]\n',
     "instance[1].service[0]", "duplicate service tcp 192.0.2.100:80", 1),
    ("fwmark-duplicate", service("fwmark = 3\n") + "[[instance.service]]\nfwmark = 3\n",
     "instance[0].service[1]", "fwmark 3", 1),
    # ---- [[instance.service.real]]
    ("real-unknown-key", service(TCP80, real('address = "192.0.2.21"\nmethod = "dr"\n')),
     "instance[0].service[0].real[0].method", "forward", 1),
    ("real-missing-address", service(TCP80, real("port = 80\n")), "instance[0].service[0].real[0].address",
     "missing", 1),
    ("real-family-mismatch", service(TCP80, real('address = "2001:db8::21"\n')),
     "instance[0].service[0].real[0].address", "192.0.2.100", 1),
    ("real-family-mismatch-fwmark", service('fwmark = 1\nfamily = "inet6"\n', real('address = "192.0.2.21"\n')),
     "instance[0].service[0].real[0].address", "IPv6", 1),
    ("real-port-65536", service(TCP80, real('address = "192.0.2.21"\nport = 65536\nforward = "nat"\n')),
     "instance[0].service[0].real[0].port", "1..65535", 1),
    ("real-port-zero", service(TCP80, real('address = "192.0.2.21"\nport = 0\nforward = "nat"\n')),
     "instance[0].service[0].real[0].port", "1..65535", 1),
    ("forward-unknown", service(TCP80, real('address = "192.0.2.21"\nforward = "masq"\n')),
     "instance[0].service[0].real[0].forward", "nat", 1),
    ("weight-big", service(TCP80, real('address = "192.0.2.21"\nweight = 65536\n')),
     "instance[0].service[0].real[0].weight", "0..65535", 1),
    ("weight-negative", service(TCP80, real('address = "192.0.2.21"\nweight = -1\n')),
     "instance[0].service[0].real[0].weight", "0..65535", 1),
    ("dr-other-port", service(TCP80, real('address = "192.0.2.21"\nport = 8080\n')),
     "instance[0].service[0].real[0].port", "nat", 1),
    ("tun-other-port", service(TCP80, real('address = "192.0.2.21"\nport = 8080\nforward = "tun"\n')),
     "instance[0].service[0].real[0].port", "80", 1),
    ("thresholds-reversed",
     service(TCP80, real('address = "192.0.2.21"\nupper_threshold = 10\nlower_threshold = 20\n')),
     "instance[0].service[0].real[0].lower_threshold", "upper_threshold", 1),
    ("lower threshold without an upper one (the kernel says ERANGE)",
     service(TCP80, real('address = "192.0.2.21"\nlower_threshold = 5\n')),
     "instance[0].service[0].real[0].lower_threshold", "no limit", 1),
    ("real-duplicate", service(TCP80, real('address = "192.0.2.21"\n') + real('address = "192.0.2.21"\nport = 80\n')),
     "instance[0].service[0].real[1]", "duplicate", 1),
    ("real-not-table", service(TCP80 + 'real = ["192.0.2.21"]\n'), "instance[0].service[0].real[0]", "table", 1),
    # ---- [[group]]
    ("group-unknown-instance", MIN + '[[group]]\nname = "VG_1"\ninstances = ["VI_1", "VI_9"]\n',
     "group[0].instances[1]", "declared", 1),
    ("group-empty", MIN + '[[group]]\nname = "VG_1"\ninstances = []\n', "group[0].instances", "non-empty", 1),
    ("group-no-instances", MIN + '[[group]]\nname = "VG_1"\n', "group[0].instances", "missing", 1),
    ("group-duplicate", MIN + '[[group]]\nname = "VG"\ninstances = ["VI_1"]\n'
     '[[group]]\nname = "VG"\ninstances = ["VI_2"]\n[[instance]]\nname = "VI_2"\n', "group[1].name", "duplicate", 1),
    ("group-instance-twice", MIN + '[[group]]\nname = "VG"\ninstances = ["VI_1", "VI_1"]\n',
     "group[0].instances[1]", "duplicate", 1),
    ("group-instance-in-two-groups", MIN + '[[group]]\nname = "A"\ninstances = ["VI_1"]\n'
     '[[group]]\nname = "B"\ninstances = ["VI_1"]\n', "group[1].instances[0]", "already", 1),
    ("group-unknown-key", MIN + '[[group]]\nname = "VG"\ninstances = ["VI_1"]\nglobal = true\n', "group[0].global",
     "unknown", 1),
    # ---- [sync_daemon]
    ("sync-not-table", "sync_daemon = 1\n" + MIN, "sync_daemon", "table", 1),
    ("sync-unknown-key", sync(ETH0 + "syncid = 5\n"), "sync_daemon.syncid", "did you mean 'sync_id'", 1),
    ("sync-no-interface", sync("sync_id = 5\n"), "sync_daemon.interface", "missing", 1),
    ("sync-interface-long", sync('interface = "abcdefghijklmnop"\n'), "sync_daemon.interface", "15", 1),
    ("sync-interface-int", sync("interface = 0\n"), "sync_daemon.interface", "integer", 1),
    ("sync-instance-unknown", sync(ETH0 + 'instance = "VI_9"\n'), "sync_daemon.instance", "declared", 1),
    ("sync-instance-needed-with-two", sync(ETH0, MIN + VI_2), "sync_daemon.instance", "VI_1, VI_2", 1),
    ("sync-id-256", sync(ETH0 + "sync_id = 256\n"), "sync_daemon.sync_id", "0..255", 1),
    ("sync-id-negative", sync(ETH0 + "sync_id = -1\n"), "sync_daemon.sync_id", "0..255", 1),
    ("sync-group-unicast", sync(ETH0 + 'group = "192.0.2.1"\n'), "sync_daemon.group", "multicast", 1),
    ("sync-group-v6-unicast", sync(ETH0 + 'group = "2001:db8::1"\n'), "sync_daemon.group", "ff00::/8", 1),
    ("sync-group-not-an-address", sync(ETH0 + 'group = "224.0.0.0/4"\n'), "sync_daemon.group", "IPv4 or IPv6", 1),
    ("sync-port-zero", sync(ETH0 + "port = 0\n"), "sync_daemon.port", "1..65535", 1),
    ("sync-ttl-zero", sync(ETH0 + "ttl = 0\n"), "sync_daemon.ttl", "1..255", 1),
    ("sync-ttl-256", sync(ETH0 + "ttl = 256\n"), "sync_daemon.ttl", "1..255", 1),
    ("sync-maxlen-below-a-backup's", sync(ETH0 + "maxlen = 1000\n"), "sync_daemon.maxlen", "1024..65507", 1),
    ("sync-maxlen-above-a-datagram", sync(ETH0 + "maxlen = 65508\n"), "sync_daemon.maxlen", "1024..65507", 1),
    ("sync-maxlen-ipv6", sync(ETH0 + 'group = "ff02::81"\nmaxlen = 65500\n'), "sync_daemon.maxlen", "65487", 1),
    ("sync-maxlen-string", sync(ETH0 + 'maxlen = "1500"\n'), "sync_daemon.maxlen", "string", 1),
    # ---- [instance.service.check] and [instance.service.real.check]
    ("check-not-table", service(TCP80 + "check = 1\n", REAL21), "instance[0].service[0].check", "table", 1),
    ("check-unknown-key", svc_check('type = "tcp"\nintervall = 2\n'), "instance[0].service[0].check.intervall",
     "interval", 1),
    ("check-no-type", svc_check("interval = 2\n"), "instance[0].service[0].check.type", "missing", 1),
    ("check-type-unknown", svc_check('type = "ldap"\n'), "instance[0].service[0].check.type", "tcp", 1),
    ("check-interval-zero", svc_check('type = "tcp"\ninterval = 0\n'), "instance[0].service[0].check.interval",
     "> 0", 1),
    ("check-timeout-string", svc_check('type = "tcp"\ntimeout = "3s"\n'), "instance[0].service[0].check.timeout",
     "string", 1),
    ("check-retry-negative", svc_check('type = "tcp"\nretry = -1\n'), "instance[0].service[0].check.retry",
     "0..100", 1),
    ("check-retry-delay-negative", svc_check('type = "tcp"\nretry_delay = -1\n'),
     "instance[0].service[0].check.retry_delay", ">= 0", 1),
    ("check-port-zero", svc_check('type = "tcp"\nport = 0\n'), "instance[0].service[0].check.port", "1..65535", 1),
    ("check-path-relative", svc_check('type = "http"\npath = "healthz"\n'), "instance[0].service[0].check.path",
     '"/"', 1),
    ("check-status-empty", svc_check('type = "http"\nstatus = []\n'), "instance[0].service[0].check.status",
     "non-empty", 1),
    ("check-status-600", svc_check('type = "http"\nstatus = [200, 600]\n'),
     "instance[0].service[0].check.status[1]", "100..599", 1),
    ("check-host-space", svc_check('type = "http"\nhost = "www example"\n'), "instance[0].service[0].check.host",
     "host", 1),
    ("check-command-relative", svc_check('type = "command"\ncommand = ["check.sh"]\n'),
     "instance[0].service[0].check.command", "absolute", 1),
    ("check-command-empty", svc_check('type = "command"\ncommand = []\n'), "instance[0].service[0].check.command",
     "empty", 1),
    ("check-command-missing", svc_check('type = "command"\n'), "instance[0].service[0].check.type",
     "command key", 1),
    ("check-path-on-tcp", svc_check('type = "tcp"\npath = "/"\n'), "instance[0].service[0].check.path",
     "http", 1),
    ("check-verify-on-http", svc_check('type = "http"\nverify = true\n'), "instance[0].service[0].check.verify",
     "https", 1),
    ("check-on-failure-unknown", svc_check('type = "tcp"\non_failure = "quiesce"\n'),
     "instance[0].service[0].check.on_failure", "drain", 1),
    ("check-initial-unknown", svc_check('type = "tcp"\ninitial = "unknown"\n'),
     "instance[0].service[0].check.initial", "down", 1),
    ("check-real-overrides-badly", service(TCP80, REAL21 + '[instance.service.real.check]\ntype = "tcp"\n'
                                           'timeout = -1\n'), "instance[0].service[0].real[0].check.timeout", "> 0", 1),
    ("check-real-inherits-a-key-its-type-has-not", service(
        TCP80 + '[instance.service.check]\ntype = "http"\npath = "/ok"\n',
        REAL21 + '[instance.service.real.check]\ntype = "tcp"\n'), "instance[0].service[0].check.path", "http", 1),
    ("check-fwmark-without-port", service('fwmark = 1\n[instance.service.check]\ntype = "tcp"\n',
                                          real('address = "192.0.2.21"\n')), "instance[0].service[0].check.port",
     "fwmark", 1),
    # ---- [hooks.NAME]
    ("hook-bad-name", MIN + '[hooks."mail me"]\n', 'hooks."mail me"', "plugin name", 1),
    ("hook-timeout-zero", MIN + "[hooks.mail]\ntimeout = 0\n", "hooks.mail.timeout", "> 0", 1),
    ("hook-enabled-string", MIN + '[hooks.mail]\nenabled = "no"\n', "hooks.mail.enabled", "true or false", 1),
    ("hook-not-table", MIN + "[hooks]\nmail = 1\n", "hooks.mail", "table", 1),
]


@pytest.mark.parametrize(("text", "path", "word", "count"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config(text: str, path: str, word: str, count: int) -> None:
    found = problems(text)
    assert len(found) == count, "\n".join(map(str, found))
    matching = [p for p in found if p.path == path]
    assert matching, f"no problem at {path!r}: " + "; ".join(map(str, found))
    assert any(word in p.message for p in matching), "; ".join(map(str, matching))
    assert all(p.file == "test.toml" for p in found)


def test_at_least_45_distinct_broken_configs() -> None:
    assert len({c[0] for c in BROKEN}) == len(BROKEN) >= 45
    assert len({c[1] for c in BROKEN}) == len(BROKEN)


def test_messages_name_what_was_expected() -> None:
    (p,) = problems(service(TCP80, real('address = "192.0.2.21"\n') + real('address = "192.0.2.22"\nport = 0\n')))
    assert str(p) == (
        "test.toml:11: instance[0].service[0].real[1].port: expected an integer 1..65535, got 0"
    )
    (p,) = problems(service(TCP80, real('address = "2001:db8::21"\n')))
    assert "IPv4" in p.message and "IPv6" in p.message and "192.0.2.100" in p.message


def test_misspelled_key_is_unknown_and_the_real_one_missing() -> None:
    found = problems(vip('adress = "192.0.2.1"\ndev = "eth0"\n'))
    assert [(p.path, p.line) for p in found] == [
        ("instance[0].vip[0].address", 3),  # missing: points at the table header
        ("instance[0].vip[0].adress", 4),
    ]
    assert "did you mean 'address'" in found[1].message


def test_toml_syntax_error_has_its_line_number() -> None:
    text = MIN + "[[instance.vip]]\naddress = 192.0.2.1\n"
    (p,) = problems(text)
    assert p.path == "" and p.line == 4 and "invalid TOML" in p.message
    assert str(p).startswith("test.toml:4: invalid TOML")


def test_toml_error_at_end_of_file() -> None:
    (p,) = problems(MIN + "x = [1,\n")
    assert p.line == 3 and "invalid TOML" in p.message


def test_toml_duplicate_key_is_a_syntax_problem() -> None:
    (p,) = problems('[[instance]]\nname = "a"\nname = "b"\n')
    assert p.line == 3


def test_several_mistakes_are_reported_at_once() -> None:
    text = """\
[settings]
lock_timeout = 0
colour = "blue"

[sysctl]
"net.ipv4.conf.all.arp_ignore" = true

[[instance]]
name = "VI_1"

  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "lo"
  label = "eth0:0"

  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 65536

    [[instance.service.real]]
    address = "2001:db8::1"
    forward = "direct"

[[group]]
name = "VG_1"
instances = ["VI_1", "VI_2"]
"""
    found = problems(text)
    assert [(p.path, p.line) for p in found] == [
        ("settings.lock_timeout", 2),
        ("settings.colour", 3),
        ('sysctl."net.ipv4.conf.all.arp_ignore"', 6),
        ("instance[0].vip[0].address", 12),
        ("instance[0].vip[0].label", 14),
        ("instance[0].service[0].port", 19),
        ("instance[0].service[0].real[0].address", 22),
        ("instance[0].service[0].real[0].forward", 23),
        ("group[0].instances[1]", 27),
    ]
    assert len(found) == 9


def test_line_numbers_count_arrays_of_tables() -> None:
    text = (
        MIN
        + "[[instance.service]]\n" + TCP80
        + "[[instance.service]]\n" + 'protocol = "tcp"\naddress = "192.0.2.100"\nport = 81\n'
        + '  [[instance.service.real]]\n  address = "192.0.2.1"\n'
        + '  [[instance.service.real]]\n  address = "192.0.2.2"\n  weight = -5\n'
        + '[[instance]]\nname = "VI_2"\n[[instance.service]]\nfwmark = 1\nport = 1\n'
    )
    found = problems(text)
    assert [(p.path, p.line) for p in found] == [
        ("instance[0].service[1].real[1].weight", 15),
        ("instance[1].service[0].port", 20),
    ]


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    (p,) = info.value.problems
    assert p.file == str(path) and p.path == "" and "No such file" in p.message
    assert info.value.exit_code == 78


def test_load_config_directory_and_bad_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert "cannot read" in info.value.problems[0].message
    bad = tmp_path / "bad.toml"
    bad.write_bytes(MIN.encode() + b'# caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    (p,) = info.value.problems
    assert p.line == 3 and "UTF-8" in p.message


def test_load_config_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MIN.encode())
    assert load_config(str(path)).instance_names == ("VI_1",)


# --------------------------------------------------------------------------- never crash


def _expect_config_or_error(text: str) -> None:
    try:
        cfg = parse_config(text)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)
        str(exc)
    else:
        assert isinstance(cfg, Config)


FRAGMENTS = [
    "[[instance]]\n", "[[instance.vip]]\n", "[[instance.service]]\n", "[[instance.service.real]]\n",
    "[[group]]\n", "[settings]\n", "[sysctl]\n", "[hooks.x]\n", 'name = "VI_1"\n', 'name = "VI_2"\n',
    'address = "192.0.2.1"\n', 'address = "2001:db8::1/64"\n', 'dev = "lo"\n', 'dev = "eth0"\n',
    'label = "eth0:1"\n', "port = 80\n", "port = 0\n", 'protocol = "tcp"\n', "fwmark = 5\n",
    'family = "inet6"\n', 'states = ["backup"]\n', "states = []\n", 'forward = "nat"\n', "weight = 0\n",
    'instances = ["VI_1"]\n', "persistence = 10\n", "persistence_netmask = 8\n", 'flags = ["sh-port"]\n',
    '"net.ipv4.a" = 1\n', "garp = true\n", "lock_timeout = inf\n", "x = {a = [1, {b = 2}]}\n",
    "real = []\n", "vip = [1]\n", "upper_threshold = 3\n", "lower_threshold = 4\n", '"""\n', "=\n", "[\n",
    "[sync_daemon]\n", 'interface = "eth0"\n', 'instance = "VI_2"\n', "sync_id = 300\n", 'group = "ff02::81"\n',
    "maxlen = 70000\n", "ttl = 0\n",
]


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25))
def test_fuzz_fragments_never_crash(parts: list[str]) -> None:
    _expect_config_or_error("".join(parts))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_random_text_never_crashes(text: str) -> None:
    _expect_config_or_error(text)


def test_fuzz_mutated_spec_example_never_crashes() -> None:
    base = SPEC_EXAMPLE.read_text()
    alphabet = '[]{}"\'=.,#\n\\0123456789abcdefx -_/:'
    rnd = random.Random(20261121)
    for _ in range(1500):
        chars = list(base)
        for _ in range(rnd.randint(1, 6)):
            pos = rnd.randrange(len(chars))
            op = rnd.random()
            if op < 0.3:
                del chars[pos]
            elif op < 0.6:
                chars.insert(pos, rnd.choice(alphabet))
            else:
                chars[pos] = rnd.choice(alphabet)
        _expect_config_or_error("".join(chars))


def test_deeply_nested_toml_is_a_config_error() -> None:
    (p,) = problems(MIN + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested" in p.message or "invalid TOML" in p.message


TOML_VALUES = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["192.0.2.1", "2001:db8::1/64", "lo", "eth0", "master", "tcp", "dr", "sh-port", "VI_1"]),
        st.datetimes(),
        st.dates(),
        st.times(),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _locations(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) pair in a parsed TOML tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        out.append((node, key))
        if isinstance(child, (dict, list)):
            _locations(child, out)
    return out


@settings(derandomize=True, max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_any_value_anywhere_never_crashes(data: st.DataObject) -> None:
    tree = copy.deepcopy(tomllib.loads(SPEC_EXAMPLE.read_text()))
    for _ in range(data.draw(st.integers(1, 3))):
        spots = _locations(tree, [])
        container, key = data.draw(st.sampled_from(spots))
        value = data.draw(TOML_VALUES)
        if isinstance(container, dict) and data.draw(st.booleans()):
            container[data.draw(st.text(max_size=8))] = value  # a new key
        else:
            container[key] = value
    try:
        cfg = build_config(tree, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems
    else:
        assert isinstance(cfg, Config)


def test_ipv6_persistence_netmask_zero_is_refused_as_the_kernel_does() -> None:
    found = problems(MIN + '[[instance.service]]\nprotocol = "tcp"\naddress = "2001:db8::1"\nport = 80\n'
                     'persistence = 60\npersistence_netmask = 0\n')
    assert [p.path for p in found] == ["instance[0].service[0].persistence_netmask"]
    assert "1..128" in found[0].message

"""Table-driven planner tests: config + recorded states + observed kernel -> ordered actions.

The planner is pure, so every case is a few lines and needs no root.  Each case
lists the *changes* in order (no-ops are checked separately where they matter).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from kanotify.actions import (
    BindVip,
    DeleteService,
    EditReal,
    Noop,
    SendGarp,
    SetSysctl,
    StartSyncDaemon,
    StopSyncDaemon,
    UnbindVip,
)
from kanotify.backends.memory import MemoryBackend
from kanotify.config.schema import parse_config
from kanotify.model import RealServer, ServiceKey, State, SyncDaemon, Vip
from kanotify.plan import PlanOptions, desired_for, drain_key, plan

ip = ipaddress.ip_address
iface = ipaddress.ip_interface

SYSCTLS = """
[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2
"""

TWO_NODE = SYSCTLS + """
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
    weight = 2
"""

DIRECTOR_ONLY = """
[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "rr"
    [[instance.service.real]]
    address = "192.0.2.21"
"""

FWMARK = """
[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  garp = false
  [[instance.service]]
  fwmark = 5
  scheduler = "sh"
  persistence = 300
  persistence_netmask = 24
  flags = ["sh-fallback"]
    [[instance.service.real]]
    address = "192.0.2.21"
    forward = "tun"
"""

IPV6 = """
[[instance]]
name = "VI_6"
  [[instance.vip]]
  address = "2001:db8::100/64"
  dev = "eth0"
  [[instance.vip]]
  address = "2001:db8::100/128"
  dev = "lo"
  states = ["backup"]
  [[instance.service]]
  protocol = "udp"
  address = "2001:db8::100"
  port = 53
  scheduler = "lc"
    [[instance.service.real]]
    address = "2001:db8::21"
    forward = "dr"
"""

TWO_INSTANCES = """
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
[[instance]]
name = "VI_2"
  [[instance.vip]]
  address = "198.51.100.100/24"
  dev = "eth1"
  [[instance.service]]
  protocol = "tcp"
  address = "198.51.100.100"
  port = 443
    [[instance.service.real]]
    address = "198.51.100.21"
"""

SYSCTL_ONLY_VIP_LO = """
[sysctl]
"net.ipv4.conf.lo.arp_ignore" = 0
"net.ipv4.conf.all.arp_announce" = 2
[[instance]]
name = "RS"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  states = ["master", "backup", "fault"]
"""


def svc(proto: str, addr: str, port: int) -> ServiceKey:
    return ServiceKey.inet(proto, ip(addr), port)


def vip(addr: str, dev: str, label: str | None = None) -> Vip:
    return Vip(iface(addr), dev, label)


@dataclass
class Case:
    id: str
    config: str
    states: dict[str, str]
    expected: list[str]
    setup: object = None  # callable(MemoryBackend) preparing the "kernel"
    instances: list[str] | None = None
    options: dict[str, object] = field(default_factory=dict)
    noops: list[str] = field(default_factory=list)


def _master_converged(b: MemoryBackend) -> None:
    """The two-node config fully applied for MASTER."""
    b.sysctls.update({"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"})
    b.addresses.add(vip("192.0.2.100/24", "eth0", "eth0:0"))
    from kanotify.model import VirtualService

    b.add_foreign_service(
        svc("tcp", "192.0.2.100", 80), "wrr",
        [RealServer(ip("192.0.2.21"), 80, "dr", 1), RealServer(ip("192.0.2.22"), 80, "dr", 2)],
    )
    assert isinstance(b.services[svc("tcp", "192.0.2.100", 80)].service, VirtualService)


def _sysctls_set(b: MemoryBackend) -> None:
    b.sysctls.update({"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"})


def _both(*fns):  # type: ignore[no-untyped-def]
    def run(b: MemoryBackend) -> None:
        for fn in fns:
            fn(b)

    return run


def _service(key: ServiceKey, scheduler: str = "wlc", *reals: RealServer):  # type: ignore[no-untyped-def]
    def run(b: MemoryBackend) -> None:
        b.add_foreign_service(key, scheduler, reals)

    return run


def _address(v: Vip):  # type: ignore[no-untyped-def]
    def run(b: MemoryBackend) -> None:
        b.addresses.add(v)

    return run


def _conns(key: ServiceKey, real: str, port: int, active: int):  # type: ignore[no-untyped-def]
    def run(b: MemoryBackend) -> None:
        b.set_connections(key, (ip(real), port), active)

    return run


def _daemons(*daemons: SyncDaemon):  # type: ignore[no-untyped-def]
    """Sync daemons running before the run (started the way the kernel takes them)."""
    def run(b: MemoryBackend) -> None:
        for daemon in daemons:
            b.apply(StartSyncDaemon(daemon))

    return run


SYNC = '\n[sync_daemon]\ninterface = "eth0"\nsync_id = 51\n'
DIRECTOR_SYNC = DIRECTOR_ONLY + SYNC
TWO_NODE_SYNC = TWO_NODE + SYNC
MASTER_51 = SyncDaemon("master", "eth0", 51)
BACKUP_51 = SyncDaemon("backup", "eth0", 51)
#: as the configured daemons print (no maxlen: the kernel's default) ...
M51 = "master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)"
B51 = "backup sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)"
#: ... and as running ones do (the kernel reports the maxlen it computed)
M51_RUNNING = "master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
B51_RUNNING = "backup sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
NOT_WANTED = "(not wanted in this state)"
RESTARTED = "(other parameters than configured: restarted)"

TCP80 = svc("tcp", "192.0.2.100", 80)
RS21 = RealServer(ip("192.0.2.21"), 80, "dr", 1)
RS22 = RealServer(ip("192.0.2.22"), 80, "dr", 2)
RS23 = RealServer(ip("192.0.2.23"), 80, "dr", 1)

CASES = [
    # ---- two-node setup (director + real server on each node)
    Case("two-node master from scratch: sysctls, ipvs, vips, garp", TWO_NODE, {"VI_1": "master"}, [
        "set sysctl net.ipv4.conf.all.arp_ignore = 1 (was 0)",
        "set sysctl net.ipv4.conf.all.arp_announce = 2 (was 0)",
        "add ipvs service tcp 192.0.2.100:80 scheduler wrr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "add real server 192.0.2.22:80 dr weight 2 to tcp 192.0.2.100:80",
        "bind 192.0.2.100/24 dev eth0 label eth0:0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ]),
    Case("two-node master converged: nothing to do", TWO_NODE, {"VI_1": "master"}, [],
         setup=_master_converged,
         noops=["sysctl net.ipv4.conf.all.arp_ignore already 1", "192.0.2.100/24 dev eth0 label eth0:0 already bound",
                "192.0.2.100/32 dev lo label lo:0 already absent", "ipvs service tcp 192.0.2.100:80 up to date (2 of 2 real servers)"]),
    Case("two-node master -> backup: VIP released first, ipvs removed, then the lo VIP", TWO_NODE,
         {"VI_1": "backup"}, [
             "remove 192.0.2.100/24 dev eth0 label eth0:0",
             "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
             "bind 192.0.2.100/32 dev lo label lo:0",
         ], setup=_master_converged),
    Case("two-node fault is like backup", TWO_NODE, {"VI_1": "fault"}, [
        "remove 192.0.2.100/24 dev eth0 label eth0:0",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
        "bind 192.0.2.100/32 dev lo label lo:0",
    ], setup=_master_converged),
    Case("two-node stop: nothing stays, lo VIP not bound", TWO_NODE, {"VI_1": "stop"}, [
        "remove 192.0.2.100/24 dev eth0 label eth0:0",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
    ], setup=_master_converged),
    Case("two-node backup from scratch: no garp on lo, no ipvs", TWO_NODE, {"VI_1": "backup"}, [
        "bind 192.0.2.100/32 dev lo label lo:0",
    ], setup=_sysctls_set),
    Case("two-node backup -> master: lo VIP removed, ipvs, then eth0 bind", TWO_NODE, {"VI_1": "master"}, [
        "remove 192.0.2.100/32 dev lo label lo:0",
        "add ipvs service tcp 192.0.2.100:80 scheduler wrr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "add real server 192.0.2.22:80 dr weight 2 to tcp 192.0.2.100:80",
        "bind 192.0.2.100/24 dev eth0 label eth0:0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ], setup=_both(_sysctls_set, _address(vip("192.0.2.100/32", "lo", "lo:0")))),
    Case("unrecorded instance is treated as backup", TWO_NODE, {}, [
        "bind 192.0.2.100/32 dev lo label lo:0",
    ], setup=_sysctls_set),
    # ---- VIP details
    Case("label drift: rebind with the configured label", TWO_NODE, {"VI_1": "master"}, [
        "remove 192.0.2.100/24 dev eth0 label eth0:9",
        "bind 192.0.2.100/24 dev eth0 label eth0:0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ], setup=_both(_master_converged, lambda b: b.addresses.discard(vip("192.0.2.100/24", "eth0", "eth0:0")),
                   _address(vip("192.0.2.100/24", "eth0", "eth0:9")))),
    Case("same address other prefix on eth0 is foreign, not touched", DIRECTOR_ONLY, {"VI_1": "backup"}, [],
         setup=_address(vip("192.0.2.100/32", "eth0"))),
    Case("foreign address on the VIP's device is never in the plan", DIRECTOR_ONLY, {"VI_1": "master"}, [
        "add ipvs service tcp 192.0.2.100:80 scheduler rr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "bind 192.0.2.100/24 dev eth0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ], setup=_address(vip("192.0.2.10/24", "eth0"))),
    Case("garp = false: no announcement", FWMARK, {"VI_1": "master"}, [
        "add ipvs service fwmark 5 scheduler sh persistent 300s netmask /24 flags sh-fallback",
        "add real server 192.0.2.21:0 tun weight 1 to fwmark 5",
        "bind 192.0.2.100/24 dev eth0",
    ]),
    Case("garp_count 0 disables announcements", DIRECTOR_ONLY, {"VI_1": "master"}, [
        "add ipvs service tcp 192.0.2.100:80 scheduler rr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "bind 192.0.2.100/24 dev eth0",
    ], options={"garp_count": 0}),
    Case("missing device: bind still planned (fails clearly at apply)", DIRECTOR_ONLY, {"VI_1": "master"}, [
        "add ipvs service tcp 192.0.2.100:80 scheduler rr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "bind 192.0.2.100/24 dev eth0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ], setup=lambda b: b.devices.discard("eth0")),
    # ---- sysctls
    Case("sysctl 0 is a value, not missing", SYSCTL_ONLY_VIP_LO, {"RS": "backup"}, [
        "set sysctl net.ipv4.conf.all.arp_announce = 2 (was 0)",
        "bind 192.0.2.100/32 dev lo",
    ], noops=["sysctl net.ipv4.conf.lo.arp_ignore already 0"]),
    Case("sysctl drifted back to a non-zero value is reset to 0", SYSCTL_ONLY_VIP_LO, {"RS": "master"}, [
        "set sysctl net.ipv4.conf.lo.arp_ignore = 0 (was 1)",
    ], setup=lambda b: (b.sysctls.update({"net.ipv4.conf.lo.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}),
                        b.addresses.add(vip("192.0.2.100/32", "lo")))),
    Case("sysctl key that does not exist is planned with 'was missing'", """
[sysctl]
"net.ipv4.conf.eth9.arp_ignore" = 1
[[instance]]
name = "VI_1"
""", {"VI_1": "master"}, ["set sysctl net.ipv4.conf.eth9.arp_ignore = 1 (was missing)"]),
    Case("multi-value sysctl compares whitespace-normalized", """
[sysctl]
"net.ipv4.ip_local_port_range" = "32768   60999"
[[instance]]
name = "VI_1"
""", {"VI_1": "master"}, [], setup=lambda b: b.sysctls.update({"net.ipv4.ip_local_port_range": "32768\t60999"})),
    # ---- IPVS
    Case("scheduler change is an in-place edit", DIRECTOR_ONLY, {"VI_1": "master"}, [
        "edit ipvs service tcp 192.0.2.100:80: scheduler wlc -> rr",
    ], setup=_both(_address(vip("192.0.2.100/24", "eth0")), _service(TCP80, "wlc", RS21))),
    Case("weight change is an in-place edit", TWO_NODE, {"VI_1": "master"}, [
        "edit real server 192.0.2.22:80 of tcp 192.0.2.100:80: weight 5 -> 2",
    ], setup=_both(_master_converged, lambda b: b.services[TCP80].reals.__setitem__(
        RS22.key, (RealServer(ip("192.0.2.22"), 80, "dr", 5), b.services[TCP80].reals[RS22.key][1])))),
    Case("forwarding change is an in-place edit", DIRECTOR_ONLY, {"VI_1": "master"}, [
        "edit real server 192.0.2.21:80 of tcp 192.0.2.100:80: forward nat -> dr",
    ], setup=_both(_address(vip("192.0.2.100/24", "eth0")),
                   _service(TCP80, "rr", RealServer(ip("192.0.2.21"), 80, "nat", 1)))),
    Case("missing real server is added, service kept", TWO_NODE, {"VI_1": "master"}, [
        "add real server 192.0.2.22:80 dr weight 2 to tcp 192.0.2.100:80",
    ], setup=_both(_master_converged, lambda b: b.services[TCP80].reals.pop(RS22.key))),
    Case("removed real server without connections is deleted at once", TWO_NODE, {"VI_1": "master"}, [
        "delete real server 192.0.2.23:80 from tcp 192.0.2.100:80 (removed from config, no connections)",
    ], setup=_both(_master_converged, lambda b: b.services[TCP80].reals.__setitem__(
        RS23.key, (RS23, b.services[TCP80].reals[RS21.key][1])))),
    Case("removed real server with connections is drained (weight 0)", TWO_NODE, {"VI_1": "master"}, [
        "edit real server 192.0.2.23:80 of tcp 192.0.2.100:80: weight 1 -> 0 (drain: 7 connections)",
    ], setup=_both(_master_converged, lambda b: b.services[TCP80].reals.__setitem__(
        RS23.key, (RS23, b.services[TCP80].reals[RS21.key][1])), _conns(TCP80, "192.0.2.23", 80, 7))),
    Case("draining real server within the timeout stays", TWO_NODE, {"VI_1": "master"}, [],
         setup=_both(_master_converged, lambda b: b.services[TCP80].reals.__setitem__(
             (ip("192.0.2.23"), 80), (RealServer(ip("192.0.2.23"), 80, "dr", 0), b.services[TCP80].reals[RS21.key][1])),
             _conns(TCP80, "192.0.2.23", 80, 7)),
         options={"now": 1000.0, "drain_timeout": 300.0,
                  "draining": {drain_key(TCP80, (ip("192.0.2.23"), 80)): 900.0}},
         noops=["real server 192.0.2.23:80 dr weight 0 of tcp 192.0.2.100:80 draining: 7 connections, "
                "deleted in at most 200s"]),
    Case("draining real server past the timeout is deleted", TWO_NODE, {"VI_1": "master"}, [
        "delete real server 192.0.2.23:80 from tcp 192.0.2.100:80 (drain timeout 300s reached)",
    ], setup=_both(_master_converged, lambda b: b.services[TCP80].reals.__setitem__(
        (ip("192.0.2.23"), 80), (RealServer(ip("192.0.2.23"), 80, "dr", 0), b.services[TCP80].reals[RS21.key][1])),
        _conns(TCP80, "192.0.2.23", 80, 7)),
        options={"now": 1300.0, "drain_timeout": 300.0,
                 "draining": {drain_key(TCP80, (ip("192.0.2.23"), 80)): 900.0}}),
    Case("drain_timeout 0 deletes at once even with connections", TWO_NODE, {"VI_1": "master"}, [
        "delete real server 192.0.2.23:80 from tcp 192.0.2.100:80 (removed from config, no connections)",
    ], setup=_both(_master_converged, lambda b: b.services[TCP80].reals.__setitem__(
        RS23.key, (RS23, b.services[TCP80].reals[RS21.key][1])), _conns(TCP80, "192.0.2.23", 80, 7)),
        options={"drain_timeout": 0.0}),
    Case("foreign ipvs service untouched without ipvs_exclusive", DIRECTOR_ONLY, {"VI_1": "backup"}, [],
         setup=_service(svc("tcp", "203.0.113.5", 8080), "rr")),
    Case("foreign ipvs service deleted with ipvs_exclusive", "[settings]\nipvs_exclusive = true\n" + DIRECTOR_ONLY,
         {"VI_1": "backup"}, [
             "delete ipvs service tcp 203.0.113.5:8080 (not in config, ipvs_exclusive)",
         ], setup=_service(svc("tcp", "203.0.113.5", 8080), "rr")),
    Case("leaving master deletes the managed service outright (reals included)", DIRECTOR_ONLY, {"VI_1": "backup"}, [
        "remove 192.0.2.100/24 dev eth0",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
    ], setup=_both(_address(vip("192.0.2.100/24", "eth0")), _service(TCP80, "rr", RS21))),
    Case("fwmark service with persistence netmask and tun", FWMARK, {"VI_1": "backup"}, []),
    Case("IPv6 master: NA instead of ARP", IPV6, {"VI_6": "master"}, [
        "add ipvs service udp [2001:db8::100]:53 scheduler lc",
        "add real server [2001:db8::21]:53 dr weight 1 to udp [2001:db8::100]:53",
        "bind 2001:db8::100/64 dev eth0",
        "send unsolicited NA for 2001:db8::100 on eth0 (5x every 0.2s)",
    ]),
    Case("IPv6 backup: /128 on lo", IPV6, {"VI_6": "backup"}, ["bind 2001:db8::100/128 dev lo"]),
    Case("IPVS unavailable and nothing desired: a no-op", DIRECTOR_ONLY, {"VI_1": "backup"}, [],
         setup=lambda b: setattr(b, "ipvs_available", False)),
    Case("IPVS unavailable while master: adds planned (fail at apply)", DIRECTOR_ONLY, {"VI_1": "master"}, [
        "add ipvs service tcp 192.0.2.100:80 scheduler rr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "bind 192.0.2.100/24 dev eth0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ], setup=lambda b: setattr(b, "ipvs_available", False)),
    # ---- several instances
    Case("scope: VI_1's notification touches only VI_1", TWO_INSTANCES, {"VI_1": "master", "VI_2": "master"}, [
        "add ipvs service tcp 192.0.2.100:80 scheduler wlc",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "bind 192.0.2.100/24 dev eth0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ], instances=["VI_1"], setup=lambda b: b.devices.add("eth1")),
    Case("reconcile: all instances, each in its own state", TWO_INSTANCES, {"VI_1": "backup", "VI_2": "master"}, [
        "remove 192.0.2.100/24 dev eth0",
        "add ipvs service tcp 198.51.100.100:443 scheduler wlc",
        "add real server 198.51.100.21:443 dr weight 1 to tcp 198.51.100.100:443",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
        "bind 198.51.100.100/24 dev eth1",
        "send gratuitous ARP for 198.51.100.100 on eth1 (5x every 0.2s)",
    ], setup=_both(lambda b: b.devices.add("eth1"), _address(vip("192.0.2.100/24", "eth0")),
                   _service(TCP80, "wlc", RS21))),
    Case("exclusive never deletes another instance's service", "[settings]\nipvs_exclusive = true\n" + TWO_INSTANCES,
         {"VI_1": "master"}, [
             "bind 192.0.2.100/24 dev eth0",
             "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
         ], instances=["VI_1"],
         setup=_both(_service(TCP80, "wlc", RS21),
                     _service(svc("tcp", "198.51.100.100", 443), "wlc", RealServer(ip("198.51.100.21"), 443))),
         ),
    Case("service kept in backup when its states say so", DIRECTOR_ONLY.replace(
        'scheduler = "rr"', 'scheduler = "rr"\n  states = ["master", "backup"]'), {"VI_1": "backup"}, [
        "add ipvs service tcp 192.0.2.100:80 scheduler rr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
    ]),
]


_DIRECTOR_MASTER = _both(_address(vip("192.0.2.100/24", "eth0")), _service(TCP80, "rr", RS21))
DIRECTOR_MASTER_ADDS = [
    "add ipvs service tcp 192.0.2.100:80 scheduler rr",
    "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
]
DIRECTOR_MASTER_BINDS = [
    "bind 192.0.2.100/24 dev eth0",
    "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
]

SYNC_CASES = [
    # ---- [sync_daemon]: the daemons follow the instance's state
    Case("sync: backup from scratch starts the backup daemon", DIRECTOR_SYNC, {"VI_1": "backup"},
         [f"start {B51}"], noops=["master sync daemon already stopped"]),
    Case("sync: unrecorded instance is backup: the backup daemon", DIRECTOR_SYNC, {}, [f"start {B51}"]),
    Case("sync: master from scratch: ipvs, then the master daemon, then the VIP", DIRECTOR_SYNC, {"VI_1": "master"},
         [*DIRECTOR_MASTER_ADDS, f"start {M51}", *DIRECTOR_MASTER_BINDS]),
    Case("sync: backup -> master stops the backup daemon once the services are in, starts the master's",
         DIRECTOR_SYNC, {"VI_1": "master"},
         [*DIRECTOR_MASTER_ADDS, f"stop {B51_RUNNING} {NOT_WANTED}", f"start {M51}", *DIRECTOR_MASTER_BINDS],
         setup=_daemons(BACKUP_51)),
    Case("sync: master converged: daemons already right", DIRECTOR_SYNC, {"VI_1": "master"}, [],
         setup=_both(_DIRECTOR_MASTER, _daemons(MASTER_51)),
         noops=[f"master sync daemon already running ({M51_RUNNING.split('(', 1)[1]}",
                "backup sync daemon already stopped"]),
    Case("sync: master -> backup: VIP released, ipvs removed, master daemon stopped, backup started",
         DIRECTOR_SYNC, {"VI_1": "backup"}, [
             "remove 192.0.2.100/24 dev eth0",
             "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
             f"stop {M51_RUNNING} {NOT_WANTED}",
             f"start {B51}",
         ], setup=_both(_DIRECTOR_MASTER, _daemons(MASTER_51))),
    Case("sync: master -> fault is like backup", DIRECTOR_SYNC, {"VI_1": "fault"}, [
        "remove 192.0.2.100/24 dev eth0",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
        f"stop {M51_RUNNING} {NOT_WANTED}",
        f"start {B51}",
    ], setup=_both(_DIRECTOR_MASTER, _daemons(MASTER_51))),
    Case("sync: backup -> fault keeps the backup daemon", DIRECTOR_SYNC, {"VI_1": "fault"}, [],
         setup=_daemons(BACKUP_51), noops=[f"backup sync daemon already running ({B51_RUNNING.split('(', 1)[1]}"]),
    Case("sync: master -> stop runs neither", DIRECTOR_SYNC, {"VI_1": "stop"}, [
        "remove 192.0.2.100/24 dev eth0",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
        f"stop {M51_RUNNING} {NOT_WANTED}",
    ], setup=_both(_DIRECTOR_MASTER, _daemons(MASTER_51))),
    Case("sync: backup -> stop stops the backup daemon", DIRECTOR_SYNC, {"VI_1": "stop"},
         [f"stop {B51_RUNNING} {NOT_WANTED}"], setup=_daemons(BACKUP_51)),
    Case("sync: stop with both running stops both", DIRECTOR_SYNC, {"VI_1": "stop"},
         [f"stop {M51_RUNNING} {NOT_WANTED}", f"stop {B51_RUNNING} {NOT_WANTED}"],
         setup=_daemons(MASTER_51, BACKUP_51)),
    Case("sync: master with both running stops the backup", DIRECTOR_SYNC, {"VI_1": "master"},
         [f"stop {B51_RUNNING} {NOT_WANTED}"], setup=_both(_DIRECTOR_MASTER, _daemons(MASTER_51, BACKUP_51))),
    Case("sync: a daemon with another sync id is restarted", DIRECTOR_SYNC, {"VI_1": "backup"}, [
        "stop backup sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) "
        + RESTARTED,
        f"start {B51}",
    ], setup=_daemons(SyncDaemon("backup", "eth0", 7))),
    Case("sync: a daemon on another interface is restarted", DIRECTOR_SYNC, {"VI_1": "master"}, [
        *DIRECTOR_MASTER_ADDS,
        "stop master sync daemon (mcast=eth1, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) "
        + RESTARTED,
        f"start {M51}",
        *DIRECTOR_MASTER_BINDS,
    ], setup=_both(lambda b: b.devices.add("eth1"), _daemons(SyncDaemon("master", "eth1", 51)))),
    Case("sync: a configured maxlen other than the running one is a restart", DIRECTOR_SYNC + "maxlen = 1400\n",
         {"VI_1": "backup"}, [
             f"stop {B51_RUNNING} {RESTARTED}",
             "start backup sync daemon (mcast=eth0, syncid=51, maxlen=1400, group=224.0.0.81, port=8848, ttl=1)",
         ], setup=_daemons(BACKUP_51)),
    Case("sync: every parameter given, running as configured", DIRECTOR_ONLY + SYNC + 'maxlen = 1400\n'
         'group = "ff02::81"\nport = 9000\nttl = 3\n', {"VI_1": "backup"}, [],
         setup=_daemons(SyncDaemon("backup", "eth0", 51, 1400, ip("ff02::81"), 9000, 3))),
    Case("sync: two-node backup -> master: lo VIP out, ipvs, daemons, eth0 VIP", TWO_NODE_SYNC, {"VI_1": "master"}, [
        "remove 192.0.2.100/32 dev lo label lo:0",
        "add ipvs service tcp 192.0.2.100:80 scheduler wrr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
        "add real server 192.0.2.22:80 dr weight 2 to tcp 192.0.2.100:80",
        f"stop {B51_RUNNING} {NOT_WANTED}",
        f"start {M51}",
        "bind 192.0.2.100/24 dev eth0 label eth0:0",
        "send gratuitous ARP for 192.0.2.100 on eth0 (5x every 0.2s)",
    ], setup=_both(_sysctls_set, _address(vip("192.0.2.100/32", "lo", "lo:0")), _daemons(BACKUP_51))),
    Case("sync: two-node master -> backup: daemons switched before the lo VIP", TWO_NODE_SYNC, {"VI_1": "backup"}, [
        "remove 192.0.2.100/24 dev eth0 label eth0:0",
        "delete ipvs service tcp 192.0.2.100:80 (not desired in this state)",
        f"stop {M51_RUNNING} {NOT_WANTED}",
        f"start {B51}",
        "bind 192.0.2.100/32 dev lo label lo:0",
    ], setup=_both(_master_converged, _daemons(MASTER_51))),
    Case("sync: IPVS unavailable: the wanted daemon is planned (fails at apply), nothing stopped", DIRECTOR_SYNC,
         {"VI_1": "backup"}, [f"start {B51}"], setup=lambda b: setattr(b, "ipvs_available", False),
         noops=["master sync daemon not running (IPVS not available)"]),
    Case("sync: missing interface: start planned (fails at apply with ENODEV)", DIRECTOR_SYNC.replace(
        'interface = "eth0"', 'interface = "eth7"'), {"VI_1": "backup"},
        ["start backup sync daemon (mcast=eth7, syncid=51, group=224.0.0.81, port=8848, ttl=1)"]),
    # ---- which runs manage the daemons
    Case("sync: a notification for another instance leaves the daemons alone", TWO_INSTANCES + SYNC
         + 'instance = "VI_2"\n', {"VI_1": "master"}, [
             "add ipvs service tcp 192.0.2.100:80 scheduler wlc",
             "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
             *DIRECTOR_MASTER_BINDS,
         ],
         instances=["VI_1"], setup=_both(lambda b: b.devices.add("eth1"), _daemons(SyncDaemon("master", "eth0", 7)))),
    Case("sync: reconcile covers the daemon's instance", TWO_INSTANCES + SYNC + 'instance = "VI_2"\n',
         {"VI_1": "master", "VI_2": "backup"}, [
             "add ipvs service tcp 192.0.2.100:80 scheduler wlc",
             "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
             f"stop {M51_RUNNING} {NOT_WANTED}",
             f"start {B51}",
             *DIRECTOR_MASTER_BINDS,
         ], setup=_both(lambda b: b.devices.add("eth1"), _daemons(MASTER_51))),
    Case("no [sync_daemon]: running daemons are never touched (master)", DIRECTOR_ONLY, {"VI_1": "master"},
         [*DIRECTOR_MASTER_ADDS, *DIRECTOR_MASTER_BINDS], setup=_daemons(BACKUP_51, SyncDaemon("master", "eth0", 7))),
    Case("no [sync_daemon]: running daemons are never touched (stop)", DIRECTOR_ONLY, {"VI_1": "stop"}, [],
         setup=_daemons(MASTER_51)),
]
CASES += SYNC_CASES


def _run_case(case: Case):  # type: ignore[no-untyped-def]
    config = parse_config(case.config, "test.toml")
    backend = MemoryBackend(devices={"lo", "eth0"})
    if case.setup is not None:
        case.setup(backend)  # type: ignore[operator]
    states = {name: State.parse(s) for name, s in case.states.items()}
    desired = desired_for(config, states, case.instances)
    scope = desired.scope
    return plan(desired, backend.observe(scope), PlanOptions(**case.options)), backend, desired, scope  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_table(case: Case) -> None:
    result, *_ = _run_case(case)
    assert [str(a) for a in result.changes] == case.expected
    noops = [str(a) for a in result.actions if isinstance(a, Noop)]
    for expected in case.noops:
        assert expected in noops


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_applying_the_plan_converges_and_the_second_plan_is_all_noops(case: Case) -> None:
    """Idempotency for every table case, against the in-memory backend."""
    result, backend, desired, scope = _run_case(case)
    if not backend.ipvs_available and (desired.services or desired.sync_daemons):
        return  # nothing can converge without IPVS; covered by the engine failure tests
    for action in result.changes:
        try:
            backend.apply(action)
        except Exception as exc:  # missing devices / sysctl keys fail by design
            assert "does not exist" in str(exc) or "No such device" in str(exc)
            return
    writes = len(backend.writes)
    again = plan(desired, backend.observe(scope), PlanOptions(**case.options))  # type: ignore[arg-type]
    assert again.changes == () or all("draining" in str(a) for a in again.changes)
    for action in again.changes:
        backend.apply(action)
    assert len(backend.writes) == writes


def test_only_managed_objects_appear_in_plans() -> None:
    config = parse_config(TWO_NODE, "t.toml")
    backend = MemoryBackend()
    backend.addresses.add(vip("198.51.100.7/24", "eth0"))
    backend.add_foreign_service(svc("udp", "203.0.113.9", 53))
    for state in State:
        desired = desired_for(config, {"VI_1": state})
        text = "\n".join(("= " if a.is_noop else "+ ") + str(a) for a in plan(desired, backend.observe(desired.scope)))
        assert "198.51.100.7" not in text and "203.0.113.9" not in text


def test_entering_master_orders_ipvs_before_vips_and_leaving_orders_vips_first() -> None:
    config = parse_config(TWO_NODE, "t.toml")
    up, *_ = _run_case(Case("", TWO_NODE, {"VI_1": "master"}, []))
    kinds = [type(a).__name__ for a in up.changes]
    assert kinds.index("SetSysctl") < kinds.index("AddService") < kinds.index("BindVip") < kinds.index("SendGarp")
    down, *_ = _run_case(Case("", TWO_NODE, {"VI_1": "backup"}, [], setup=_master_converged))
    kinds = [type(a).__name__ for a in down.changes]
    assert kinds.index("UnbindVip") < kinds.index("DeleteService") < kinds.index("BindVip")
    assert config.instance("VI_1") is not None


def test_actions_have_readable_text() -> None:
    action = BindVip(vip("192.0.2.100/24", "eth0", "eth0:0"))
    assert str(action) == "bind 192.0.2.100/24 dev eth0 label eth0:0"
    assert str(UnbindVip(vip("192.0.2.100/32", "lo", "lo:0"))) == "remove 192.0.2.100/32 dev lo label lo:0"
    assert str(SetSysctl("net.ipv4.conf.all.arp_ignore", "1", "0")) == "set sysctl net.ipv4.conf.all.arp_ignore = 1 (was 0)"
    assert "unsolicited NA" in str(SendGarp(vip("2001:db8::1/64", "eth0")))
    rs = RealServer(ip("192.0.2.21"), 80)
    from dataclasses import replace

    assert str(EditReal(TCP80, rs, replace(rs, weight=0), "drain")).endswith("weight 1 -> 0 (drain)")
    assert "not desired" in str(DeleteService(__import__("kanotify.model", fromlist=["VirtualService"]).VirtualService(TCP80), "not desired"))


def test_label_equal_to_device_is_the_kernel_default() -> None:
    assert vip("192.0.2.1/24", "eth0", "eth0") == vip("192.0.2.1/24", "eth0")


def test_sync_daemon_order_entering_and_leaving_master() -> None:
    """Entering MASTER: services, then stop backup, start master, then the VIP; leaving: VIP, services, daemons."""
    up, *_ = _run_case(Case("", DIRECTOR_SYNC, {"VI_1": "master"}, [], setup=_daemons(BACKUP_51)))
    kinds = [type(a).__name__ for a in up.changes]
    assert kinds == ["AddService", "AddReal", "StopSyncDaemon", "StartSyncDaemon", "BindVip", "SendGarp"]
    down, *_ = _run_case(Case("", TWO_NODE_SYNC, {"VI_1": "backup"}, [],
                              setup=_both(_master_converged, _daemons(MASTER_51))))
    kinds = [type(a).__name__ for a in down.changes]
    assert kinds == ["UnbindVip", "DeleteService", "StopSyncDaemon", "StartSyncDaemon", "BindVip"]


def test_a_restart_start_depends_on_its_stop() -> None:
    result, *_ = _run_case(Case("", DIRECTOR_SYNC, {"VI_1": "backup"}, [],
                                setup=_daemons(SyncDaemon("backup", "eth0", 7))))
    stop, start = result.changes
    assert isinstance(stop, StopSyncDaemon) and isinstance(start, StartSyncDaemon)
    assert start.depends_on == (stop,)
    plain, *_ = _run_case(Case("", DIRECTOR_SYNC, {"VI_1": "backup"}, []))
    assert plain.changes[0].depends_on == ()


def test_without_sync_daemon_the_daemons_are_not_even_observed() -> None:
    for config, managed in ((DIRECTOR_ONLY, False), (DIRECTOR_SYNC, True)):
        for state in State:
            _, backend, desired, scope = _run_case(Case("", config, {"VI_1": state.value}, [],
                                                        setup=_daemons(MASTER_51)))
            assert desired.manage_sync_daemons is managed and scope.sync_daemons is managed
            assert (backend.observe(scope).daemons is not None) is managed
    # a notification for an instance other than [sync_daemon]'s: not observed either
    config = parse_config(TWO_INSTANCES + SYNC + 'instance = "VI_2"\n', "t.toml")
    assert not desired_for(config, {}, ["VI_1"]).scope.sync_daemons
    assert desired_for(config, {}, ["VI_2"]).scope.sync_daemons

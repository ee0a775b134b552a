"""The backend contract: (host state, action) -> (error, host state), one table for every backend.

The in-memory backend is the twin that unit tests and plugin authors trust, so
it must answer each action exactly as the kernel backends do.  Each case says
what the host looks like, which action is applied, which errno comes back
(``OK`` for success, ``ERROR`` for a failure that carries no errno) and what
the host looks like afterwards (``None``: unchanged).  Three runners apply the
same cases:

* ``tests/unit/test_contract_memory.py`` -- :class:`MemoryBackend`, every case;
* ``tests/netns/test_contract_system.py`` -- the system backend in a network
  namespace of the host (sysctls, addresses, GARP; IPVS absent, as on the host);
* ``tests/kernel/guest/test_contract_ipvs.py`` -- the system backend in a UML
  guest with real IPVS.

Only what a case names is compared: its sysctl keys, its VIPs, (when the case
is about IPVS) every service with the configuration of its real servers
(connection counters are not configuration), and (when it is about the sync
daemons) the running daemons.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Mapping

from kanotify.actions import (
    Action,
    AddReal,
    AddService,
    BindVip,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    SendGarp,
    SetSysctl,
    StartSyncDaemon,
    StopSyncDaemon,
    UnbindVip,
)
from kanotify.model import RealServer, Scope, ServiceKey, SyncDaemon, Vip, VirtualService

OK = 0
ERROR = -1  # failed, with no errno to compare (e.g. a refusal kanotify makes itself)

#: a service as the contract sees it: its configuration and its real servers' configurations
Services = Mapping[ServiceKey, tuple[VirtualService, frozenset[RealServer]]]


@dataclass(frozen=True)
class Host:
    """The part of a host a case is about."""

    sysctls: Mapping[str, str] = field(default_factory=dict)
    addresses: frozenset[Vip] = frozenset()
    services: Services = field(default_factory=dict)
    ipvs: bool = True  # is IPVS available in this kernel?
    daemons: frozenset[SyncDaemon] = frozenset()  # running IPVS sync daemons (maxlen None: the kernel's)


@dataclass(frozen=True)
class Case:
    id: str
    given: Host
    action: Action
    error: int = OK
    then: Host | None = None  # None: unchanged

    @property
    def expected(self) -> Host:
        return self.given if self.then is None else self.then

    @property
    def about_ipvs(self) -> bool:
        return self.action.domain == "ipvs"

    @property
    def about_sync(self) -> bool:
        return self.action.domain == "sync"

    @property
    def scope(self) -> Scope:
        """What to observe to compare this case's host states."""
        vips = set(self.given.addresses) | set(self.expected.addresses)
        if isinstance(self.action, (BindVip, UnbindVip, SendGarp)):
            vips.add(self.action.vip)
        keys = sorted(set(self.given.sysctls) | set(self.expected.sysctls))
        if isinstance(self.action, SetSysctl):
            keys = sorted(set(keys) | {self.action.key})
        return Scope(sysctls=tuple(keys), vips=frozenset(vips), ipvs=self.about_ipvs, sync_daemons=self.about_sync)


def _vip(text: str, dev: str = "eth0", label: str | None = None) -> Vip:
    return Vip(ipaddress.ip_interface(text), dev, label)


def _svc(port: int = 80, scheduler: str = "wlc", persistence: int = 0) -> VirtualService:
    return VirtualService(ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), port), scheduler, persistence)


def _real(last: int = 21, weight: int = 1, upper: int = 0, lower: int = 0, port: int = 80) -> RealServer:
    return RealServer(ipaddress.ip_address(f"192.0.2.{last}"), port, "dr", weight, upper, lower)


def _table(*entries: tuple[VirtualService, tuple[RealServer, ...]]) -> Services:
    return {svc.key: (svc, frozenset(reals)) for svc, reals in entries}


ARP = "net.ipv4.conf.all.arp_ignore"
V4 = _vip("192.0.2.100/24", "eth0", "eth0:0")
V4_OTHER_LABEL = replace(V4, label="eth0:1")
V4_32 = _vip("192.0.2.100/32", "eth0")
V4_LO = _vip("192.0.2.100/32", "lo", "lo:0")
V6 = _vip("2001:db8::100/64", "eth0")
V6_128 = _vip("2001:db8::100/128", "eth0")
ON_MISSING_DEV = _vip("192.0.2.100/24", "eth9")
SVC = _svc()
SVC_RR = _svc(scheduler="rr")
RS = _real()
RS_HEAVY = _real(weight=5)

SYSCTL_CASES = [
    Case("set a sysctl", Host({ARP: "0"}), SetSysctl(ARP, "1", "0"), then=Host({ARP: "1"})),
    Case("set a sysctl to what it is", Host({ARP: "1"}), SetSysctl(ARP, "1", "1")),
    Case("set 0 (a value, not missing)", Host({ARP: "1"}), SetSysctl(ARP, "0", "1"), then=Host({ARP: "0"})),
    Case("set a sysctl that does not exist", Host(), SetSysctl("net.ipv4.conf.eth9.arp_ignore", "1"),
         errno.ENOENT),
]

ADDRESS_CASES = [
    Case("bind a VIP", Host(), BindVip(V4), then=Host(addresses=frozenset({V4}))),
    Case("bind a VIP already bound", Host(addresses=frozenset({V4})), BindVip(V4)),
    Case("bind a VIP bound with another label", Host(addresses=frozenset({V4_OTHER_LABEL})), BindVip(V4),
         errno.EEXIST),
    Case("bind an IPv4 VIP whose address is bound with another prefix", Host(addresses=frozenset({V4_32})),
         BindVip(V4), then=Host(addresses=frozenset({V4_32, V4}))),
    Case("bind an IPv6 VIP", Host(), BindVip(V6), then=Host(addresses=frozenset({V6}))),
    Case("bind an IPv6 VIP whose address is bound with another prefix", Host(addresses=frozenset({V6_128})),
         BindVip(V6), errno.EEXIST),
    Case("bind a VIP on lo", Host(), BindVip(V4_LO), then=Host(addresses=frozenset({V4_LO}))),
    Case("bind on a device that does not exist", Host(), BindVip(ON_MISSING_DEV), errno.ENODEV),
    Case("remove a VIP", Host(addresses=frozenset({V4})), UnbindVip(V4), then=Host()),
    Case("remove a VIP already gone", Host(), UnbindVip(V4)),
    Case("remove a VIP whose label differs", Host(addresses=frozenset({V4_OTHER_LABEL})), UnbindVip(V4),
         then=Host()),
    Case("remove from a device that does not exist", Host(), UnbindVip(ON_MISSING_DEV)),
    Case("remove one prefix of an address bound twice", Host(addresses=frozenset({V4, V4_32})), UnbindVip(V4_32),
         then=Host(addresses=frozenset({V4}))),
]

GARP_CASES = [
    Case("announce a bound VIP", Host(addresses=frozenset({V4})), SendGarp(V4, count=1)),
    Case("announce on lo", Host(), SendGarp(V4_LO, count=1), ERROR),
    Case("announce on a device that does not exist", Host(), SendGarp(ON_MISSING_DEV, count=1), errno.ENODEV),
]

RS_IPIP = replace(RS, forward="tun")
RS_GUE = replace(RS_IPIP, tun_type="gue", tun_port=6080, tun_flags="remcsum")
RS_GRE = replace(RS_IPIP, tun_type="gre", tun_flags="csum")
TUNNEL_CASES = [
    Case("add a gue real server", Host(services=_table((SVC, ()))), AddReal(SVC.key, RS_GUE),
         then=Host(services=_table((SVC, (RS_GUE,))))),
    Case("add a gre real server", Host(services=_table((SVC, ()))), AddReal(SVC.key, RS_GRE),
         then=Host(services=_table((SVC, (RS_GRE,))))),
    Case("edit a real server's tunnel: ipip to gue", Host(services=_table((SVC, (RS_IPIP,)))),
         EditReal(SVC.key, RS_IPIP, RS_GUE), then=Host(services=_table((SVC, (RS_GUE,))))),
    Case("edit a real server's tunnel: gue to gre", Host(services=_table((SVC, (RS_GUE,)))),
         EditReal(SVC.key, RS_GUE, RS_GRE), then=Host(services=_table((SVC, (RS_GRE,))))),
    Case("edit a real server's tunnel back to plain ipip", Host(services=_table((SVC, (RS_GRE,)))),
         EditReal(SVC.key, RS_GRE, RS_IPIP), then=Host(services=_table((SVC, (RS_IPIP,))))),
    Case("add a gue real server without a port", Host(services=_table((SVC, ()))),
         AddReal(SVC.key, replace(RS_GUE, tun_port=0)), errno.EINVAL),
]

IPVS_CASES = [
    Case("add a service", Host(), AddService(SVC), then=Host(services=_table((SVC, ())))),
    Case("add a service that exists as it is", Host(services=_table((SVC, (RS,)))), AddService(SVC)),
    Case("add a service that exists with another scheduler: edited in place, reals kept",
         Host(services=_table((SVC_RR, (RS,)))), AddService(SVC), then=Host(services=_table((SVC, (RS,))))),
    Case("edit a service", Host(services=_table((SVC_RR, (RS,)))), EditService(SVC_RR, SVC),
         then=Host(services=_table((SVC, (RS,))))),
    Case("edit a service that does not exist", Host(), EditService(SVC_RR, SVC), errno.ESRCH),
    Case("delete a service with its real servers", Host(services=_table((SVC, (RS,)))),
         DeleteService(SVC), then=Host()),
    Case("delete a service already gone", Host(), DeleteService(SVC)),
    Case("add a real server", Host(services=_table((SVC, ()))), AddReal(SVC.key, RS),
         then=Host(services=_table((SVC, (RS,))))),
    Case("add a real server that exists as it is", Host(services=_table((SVC, (RS,)))), AddReal(SVC.key, RS)),
    Case("add a real server that exists with another weight: edited in place",
         Host(services=_table((SVC, (RS,)))), AddReal(SVC.key, RS_HEAVY),
         then=Host(services=_table((SVC, (RS_HEAVY,))))),
    Case("add a real server to a service that does not exist", Host(), AddReal(SVC.key, RS), errno.ESRCH),
    Case("add a real server whose lower threshold is above its upper one", Host(services=_table((SVC, ()))),
         AddReal(SVC.key, _real(upper=10, lower=20)), errno.ERANGE),
    Case("add a real server with a lower threshold and no upper one", Host(services=_table((SVC, ()))),
         AddReal(SVC.key, _real(upper=0, lower=5)), errno.ERANGE),
    Case("edit a real server", Host(services=_table((SVC, (RS,)))), EditReal(SVC.key, RS, RS_HEAVY),
         then=Host(services=_table((SVC, (RS_HEAVY,))))),
    Case("edit a real server that does not exist", Host(services=_table((SVC, ()))),
         EditReal(SVC.key, RS, RS_HEAVY), errno.ENOENT),
    Case("edit a real server of a service that does not exist", Host(), EditReal(SVC.key, RS, RS_HEAVY),
         errno.ESRCH),
    Case("delete a real server", Host(services=_table((SVC, (RS,)))), DeleteReal(SVC.key, RS),
         then=Host(services=_table((SVC, ())))),
    Case("delete a real server already gone", Host(services=_table((SVC, ()))), DeleteReal(SVC.key, RS)),
    Case("delete a real server of a service that does not exist", Host(), DeleteReal(SVC.key, RS)),
    *TUNNEL_CASES,
]

MASTER = SyncDaemon("master", "eth0", 51)
BACKUP = SyncDaemon("backup", "eth0", 51)
MASTER_7 = SyncDaemon("master", "eth0", 7)
MASTER_EVERY = SyncDaemon("master", "eth0", 7, 1400, ipaddress.ip_address("239.1.2.3"), 9000, 3)
RS_V6 = RealServer(ipaddress.ip_address("2001:db8::21"), 80, "tun")  # IPv6 real server of an IPv4 service


def _daemons(*daemons: SyncDaemon) -> Host:
    return Host(daemons=frozenset(daemons))


SYNC_CASES = [
    Case("start a sync daemon", Host(), StartSyncDaemon(MASTER), then=_daemons(MASTER)),
    Case("start a sync daemon that runs as it is", _daemons(MASTER), StartSyncDaemon(MASTER)),
    Case("start a sync daemon with every parameter", Host(), StartSyncDaemon(MASTER_EVERY),
         then=_daemons(MASTER_EVERY)),
    Case("start a sync daemon whose state runs with another sync id", _daemons(MASTER_7), StartSyncDaemon(MASTER),
         errno.EEXIST),
    Case("start a sync daemon whose state runs with another explicit maxlen",
         _daemons(SyncDaemon("master", "eth0", 51, 1400)), StartSyncDaemon(SyncDaemon("master", "eth0", 51, 1300)),
         errno.EEXIST),
    Case("start the backup daemon while the master runs", _daemons(MASTER), StartSyncDaemon(BACKUP),
         then=_daemons(MASTER, BACKUP)),
    Case("start a sync daemon on an interface that does not exist", Host(),
         StartSyncDaemon(SyncDaemon("backup", "nope0", 1)), errno.ENODEV),
    Case("start a sync daemon with mixed IPv4/IPv6 destinations", Host(services=_table((SVC, (RS_V6,)))),
         StartSyncDaemon(MASTER), errno.EINVAL),
    Case("add a real server of the other family while a sync daemon runs",
         Host(services=_table((SVC, ())), daemons=frozenset({MASTER})), AddReal(SVC.key, RS_V6), errno.EINVAL),
    Case("stop a sync daemon", _daemons(MASTER), StopSyncDaemon(MASTER), then=Host()),
    Case("stop a sync daemon that is not running", Host(), StopSyncDaemon(MASTER)),
    Case("stop the backup daemon, the master runs on", _daemons(MASTER, BACKUP), StopSyncDaemon(BACKUP),
         then=_daemons(MASTER)),
    Case("stop a sync daemon by its state, whatever its parameters", _daemons(MASTER_7), StopSyncDaemon(MASTER),
         then=Host()),
]

NODEST = "net.ipv4.vs.expire_nodest_conn"
THRESHOLD = "net.ipv4.vs.sync_threshold"
IPVS_SYSCTL_CASES = [
    Case("set an IPVS connection sysctl", Host({NODEST: "0"}), SetSysctl(NODEST, "1", "0"), then=Host({NODEST: "1"})),
    Case("set the sync threshold and period", Host({THRESHOLD: "3 50"}), SetSysctl(THRESHOLD, "3 10", "3 50"),
         then=Host({THRESHOLD: "3 10"})),
]

NO_IPVS = Host(ipvs=False)
NO_IPVS_CASES = [
    Case("add a service without IPVS", NO_IPVS, AddService(SVC), errno.ENOPROTOOPT),
    Case("delete a service without IPVS", NO_IPVS, DeleteService(SVC), errno.ENOPROTOOPT),
    Case("add a real server without IPVS", NO_IPVS, AddReal(SVC.key, RS), errno.ENOPROTOOPT),
    Case("start a sync daemon without IPVS", NO_IPVS, StartSyncDaemon(MASTER), errno.ENOPROTOOPT),
    Case("stop a sync daemon without IPVS", NO_IPVS, StopSyncDaemon(MASTER), errno.ENOPROTOOPT),
    Case("set an IPVS sysctl without IPVS (ip_vs not loaded)", NO_IPVS, SetSysctl(NODEST, "1"), errno.ENOENT),
]

#: every case, for the in-memory backend
CASES = SYSCTL_CASES + ADDRESS_CASES + GARP_CASES + IPVS_CASES + SYNC_CASES + IPVS_SYSCTL_CASES + NO_IPVS_CASES
#: the cases a network namespace on a host without IPVS can run
HOST_CASES = SYSCTL_CASES + ADDRESS_CASES + GARP_CASES + NO_IPVS_CASES
#: the cases that need IPVS: the UML guest runs them
GUEST_CASES = IPVS_CASES + SYNC_CASES + IPVS_SYSCTL_CASES


def services_of(observed: Mapping[ServiceKey, object] | None) -> Services:
    """The contract's view of observed IPVS services (configuration only)."""
    result = {}
    for key, obs in (observed or {}).items():
        svc = obs.service  # type: ignore[attr-defined]
        reals = frozenset(real for real, _stats in obs.reals.values())  # type: ignore[attr-defined]
        result[key] = (svc, reals)
    return result


def outcome(error: BaseException | None) -> int:
    """The case's view of an apply result: OK, the errno, or ERROR."""
    if error is None:
        return OK
    code = getattr(error, "errno", None)
    return code if isinstance(code, int) and code > 0 else ERROR


def daemons_of(observed: tuple[SyncDaemon, ...] | None) -> frozenset[SyncDaemon]:
    """The contract's view of observed sync daemons (none when they could not be read)."""
    return frozenset(observed or ())

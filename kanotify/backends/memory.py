"""An in-memory host that behaves like the kernel backends: the test twin.

Used by kanotify's own unit tests and shipped for plugin authors.  It answers
every action the way :func:`~kanotify.backends.system.system_backend` does against a
real kernel -- the same successes ("already there", "already gone"), the same
errors with the same errnos -- and a contract suite (``tests/contract``) runs
the same cases against both to keep it that way.  It also records every write,
so a test can assert that a second run wrote nothing.

>>> from kanotify.backends.memory import MemoryBackend
>>> backend = MemoryBackend(devices={"lo", "eth0"})
>>> backend.sysctls["net.ipv4.conf.all.arp_ignore"]
'0'
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Iterable, Mapping

from ..actions import (
    Action,
    AddLink,
    AddReal,
    AddService,
    BindVip,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    HookAction,
    SendGarp,
    SetLink,
    SetSysctl,
    StartSyncDaemon,
    StopSyncDaemon,
    UnbindVip,
)
from ..errors import ApplyError
from ..model import (
    SCHEDULERS,
    SYNC_STATES,
    IPAddress,
    Link,
    Observed,
    ObservedService,
    RealServer,
    RealServerStats,
    Scope,
    ServiceKey,
    SyncDaemon,
    Vip,
    VirtualService,
)
from .base import ArpPolicy, OneAtATime

_ARP_KEYS = ("arp_ignore", "arp_announce")
#: what /proc/sys/net/ipv4/vs has once ip_vs is loaded (the keys tests care about), with the kernel's defaults
_IPVS_SYSCTLS = {
    "net.ipv4.vs.expire_nodest_conn": "0",
    "net.ipv4.vs.expire_quiescent_template": "0",
    "net.ipv4.vs.sync_threshold": "3 50",
    "net.ipv4.vs.sync_refresh_period": "0",
}



class MemoryBackend(OneAtATime):
    """A fake host: devices, addresses, sysctls and an IPVS table in dicts.

    ``writes`` lists every action that changed something, ``garps`` every
    announcement sent; ``fail`` maps an action's text to an errno to inject a
    failure for that action.  ``schedulers`` are the IPVS schedulers "loaded".
    ``daemons`` are the running IPVS sync daemons by state; like the kernel,
    the twin reports a ``maxlen`` for each (its default for an MTU of 1500
    when none was asked for).
    """

    def __init__(
        self,
        devices: Iterable[str] = ("lo", "eth0"),
        sysctls: Mapping[str, str | int] | None = None,
        addresses: Iterable[Vip] = (),
        services: Mapping[ServiceKey, ObservedService] | None = None,
        ipvs_available: bool = True,
        schedulers: Iterable[str] = SCHEDULERS,
        daemons: Iterable[SyncDaemon] = (),
    ) -> None:
        self.devices = set(devices)
        self.sysctls: dict[str, str] = {}
        for dev in ("all", "default", *sorted(self.devices)):
            for name in _ARP_KEYS:
                self.sysctls[f"net.ipv4.conf.{dev}.{name}"] = "0"
        self.sysctls["net.ipv4.ip_forward"] = "0"
        if ipvs_available:
            self.sysctls.update(_IPVS_SYSCTLS)
        for key, value in (sysctls or {}).items():
            self.sysctls[key] = str(value)
        self.addresses: set[Vip] = set(addresses)
        self.services: dict[ServiceKey, ServiceState] = {
            key: ServiceState.from_observed(observed) for key, observed in (services or {}).items()
        }
        self.ipvs_available = ipvs_available
        self.schedulers = frozenset(schedulers)
        self.daemons: dict[str, SyncDaemon] = {d.state: _as_reported(d) for d in daemons}
        self.writes: list[Action] = []
        self.garps: list[SendGarp] = []
        self.fail: dict[str, int] = {}
        #: kind and flags of the devices that have them set (created by AddLink, or by a test);
        #: any other device is reported as the kernel has lo or an ethernet: no kind, up
        self.links: dict[str, Link] = {}

    # ------------------------------------------------------------------ the Backend protocol

    def observe(self, scope: Scope) -> Observed:
        sysctls = {key: self.sysctls.get(key) for key in scope.sysctls}
        wanted = {vip.key for vip in scope.vips}
        vips = frozenset(a for a in self.addresses if a.key in wanted)
        services = None
        daemons = None
        ipvs_error = None
        if scope.ipvs or scope.sync_daemons:
            if not self.ipvs_available:
                ipvs_error = "IPVS is not available (Protocol not available)"
            elif scope.ipvs:
                services = {
                    key: state.observed() for key, state in self.services.items()
                    if not scope.services_only or key in scope.services
                }
        if scope.sync_daemons and self.ipvs_available:
            daemons = tuple(self.daemons[state] for state in SYNC_STATES if state in self.daemons)
        links = {name: self.link(name) for name in scope.links if name in self.devices}
        return Observed(sysctls=sysctls, vips=vips, services=services, ipvs_error=ipvs_error, daemons=daemons,
                        links=links)

    def link(self, name: str) -> Link:
        """A device's kind and flags, as the link backend reads them (the device must exist)."""
        return self.links.get(name) or Link(name, "", up=True, noarp=False)

    def apply(self, action: Action) -> None:
        code = self.fail.get(str(action))
        if code is not None:
            raise ApplyError(f"{action}: injected failure", code)
        handler = _HANDLERS.get(type(action))
        if handler is None:
            raise ApplyError(f"memory backend cannot apply {type(action).__name__}")
        if handler(self, action):
            self.writes.append(action)

    def effective_arp(self) -> ArpPolicy:
        """max(all, interface) per device, as the kernel computes it."""
        result: ArpPolicy = {}
        for dev in sorted(self.devices):
            result[dev] = {
                name: max(int(self.sysctls.get(f"net.ipv4.conf.{dev}.{name}", "0")),
                          int(self.sysctls.get(f"net.ipv4.conf.all.{name}", "0")))
                for name in _ARP_KEYS
            }
        return result

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ test helpers

    def set_connections(self, service: ServiceKey, real: tuple[IPAddress, int], active: int, inactive: int = 0) -> None:
        """Pretend a real server has connections (to test draining)."""
        state = self.services[service]
        rs, _ = state.reals[real]
        state.reals[real] = (rs, RealServerStats(active, inactive))

    def add_foreign_service(self, key: ServiceKey, scheduler: str = "wlc", reals: Iterable[RealServer] = ()) -> None:
        """Add a service as ``ipvsadm`` would, behind kanotify's back."""
        state = ServiceState(VirtualService(key, scheduler))
        for rs in reals:
            state.reals[rs.key] = (rs, RealServerStats())
        self.services[key] = state

    # ------------------------------------------------------------------ what the kernel checks

    def _device(self, dev: str, action: Action) -> None:
        if dev not in self.devices:
            raise ApplyError(f"{action}: device {dev} does not exist", errno.ENODEV)

    def _ipvs(self, action: Action) -> None:
        if not self.ipvs_available:
            raise ApplyError(f"{action}: IPVS is not available: modprobe ip_vs", errno.ENOPROTOOPT)

    def _service(self, key: ServiceKey, action: Action) -> ServiceState:
        self._ipvs(action)
        state = self.services.get(key)
        if state is None:
            raise ApplyError(f"{action}: No such process (the virtual service does not exist)", errno.ESRCH)
        return state

    def _scheduler(self, service: VirtualService, action: Action) -> None:
        if service.scheduler not in self.schedulers:
            raise ApplyError(f"{action}: no IPVS scheduler {service.scheduler!r} in this kernel", errno.ENOENT)

    @staticmethod
    def _thresholds(real: RealServer, action: Action) -> None:
        if real.l_threshold > real.u_threshold:
            raise ApplyError(f"{action}: the lower threshold is above the upper threshold", errno.ERANGE)
        if real.tun_type == "gue" and not real.tun_port:  # ip_vs_add_dest/ip_vs_edit_dest: "tunnel port is zero"
            raise ApplyError(f"{action}: Invalid argument (a gue tunnel without a port)", errno.EINVAL)

    def _mixed_families(self) -> bool:
        """Does a service have a real server of the other address family (which the sync protocol cannot carry)?"""
        return any(
            address.version != state.service.key.family
            for state in self.services.values() for address, _port in state.reals
        )


class ServiceState:
    """Mutable IPVS service record inside :class:`MemoryBackend`."""

    def __init__(
        self, service: VirtualService,
        reals: Mapping[tuple[IPAddress, int], tuple[RealServer, RealServerStats]] | None = None,
    ) -> None:
        self.service = service
        self.reals: dict[tuple[IPAddress, int], tuple[RealServer, RealServerStats]] = dict(reals or {})

    @classmethod
    def from_observed(cls, observed: ObservedService) -> ServiceState:
        return cls(observed.service, observed.reals)

    def observed(self) -> ObservedService:
        return ObservedService(self.service, dict(self.reals))


# --------------------------------------------------------------------------- the handlers


def _set_sysctl(host: MemoryBackend, action: SetSysctl) -> bool:
    if action.key not in host.sysctls:
        raise ApplyError(f"sysctl {action.key} does not exist", errno.ENOENT)
    if host.sysctls[action.key] == action.value:
        return False
    host.sysctls[action.key] = action.value
    return True


def _bind_vip(host: MemoryBackend, action: BindVip) -> bool:
    vip = action.vip
    host._device(vip.dev, action)
    for have in host.addresses:
        if have.dev != vip.dev or have.address.ip != vip.address.ip:
            continue
        if have.key == vip.key:
            if vip.family == 6 or have.label == vip.label:
                return False  # exactly this VIP: converged
            raise ApplyError(f"bind {vip}: already bound with label {have.label or have.dev}; "
                             "remove it first to change the label", errno.EEXIST)
        if vip.family == 6:  # IPv6 keys an address by itself on a device, whatever the prefix
            raise ApplyError(f"bind {vip}: {vip.address.ip} is already on {vip.dev} as "
                             f"{have.address.with_prefixlen}, which is not this VIP", errno.EEXIST)
    host.addresses.add(vip)
    return True


def _unbind_vip(host: MemoryBackend, action: UnbindVip) -> bool:
    current = next((a for a in host.addresses if a.key == action.vip.key), None)
    if current is None:
        return False  # already gone (or its device is)
    host.addresses.discard(current)
    return True


def _send_garp(host: MemoryBackend, action: SendGarp) -> bool:
    if action.vip.dev == "lo":
        raise ApplyError(f"{action}: refusing to announce on lo (loopback has no neighbours)")
    host._device(action.vip.dev, action)
    host.garps.append(action)
    return False  # sends packets, changes no state


def _add_link(host: MemoryBackend, action: AddLink) -> bool:
    link = action.link
    if link.kind != "dummy":
        raise ApplyError(f"{action}: kanotify creates dummy links only", errno.EINVAL)
    if link.name in host.devices:  # EEXIST: the kernel backend then makes sure of the flags
        return _set_link(host, SetLink(host.link(link.name), link))
    host.devices.add(link.name)
    host.links[link.name] = link
    for name in _ARP_KEYS:  # the kernel creates conf/<dev>/ with the link
        host.sysctls[f"net.ipv4.conf.{link.name}.{name}"] = "0"
    return True


def _set_link(host: MemoryBackend, action: SetLink) -> bool:
    name = action.new.name
    if name not in host.devices:
        raise ApplyError(f"{action}: no such link", errno.ENODEV)
    have = host.link(name)
    if (have.up, have.noarp) == (action.new.up, action.new.noarp):
        return False
    host.links[name] = Link(name, have.kind, action.new.up, action.new.noarp)
    return True


def _hook_action(host: MemoryBackend, action: HookAction) -> bool:
    action.run()
    return True


def _add_service(host: MemoryBackend, action: AddService) -> bool:
    host._ipvs(action)
    host._scheduler(action.service, action)
    key = action.service.key
    current = host.services.get(key)
    if current is None:
        host.services[key] = ServiceState(action.service)
        return True
    if current.service.same_config(action.service):
        return False  # already there
    current.service = action.service  # exists with another configuration: edited in place
    return True


def _edit_service(host: MemoryBackend, action: EditService) -> bool:
    state = host._service(action.new.key, action)
    host._scheduler(action.new, action)
    if state.service.same_config(action.new):
        return False
    state.service = action.new
    return True


def _delete_service(host: MemoryBackend, action: DeleteService) -> bool:
    host._ipvs(action)
    return host.services.pop(action.service.key, None) is not None  # already gone: fine


def _add_real(host: MemoryBackend, action: AddReal) -> bool:
    state = host._service(action.service, action)
    host._thresholds(action.real, action)
    if host.daemons and action.real.address.version != action.service.family:
        raise ApplyError(f"{action}: a real server of the other address family while a sync daemon runs",
                         errno.EINVAL)
    current = state.reals.get(action.real.key)
    if current is not None and current[0] == action.real:
        return False  # already there
    stats = current[1] if current is not None else RealServerStats()
    state.reals[action.real.key] = (action.real, stats)  # new, or edited in place
    return True


def _edit_real(host: MemoryBackend, action: EditReal) -> bool:
    state = host._service(action.service, action)
    current = state.reals.get(action.new.key)
    if current is None:
        raise ApplyError(f"{action}: No such file or directory (the real server does not exist)", errno.ENOENT)
    host._thresholds(action.new, action)
    if current[0] == action.new:
        return False
    state.reals[action.new.key] = (action.new, current[1])
    return True


def _delete_real(host: MemoryBackend, action: DeleteReal) -> bool:
    host._ipvs(action)
    state = host.services.get(action.service)
    if state is None:
        return False  # the service is gone, and its real servers with it
    return state.reals.pop(action.real.key, None) is not None


def _as_reported(daemon: SyncDaemon) -> SyncDaemon:
    """The daemon as the kernel reports it: with the maxlen it computed (interface MTU 1500 here)."""
    if daemon.maxlen is not None:
        return daemon
    return SyncDaemon(daemon.state, daemon.interface, daemon.sync_id, 1500 - daemon.header_len,
                      daemon.group, daemon.port, daemon.ttl)


def _start_sync_daemon(host: MemoryBackend, action: StartSyncDaemon) -> bool:
    daemon = action.daemon
    host._ipvs(action)
    if daemon.interface not in host.devices:  # the kernel looks the interface up first
        raise ApplyError(f"{action}: No such device [ENODEV] (no such interface {daemon.interface})", errno.ENODEV)
    if host._mixed_families():
        raise ApplyError(f"{action}: Invalid argument [EINVAL] (mixed IPv4/IPv6 destinations)", errno.EINVAL)
    running = host.daemons.get(daemon.state)
    if running == daemon:
        return False  # converged
    if running is not None:
        raise ApplyError(f"{action}: the {daemon.state} sync daemon already runs with other parameters: "
                         f"{running} [EEXIST]", errno.EEXIST)
    host.daemons[daemon.state] = _as_reported(daemon)
    return True


def _stop_sync_daemon(host: MemoryBackend, action: StopSyncDaemon) -> bool:
    host._ipvs(action)
    return host.daemons.pop(action.daemon.state, None) is not None  # none running: success


#: action type -> how the kernel answers it (the handler returns whether anything changed)
_HANDLERS: dict[type[Action], Callable[[MemoryBackend, Any], bool]] = {
    SetSysctl: _set_sysctl,
    AddLink: _add_link,
    SetLink: _set_link,
    BindVip: _bind_vip,
    UnbindVip: _unbind_vip,
    SendGarp: _send_garp,
    HookAction: _hook_action,
    AddService: _add_service,
    EditService: _edit_service,
    DeleteService: _delete_service,
    AddReal: _add_real,
    EditReal: _edit_real,
    DeleteReal: _delete_real,
    StartSyncDaemon: _start_sync_daemon,
    StopSyncDaemon: _stop_sync_daemon,
}

__all__ = ["MemoryBackend", "ServiceState"]

"""An in-memory backend with the same interface as the real one.

Used by kanotify's own unit tests and shipped for plugin authors: it behaves
like the kernel where that matters to kanotify (missing devices and sysctl keys
are errors, "already there" is fine, the IPVS "hashed" flag does not exist
here because value types never carry it) and records every write so a test can
assert that a second run wrote nothing.

>>> from kanotify.backends.memory import MemoryBackend
>>> backend = MemoryBackend(devices={"lo", "eth0"})
>>> backend.sysctls["net.ipv4.conf.all.arp_ignore"]
'0'
"""

from __future__ import annotations

import errno
from typing import Iterable, Sequence

from ..actions import (
    Action,
    AddReal,
    AddService,
    BindVip,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    HookAction,
    SendGarp,
    SetSysctl,
    UnbindVip,
)
from ..errors import ApplyError
from ..model import (
    IPAddress,
    Observed,
    ObservedService,
    RealServer,
    RealServerStats,
    ServiceKey,
    Vip,
)
from .base import Scope, apply_each

_ARP_KEYS = ("arp_ignore", "arp_announce")


class MemoryBackend:
    """A fake host: devices, addresses, sysctls and an IPVS table in dicts.

    ``writes`` lists every action that changed something, ``garps`` every
    announcement sent; ``fail`` maps an action's text to an errno to inject a
    failure for that action.
    """

    def __init__(
        self,
        devices: Iterable[str] = ("lo", "eth0"),
        sysctls: dict[str, str | int] | None = None,
        addresses: Iterable[Vip] = (),
        services: dict[ServiceKey, ObservedService] | None = None,
        ipvs_available: bool = True,
    ) -> None:
        self.devices = set(devices)
        self.sysctls: dict[str, str] = {}
        for dev in ("all", "default", *sorted(self.devices)):
            for name in _ARP_KEYS:
                self.sysctls[f"net.ipv4.conf.{dev}.{name}"] = "0"
        self.sysctls["net.ipv4.ip_forward"] = "0"
        for key, value in (sysctls or {}).items():
            self.sysctls[key] = str(value)
        self.addresses: set[Vip] = set(addresses)
        self.services: dict[ServiceKey, VirtualServiceState] = {}
        for service_key, observed in (services or {}).items():
            self.services[service_key] = VirtualServiceState.from_observed(observed)
        self.ipvs_available = ipvs_available
        self.writes: list[Action] = []
        self.garps: list[SendGarp] = []
        self.fail: dict[str, int] = {}

    # ------------------------------------------------------------------ observe

    def observe(self, scope: Scope) -> Observed:
        sysctls = {key: self.sysctls.get(key) for key in scope.sysctls}
        wanted = {vip.key for vip in scope.vips}
        vips = frozenset(a for a in self.addresses if a.key in wanted)
        missing = frozenset(v.dev for v in scope.vips if v.dev not in self.devices)
        services = None
        ipvs_error = None
        if scope.ipvs:
            if self.ipvs_available:
                services = {key: state.observed() for key, state in self.services.items()}
            else:
                ipvs_error = "IPVS is not available (Protocol not available)"
        return Observed(
            sysctls=sysctls,
            vips=vips,
            services=services,
            missing_devices=missing,
            ipvs_error=ipvs_error,
        )

    # ------------------------------------------------------------------ apply

    def apply(self, action: Action) -> None:
        code = self.fail.get(str(action))
        if code is not None:
            raise ApplyError(f"{action}: injected failure", code)
        handler = getattr(self, f"_apply_{type(action).__name__}", None)
        if handler is None:
            raise ApplyError(f"memory backend cannot apply {type(action).__name__}")
        if handler(action) is not False:
            self.writes.append(action)

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
        return apply_each(self, actions)

    def close(self) -> None:
        pass

    def _apply_SetSysctl(self, action: SetSysctl) -> bool:
        if action.key not in self.sysctls:
            raise ApplyError(f"sysctl {action.key} does not exist", errno.ENOENT)
        if self.sysctls[action.key] == action.value:
            return False
        self.sysctls[action.key] = action.value
        return True

    def _apply_BindVip(self, action: BindVip) -> bool:
        vip = action.vip
        if vip.dev not in self.devices:
            raise ApplyError(f"device {vip.dev} does not exist", errno.ENODEV)
        current = {a.key: a for a in self.addresses}.get(vip.key)
        if current == vip:
            return False
        if current is not None:
            self.addresses.discard(current)
        self.addresses.add(vip)
        return True

    def _apply_UnbindVip(self, action: UnbindVip) -> bool:
        current = {a.key: a for a in self.addresses}.get(action.vip.key)
        if current is None:
            return False
        self.addresses.discard(current)
        return True

    def _apply_SendGarp(self, action: SendGarp) -> bool:
        if action.vip.dev not in self.devices:
            raise ApplyError(f"device {action.vip.dev} does not exist", errno.ENODEV)
        self.garps.append(action)
        return False  # sends packets, changes no state

    def _apply_HookAction(self, action: HookAction) -> bool:
        action.run()
        return True

    def _ipvs(self) -> None:
        if not self.ipvs_available:
            raise ApplyError("IPVS is not available", errno.ENOPROTOOPT)

    def _apply_AddService(self, action: AddService) -> bool:
        self._ipvs()
        key = action.service.key
        if key in self.services:
            raise ApplyError(f"ipvs service {key} already exists", errno.EEXIST)
        self.services[key] = VirtualServiceState(action.service)
        return True

    def _apply_EditService(self, action: EditService) -> bool:
        self._service(action.new.key).service = action.new
        return True

    def _apply_DeleteService(self, action: DeleteService) -> bool:
        self._service(action.service.key)
        del self.services[action.service.key]
        return True

    def _apply_AddReal(self, action: AddReal) -> bool:
        state = self._service(action.service)
        if action.real.key in state.reals:
            raise ApplyError(f"real server {action.real} already exists", errno.EEXIST)
        state.reals[action.real.key] = (action.real, RealServerStats())
        return True

    def _apply_EditReal(self, action: EditReal) -> bool:
        state = self._service(action.service)
        if action.new.key not in state.reals:
            raise ApplyError(f"real server {action.new} does not exist", errno.ENOENT)
        stats = state.reals[action.new.key][1]
        state.reals[action.new.key] = (action.new, stats)
        return True

    def _apply_DeleteReal(self, action: DeleteReal) -> bool:
        state = self._service(action.service)
        if action.real.key not in state.reals:
            raise ApplyError(f"real server {action.real} does not exist", errno.ENOENT)
        del state.reals[action.real.key]
        return True

    def _service(self, key: ServiceKey) -> "VirtualServiceState":
        self._ipvs()
        try:
            return self.services[key]
        except KeyError:
            raise ApplyError(f"ipvs service {key} does not exist", errno.ENOENT) from None

    # ------------------------------------------------------------------ test helpers

    def set_connections(self, service: ServiceKey, real: tuple[IPAddress, int], active: int, inactive: int = 0) -> None:
        """Pretend a real server has connections (to test draining)."""
        state = self.services[service]
        rs, _ = state.reals[real]
        state.reals[real] = (rs, RealServerStats(active, inactive))

    def add_foreign_service(self, key: ServiceKey, scheduler: str = "wlc", reals: Iterable[RealServer] = ()) -> None:
        """Add a service as ``ipvsadm`` would, behind kanotify's back."""
        from ..model import VirtualService

        state = VirtualServiceState(VirtualService(key, scheduler))
        for rs in reals:
            state.reals[rs.key] = (rs, RealServerStats())
        self.services[key] = state


class VirtualServiceState:
    """Mutable IPVS service record inside :class:`MemoryBackend`."""

    def __init__(self, service, reals=None):  # type: ignore[no-untyped-def]
        self.service = service
        self.reals: dict[tuple[IPAddress, int], tuple[RealServer, RealServerStats]] = dict(reals or {})

    @classmethod
    def from_observed(cls, observed: ObservedService) -> "VirtualServiceState":
        return cls(observed.service, dict(observed.reals))

    def observed(self) -> ObservedService:
        return ObservedService(self.service, dict(self.reals))


__all__ = ["MemoryBackend"]

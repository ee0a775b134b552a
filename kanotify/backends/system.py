"""The real backend: composes the per-domain kernel backends.

Each domain backend is created (and its heavy imports done) only when an
action or observation needs it: a sysctl-only run never imports pyroute2, a
VIP-only host never opens the IPVS netlink family.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..actions import Action
from ..errors import ApplyError
from ..model import Observed
from .base import Scope, apply_each


class SystemBackend:
    """Observe and change this host (or the network namespace ``netns``).

    ``garp_count``/``garp_interval`` are taken from each :class:`SendGarp`.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._backends: dict[str, Any] = {}

    # Each factory imports its module lazily: start-up cost matters on the notify path.
    def _get(self, domain: str) -> Any:
        backend = self._backends.get(domain)
        if backend is None:
            if domain == "sysctl":
                from .sysctl import SysctlBackend

                backend = SysctlBackend()
            elif domain == "address":
                from .address import AddressBackend

                backend = AddressBackend(netns=self.netns)
            elif domain == "garp":
                from .garp import GarpBackend

                backend = GarpBackend()
            elif domain == "ipvs":
                from .ipvs import IpvsBackend

                backend = IpvsBackend(netns=self.netns)
            elif domain == "hook":
                backend = _HookRunner()
            else:
                raise ApplyError(f"no backend for {domain!r} actions")
            self._backends[domain] = backend
        return backend

    def observe(self, scope: Scope) -> Observed:
        sysctls = self._get("sysctl").read_many(scope.sysctls) if scope.sysctls else {}
        vips: frozenset = frozenset()
        missing: frozenset[str] = frozenset()
        if scope.vips:
            vips, missing = self._get("address").observe(scope.vips)
        services = None
        ipvs_error = None
        if scope.ipvs:
            try:
                services = self._get("ipvs").observe()
            except (ApplyError, OSError, ImportError) as exc:
                ipvs_error = str(exc)
        return Observed(
            sysctls=sysctls,
            vips=vips,
            services=services,
            missing_devices=missing,
            ipvs_error=ipvs_error,
        )

    def effective_arp(self) -> dict[str, dict[str, int]]:
        """Per interface, the ARP policy the kernel really uses: max(all, interface)."""
        return self._get("sysctl").effective_arp()

    def apply(self, action: Action) -> None:
        self._get(action.domain).apply(action)

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
        """Apply in order; consecutive actions of one domain go to its backend together."""
        results: list[BaseException | None] = []
        start = 0
        while start < len(actions):
            domain = actions[start].domain
            end = start
            while end < len(actions) and actions[end].domain == domain:
                end += 1
            chunk = actions[start:end]
            try:
                backend = self._get(domain)
            except Exception as exc:  # noqa: BLE001 - reported per action
                results.extend(exc for _ in chunk)
            else:
                many = getattr(backend, "apply_many", None)
                results.extend(many(chunk) if many else apply_each(backend, chunk))
            start = end
        return results

    def close(self) -> None:
        for backend in self._backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        self._backends.clear()


class _HookRunner:
    """Applies :class:`~kanotify.actions.HookAction`: calls the plugin's callable."""

    def apply(self, action: Action) -> None:
        action.run()  # type: ignore[attr-defined]

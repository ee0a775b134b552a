"""The real backend: composes the per-domain kernel backends.

Each domain backend is created (and its heavy imports done) only when an
action or observation needs it: a sysctl-only run never opens a netlink socket, a
VIP-only host never opens the IPVS netlink family.
"""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING, Sequence

from ..actions import Action, HookAction, StartSyncDaemon, StopSyncDaemon
from ..errors import ApplyError
from ..model import Observed, Scope, SyncDaemon, Vip
from .base import ArpPolicy, Backend, DomainBackend, OneAtATime
from .sysctl import SysctlBackend

if TYPE_CHECKING:
    from .address import AddressBackend
    from .garp import Repeater
    from .ipvs import IpvsBackend
    from .link import LinkBackend


def system_backend(
    netns: str | None = None, *, garp_repeater: Repeater | None = None, long_lived: bool = False
) -> Backend:
    """The backend of this host (or of network namespace ``netns``).

    Its domain backends (and their sockets) are
    created only when an observation or action needs them.  ``garp_repeater``
    sends GARP repeats (the listener's thread); default: a detached process.
    ``long_lived``: it serves many runs (the listener), and keeps what it
    decoded for the next observe.
    """
    return SystemBackend(netns, garp_repeater, long_lived=long_lived)


class SystemBackend:
    """Observe and change this host (or the network namespace ``netns``).

    ``garp_count``/``garp_interval`` are taken from each :class:`SendGarp`;
    ``garp_repeater`` sends the repeats (default: a detached process per VIP).
    ``long_lived``: kept open for many runs (the listener's), so worth keeping
    what an observe decoded for the next one.
    """

    def __init__(self, netns: str | None = None, garp_repeater: Repeater | None = None, *,
                 long_lived: bool = False) -> None:
        self.netns = netns
        self.garp_repeater = garp_repeater
        self.long_lived = long_lived
        self._sysctl = SysctlBackend()  # plain file I/O: costs nothing to create
        self._address: AddressBackend | None = None
        self._ipvs: IpvsBackend | None = None
        self._link: LinkBackend | None = None
        self._others: dict[str, DomainBackend] = {}

    # The factories import their modules lazily: start-up cost matters on the notify path.

    def address(self) -> AddressBackend:
        if self._address is None:
            from .address import AddressBackend

            self._address = AddressBackend(netns=self.netns)
        return self._address

    def ipvs(self) -> IpvsBackend:
        if self._ipvs is None:
            from .ipvs import IpvsBackend

            self._ipvs = IpvsBackend(netns=self.netns, memo=self.long_lived)
        return self._ipvs

    def link(self) -> LinkBackend:
        if self._link is None:
            from .link import LinkBackend

            self._link = LinkBackend(netns=self.netns)
        return self._link

    def _domain(self, domain: str) -> DomainBackend:
        if domain == "sysctl":
            return self._sysctl
        if domain == "address":
            return self.address()
        if domain == "ipvs":
            return self.ipvs()
        if domain == "link":
            return self.link()
        if domain == "sync":  # the sync daemons are IPVS commands too: same backend, same socket
            return _SyncDaemons(self.ipvs())
        backend = self._others.get(domain)
        if backend is None:
            if domain == "garp":
                from .garp import GarpBackend

                backend = GarpBackend(repeater=self.garp_repeater)
            elif domain == "hook":
                backend = _HookRunner()
            else:
                raise ApplyError(f"no backend for {domain!r} actions")
            self._others[domain] = backend
        return backend

    # ------------------------------------------------------------------ the Backend protocol

    def observe(self, scope: Scope) -> Observed:
        sysctls = self._sysctl.read_many(scope.sysctls) if scope.sysctls else {}
        links = self.link().observe(scope.links) if scope.links else {}
        vips: frozenset[Vip] = self.address().observe(scope.vips) if scope.vips else frozenset()
        services = None
        daemons: tuple[SyncDaemon, ...] | None = None
        ipvs_error = None
        if scope.ipvs:
            try:
                services = self.ipvs().observe(scope.services if scope.services_only else None)
            except (ApplyError, OSError, ImportError) as exc:
                ipvs_error = str(exc)
        if scope.sync_daemons and (services is not None or not scope.ipvs):
            try:
                daemons = self.ipvs().daemons()
            except (ApplyError, OSError, ImportError) as exc:
                ipvs_error = str(exc)
        return Observed(sysctls=sysctls, vips=vips, services=services, ipvs_error=ipvs_error, daemons=daemons,
                        links=links)

    def effective_arp(self) -> ArpPolicy:
        """Per interface, the ARP policy the kernel really uses: max(all, interface)."""
        return self._sysctl.effective_arp()

    def apply(self, action: Action) -> None:
        self._domain(action.domain).apply(action)

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
        """Apply in order; consecutive actions of one domain go to its backend together."""
        results: list[BaseException | None] = []
        for domain, group in groupby(actions, key=lambda a: a.domain):
            chunk = list(group)
            try:
                backend = self._domain(domain)
            except Exception as exc:  # noqa: BLE001 - reported per action
                results.extend(exc for _ in chunk)
            else:
                results.extend(backend.apply_many(chunk))
        return results

    def close(self) -> None:
        for backend in (self._address, self._ipvs, self._link, *self._others.values()):
            if backend is not None:
                backend.close()
        self._address = self._ipvs = self._link = None
        self._others.clear()


class _SyncDaemons(OneAtATime):
    """Applies :class:`StartSyncDaemon`/:class:`StopSyncDaemon` through the IPVS backend, one at a time."""

    def __init__(self, ipvs: IpvsBackend) -> None:
        self.ipvs = ipvs

    def apply(self, action: Action) -> None:
        if isinstance(action, StartSyncDaemon):
            self.ipvs.start_daemon(action.daemon)
        elif isinstance(action, StopSyncDaemon):
            self.ipvs.stop_daemon(action.daemon.state)
        else:
            raise ApplyError(f"the sync daemon backend cannot apply {type(action).__name__}: {action}")

    def close(self) -> None:
        """Nothing to release: the socket belongs to the IPVS backend."""


class _HookRunner(OneAtATime):
    """Applies :class:`~kanotify.actions.HookAction`: calls the plugin's callable."""

    def apply(self, action: Action) -> None:
        if not isinstance(action, HookAction):
            raise ApplyError(f"the hook runner cannot apply {type(action).__name__}: {action}")
        action.run()

    def close(self) -> None:
        """Nothing to release."""

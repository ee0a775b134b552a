"""VIPs: bind and remove managed addresses through rtnetlink (our own messages: :mod:`.rtaddr`).

Only the addresses asked about are ever read back or touched; every other
address on the same device is foreign and survives.  A VIP's identity is its
address with prefix plus its device (``192.0.2.100/24 dev eth0`` and
``192.0.2.100/32 dev lo`` are two VIPs); the label is desired state.

Kernel facts this module relies on:

* IPv4: deleting the *primary* address of a subnet also deletes its secondary
  addresses unless ``promote_secondaries`` is on (``conf/all`` OR
  ``conf/DEV``).  When removing a VIP that is such a primary, the flag is turned
  on for that device for the duration of the delete and then put back, so the
  foreign secondaries are promoted instead of lost and no sysctl ends up changed.
* IPv6: an address is unique per device whatever its prefix, and DAD would
  keep a fresh VIP ``tentative`` (unusable) for a second or more, or mark it
  ``dadfailed``.  VIPs are bound with ``IFA_F_NODAD``; a VIP is only ever on
  one node at a time, which is VRRP's job.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Callable, Iterable, TypeVar

from ..actions import Action, BindVip, UnbindVip
from ..errors import ApplyError
from ..model import IPInterface, Vip
from .netlink import framing as nl
from .netlink import rtaddr as r
from .base import apply_each
from .netns import call_in
from .retry import call_with_retry
from .rtnl import RtnetlinkBackend

T = TypeVar("T")

IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

_NETLINK_GET_STRICT_CHK = 12


class _Found:
    """One kernel address of interest, normalized."""

    __slots__ = ("interface", "label", "flags")

    def __init__(self, interface: IPInterface, label: str | None, flags: int) -> None:
        self.interface = interface
        self.label = label
        self.flags = flags


class AddressBackend(RtnetlinkBackend):
    """Observe and change managed VIPs in this network namespace (or in ``netns``).

    ``device_wait`` bounds how long a bind waits for a missing device to
    appear (interfaces can show up late at boot); each device is waited for at
    most once per backend, so ten VIPs on a mistyped device cost one wait, not
    ten.  ``writes`` counts the netlink requests that changed (or tried to
    change) something: a converged second run leaves it at 0.
    """

    kind = "address"

    def __init__(self, netns: str | None = None, device_wait: float = 1.0) -> None:
        self.device_wait = device_wait
        self.writes = 0
        self._waited: set[str] = set()
        #: per device, the addresses as last read, while apply_many runs (None: no caching)
        self._cache: dict[int, dict[tuple[int, IPInterface], _Found]] | None = None
        super().__init__(netns, rcvbuf=1 << 20)
        assert self._sock is not None
        try:
            # the kernel then filters address dumps by device (Linux >= 4.20; older ones send all)
            self._sock.sock.setsockopt(nl.SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 1)
        except OSError:
            pass

    # ------------------------------------------------------------------ observe

    def observe(self, vips: Iterable[Vip]) -> frozenset[Vip]:
        """The asked-for VIPs that are bound, as the kernel has them.

        A bound VIP comes back with the label the kernel reports, so a label
        drift shows up as a difference; IPv6 addresses have no label.  A VIP on
        a device that does not exist is simply not bound.
        """
        wanted = list(vips)
        indices: dict[str, int] = {}
        for dev in sorted({vip.dev for vip in wanted}):
            index = self._index(dev)
            if index is not None:
                indices[dev] = index
        found = self._dump(set(indices.values())) if indices else {}
        bound = set()
        for vip in wanted:
            index = indices.get(vip.dev)
            if index is None:
                continue
            have = found.get((index, vip.address))
            if have is not None:
                bound.add(Vip(vip.address, vip.dev, have.label))
        return frozenset(bound)

    def flags_of(self, vip: Vip) -> int | None:
        """The kernel's ``IFA_F_*`` flags of a bound VIP (``None`` if not bound); for tests and status."""
        index = self._index(vip.dev)
        if index is None:
            return None
        have = self._dump({index}).get((index, vip.address))
        return None if have is None else have.flags

    # ------------------------------------------------------------------ apply

    def apply(self, action: Action) -> None:
        """Apply a :class:`BindVip` or :class:`UnbindVip`; "already so" is success."""
        if isinstance(action, BindVip):
            self._bind(action.vip)
        elif isinstance(action, UnbindVip):
            self._unbind(action.vip)
        else:
            raise ApplyError(f"the address backend cannot apply {type(action).__name__}: {action}")

    def apply_many(self, actions: Iterable[Action]) -> list[BaseException | None]:
        """Apply each action in order; one failure does not stop the others.

        The address list is read once for the whole batch and kept up to date
        by the removals themselves, so removing N VIPs is one dump, not N.
        """
        self._cache = {}
        try:
            return apply_each(self, actions)
        finally:
            self._cache = None

    def _bind(self, vip: Vip) -> None:
        what = f"bind {vip}"
        index = self._wait_for_device(vip.dev, what)
        packed, prefixlen = vip.address.ip.packed, vip.address.network.prefixlen
        label = vip.label if vip.family == 4 else None
        flags = 0 if vip.family == 4 else IFA_F_NODAD
        self.writes += 1
        self._forget(index)  # the kernel decides primary/secondary: read it again when needed
        try:
            self._request(lambda seq: r.address_request(
                r.RTM_NEWADDR, seq, vip.family, packed, prefixlen, index, label=label, flags=flags), what)
        except ApplyError as exc:
            if exc.errno == errno.EEXIST:
                self._check_already_bound(vip, index, what)
                return
            if exc.errno == errno.ENODEV:
                raise ApplyError(f"{what}: device {vip.dev} disappeared", exc.errno) from exc
            raise

    def _check_already_bound(self, vip: Vip, index: int, what: str) -> None:
        """EEXIST: fine if exactly this VIP is there, an error if something else holds the address."""
        found = self._dump({index})
        have = found.get((index, vip.address))
        if have is not None:
            if vip.family == 6 or have.label == vip.label:
                return
            raise ApplyError(
                f"{what}: already bound with label {have.label or vip.dev}; "
                "remove it first to change the label",
                errno.EEXIST,
            )
        clash = [f.interface for (i, iface), f in found.items() if i == index and iface.ip == vip.address.ip]
        holder = clash[0].with_prefixlen if clash else "another address"
        raise ApplyError(
            f"{what}: {vip.address.ip} is already on {vip.dev} as {holder}, which is not this VIP "
            "(same address, other prefix); remove it or fix the prefix in the config",
            errno.EEXIST,
        )

    def _unbind(self, vip: Vip) -> None:
        what = f"remove {vip}"
        index = self._index(vip.dev)
        if index is None:
            return  # the device is gone, and its addresses with it
        found = self._addresses_of(index)
        target = found.get((index, vip.address))
        if target is None:
            return  # already gone: nothing sent
        restore = None
        if vip.family == 4 and not target.flags & IFA_F_SECONDARY and _has_secondaries(found, index, target):
            restore = self._promote_secondaries(vip.dev, what)
            self._forget(index)  # secondaries are about to be promoted
        else:
            found.pop((index, vip.address), None)
        try:
            self.writes += 1
            packed, prefixlen = vip.address.ip.packed, vip.address.network.prefixlen
            self._request(lambda seq: r.address_request(r.RTM_DELADDR, seq, vip.family, packed, prefixlen, index), what)
        except ApplyError as exc:
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                raise
        finally:
            if restore is not None:
                self._in_netns(_write_sysctl, _promote_path(vip.dev), restore)

    # ------------------------------------------------------------------ helpers

    def _index(self, dev: str) -> int | None:
        """The device's ifindex, or None.  An ioctl (in the backend's namespace), not a netlink round trip."""
        try:
            return call_in(self.netns, socket.if_nametoindex, dev)
        except OSError:
            return None

    def _wait_for_device(self, dev: str, what: str) -> int:
        index = self._index(dev)
        if index is not None:
            return index
        if dev in self._waited or self.device_wait <= 0:
            raise ApplyError(f"{what}: device {dev} does not exist", errno.ENODEV)
        self._waited.add(dev)

        def lookup() -> int:
            index = self._index(dev)
            if index is None:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            return index

        try:
            return call_with_retry(lookup, what=what, budget=self.device_wait)
        except ApplyError as exc:
            raise ApplyError(
                f"{what}: device {dev} does not exist (retried for up to {self.device_wait:g}s)",
                errno.ENODEV,
            ) from exc

    def _addresses_of(self, index: int) -> dict[tuple[int, IPInterface], _Found]:
        """The addresses of one device: from the batch cache when there is one."""
        if self._cache is None:
            return self._dump({index})
        if index not in self._cache:
            self._cache[index] = self._dump({index})
        return self._cache[index]

    def _forget(self, index: int) -> None:
        if self._cache is not None:
            self._cache.pop(index, None)

    def _dump(self, indices: set[int]) -> dict[tuple[int, IPInterface], _Found]:
        """Every address on the given devices, keyed by (ifindex, address/prefix)."""
        result: dict[tuple[int, IPInterface], _Found] = {}
        only = next(iter(indices)) if len(indices) == 1 else 0
        for msg in self._request(lambda seq: r.getaddr_request(socket.AF_UNSPEC, seq, only), "list addresses"):
            if msg.type != r.RTM_NEWADDR:
                continue
            found = r.decode(msg.payload)
            if found is None or found.index not in indices:
                continue
            label = found.label if found.interface.version == 4 else None
            result[(found.index, found.interface)] = _Found(found.interface, label, found.flags)
        return result

    def _promote_secondaries(self, dev: str, what: str) -> str | None:
        """Make sure deleting a primary promotes its secondaries; return the value to restore."""
        current = self._in_netns(_read_sysctl, _promote_path("all"))
        if current not in (None, "0"):
            return None  # on for every device already (systemd's default)
        own = self._in_netns(_read_sysctl, _promote_path(dev))
        if own is None or own != "0":
            return None
        try:
            self._in_netns(_write_sysctl, _promote_path(dev), "1")
        except OSError as exc:
            raise ApplyError(
                f"{what}: it is the primary address of its subnet and could not enable "
                f"promote_secondaries on {dev} to keep the other addresses: {os.strerror(exc.errno or 0)}",
                exc.errno,
            ) from exc
        return own

    def _in_netns(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` with ``/proc/sys/net`` showing this backend's namespace."""
        return call_in(self.netns, fn, *args)


def _has_secondaries(found: dict[tuple[int, IPInterface], _Found], index: int, primary: _Found) -> bool:
    """Would the kernel delete other addresses along with ``primary``?  (same device, mask and subnet)"""
    network = primary.interface.network
    for (i, iface), other in found.items():
        if i != index or other is primary or iface.version != 4:
            continue
        if other.flags & IFA_F_SECONDARY and iface.network == network:
            return True
    return False


def _promote_path(dev: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{dev}/promote_secondaries"


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value + "\n")


__all__ = ["AddressBackend", "IFA_F_NODAD", "IFA_F_TENTATIVE", "IFA_F_DADFAILED"]

"""AddressBackend against a real kernel: VIPs bound and removed inside a namespace.

Every check reads the kernel back with ``ip -j addr`` from outside the code
under test.
"""

from __future__ import annotations

import errno
import ipaddress
import time

import pytest

from kanotify.actions import BindVip, UnbindVip
from kanotify.backends.address import IFA_F_DADFAILED, IFA_F_NODAD, IFA_F_TENTATIVE, AddressBackend
from kanotify.errors import ApplyError
from kanotify.model import Vip
from netns_support import Netns

pytestmark = pytest.mark.root

V4 = Vip(ipaddress.ip_interface("192.0.2.100/24"), "eth0", "eth0:0")
V4_LO = Vip(ipaddress.ip_interface("192.0.2.100/32"), "lo", "lo:0")
V6 = Vip(ipaddress.ip_interface("2001:db8::100/64"), "eth0")


def _local(info: list[dict], address: str, prefixlen: int) -> dict | None:
    for entry in info:
        if entry["local"] == address and entry["prefixlen"] == prefixlen:
            return entry
    return None


def _apply_all(actions, device_wait: float = 1.0):  # type: ignore[no-untyped-def]
    """Apply actions in one backend; return (per-action error or None, netlink writes)."""
    backend = AddressBackend(device_wait=device_wait)
    try:
        return backend.apply_many(actions), backend.writes
    finally:
        backend.close()


def _observe(vips):  # type: ignore[no-untyped-def]
    backend = AddressBackend()
    try:
        return backend.observe(vips)
    finally:
        backend.close()


def test_bind_v4_with_label_and_v6_nodad(ns_a: Netns) -> None:
    errors, writes = ns_a.run(_apply_all, [BindVip(V4), BindVip(V6), BindVip(V4_LO)])
    assert errors == [None, None, None]
    assert writes == 3

    v4 = _local(ns_a.addresses("eth0"), "192.0.2.100", 24)
    assert v4 is not None and v4["label"] == "eth0:0"
    lo = _local(ns_a.addresses("lo"), "192.0.2.100", 32)
    assert lo is not None and lo["label"] == "lo:0"
    v6 = _local(ns_a.addresses("eth0"), "2001:db8::100", 64)
    assert v6 is not None
    # Bound with IFA_F_NODAD: usable at once, never tentative nor dadfailed.
    assert v6.get("nodad") is True
    assert not v6.get("tentative") and not v6.get("dadfailed")

    def flags() -> int | None:
        backend = AddressBackend()
        try:
            return backend.flags_of(V6)
        finally:
            backend.close()

    got = ns_a.run(flags)
    assert got is not None and got & IFA_F_NODAD and not got & (IFA_F_TENTATIVE | IFA_F_DADFAILED)

    bound = ns_a.run(_observe, [V4, V6, V4_LO])
    assert bound == {V4, V6, V4_LO}


def test_bind_and_unbind_are_idempotent(ns_a: Netns) -> None:
    actions = [BindVip(V4), BindVip(V6), BindVip(V4_LO)]
    ns_a.run(_apply_all, actions)
    before = ns_a.ip_json("addr")
    errors, _ = ns_a.run(_apply_all, actions)  # a second bind is success ...
    assert errors == [None, None, None]
    assert ns_a.ip_json("addr") == before  # ... and changes nothing

    removals = [UnbindVip(V4), UnbindVip(V6), UnbindVip(V4_LO)]
    errors, writes = ns_a.run(_apply_all, removals)
    assert errors == [None, None, None] and writes == 3
    assert _local(ns_a.addresses("eth0"), "192.0.2.100", 24) is None
    assert _local(ns_a.addresses("eth0"), "2001:db8::100", 64) is None
    assert _local(ns_a.addresses("lo"), "192.0.2.100", 32) is None
    after = ns_a.ip_json("addr")
    errors, writes = ns_a.run(_apply_all, removals)  # already gone: success, nothing sent
    assert errors == [None, None, None] and writes == 0
    assert ns_a.ip_json("addr") == after


def test_observe_reports_label_as_the_kernel_has_it(ns_a: Netns) -> None:
    ns_a.ip("addr", "add", "192.0.2.100/24", "dev", "eth0")  # bound by hand, no label
    bound = ns_a.run(_observe, [V4])
    assert bound == {Vip(V4.address, "eth0", None)}  # label == dev is normalized to None
    ns_a.ip("addr", "del", "192.0.2.100/24", "dev", "eth0")
    ns_a.ip("addr", "add", "192.0.2.100/24", "dev", "eth0", "label", "eth0:9")
    bound = ns_a.run(_observe, [V4])
    assert bound == {Vip(V4.address, "eth0", "eth0:9")}
    # EEXIST with another label is not silently "converged"
    errors, _ = ns_a.run(_apply_all, [BindVip(V4)])
    assert isinstance(errors[0], ApplyError) and "label eth0:9" in str(errors[0])


def test_identity_is_address_prefix_and_device(ns_a: Netns) -> None:
    """192.0.2.100/24 on eth0 and 192.0.2.100/32 on lo are two VIPs; /32 on eth0 is neither."""
    ns_a.ip("addr", "add", "192.0.2.100/32", "dev", "eth0")  # foreign: same IP, other prefix
    bound = ns_a.run(_observe, [V4, V4_LO])
    assert bound == frozenset()
    errors, _ = ns_a.run(_apply_all, [BindVip(V4), BindVip(V4_LO)])
    assert errors == [None, None]
    bound = ns_a.run(_observe, [V4, V4_LO])
    assert bound == {V4, V4_LO}
    errors, _ = ns_a.run(_apply_all, [UnbindVip(V4)])
    assert errors == [None]
    eth0 = ns_a.addresses("eth0")
    assert _local(eth0, "192.0.2.100", 32) is not None  # the foreign /32 survives
    assert _local(eth0, "192.0.2.100", 24) is None
    assert _local(ns_a.addresses("lo"), "192.0.2.100", 32) is not None


def test_ipv6_same_address_other_prefix_is_a_clear_error(ns_a: Netns) -> None:
    # IPv6 addresses are unique per device whatever the prefix: EEXIST must not pass as success.
    ns_a.ip("addr", "add", "2001:db8::100/128", "dev", "eth0", "nodad")
    errors, _ = ns_a.run(_apply_all, [BindVip(V6)])
    assert isinstance(errors[0], ApplyError)
    assert errors[0].errno == errno.EEXIST
    assert "2001:db8::100/128" in str(errors[0]) and "eth0" in str(errors[0])


def test_foreign_addresses_survive(ns_a: Netns) -> None:
    ns_a.ip("addr", "add", "192.0.2.50/24", "dev", "eth0", "label", "eth0:f")
    ns_a.ip("addr", "add", "2001:db8::50/64", "dev", "eth0", "nodad")
    ns_a.ip("addr", "add", "192.0.2.50/32", "dev", "lo")
    ns_a.run(_apply_all, [BindVip(V4), BindVip(V6), BindVip(V4_LO)])
    ns_a.run(_apply_all, [UnbindVip(V4), UnbindVip(V6), UnbindVip(V4_LO)])
    eth0, lo = ns_a.addresses("eth0"), ns_a.addresses("lo")
    for address, prefix in (("192.0.2.1", 24), ("192.0.2.50", 24), ("2001:db8::1", 64), ("2001:db8::50", 64)):
        assert _local(eth0, address, prefix) is not None, address
    assert _local(eth0, "192.0.2.50", 24)["label"] == "eth0:f"
    assert _local(lo, "192.0.2.50", 32) is not None
    assert _local(lo, "127.0.0.1", 8) is not None


def test_removing_a_primary_vip_keeps_foreign_secondaries(ns_a: Netns) -> None:
    """Without promote_secondaries the kernel deletes a primary's secondaries along with it."""
    vip = Vip(ipaddress.ip_interface("198.51.100.10/24"), "eth0", "eth0:0")
    ns_a.set_sysctls({"net.ipv4.conf.all.promote_secondaries": 0, "net.ipv4.conf.eth0.promote_secondaries": 0})
    ns_a.run(_apply_all, [BindVip(vip)])  # first in its subnet: the primary
    ns_a.ip("addr", "add", "198.51.100.20/24", "dev", "eth0")  # foreign, becomes a secondary
    entry = _local(ns_a.addresses("eth0"), "198.51.100.20", 24)
    assert entry is not None and entry.get("secondary") is True
    errors, _ = ns_a.run(_apply_all, [UnbindVip(vip)])
    assert errors == [None]
    eth0 = ns_a.addresses("eth0")
    assert _local(eth0, "198.51.100.10", 24) is None
    assert _local(eth0, "198.51.100.20", 24) is not None  # promoted, not deleted
    # and the sysctl is back as it was: nothing undeclared is left changed
    assert ns_a.sysctl("net/ipv4/conf/eth0/promote_secondaries") == "0"
    assert ns_a.sysctl("net/ipv4/conf/all/promote_secondaries") == "0"


def test_missing_device_is_a_clear_error_after_a_bounded_wait(ns_a: Netns) -> None:
    vip = Vip(ipaddress.ip_interface("192.0.2.100/24"), "eth9", "eth9:0")
    other = Vip(ipaddress.ip_interface("192.0.2.101/24"), "eth9")

    def attempt():  # type: ignore[no-untyped-def]
        backend = AddressBackend(device_wait=0.5)
        try:
            t0 = time.monotonic()
            first = backend.apply_many([BindVip(vip)])[0]
            t1 = time.monotonic()
            second = backend.apply_many([BindVip(other)])[0]  # same device: not waited for again
            t2 = time.monotonic()
            unbind = backend.apply_many([UnbindVip(vip)])[0]  # device absent -> address absent
            observed = backend.observe([vip])
            return first, t1 - t0, second, t2 - t1, unbind, observed
        finally:
            backend.close()

    first, waited, second, again, unbind, observed = ns_a.run(attempt)
    assert isinstance(first, ApplyError)
    assert first.errno == errno.ENODEV
    assert "eth9" in str(first) and "does not exist" in str(first) and "192.0.2.100/24" in str(first)
    assert 0.2 <= waited <= 0.5 + 0.5  # retried (20, 20, 40, 80, 160 ms ...) within device_wait, then gave up
    assert isinstance(second, ApplyError) and second.errno == errno.ENODEV
    assert again < waited
    assert unbind is None
    assert observed == frozenset()
    print(f"ENODEV wait with device_wait=0.5: {waited * 1000:.0f} ms; second VIP on it: {again * 1000:.1f} ms")


def test_device_appearing_late_is_waited_for(pair) -> None:  # type: ignore[no-untyped-def]
    """The boot case: the interface shows up while the bind retries."""
    import subprocess

    vip = Vip(ipaddress.ip_interface("203.0.113.10/24"), "late0")

    def attempt() -> tuple[BaseException | None, float]:
        backend = AddressBackend(device_wait=5.0)
        try:
            t0 = time.monotonic()
            # create the device 150 ms from now, from outside this process
            proc = subprocess.Popen(
                ["sh", "-c", f"sleep 0.15; ip -n {pair.a.name} link add late0 type veth peer name late1"]
            )
            error = backend.apply_many([BindVip(vip)])[0]
            elapsed = time.monotonic() - t0
            proc.wait()
            return error, elapsed
        finally:
            backend.close()

    error, elapsed = pair.a.run(attempt)
    assert error is None
    assert 0.1 <= elapsed < 5.0  # it did wait for the device, and not for the whole budget
    assert _local(pair.a.addresses("late0"), "203.0.113.10", 24) is not None


def test_backend_can_target_a_namespace_from_outside(ns_a: Netns) -> None:
    """``AddressBackend(netns=NAME)`` from the host process acts on that namespace only."""
    vip = Vip(ipaddress.ip_interface("198.51.100.10/24"), "eth0", "eth0:1")
    ns_a.set_sysctls({"net.ipv4.conf.all.promote_secondaries": 0, "net.ipv4.conf.eth0.promote_secondaries": 0})
    backend = AddressBackend(netns=ns_a.name)
    try:
        backend.apply(BindVip(vip))
        ns_a.ip("addr", "add", "198.51.100.20/24", "dev", "eth0")
        assert backend.observe([vip]) == {vip}
        backend.apply(UnbindVip(vip))
        assert backend.observe([vip]) == frozenset()
    finally:
        backend.close()
    assert _local(ns_a.addresses("eth0"), "198.51.100.20", 24) is not None
    assert ns_a.sysctl("net/ipv4/conf/eth0/promote_secondaries") == "0"


def test_bind_observe_round_time(ns_a: Netns) -> None:
    """Measured, not asserted tightly: one bind + observe round on a warm netlink socket."""

    def rounds(n: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        backend = AddressBackend()
        opened = time.perf_counter() - t0
        try:
            vips = [Vip(ipaddress.ip_interface(f"203.0.113.{i}/24"), "eth0") for i in range(10, 10 + n)]
            t0 = time.perf_counter()
            for vip in vips:
                backend.apply(BindVip(vip))
                assert vip in backend.observe([vip])
            return opened, (time.perf_counter() - t0) / n
        finally:
            backend.close()

    opened, per_round = ns_a.run(rounds, 20)
    print(f"AddressBackend open (incl. pyroute2 import if first): {opened * 1000:.1f} ms; bind+observe round: {per_round * 1000:.2f} ms")
    assert per_round < 1.0

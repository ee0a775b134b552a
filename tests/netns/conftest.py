"""Fixtures for the netns tests: namespaces that are always removed, even on failure.

See ``netns_support.py`` for what runs inside them.
"""

from __future__ import annotations

import secrets
import subprocess
from typing import Callable, Iterator

import pytest

from netns_support import PREFIX, Netns, Pair, run_cmd, require_prerequisites


def _delete_all(names: list[str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def netns_names() -> Iterator[Callable[[str], str]]:
    """A factory of unique namespace names; every namespace named here is deleted afterwards."""
    require_prerequisites()
    prefix = PREFIX + secrets.token_hex(3)
    made: list[str] = []

    def name(suffix: str) -> str:
        full = f"{prefix}-{suffix}"
        made.append(full)
        return full

    try:
        yield name
    finally:
        _delete_all(made)


@pytest.fixture
def pair(netns_names: Callable[[str], str]) -> Pair:
    """Namespaces ``a`` and ``b``, each with ``lo`` up and an ``eth0`` joined by a veth.

    ``a``'s eth0 has 192.0.2.1/24 and 2001:db8::1/64 (nodad), ``b``'s has
    192.0.2.2/24 and 2001:db8::2/64: the "own" addresses of two LAN hosts.
    """
    a, b = Netns(netns_names("a")), Netns(netns_names("b"))
    for ns in (a, b):
        run_cmd(["ip", "netns", "add", ns.name])
    try:
        run_cmd(["ip", "-n", a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name])
    except AssertionError as exc:
        pytest.fail(f"cannot create a veth pair between namespaces (veth module missing?): {exc}")
    for ns, last in ((a, 1), (b, 2)):
        # No DAD on the link-local address: it would turn from "tentative" to usable
        # a second later and make `ip -j addr` snapshots differ for no reason.
        ns.set_sysctls({"net.ipv6.conf.eth0.accept_dad": 0})
        ns.ip("link", "set", "lo", "up")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("addr", "add", f"192.0.2.{last}/24", "dev", "eth0")
        ns.ip("addr", "add", f"2001:db8::{last}/64", "dev", "eth0", "nodad")
    return Pair(a, b, a.name.rsplit("-", 1)[0])


@pytest.fixture
def ns_a(pair: Pair) -> Netns:
    return pair.a



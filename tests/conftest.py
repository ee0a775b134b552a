"""Suite-wide guard: no test may change the host's own network configuration.

Tests create their own namespaces (or UML guests).  A bug in a fixture -- a
``setns`` that did not happen, a command run without ``ip netns exec`` --
would otherwise configure the machine the suite runs on.  Around every test,
the host's addresses and the ARP/forwarding sysctls kanotify manages are
snapshotted; a test that changed them is failed by name, and the change is
undone (only addresses from the documentation ranges that the test added are
removed; sysctls are written back).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

import pytest

_DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
_SYSCTL_ROOT = "/proc/sys/net/ipv4/conf"


def _addresses() -> set[tuple[str, str]]:
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        links = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return set()
    found = set()
    for link in links:
        for info in link.get("addr_info", ()):
            found.add((link.get("ifname", "?"), f"{info.get('local')}/{info.get('prefixlen')}"))
    return found


def _sysctls() -> dict[str, str]:
    values = {}
    for dev in ("all", "default", "lo"):
        for name in ("arp_ignore", "arp_announce"):
            path = os.path.join(_SYSCTL_ROOT, dev, name)
            try:
                with open(path) as fh:
                    values[path] = fh.read().strip()
            except OSError:
                pass
    return values


def _is_doc(address: str) -> bool:
    try:
        ip = ipaddress.ip_interface(address).ip
    except ValueError:
        return False
    return any(ip in net for net in _DOC_NETS)


@pytest.fixture(autouse=True)
def _host_network_untouched(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        yield
        return
    addresses, sysctls = _addresses(), _sysctls()
    yield
    added = _addresses() - addresses
    changed = {k: v for k, v in _sysctls().items() if sysctls.get(k) != v}
    for path in changed:
        with open(path, "w") as fh:
            fh.write(sysctls[path])
    for dev, address in added:
        if _is_doc(address):
            subprocess.run(["ip", "addr", "del", address, "dev", dev], capture_output=True, timeout=10)
    if added or changed:
        pytest.fail(
            f"{request.node.nodeid} changed the HOST's network configuration (undone): "
            f"addresses added {sorted(added)}, sysctls changed {sorted(changed)}",
            pytrace=False,
        )

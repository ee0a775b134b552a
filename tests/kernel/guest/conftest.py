"""Fixtures for the guest tests: a clean IPVS table per test, and a small LVS-DR LAN.

These run only inside the UML guest (see ``tests/kernel/conftest.py``); the
guest is a throwaway kernel, so flushing its IPVS table is safe.  The LAN lives
in network namespaces with the prefix ``kt-`` that are always removed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import Iterator

import pytest

from ipvs_guest_support import SERVER, Lan, run
from kanotify.backends.ipvs import IpvsBackend

if os.environ.get("KANOTIFY_IN_GUEST") != "1":  # pragma: no cover - guarded by the parent conftest
    raise RuntimeError("tests/kernel/guest runs only inside the UML guest (KANOTIFY_IN_GUEST=1)")


@pytest.fixture
def ipvs() -> Iterator[IpvsBackend]:
    """kanotify's IPVS backend on an empty IPVS table (the guest's root namespace)."""
    run(["ipvsadm", "-C"])
    backend = IpvsBackend()
    try:
        yield backend
    finally:
        backend.close()
        run(["ipvsadm", "-C"])


@pytest.fixture
def lan() -> Iterator[Lan]:
    """The LVS-DR LAN of :class:`Lan`; namespaces, bridge and servers are always removed."""
    tag = secrets.token_hex(2)
    names = {role: f"kt-{tag}-{role}" for role in ("dir", "cl", "rs1", "rs2")}
    bridge = f"kt{tag}br"
    servers: list[subprocess.Popen[bytes]] = []
    made: list[str] = []
    host_ends: list[str] = []
    try:
        run(["ip", "link", "add", bridge, "type", "bridge"])
        run(["ip", "link", "set", bridge, "addrgenmode", "none"])
        run(["ip", "link", "set", bridge, "up"])
        addresses = {"dir": "192.0.2.1", "cl": "192.0.2.10", "rs1": "192.0.2.21", "rs2": "192.0.2.22"}
        for role, ns in names.items():
            run(["ip", "netns", "add", ns])
            made.append(ns)
            host_end = f"kt{tag}{role}"
            run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns])
            host_ends.append(host_end)
            # A bridge port needs no address: no IPv6 link-local on the root namespace's side.
            run(["ip", "link", "set", host_end, "addrgenmode", "none"])
            run(["ip", "link", "set", host_end, "master", bridge, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{addresses[role]}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", names["dir"], "addr", "add", "192.0.2.100/32", "dev", "eth0"])
        for role in ("rs1", "rs2"):
            ns = names[role]
            for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
                run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv4.conf.all.{key}={value}"])
            run(["ip", "-n", ns, "addr", "add", "192.0.2.100/32", "dev", "lo"])
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, role],
                stdout=subprocess.PIPE,
            )
            servers.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", f"server in {ns}"
        yield Lan(names["dir"], names["cl"], names["rs1"], names["rs2"], bridge)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        # Deleting a namespace removes its veth pairs only later (asynchronously):
        # delete the root namespace's ends ourselves, now.
        for dev in host_ends:
            subprocess.run(["ip", "link", "del", dev], capture_output=True)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)

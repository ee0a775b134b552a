"""Fixtures for the guest tests: a clean IPVS table per test, and a small LVS-DR LAN.

These run only inside the UML guest (see ``tests/kernel/conftest.py``); the
guest is a throwaway kernel, so flushing its IPVS table is safe.  The LAN lives
in network namespaces with the prefix ``kt-`` that are always removed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from typing import Iterator

import pytest

from ipvs_guest_support import Lan, add_bridge, add_bridged_namespace, dr_real_server, run, start_server
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
        add_bridge(bridge)
        addresses = {"dir": "192.0.2.1", "cl": "192.0.2.10", "rs1": "192.0.2.21", "rs2": "192.0.2.22"}
        for role, ns in names.items():
            add_bridged_namespace(ns, f"kt{tag}{role}", bridge, addresses[role], made, host_ends)
        run(["ip", "-n", names["dir"], "addr", "add", "192.0.2.100/32", "dev", "eth0"])
        for role in ("rs1", "rs2"):
            dr_real_server(names[role], "192.0.2.100")
            start_server(names[role], role, servers)
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

"""Helpers for the netns tests: namespaces, running code inside them, packet capture.

Network namespaces for tests that must see what the kernel really does.

Each test gets namespaces it creates itself (names ``kt3-<random>-...``), joined
by a veth pair whose ends are both called ``eth0``; they are deleted in the
fixture finalizer even when the test fails.  Nothing is configured on the
host's own interfaces: the veth is created inside the first namespace with its
peer placed directly into the second one.

``Netns.run(fn, ...)`` runs Python code *inside* a namespace: it forks, the
child ``setns()``-es into the namespace and calls ``fn``; the return value or
exception comes back through a pipe.  Net sysctls and rtnetlink follow the
namespace of the calling process, so the backends under test act on the
namespace without knowing about it.

These tests need root, ``ip`` (iproute2) and veth support; missing
prerequisites fail loudly instead of skipping.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from nstools import process_gone, run_cmd, run_in_netns  # noqa: E402,F401  (shared)

PREFIX = "kt3-"

def require_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/netns need root (network namespaces, raw sockets); run them as root")
    if shutil.which("ip") is None:
        pytest.fail("tests/netns need the `ip` command (apt-get install iproute2)")


@dataclass
class Netns:
    """One network namespace created by a test."""

    name: str

    def ip(self, *args: str, check: bool = True) -> str:
        """``ip -n NAME ARGS``; stdout."""
        return run_cmd(["ip", "-n", self.name, *args], check=check).stdout

    def ip_json(self, *args: str) -> Any:
        """``ip -n NAME -j ARGS`` parsed."""
        return json.loads(self.ip("-j", *args) or "[]")

    def exec(self, *cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        """``ip netns exec NAME CMD`` (a fresh process inside the namespace)."""
        return run_cmd(["ip", "netns", "exec", self.name, *cmd], check=check, **kw)

    def sysctl(self, relpath: str) -> str:
        """Read ``/proc/sys/RELPATH`` from a process inside the namespace."""
        return self.exec("cat", f"/proc/sys/{relpath}").stdout.strip()

    def set_sysctls(self, values: dict[str, object]) -> None:
        """Write sysctls (dotted keys, no dotted interface names) from a shell inside the namespace."""
        script = "; ".join(
            f"echo {value} > /proc/sys/{key.replace('.', '/')}" for key, value in values.items()
        )
        self.exec("sh", "-ec", script)

    def addresses(self, dev: str) -> list[dict[str, Any]]:
        """``addr_info`` of ``dev`` as ``ip -j addr`` shows it."""
        data = self.ip_json("addr", "show", "dev", dev)
        return data[0]["addr_info"] if data else []

    def mac(self, dev: str = "eth0") -> str:
        return self.ip_json("link", "show", "dev", dev)[0]["address"]

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket created inside the namespace (it stays there), usable from the test process."""
        return socket_in_netns(self.name, family, kind, proto)

    def run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Call ``fn(*args, **kw)`` in a forked child that has joined this namespace."""
        return run_in_netns(self.name, fn, *args, **kw)


def socket_in_netns(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """Create a socket in netns ``name`` (a socket keeps the namespace it was created in)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent, child:

        def make() -> None:
            sock = socket.socket(family, kind, proto)
            socket.send_fds(child, [b"x"], [sock.fileno()])

        run_in_netns(name, make)
        _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    return socket.socket(fileno=fds[0])


def ethertype_socket(ns: "Netns", ethertype: int, dev: str = "eth0") -> socket.socket:
    """An AF_PACKET socket in ``ns`` that sees (and can send) frames of ``ethertype`` on ``dev``."""
    sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
    sock.bind((dev, ethertype))
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    """Every frame already queued on ``sock``, without waiting."""
    frames = []
    sock.setblocking(False)
    try:
        while True:
            frames.append(sock.recv(65536))
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return frames


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Pair:
    """Two namespaces on one veth link: ``a`` (the node under test) and ``b`` (its LAN peer)."""

    a: Netns
    b: Netns
    prefix: str


def kanotify_script() -> str:
    """The ``kanotify`` console script of the running interpreter's environment."""
    path = os.path.join(os.path.dirname(sys.executable), "kanotify")
    if not os.path.exists(path):
        pytest.fail(f"no kanotify script next to {sys.executable}: pip install -e . in this environment")
    return path


def recv_until(sock: socket.socket, accept: Callable[[bytes], bool], timeout: float = 5.0) -> bytes | None:
    """Read frames from ``sock`` until one satisfies ``accept``; ``None`` after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return None
        frame = sock.recv(65536)
        if accept(frame):
            return frame

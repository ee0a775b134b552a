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

import ctypes
import json
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import pytest

CLONE_NEWNET = 0x40000000
PREFIX = "kt3-"
CHILD_TIMEOUT = 60.0

def require_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/netns need root (network namespaces, raw sockets); run them as root")
    if shutil.which("ip") is None:
        pytest.fail("tests/netns need the `ip` command (apt-get install iproute2)")


def run_cmd(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


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


def run_in_netns(name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Fork, ``setns`` into ``/run/netns/NAME``, run ``fn``; return its result or raise its exception."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_fd)
            try:
                fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({name}): {os.strerror(err)}")
                os.close(fd)
                payload = ("ok", fn(*args, **kw), None)
            except BaseException as exc:  # noqa: BLE001 - shipped to the parent
                payload = ("err", exc, traceback.format_exc())
            try:
                data = pickle.dumps(payload)
            except Exception as exc:  # noqa: BLE001
                data = pickle.dumps(("err", RuntimeError(f"unpicklable result: {exc!r}"), traceback.format_exc()))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    try:
        with os.fdopen(read_fd, "rb") as src:
            while True:
                ready, _, _ = select.select([src], [], [], CHILD_TIMEOUT)
                if not ready:
                    os.kill(pid, signal.SIGKILL)
                    raise AssertionError(f"code running in netns {name} did not finish in {CHILD_TIMEOUT}s")
                chunk = src.read1(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError(f"code running in netns {name} died without a result")
    kind, value, tb = pickle.loads(b"".join(chunks))
    if kind == "err":
        if tb:
            value.add_note(f"--- raised inside netns {name}:\n{tb}")
        raise value
    return value


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


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for a non-reaping init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


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

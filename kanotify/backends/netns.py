"""Run a call inside a named network namespace, without moving the rest of the process.

``setns(2)`` switches only the calling thread, and what a thread opens while
it is switched -- a netlink socket, a ``/proc/sys/net`` file -- keeps that
namespace.  :func:`call_in` therefore runs the call in a short-lived thread
that joins the namespace and ends: the caller's thread never changes
namespace, so nothing has to be switched back.  Python 3.11 has no
``os.setns``; libc's is called through ctypes.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

from ..errors import ApplyError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def namespace_path(netns: str) -> str:
    """``ip netns`` name or a path (``/proc/PID/ns/net``) -> the file to ``setns`` to."""
    return netns if "/" in netns else f"/run/netns/{netns}"


def _join(netns: str) -> None:
    import ctypes  # only tests and multi-namespace setups come here

    try:
        fd = os.open(namespace_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ApplyError(f"network namespace {netns}: {exc.strerror}", exc.errno) from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise ApplyError(f"network namespace {netns}: setns: {os.strerror(code)}", code)
    finally:
        os.close(fd)


def call_in(netns: str | None, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``, inside network namespace ``netns`` (here when it is ``None``)."""
    if netns is None:
        return fn(*args)
    box: dict[str, object] = {}

    def run() -> None:
        try:
            _join(netns)
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="kanotify-netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


__all__ = ["call_in", "namespace_path"]

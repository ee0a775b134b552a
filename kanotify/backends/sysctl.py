"""Kernel parameters under ``/proc/sys``: read, write, verify by read-back.

Plain file I/O, no pyroute2: a run that only re-asserts the ARP policy stays
cheap.  Net sysctls are per network namespace; ``/proc/sys/net`` shows the
namespace of the process that opens the file, so this backend acts on the
namespace it runs in.

Keys are written as sysctl(8) writes them: dots between components, and a
``/`` inside a component stands for a dot in an interface name
(``net.ipv4.conf.eth0/100.arp_ignore`` is ``conf/eth0.100/arp_ignore``).  A key
whose first separator is ``/`` is taken as a path, also as sysctl(8) does.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Iterable

from ..actions import Action, SetSysctl
from ..errors import ApplyError
from ..model import normalize_sysctl
from .base import OneAtATime

_ARP_KEYS = ("arp_ignore", "arp_announce")
_PER_DEVICE = re.compile(r"^net\.ipv[46]\.(?:conf|neigh)\.([^.]+)\.")


def key_to_relpath(key: str) -> str:
    """``net.ipv4.conf.eth0/100.arp_ignore`` -> ``net/ipv4/conf/eth0.100/arp_ignore``."""
    key = key.strip()
    dot, slash = key.find("."), key.find("/")
    if slash != -1 and (dot == -1 or slash < dot):
        return key.strip("/")  # already a path: dots are literal
    return "/".join(part.replace("/", ".") for part in key.split("."))


class SysctlBackend(OneAtATime):
    """Reads and writes sysctls below ``root`` (``/proc/sys``; a tmp dir in tests)."""

    def __init__(self, root: str = "/proc/sys") -> None:
        self.root = root

    def path(self, key: str) -> str:
        """The file behind a sysctl key."""
        return os.path.join(self.root, key_to_relpath(key))

    # ------------------------------------------------------------------ observe

    def read(self, key: str) -> str | None:
        """The current value, whitespace-normalized; ``None`` if the key does not exist.

        ``"0"`` is a value like any other: only a missing file is ``None``.
        """
        try:
            with open(self.path(key), encoding="ascii", errors="replace") as fh:
                return normalize_sysctl(fh.read())
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise ApplyError(
                f"sysctl {key}: cannot read {self.path(key)}: {os.strerror(exc.errno or 0)}",
                exc.errno,
            ) from exc

    def read_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """:meth:`read` for each key, in one dict."""
        return {key: self.read(key) for key in keys}

    def effective_arp(self, interfaces: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """The ARP policy the kernel applies per interface: ``max(conf/all, conf/IFACE)``.

        The kernel takes the maximum for both ``arp_ignore`` and
        ``arp_announce`` (``IN_DEV_MAXCONF``), so the interface's own value is
        not what counts when ``all`` is higher.  ``interfaces=None`` means every
        interface of this namespace; a named interface that does not exist is
        left out of the result.
        """
        conf = os.path.join(self.root, "net", "ipv4", "conf")
        if interfaces is None:
            try:
                names = sorted(n for n in os.listdir(conf) if n not in ("all", "default"))
            except FileNotFoundError:
                names = []
        else:
            names = list(interfaces)
        base = {name: self._int(os.path.join(conf, "all", name)) for name in _ARP_KEYS}
        result: dict[str, dict[str, int]] = {}
        for iface in names:
            values = {}
            for name in _ARP_KEYS:
                own = self._int(os.path.join(conf, iface, name))
                if own is None:
                    break
                values[name] = max(own, base[name] or 0)
            else:
                result[iface] = values
        return result

    @staticmethod
    def _int(path: str) -> int | None:
        try:
            with open(path, encoding="ascii") as fh:
                return int(fh.read().strip())
        except (FileNotFoundError, NotADirectoryError):
            return None

    # ------------------------------------------------------------------ apply

    def apply(self, action: Action) -> None:
        """Write a :class:`SetSysctl`, then read it back and compare."""
        if not isinstance(action, SetSysctl):
            raise ApplyError(f"the sysctl backend cannot apply {type(action).__name__}: {action}")
        key, value = action.key, str(action.value)
        path = self.path(key)
        if not os.path.exists(path):
            raise ApplyError(f"sysctl {key} does not exist ({_missing_hint(key)})", errno.ENOENT)
        try:
            # One write(2) of the whole value, newline-terminated, as sysctl(8) does.
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, (value.strip() + "\n").encode())
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise ApplyError(
                f"sysctl {key} does not exist ({_missing_hint(key)})", errno.ENOENT
            ) from None
        except OSError as exc:
            code = exc.errno or 0
            reason = os.strerror(code)
            if code == errno.EINVAL:
                reason += " (value out of range or malformed for this key)"
            elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
                reason += " (needs root; /proc/sys read-only in a container?)"
            raise ApplyError(f"sysctl {key}: cannot set {value!r}: {reason}", code) from exc
        got = self.read(key)
        if got is None or got != normalize_sysctl(value):
            raise ApplyError(
                f"sysctl {key}: wrote {normalize_sysctl(value)!r} but it reads back "
                f"{'nothing' if got is None else repr(got)} (the kernel rejected or rewrote it)",
                errno.EIO,
            )

    def close(self) -> None:
        """Nothing to release: every access opens and closes its file."""


def _missing_hint(key: str) -> str:
    match = _PER_DEVICE.match(key)
    if match:
        iface = match.group(1).replace("/", ".")
        return f"typo, or interface {iface} absent"
    return "typo, or the kernel module that provides it is not loaded"


__all__ = ["SysctlBackend", "key_to_relpath"]

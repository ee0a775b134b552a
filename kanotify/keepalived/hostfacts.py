"""What ``kanotify doctor`` reads from this host: sysctls, interfaces, addresses, IPVS, ``keepalived -t``.

:class:`Host` is the seam the checks see (:mod:`kanotify.keepalived.doctor`);
:class:`SystemHost` is the real host, as seen from the network namespace of the
running process.  Everything that touches the system goes through kanotify's
backends where one exists: sysctls through
:class:`~kanotify.backends.sysctl.SysctlBackend`, addresses through the
rtnetlink messages of :mod:`kanotify.backends.rtaddr` (the address backend's
own); the rest is ``/proc``, ``/lib/modules`` and the ``keepalived`` binary.
Unit tests pass a fake host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Protocol

from ..model import IPInterface


class Host(Protocol):
    """What the doctor reads from the host (the real one: :class:`SystemHost`)."""

    def sysctl(self, key: str) -> str | None: ...

    def interfaces(self) -> list[str]: ...

    def addresses(self, dev: str) -> list[IPInterface]: ...

    def ipvs(self) -> tuple[str, str]: ...  # ("loaded" | "loadable" | "missing", detail)

    def keepalived_test(self, path: str, config_id: str | None) -> tuple[int, list[str]] | None: ...


class SystemHost:
    """This host, as seen from the network namespace of the running process."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc

    def sysctl(self, key: str) -> str | None:
        from ..backends.sysctl import SysctlBackend
        from ..errors import ApplyError

        try:
            return SysctlBackend(os.path.join(self.proc, "sys")).read(key)
        except ApplyError:
            return None

    def interfaces(self) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.proc, "sys/net/ipv4/conf"))
        except OSError:
            return []
        return sorted(n for n in names if n not in ("all", "default"))

    def addresses(self, dev: str) -> list[IPInterface]:
        """Every address on ``dev`` (none when it does not exist): one rtnetlink dump in kanotify's own messages."""
        from ..backends.netlink import framing as nl
        from ..backends.netlink import rtaddr
        from ..backends.netlink.nlsock import NetlinkSocket

        try:
            index = socket.if_nametoindex(dev)
        except OSError:
            return []
        sock = NetlinkSocket(nl.NETLINK_ROUTE, "rtnetlink")
        try:
            seq = sock.next_seq()
            replies = sock.request(rtaddr.getaddr_request(socket.AF_UNSPEC, seq, index), seq)
        finally:
            sock.close()
        found = (rtaddr.decode(msg.payload) for msg in replies if msg.type == rtaddr.RTM_NEWADDR)
        # a kernel without strict dump checks (< 4.20) sends every device's addresses
        return [address.interface for address in found if address is not None and address.index == index]

    def ipvs(self) -> tuple[str, str]:
        if os.path.exists(os.path.join(self.proc, "net/ip_vs")):
            return "loaded", "the ip_vs module is loaded (/proc/net/ip_vs)"
        release = os.uname().release
        for name in ("modules.builtin", "modules.dep"):
            path = f"/lib/modules/{release}/{name}"
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        entry = line.split(":", 1)[0].strip()
                        if os.path.basename(entry).split(".ko", 1)[0] == "ip_vs":
                            return "loadable", f"ip_vs is available ({path}) but not loaded"
            except OSError:
                continue
        return "missing", f"kernel {release} has no ip_vs (not loaded, not in /lib/modules/{release})"

    def keepalived_test(self, path: str, config_id: str | None) -> tuple[int, list[str]] | None:
        binary = shutil.which("keepalived") or next(
            (p for p in ("/usr/sbin/keepalived", "/sbin/keepalived") if os.path.exists(p)), None)
        if binary is None:
            return None
        argv = [binary, "-t", "-f", os.path.abspath(path)] + (["-i", config_id] if config_id else [])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, ["keepalived -t did not finish in 30 s"]
        lines: list[str] = []
        for line in (done.stdout + done.stderr).splitlines():  # every process prints its own copy
            if line.strip() and line not in lines:
                lines.append(line.strip())
        return done.returncode, lines

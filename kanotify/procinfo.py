"""Where this process stands in keepalived's order, read with nothing but ``os``.

Free of imports on purpose: the STOP fast path (``__main__``) reads it before
it forks its detached worker, and every millisecond spent importing before
that fork is a millisecond in which keepalived's SIGKILL can still land.
:mod:`kanotify.store` wraps the fields in a :class:`~kanotify.store.Ticket`.
"""

from __future__ import annotations

import os
import time


def ticket_fields(pid: int | None = None) -> tuple[str, int, int]:
    """``(boot id, start time in clock ticks, pid)`` of this process (or ``pid``)."""
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        # field 22 (starttime); the command name (field 2) may contain spaces and parens
        start_ticks = int(raw[raw.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        start_ticks = time.monotonic_ns() // 10_000_000
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot_id = fh.read().strip()
    except OSError:
        boot_id = "unknown"
    return boot_id, start_ticks, pid

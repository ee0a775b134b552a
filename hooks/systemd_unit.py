"""Run a systemd unit on the MASTER only: started there, stopped in every other state.

For services that must run on exactly one director at a time: a cron-like
job, a singleton consumer, an HAProxy bound to the VIP without
``ip_nonlocal_bind``.  On MASTER: ``systemctl start UNIT``; on BACKUP, FAULT and
STOP: ``systemctl stop UNIT``.  It runs after the built-in steps, so the VIP is
already bound when the unit starts, and already gone when it stops.

Every run converges the unit (a ``reconcile`` timer stops a unit someone
started by hand on the backup): the plugin asks ``systemctl is-active`` first
(a read, also in dry-run) and plans a start/stop only when the unit is not
already where it should be; otherwise the journal shows a no-op such as
"[systemd_unit] haproxy.service already active".

Install: copy to ``/etc/kanotify/hooks.d/systemd_unit.py`` (root-owned, 0644).
Config::

    [hooks.systemd_unit]
    unit = "haproxy.service"          # or units = ["a.service", "b.timer"]
    instance = "VI_1"                 # needed when the config has several
    systemctl = "/usr/bin/systemctl"  # optional
    required = false                  # true: a failed start fails the run before anything is applied

The unit must be disabled at boot (``systemctl disable UNIT``), or both
nodes start it when they boot.
"""

from __future__ import annotations

import re
import subprocess
from kanotify.plugin import HookAction, Noop, Options, RunContext, State, command_action, remaining_time, watched_instance

NAME = "systemd_unit"
DEFAULT_SYSTEMCTL = "/usr/bin/systemctl"
_UNIT_RE = re.compile(r"[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*\Z")  # never starts with "-": not an option
#: ``systemctl is-active`` answers that need no start / no stop
RUNNING = ("active", "activating", "reloading")
STOPPED = ("inactive", "failed")


def units(options: Options) -> list[str]:
    """The configured unit names, validated."""
    value = options.get("units", options.get("unit"))
    names = [value] if isinstance(value, str) else value
    if not names or not isinstance(names, list):
        raise ValueError("option 'unit' (a unit name) or 'units' (a list) is required")
    result: list[str] = []
    for unit in names:
        if not isinstance(unit, str) or not _UNIT_RE.match(unit):
            raise ValueError(f"not a systemd unit name: {unit!r}")
        result.append(unit)
    return result


def is_active(systemctl: str, unit: str) -> str:
    """``systemctl is-active UNIT``'s answer ("active", "inactive", ...), or "unknown"."""
    try:
        done = subprocess.run(
            [systemctl, "is-active", unit], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=remaining_time(5.0), check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or "").strip().splitlines()[0] if (done.stdout or "").strip() else "unknown"


def kanotify_before_transition(ctx: RunContext, options: Options) -> list[HookAction | Noop]:
    """Start the units when the watched instance is MASTER, stop them otherwise."""
    name = watched_instance(ctx, options)
    if name is None:
        return []
    systemctl = str(options.get("systemctl", DEFAULT_SYSTEMCTL))
    start = ctx.to_states[name] is State.MASTER
    verb, done_states, done_word = ("start", RUNNING, "active") if start else ("stop", STOPPED, "inactive")
    actions: list[HookAction | Noop] = []
    for unit in units(options):
        current = is_active(systemctl, unit)
        if current in done_states:
            actions.append(Noop(f"{unit} already {done_word}"))
        else:
            argv = [systemctl, verb, unit]
            actions.append(command_action(NAME, argv, f"{' '.join(argv)} (was {current})"))
    return actions

"""conntrackd primary/backup state handover, as a kanotify hook.

A stateful firewall or NAT director pair runs conntrackd to replicate the
kernel's connection-tracking table; on failover the new master must take the
replicated entries over, or established connections break.  This is what
conntrack-tools' sample ``doc/sync/primary-backup.sh`` does from keepalived's
notify scripts, with the same commands in the same order:

===========  ==================================================================
MASTER       ``conntrackd -c`` commit the external cache into the kernel table
             ``conntrackd -f`` flush the internal and external caches
             ``conntrackd -R`` resync the internal cache with the kernel table
             ``conntrackd -B`` send a bulk update to the backups
BACKUP       ``conntrackd -t`` shorten kernel conntrack timers (zombie entries)
             ``conntrackd -n`` request a resync from the master
FAULT        ``conntrackd -t``
STOP         nothing (the sample does nothing either)
===========  ==================================================================

each run as ``conntrackd -C CONFIG FLAG`` (an argv list, no shell).  They are
returned as hook actions, so ``kanotify plan`` and the journal show each command;
they run after the VIPs moved, one failing does not stop the next (the sample
logs and goes on too).  Unlike the sample, the BACKUP step does not start a
conntrackd that is not running (``conntrackd -s`` / ``-d``): run conntrackd
under systemd with ``Restart=on-failure`` instead.

The commands run only when the instance's state *changes* (the recorded
state differs, or none was recorded): a ``reconcile`` timer, or keepalived
repeating a notification, must not flush conntrackd's caches every time.

Install: copy to ``/etc/kanotify/hooks.d/conntrackd.py`` (root-owned, mode 0644).
Config (every key optional)::

    [hooks.conntrackd]
    instance = "VI_1"                          # needed when the config has several
    conntrackd = "/usr/sbin/conntrackd"
    config = "/etc/conntrackd/conntrackd.conf"
    timeout = 10                               # seconds per command (kanotify's key)
"""

from __future__ import annotations

from kanotify.plugin import HookAction, Options, RunContext, command_action, watched_instance

NAME = "conntrackd"
DEFAULT_BINARY = "/usr/sbin/conntrackd"
DEFAULT_CONFIG = "/etc/conntrackd/conntrackd.conf"

#: state -> (flag, why), in primary-backup.sh's order
STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "master": (
        ("-c", "commit the external cache into the kernel table"),
        ("-f", "flush the internal and external caches"),
        ("-R", "resync the internal cache with the kernel table"),
        ("-B", "send a bulk update to the backups"),
    ),
    "backup": (
        ("-t", "shorten kernel conntrack timers to remove zombie entries"),
        ("-n", "request a resync from the master"),
    ),
    "fault": (
        ("-t", "shorten kernel conntrack timers to remove zombie entries"),
    ),
    "stop": (),
}


def commands(state: str, options: Options) -> list[list[str]]:
    """The argv lists for entering ``state``, in order."""
    binary = str(options.get("conntrackd", DEFAULT_BINARY))
    config = str(options.get("config", DEFAULT_CONFIG))
    return [[binary, "-C", config, flag] for flag, _ in STEPS[state]]


def kanotify_before_transition(ctx: RunContext, options: Options) -> list[HookAction]:
    """The handover commands when the watched instance changes state; nothing otherwise."""
    name = watched_instance(ctx, options)
    if name is None:
        return []
    before, after = ctx.from_states.get(name), ctx.to_states[name]
    if before == after:
        return []
    steps = STEPS[after.value]
    return [
        command_action(NAME, argv, f"{' '.join(argv)} ({why})")
        for argv, (_, why) in zip(commands(after.value, options), steps)
    ]

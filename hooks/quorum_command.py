"""keepalived's ``quorum_up`` / ``quorum_down`` scripts, as a kanotify hook.

keepalived runs a virtual server's ``quorum_up`` script when the sum of the
weights of its alive real servers reaches ``quorum + hysteresis`` again, and
``quorum_down`` when it falls below ``quorum - hysteresis`` (``ipwrapper.c``,
``do_vs_notifies``).  ``kanotify listen`` keeps the same quorum and calls the
hooks ``kanotify_quorum_up`` / ``kanotify_quorum_down``; this plugin runs the
command configured for the service, as an argv list (no shell: keepalived
splits the script line and calls ``execve`` too, with no argument of its own),
with the service (``tcp 192.0.2.100:80``) in the environment as
``KANOTIFY_SERVICE``.

The command runs after the run's actions were applied (the VIPs of a service
that lost its quorum are unbound by then, with ``quorum_withdraw``), bounded
by the plugin's timeout; a failure is recorded in the health run's journal
line.  ``kanotify import`` proposes these lines for keepalived's scripts.

Install: copy to ``/etc/kanotify/hooks.d/quorum_command.py`` (root-owned, mode 0644).
Config::

    [hooks.quorum_command]
    up = ["/usr/local/sbin/lb-announce", "up"]        # every service's quorum up (optional)
    down = ["/usr/local/sbin/lb-announce", "down"]    # every service's quorum down (optional)
    timeout = 10                                      # kanotify's key: seconds per call

    [hooks.quorum_command.per_service."tcp 192.0.2.100:80"]   # this service's own (instead)
    down = ["/etc/keepalived/web-down.sh"]
"""

from __future__ import annotations

import os
import subprocess

from kanotify.plugin import Options, RunContext, remaining_time

NAME = "quorum_command"


def _argv(options: Options, key: str) -> list[str] | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(w, str) and w for w in value):
        raise ValueError(f"[hooks.{NAME}] {key}: expected an array of strings (a program and its arguments), "
                         f"got {value!r}")
    if not os.path.isabs(value[0]):
        raise ValueError(f"[hooks.{NAME}] {key}: expected an absolute program path, got {value[0]!r}")
    return list(value)


def _commands(options: Options, service: str) -> Options:
    per = options.get("per_service")
    if per is None:
        return options
    if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
        raise ValueError(f"[hooks.{NAME}] per_service: expected a table of tables, one per service, got {per!r}")
    own = per.get(service)
    return own if own is not None else options


def _run(ctx: RunContext, service: str, options: Options, key: str) -> None:
    argv = _argv(_commands(options, service), key)
    if argv is None:
        return
    done = subprocess.run(argv, env={**os.environ, "KANOTIFY_SERVICE": service}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, check=False, timeout=remaining_time(30.0))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} (quorum {key} of {service}): exit status {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[:200]}")
    ctx.logger.info("%s: quorum %s of %s: ran %s", NAME, key, service, argv[0])


def kanotify_quorum_up(ctx: RunContext, service: str, options: Options) -> None:
    _run(ctx, service, options, "up")


def kanotify_quorum_down(ctx: RunContext, service: str, options: Options) -> None:
    _run(ctx, service, options, "down")

"""keepalived's ``quorum_up`` / ``quorum_down`` scripts, as a kanotify hook.

keepalived runs a virtual server's ``quorum_up`` script when the sum of the
weights of its alive real servers reaches ``quorum + hysteresis`` again, and
``quorum_down`` when it falls below ``quorum - hysteresis`` (``ipwrapper.c``,
``do_vs_notifies``).  ``kanotify listen`` keeps the same quorum and calls the
hooks ``kanotify_quorum_up`` / ``kanotify_quorum_down``; this plugin runs the
command configured for the service, as an argv list (no shell: keepalived
splits the script line and calls ``execve`` too), with the service appended as
its last argument (``tcp 192.0.2.100:80``) and in ``KANOTIFY_SERVICE``.

The command runs after the run's actions were applied (the VIPs of a service
that lost its quorum are unbound by then, when the config gives ``quorum``),
bounded by the plugin's timeout; a failure is recorded in the health run's
journal line.

Install: copy to ``/etc/kanotify/hooks.d/quorum_command.py`` (root-owned, mode 0644).
Config::

    [hooks.quorum_command]
    up = ["/usr/local/sbin/lb-announce", "up"]        # run on quorum up (optional)
    down = ["/usr/local/sbin/lb-announce", "down"]    # run on quorum down (optional)
    services = ["tcp 192.0.2.100:80"]                 # only these (default: every service)
    timeout = 10                                      # kanotify's key: seconds per call
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


def _run(ctx: RunContext, service: str, options: Options, key: str) -> None:
    argv = _argv(options, key)
    wanted = options.get("services")
    if argv is None or (isinstance(wanted, list) and service not in wanted):
        return
    done = subprocess.run([*argv, service], env={**os.environ, "KANOTIFY_SERVICE": service},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                          timeout=remaining_time(30.0))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} {service!r}: exit status {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[:200]}")
    ctx.logger.info("%s: quorum %s of %s: ran %s", NAME, key, service, argv[0])


def kanotify_quorum_up(ctx: RunContext, service: str, options: Options) -> None:
    _run(ctx, service, options, "up")


def kanotify_quorum_down(ctx: RunContext, service: str, options: Options) -> None:
    _run(ctx, service, options, "down")

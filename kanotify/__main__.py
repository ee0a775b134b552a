"""Entry point: ``kanotify`` (the shell launcher ``bin/kanotify``) and ``python -m kanotify``.

Kept tiny on purpose, because of keepalived's STOP notifications: keepalived
ends the process group of a STOP script about one second after starting it
(keepalived 2.2.7 sends SIGTERM, as tests/e2e measured; the docs speak of
SIGKILL), and on a loaded host the interpreter alone needs longer than that
to start -- leaving a director that keeps its VIP after keepalived stopped,
i.e. a duplicate VIP on the LAN.  So the ``kanotify`` command keepalived runs
is a shell launcher (``bin/kanotify``): for a STOP it leaves keepalived's
process group (``setsid --fork --wait``) before the interpreter starts, reads
the notification's ticket (its place in keepalived's order) while the
original process still exists, and hands both over here through
``KANOTIFY_LAUNCHED=detached`` and ``KANOTIFY_TICKET``.

Started any other way (``python -m kanotify``, an old console-script
wrapper), a STOP notification (``kanotify stop`` or ``kanotify notify ...
STOP|DELETED``) still forks here, before any heavy import: the child leaves
keepalived's process group (``setsid``) and does the work under the usual
lock; the parent waits for it and passes its exit code on.  Until the worker
has left the group, the parent ignores SIGTERM/SIGINT/SIGHUP.  That is only
as fast as the interpreter's start-up, hence the launcher.

When a listener (``kanotify listen``) runs, the one-shot commands it does
(:data:`kanotify.daemon.control.HANDED_OVER`) are handed to it first, through a path
that imports neither pyroute2 nor typer nor the config machinery: a STOP
handed over needs no fork, the listener finishes it even if keepalived kills
this process.  A listener that does not answer within ``lock_timeout`` is
given up on and the work is done here, under the same lock and ticket, with a
note in the journal line.
"""

from __future__ import annotations

import gc
import os
import signal
import sys

from .options import command_words, split

#: what keepalived sends a STOP script's process group when it stops waiting for it
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _is_stop_notification(argv: list[str]) -> bool:
    words = command_words(argv)  # the option table knows which options take a value
    if not words:
        return False
    if words[0].lower() == "stop":
        return True
    return words[0].lower() == "notify" and len(words) == 5 and words[3].upper() in ("STOP", "DELETED")


def _launcher_ticket() -> tuple[str, int, int] | None:
    """The ticket ``bin/kanotify`` read before it detached (``"START_TICKS PID"``), or None."""
    raw = os.environ.pop("KANOTIFY_TICKET", "")
    if os.environ.pop("KANOTIFY_LAUNCHED", "") != "detached":
        return None
    from .procinfo import ticket_fields

    boot_id, _ticks, _pid = ticket_fields()
    try:
        start_ticks, pid = (int(word) for word in raw.split())
    except ValueError:  # no /proc when it detached: this process's own place is the next best
        return None
    return boot_id, start_ticks, pid


def _detach_and_wait() -> int | None:
    """Fork a worker in a new session.  Returns the exit code in the parent, None in the worker."""
    # Only os-level work before the fork: importing kanotify.store here would about
    # double the time in which keepalived's SIGKILL can still catch the whole job.
    from .procinfo import ticket_fields

    fields = ticket_fields()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()
        for signum in _STOP_SIGNALS:  # out of keepalived's process group: default handling again
            signal.signal(signum, signal.SIG_DFL)
        from .store import pin_ticket

        pin_ticket(fields)
        os.environ["KANOTIFY_STATUS_FD"] = str(write_end)
        return None
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    try:
        return int(data.strip() or b"1")
    except ValueError:
        return 1


def _hand_over(argv: list[str], stop: bool, ticket: tuple[str, int, int] | None) -> str | None:
    """Let a running listener do it: exits with its answer; else returns a note for the journal ("" if none)."""
    parsed = split(argv)
    if parsed is None:
        return ""
    found, words = parsed
    given = {option.dest: value if option.takes_value else True for option, value, _count in found}
    from .daemon.control import hand_over, wants_listener

    if not wants_listener(argv, words, bool(given.get("no_daemon")), bool(given.get("dry_run"))):
        return ""
    from .config.prescan import config_path
    from .procinfo import ticket_fields

    if stop:  # keepalived's SIGTERM must not end a STOP before the listener has it
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    given_config = given.get("config")
    answer = hand_over(argv, config_path(given_config if isinstance(given_config, str) else None),
                       ticket or ticket_fields())
    if answer.code is not None:
        sys.stdout.write(answer.stdout)
        sys.stderr.write(answer.stderr)
        sys.stdout.flush()
        sys.exit(answer.code)
    return answer.note


def main() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:  # without typer's start-up; the same line as kanotify.cli's --version
        from . import __version__

        sys.stdout.write(f"kanotify {__version__}\n")
        sys.exit(0)
    stop = _is_stop_notification(argv)
    detached = os.environ.get("KANOTIFY_LAUNCHED") == "detached"  # bin/kanotify left keepalived's group
    if detached:
        # A STOP releases this director's VIPs: it is finished whoever signals it.  Out of
        # keepalived's process group already, but systemd's stop of keepalived.service (its default
        # KillMode=control-group) signals every process of the unit's cgroup, this one included.
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    ticket = _launcher_ticket()
    note = _hand_over(argv, stop, ticket)
    if ticket is not None:
        from .store import pin_ticket

        pin_ticket(ticket)
    elif stop and not detached and os.environ.get("KANOTIFY_NO_DETACH") != "1":
        for signum in _STOP_SIGNALS:  # keepalived's SIGTERM must not end the job before the fork
            signal.signal(signum, signal.SIG_IGN)
        code = _detach_and_wait()
        if code is not None:
            sys.exit(code)
    from .commands import Session, run_fast

    session = Session.here(argv, (note,) if note else ())
    # A one-shot command (one run, then exit) without the cyclic GC: kanotify makes no
    # reference cycles worth collecting, and the collector would only walk the config's
    # tens of thousands of objects and the run's again and again (~25 ms of a 1000 x 10
    # sync natively).  The typer commands keep it: `kanotify listen` lives long.
    gc.disable()
    code = run_fast(argv, session)  # the keepalived forms, without importing typer
    if code is None:
        gc.enable()
        from .cli import run

        code = run(argv, session)
    status_fd = os.environ.pop("KANOTIFY_STATUS_FD", None)
    if status_fd is not None:
        try:
            os.write(int(status_fd), str(code).encode())
        except OSError:
            pass  # the parent was killed by keepalived; nobody is waiting
    sys.exit(code)


if __name__ == "__main__":
    main()

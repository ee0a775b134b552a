"""The transition journal: one whole JSON line per invocation, plus a syslog line.

keepalived runs notify scripts with stdio on ``/dev/null``, so a script that
only prints has logged nothing.  Every run appends one JSON object (the
keys are in docs/reliability.md and README.md) to ``settings.journal`` and, when ``/dev/log`` exists, one
human-readable line per transition to syslog (ident ``kanotify``, facility
daemon).

A line is always whole.  Appends are a single ``write()`` on an ``O_APPEND``
descriptor, made while holding the run lock.  A ``kill -9`` can still cut a
multi-page write short, so before appending the writer drops a trailing
partial line left by a killed run, and the reader ignores a last line that has
no newline yet.
"""

from __future__ import annotations

import json
import os
from collections import deque
from datetime import datetime, timezone
from typing import Any, Iterator

SYSLOG_SOCKET = "/dev/log"
_TAIL = 65536


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Journal:
    """Append-only JSON-lines file.  ``path`` may not exist yet."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line; repairs a torn last line first."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            _drop_partial_tail(fd)
            os.write(fd, line)
        finally:
            os.close(fd)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every whole, well-formed record, oldest first.

        Garbage is skipped: lines that are not JSON, JSON that is not an object,
        and objects whose known keys have the wrong type (so ``history`` and
        other readers can rely on the shapes :func:`well_formed` checks).
        """
        for line in self._lines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if well_formed(record):
                yield record

    def tail(self, n: int) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        return list(deque(self.records(), maxlen=n))

    def _lines(self) -> Iterator[str]:
        try:
            with open(self.path, "rb") as fh:
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        return  # a record still being written, or torn by kill -9
                    yield raw.decode("utf-8", "replace")
        except FileNotFoundError:
            return


_STR, _OPT_STR, _NUMBER = (str,), (str, type(None)), (int, float)
_RECORD_SHAPES: dict[str, tuple[type, ...]] = {
    "ts": _STR, "command": _STR, "outcome": _STR, "note": _STR,
    "instance": _OPT_STR, "from": _OPT_STR, "to": _OPT_STR,
    "trigger": (list,), "instances": (list,), "actions": (list,), "warnings": (list,), "verify": (list,),
    "dry_run": (bool,), "duration_ms": _NUMBER,
}
_ACTION_SHAPES: dict[str, tuple[type, ...]] = {
    "action": _STR, "status": _STR, "error": _OPT_STR, "errno": (int, type(None)),
}


def _shaped(obj: Any, shapes: dict[str, tuple[type, ...]]) -> bool:
    if not isinstance(obj, dict):
        return False
    for key, types in shapes.items():
        if key in obj:
            value = obj[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                return False
    return True


def well_formed(record: Any) -> bool:
    """A journal record whose known keys have the types kanotify writes."""
    if not _shaped(record, _RECORD_SHAPES):
        return False
    if not all(_shaped(a, _ACTION_SHAPES) for a in record.get("actions", ())):
        return False
    return all(_shaped(i, {"instance": _OPT_STR, "from": _OPT_STR, "to": _OPT_STR})
               for i in record.get("instances", ()))


def _drop_partial_tail(fd: int) -> None:
    """Truncate a last line that has no newline (left by a killed writer)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    if os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(0, size - _TAIL)
    chunk = os.pread(fd, size - start, start)
    cut = chunk.rfind(b"\n")
    if cut >= 0:
        os.ftruncate(fd, start + cut + 1)
    elif start == 0:
        os.ftruncate(fd, 0)
    else:  # a "line" longer than _TAIL with no newline: end it instead of searching further
        os.write(fd, b"\n")


def syslog_line(message: str, *, enabled: bool = True, error: bool = False) -> bool:
    """Send one line to syslog (ident ``kanotify``, facility daemon) if ``/dev/log`` exists.

    Written by hand rather than with the ``syslog`` module so the socket path
    can be pointed elsewhere in tests; the format is the classic BSD one that
    every syslog daemon and journald accept.  Returns whether it was sent.
    """
    if not enabled or not os.path.exists(SYSLOG_SOCKET):
        return False
    import socket

    priority = 3 * 8 + (3 if error else 5)  # facility daemon; severity err or notice
    data = f"<{priority}>kanotify[{os.getpid()}]: {message}".encode("utf-8", "replace")[:8192]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.connect(SYSLOG_SOCKET)
            sock.send(data)
    except OSError:
        return False
    return True


def outcome_text(record: dict[str, Any]) -> str:
    """The outcome as an operator reads it: ``converged``, or for a dry-run what is pending.

    A dry-run's journal outcome is ``converged`` when planning worked, which
    says nothing about the host: the text says what the plan would do instead.
    """
    outcome = str(record.get("outcome", "?"))
    if not record.get("dry_run"):
        return outcome
    if outcome != "converged":
        return f"dry-run {outcome}"
    pending = sum(1 for a in record.get("actions", ()) if isinstance(a, dict) and a.get("status") == "pending")
    return f"dry-run: {pending} change(s) pending, nothing changed" if pending else "dry-run: nothing to do"


def summary_line(record: dict[str, Any]) -> str:
    """``VI_1 backup -> master: converged (3 applied, 5 noop) in 41 ms``"""
    counts: dict[str, int] = {}
    for action in record.get("actions", ()):
        status = action.get("status", "?") if isinstance(action, dict) else "?"
        counts[status] = counts.get(status, 0) + 1
    who = record.get("instance") or ",".join(i.get("instance", "?") for i in record.get("instances", ())) or "-"
    move = f"{record.get('from') or '-'} -> {record.get('to') or '-'}"
    parts = ", ".join(f"{counts[k]} {k}" for k in ("applied", "failed", "skipped", "noop") if counts.get(k))
    text = f"{who} {move}: {outcome_text(record)}"
    if parts:
        text += f" ({parts})"
    text += f" in {record.get('duration_ms', 0):.0f} ms"
    for action in record.get("actions", ()):
        if isinstance(action, dict) and action.get("status") == "failed":
            text += f"; FAILED {action.get('action')}: {action.get('error')}"
    if record.get("note"):
        text += f"; {record['note']}"
    return text

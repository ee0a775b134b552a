"""The transition journal: one whole JSON line per invocation, plus a syslog line.

keepalived runs notify scripts with stdio on ``/dev/null``, so a script that
only prints has logged nothing.  Every run appends one JSON object (the
keys are in docs/reliability.md and README.md) to ``settings.journal`` and, when ``/dev/log`` exists, one
human-readable line per transition to syslog (ident ``kanotify``, facility
daemon).

A run that is about to change the system appends a second record first: a
``started`` one (:class:`RecordKind`), with the same ``run`` id as its
``final`` record.  A run killed in between leaves its ``started`` record
alone; :func:`pair_runs` reads that as outcome ``interrupted``
(:attr:`~kanotify.model.Outcome.INTERRUPTED`).  Runs
that change nothing write only their final record.

A line is always whole.  Appends are a single ``write()`` on an ``O_APPEND``
descriptor, made while holding the run lock.  A ``kill -9`` can still cut a
multi-page write short, so before appending the writer drops a trailing
partial line left by a killed run, and the reader ignores a last line that has
no newline yet.
"""

from __future__ import annotations

import enum
import json
import os
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping

from .actions import ActionStatus
from .model import Outcome
from .procinfo import ticket_fields

SYSLOG_SOCKET = "/dev/log"
_TAIL = 65536


class RecordKind(enum.StrEnum):
    """What a journal line is: the journal's ``record`` key (a line without one is ``final``)."""

    #: written before a run's first change: its planned actions, all ``pending`` (or ``noop``); no outcome
    STARTED = "started"
    #: what came of a run: its actions' statuses, ``outcome``, ``duration_ms``
    FINAL = "final"


def new_run_id() -> str:
    """A run's ``run`` id: 64 random bits in hex.

    Random rather than counted: a counter unique across the one-shot processes,
    the listener and reboots needs a shared file (written under the lock, on
    every run); 64 random bits need nothing, and two of a million runs share
    an id with a chance of about 3e-8.
    """
    return os.urandom(8).hex()


_WRITER: tuple[int, list[object]] | None = None


def writer_process() -> list[object]:
    """``[boot id, start time in clock ticks, pid]`` of this process: the ``process`` of a ``started`` record.

    A reader compares it with ``/proc/PID/stat`` to tell a run under way from
    one whose process is gone.  Read once per process (the listener writes many).
    """
    global _WRITER
    pid = os.getpid()
    if _WRITER is None or _WRITER[0] != pid:
        _WRITER = (pid, list(ticket_fields(pid)))
    return list(_WRITER[1])


def process_alive(process: object) -> bool:
    """Does the process a ``started`` record names (:func:`writer_process`) still run?  Unreadable: no."""
    if not (isinstance(process, list) and len(process) == 3 and isinstance(process[2], int)
            and not isinstance(process[2], bool) and process[2] > 0):
        return False
    boot, ticks, pid = ticket_fields(process[2])
    return [boot, ticks, pid] == process and os.path.exists(f"/proc/{pid}")


def kind_of(record: Mapping[str, Any]) -> RecordKind | None:
    """The record's :class:`RecordKind`; ``None`` for a kind this version does not know (skip it)."""
    kind = record.get("record", RecordKind.FINAL.value)
    try:
        return RecordKind(kind)
    except ValueError:
        return None


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
        """The last ``n`` records as written (``started`` ones too)."""
        if n <= 0:
            return []
        return list(deque(self.records(), maxlen=n))

    def runs(self, n: int, alive: Callable[[object], bool] = process_alive) -> list[dict[str, Any]]:
        """The last ``n`` runs, oldest first: see :func:`pair_runs`."""
        return pair_runs(self.records(), n, alive)

    def last_records(self, max_bytes: int) -> list[dict[str, Any]]:
        """The whole, well-formed records among the journal's last ``max_bytes`` bytes."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                start = max(0, size - max_bytes)
                fh.seek(start)
                data = fh.read(size - start)
        except FileNotFoundError:
            return []
        first = data.find(b"\n") + 1 if start else 0  # the window starts inside a record: from the next one
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[first:end].splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if well_formed(record):
                records.append(record)
        return records

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
    "ts": _STR, "command": _STR, "outcome": _STR, "note": _STR, "record": _STR, "run": _STR, "process": (list,),
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


def pair_runs(
    records: Iterable[dict[str, Any]], n: int | None = None, alive: Callable[[object], bool] = process_alive
) -> list[dict[str, Any]]:
    """One record per run, oldest first (the last ``n`` runs; all with ``None``).

    A ``started`` record whose ``final`` record (same ``run``) follows is left
    out: the final one says it all.  A ``started`` record without one is kept,
    as a copy whose ``outcome`` is ``interrupted`` -- a later run has
    started since (runs that change anything hold the run lock from their
    started record to their final one), or its ``process`` is gone (``alive``
    says no) -- else ``running`` (:class:`~kanotify.model.Outcome`).  Records of unknown kinds are skipped.
    Keeps at most ``n`` records plus the unpaired started ones in memory.
    """
    window: deque[dict[str, Any]] = deque()
    pending: dict[str, dict[str, Any]] = {}  # run id -> its started record, while it has no final one
    overtaken: set[str] = set()  # started records that a later started record proves dead
    for record in records:
        kind = kind_of(record)
        if kind is None:
            continue
        run = record.get("run")
        if kind is RecordKind.STARTED:
            overtaken.update(pending)
            if isinstance(run, str):
                pending[run] = record
        elif isinstance(run, str) and (started := pending.pop(run, None)) is not None:
            overtaken.discard(run)
            if window and window[-1] is started:  # the usual case: nothing was written in between
                window.pop()
            else:
                for i, held in enumerate(window):
                    if held is started:
                        del window[i]
                        break
        window.append(record)
        if n is not None and len(window) > n:
            dropped = window.popleft()
            if kind_of(dropped) is RecordKind.STARTED and isinstance(dropped.get("run"), str):
                pending.pop(dropped["run"], None)
                overtaken.discard(dropped["run"])
    out = []
    for record in window:
        run = record.get("run")
        if kind_of(record) is RecordKind.STARTED:
            gone = run in overtaken or not isinstance(run, str) or not alive(record.get("process"))
            record = {**record, "outcome": (Outcome.INTERRUPTED if gone else Outcome.RUNNING).value}
        out.append(record)
    return out


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
    if outcome != Outcome.CONVERGED:
        return f"dry-run {outcome}"
    pending = sum(1 for a in record.get("actions", ())
                  if isinstance(a, dict) and a.get("status") == ActionStatus.PENDING)
    return f"dry-run: {pending} change(s) pending, nothing changed" if pending else "dry-run: nothing to do"


def summary_line(record: dict[str, Any]) -> str:
    """``VI_1 backup -> master: converged (3 applied, 5 noop) in 41 ms``

    (``VI_1 backup -> master: interrupted (3 pending, 5 noop)`` for a started
    record without its final one, as :func:`pair_runs` gives it.)
    """
    counts: dict[str, int] = {}
    for action in record.get("actions", ()):
        status = action.get("status", "?") if isinstance(action, dict) else "?"
        counts[status] = counts.get(status, 0) + 1
    who = record.get("instance") or ",".join(i.get("instance", "?") for i in record.get("instances", ())) or "-"
    move = f"{record.get('from') or '-'} -> {record.get('to') or '-'}"
    shown = [ActionStatus.APPLIED, ActionStatus.FAILED, ActionStatus.SKIPPED, ActionStatus.PENDING, ActionStatus.NOOP]
    if record.get("dry_run"):
        shown.remove(ActionStatus.PENDING)  # a dry-run's pending ones are in its outcome's text
    parts = ", ".join(f"{counts[k]} {k}" for k in shown if counts.get(k))
    text = f"{who} {move}: {outcome_text(record)}"
    if parts:
        text += f" ({parts})"
    if "duration_ms" in record:  # a started record has none
        text += f" in {record['duration_ms']:.0f} ms"
    for action in record.get("actions", ()):
        if isinstance(action, dict) and action.get("status") == ActionStatus.FAILED:
            text += f"; FAILED {action.get('action')}: {action.get('error')}"
    if record.get("note"):
        text += f"; {record['note']}"
    return text

"""The saved VRRP states, the run lock, and notification ordering.

keepalived starts notify scripts concurrently and without ordering, so two
things are kept in ``settings.state_dir``:

* ``lock`` -- an ``flock`` that serializes runs (bounded wait: ``lock_timeout``);
* ``state.json`` -- per instance the last notified VRRP state and the *ticket* of
  the notification that set it, plus the drain start times of real servers.  A ticket is ``(boot id, start time in clock
  ticks, pid)`` of the kanotify process: keepalived forks notification scripts
  in the order it issues them, so a later notification has a later start time
  (or, within one tick, a higher pid).  A run whose ticket is older than the
  recorded one is *superseded* and changes nothing.

Writes are atomic (temp file, fsync, rename), so ``kill -9`` at any point
leaves either the old or the new file.  A corrupt file is moved aside and
treated as empty (every instance then counts as BACKUP until notified).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .atomic import TEMP_INFIX, replace_file
from .errors import KanotifyError, LockTimeout
from .model import State
from .procinfo import ticket_fields

STATE_FILE = "state.json"
LOCK_FILE = "lock"
#: held by the running ``kanotify listen`` for its whole life (its pid inside)
LISTEN_LOCK = "listen.lock"


def listener_pid(state_dir: str) -> int | None:
    """The pid of the listener serving ``state_dir``, or None when none runs (its lock is free)."""
    try:
        fd = os.open(os.path.join(state_dir, LISTEN_LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        return None  # nobody holds it: a listener that has exited
    finally:
        os.close(fd)


@dataclass(frozen=True, order=True)
class Ticket:
    """Issue order of a notification.  Compare only tickets of the same boot."""

    boot_id: str
    start_ticks: int
    pid: int

    def newer_than(self, other: "Ticket | None") -> bool:
        """True unless ``other`` was issued in this boot at the same time or later."""
        if other is None or other.boot_id != self.boot_id:
            return True  # nothing recorded, or recorded before the last reboot
        return (self.start_ticks, self.pid) > (other.start_ticks, other.pid)

    def older_than(self, other: "Ticket | None") -> bool:
        """True when ``other`` was issued strictly later in this boot (this one is stale)."""
        return other is not None and other.boot_id == self.boot_id and other.newer_than(self)

    def to_json(self) -> list[object]:
        return [self.boot_id, self.start_ticks, self.pid]

    @classmethod
    def from_json(cls, value: object) -> "Ticket | None":
        if isinstance(value, list) and len(value) == 3:
            boot, ticks, pid = value
            if isinstance(boot, str) and isinstance(ticks, int) and isinstance(pid, int):
                return cls(boot, ticks, pid)
        return None


def current_ticket(pid: int | None = None) -> Ticket:
    """The ticket of this process (or ``pid``), from ``/proc/PID/stat``."""
    return Ticket(*ticket_fields(pid))


_PINNED: Ticket | None = None


def pin_ticket(fields: tuple[str, int, int] | None = None) -> Ticket:
    """Fix this notification's ticket: ``fields`` read before forking a worker (which has a
    later start time and another pid), or this process's own ticket now."""
    global _PINNED
    _PINNED = Ticket(*fields) if fields is not None else current_ticket()
    return _PINNED


def notification_ticket() -> Ticket:
    """The ticket of the notification this process handles."""
    return _PINNED if _PINNED is not None else current_ticket()


@dataclass
class SavedState:
    """One instance's entry in ``state.json``: its state, and the notification that set it."""

    state: State
    ticket: Ticket | None = None
    since: str = ""
    trigger: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "ticket": self.ticket.to_json() if self.ticket else None,
            "since": self.since,
            "trigger": self.trigger,
        }


@dataclass
class SavedStates:
    """Everything in ``state.json``."""

    instances: dict[str, SavedState] = field(default_factory=dict)
    draining: dict[tuple[str, str], float] = field(default_factory=dict)

    def states(self) -> dict[str, State]:
        return {name: rec.state for name, rec in self.instances.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "instances": {name: rec.to_json() for name, rec in sorted(self.instances.items())},
            "draining": [[svc, real, since] for (svc, real), since in sorted(self.draining.items())],
        }

    @classmethod
    def from_json(cls, data: Any) -> "SavedStates":
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
        saved = cls()
        instances = data.get("instances") or {}
        if not isinstance(instances, dict):
            raise ValueError("instances is not an object")
        for name, rec in instances.items():
            if not isinstance(rec, dict):
                raise ValueError(f"instance {name!r} is not an object")
            trigger = rec.get("trigger") or []
            if not isinstance(trigger, list):
                raise ValueError(f"instance {name!r}: trigger is not a list")
            saved.instances[str(name)] = SavedState(
                state=State.parse(str(rec.get("state"))),
                ticket=Ticket.from_json(rec.get("ticket")),
                since=str(rec.get("since", "")),
                trigger=[str(w) for w in trigger],
            )
        draining = data.get("draining") or []
        if not isinstance(draining, list):
            raise ValueError("draining is not a list")
        for item in draining:
            if not isinstance(item, list) or len(item) != 3:
                raise ValueError(f"draining entry {item!r} is not [service, real server, since]")
            svc, real, since = item
            saved.draining[(str(svc), str(real))] = float(since)
        return saved


def _refusal(path: str, st: os.stat_result) -> str | None:
    """Why the state dir ``path`` (its ``lstat``) is refused: a symlink, not a directory, not ours."""
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"state_dir {path} is not a directory (a symlink is refused)"
    if st.st_uid != os.geteuid():
        return f"state_dir {path} is owned by uid {st.st_uid}, not by us: refused"
    return None


def is_private_dir(path: str) -> bool:
    """Is ``path`` a state dir as :meth:`StateStore.ensure_dir` leaves it: a directory (not a
    symlink), owned by us, without any access for group or others?  Checks only; creates nothing."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):  # ValueError: NUL in the path
        return False
    return _refusal(path, st) is None and not st.st_mode & 0o077


class StateStore:
    """``state_dir`` with its lock and ``state.json``.

    The directory is created 0700; a state dir that is a symlink or is owned by
    another user is refused (someone could otherwise redirect root's writes).
    """

    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)

    def ensure_dir(self) -> None:
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            st = os.lstat(self.dir)
        except OSError as exc:
            raise KanotifyError(f"state_dir {self.dir}: cannot create: {exc.strerror}") from None
        refusal = _refusal(self.dir, st)
        if refusal:
            raise KanotifyError(refusal)
        if st.st_mode & 0o077:
            os.chmod(self.dir, 0o700)

    @contextmanager
    def lock(self, timeout: float) -> Iterator[float]:
        """Hold the run lock; yields the seconds spent waiting for it."""
        path = os.path.join(self.dir, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KanotifyError(f"lock file {path} is a symlink: refused") from None
            raise KanotifyError(f"lock file {path}: {exc.strerror}") from None
        try:
            if os.fstat(fd).st_uid != os.geteuid():
                raise KanotifyError(f"lock file {path} is owned by someone else: refused")
            started = time.monotonic()
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - started
                    if waited >= timeout:
                        raise LockTimeout(
                            f"another kanotify run held {path} for more than {timeout:g}s (lock_timeout)"
                        ) from None
                    time.sleep(min(delay, timeout - waited))
                    delay = min(delay * 2, 0.05)
            yield time.monotonic() - started
        finally:
            os.close(fd)

    def _remove_stale_temp_files(self) -> None:
        """Temp files of runs killed between write and rename (only the lock holder writes one)."""
        prefix = STATE_FILE + TEMP_INFIX
        try:
            names = [n for n in os.listdir(self.dir) if n.startswith(prefix)]
        except OSError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass

    def load(self, *, repair: bool = True) -> tuple[SavedStates, list[str]]:
        """The saved states, and warnings about them; a corrupt file counts as empty.

        With ``repair`` (only under the run lock) a corrupt file is also moved
        aside, kept for a human.  The warnings belong to the caller's run: the
        store keeps nothing between runs.
        """
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return SavedStates(), []
        except OSError as exc:
            return SavedStates(), [
                f"cannot read {self.path}: {exc.strerror}; treating every instance as unrecorded"
            ]
        try:
            return SavedStates.from_json(json.loads(raw)), []
        except (ValueError, TypeError, KeyError, RecursionError) as exc:  # RecursionError: [[[[...]]]]
            aside = f"{self.path}.corrupt-{int(time.time())}-{os.getpid()}"  # never overwrite an earlier one
            where = "left in place"
            if repair:
                try:
                    os.replace(self.path, aside)
                    where = f"moved to {aside}"
                except OSError:
                    pass
            return SavedStates(), [
                f"{self.path} is corrupt ({exc}); {where}; every instance counts as BACKUP until notified"
            ]

    def save(self, saved: SavedStates) -> None:
        """Replace ``state.json`` atomically.  Call with the run lock held."""
        data = (json.dumps(saved.to_json(), indent=1, sort_keys=True) + "\n").encode()
        self._remove_stale_temp_files()
        replace_file(self.path, data)

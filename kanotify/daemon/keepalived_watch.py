"""Is keepalived still there?  Its pid from its pidfile, watched through a pidfd.

keepalived dying without a STOP (SIGKILL, a segfault, the OOM killer) would
leave the VIPs and IPVS services of the instances it drove on this host while
the peer takes them over.  :class:`KeepalivedWatch` tells the listener when
that happens:

* the pid comes from keepalived's pidfile (``settings.keepalived_pidfile``,
  keepalived's own default ``/run/keepalived.pid``, or what its ``-p`` names);
  the file is read again about once a second (:data:`PIDFILE_CHECK`, a
  ``stat`` when nothing changed), so a keepalived that starts later, or again
  with a new pid, is picked up;
* the process is held through a pidfd (``pidfd_open``), which becomes readable
  the moment it exits: no polling of ``/proc`` for the pid itself;
* a pid is only taken for keepalived when the process is one
  (:func:`is_keepalived`: its ``comm`` or its executable is named keepalived),
  so a pidfile left behind by a killed keepalived whose pid now belongs to
  another process neither hides keepalived nor looks like it;
* only a keepalived seen alive and then exiting is *gone*
  (:meth:`KeepalivedWatch.on_gone`): a listener started while none runs, a
  pidfile that is missing or holds junk, do nothing (junk is reported once);
* :meth:`KeepalivedWatch.gone_now` answers at once, for SIGTERM: a listener
  that keepalived started as its FIFO script gets SIGTERM both when keepalived
  reloads (same pid, still alive) and when every keepalived process died.

A keepalived reload (SIGHUP) keeps its pid: nothing happens.  A clean stop
(``systemctl restart``) sends STOP before the process exits, so by the time it
is gone every instance it drove is already STOP and there is nothing to do.
"""

from __future__ import annotations

import os
import select
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import asyncio

#: seconds between looks at the pidfile (a keepalived that starts, or restarts with a new pid)
PIDFILE_CHECK = 1.0
#: a pidfile longer than this is not keepalived's ("%d\n")
MAX_PIDFILE = 64
#: the kernel's ceiling for pid_max (PID_MAX_LIMIT on 64-bit)
MAX_PID = 4 * 1024 * 1024

_NAME = "keepalived"


@dataclass(frozen=True)
class Reading:
    """What the pidfile says: a ``pid``, or a ``problem`` (junk, not root's), or neither (no file)."""

    pid: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Gone:
    """keepalived's process is gone: ``why`` says how it was noticed (the journal's trigger)."""

    pid: int
    why: str


def parse_pid(data: bytes) -> int | str:
    """keepalived's pidfile content (``"1234\\n"``) as a pid, or what is wrong with it.

    >>> parse_pid(b"1234\\n"), parse_pid(b"junk")
    (1234, "expected a process id, got 'junk'")
    """
    if len(data) > MAX_PIDFILE:
        return f"expected a process id, got {len(data)} bytes"
    text = data.decode("ascii", errors="replace").strip()
    if not text:
        return "expected a process id, got an empty file"
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        return f"expected a process id, got {text[:32]!r}"
    pid = int(text)
    if not 1 <= pid <= MAX_PID:
        return f"expected a process id 1..{MAX_PID}, got {pid}"
    return pid


def read_pidfile(path: str) -> Reading:
    """Read and check keepalived's pidfile; never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return Reading()
    except OSError as exc:
        return Reading(problem=f"cannot open it: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Reading(problem="not a regular file")
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            # whoever may write it could make the listener release every VIP
            return Reading(problem=f"owned by uid {st.st_uid} with mode {st.st_mode & 0o7777:04o}: "
                                   "it must be root's and not writable by group or others")
        data = os.read(fd, MAX_PIDFILE + 1)
    except OSError as exc:
        return Reading(problem=f"cannot read it: {exc.strerror}")
    finally:
        os.close(fd)
    parsed = parse_pid(data)
    return Reading(pid=parsed) if isinstance(parsed, int) else Reading(problem=parsed)


def process_name(pid: int) -> tuple[str, str] | None:
    """``(comm, executable)`` of a live process, ``None`` if there is none (or only its zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    comm, _, rest = data.partition(b"(")[2].rpartition(b")")
    if rest[1:2] in (b"Z", b"X"):  # exited, not yet reaped: as good as gone
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    return comm.decode(errors="replace"), exe.removesuffix(" (deleted)")


def is_keepalived(comm: str, exe: str) -> bool:
    """keepalived by its name: ``comm`` (``keepalived``) or the executable's file name.

    keepalived's ``process_name`` may rename its ``comm``; its executable keeps its name.
    """
    return comm.startswith(_NAME) or os.path.basename(exe).startswith(_NAME)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


class KeepalivedWatch:
    """Watches keepalived's process from the listener's event loop.

    ``on_gone`` is called (in the loop's thread) once for each keepalived
    process seen alive that then exits.  ``say`` gets what an operator should
    read (a keepalived found, one that went, a stale pidfile), ``warn`` what is
    wrong (a pidfile with junk in it, or not root's: keepalived's death is not
    watched then); each once, not every second.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str, *, on_gone: Callable[[Gone], None],
                 say: Callable[[str], None], warn: Callable[[str], None] | None = None,
                 interval: float = PIDFILE_CHECK) -> None:
        self.loop = loop
        self.path = path
        self.on_gone = on_gone
        self.say = say
        self.warn = warn or say
        self.interval = interval
        self.pid: int | None = None  # the keepalived watched now
        self._pidfd: int | None = None
        self._signature: tuple[int, ...] | None = None  # the pidfile as last read
        self._told: str | None = None  # the last thing said about the pidfile (said once)
        self._reported: int | None = None  # the last pid reported gone
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        self._check()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unwatch()

    def set_path(self, path: str) -> None:
        """Another pidfile (the config was reloaded): forget the old one's keepalived, read the new one."""
        if path == self.path:
            return
        self.path = path
        self._unwatch()
        self._signature = self._told = None
        if not self._closed:
            self._check(reschedule=False)

    # ------------------------------------------------------------------ the pidfile

    def _check(self, reschedule: bool = True) -> None:
        """Read the pidfile if it changed (or nothing is watched) and watch the keepalived it names."""
        if reschedule:
            self._timer = self.loop.call_later(self.interval, self._check)
        signature = _signature(self.path)
        if signature is not None and signature == self._signature and self.pid is not None:
            return  # unchanged, and its keepalived is watched: the pidfd tells when it goes
        self._signature = signature
        reading = read_pidfile(self.path)
        if reading.pid is None:
            if reading.problem is not None:
                self._tell(f"keepalived pidfile {self.path}: {reading.problem}; "
                           "keepalived's death is not watched until it holds keepalived's pid", problem=True)
            elif self.pid is None:
                self._told = None  # no keepalived yet (or between two): nothing to say
            return
        if reading.pid == self.pid:
            return
        self._adopt(reading.pid)

    def _adopt(self, pid: int) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._tell(f"keepalived pidfile {self.path} names pid {pid}, which is not running: "
                       "waiting for keepalived to start")
            return
        except OSError as exc:
            self._tell(f"cannot watch pid {pid} from {self.path} ({exc.strerror}): keepalived's death is not watched",
                       problem=True)
            return
        name = process_name(pid)
        if name is None or _readable(pidfd):
            os.close(pidfd)
            self._tell(f"keepalived pidfile {self.path} names pid {pid}, which is not running: "
                       "waiting for keepalived to start")
            return
        comm, exe = name
        if not is_keepalived(comm, exe):
            os.close(pidfd)
            self._tell(f"keepalived pidfile {self.path} names pid {pid}, which is {comm!r} ({exe or '?'}), "
                       "not keepalived (a pidfile left behind, its pid reused): waiting for keepalived to start")
            return
        self._unwatch()
        self.pid, self._pidfd = pid, pidfd
        self.loop.add_reader(pidfd, self._exited)
        self._told = None
        self.say(f"watching keepalived (pid {pid}, from {self.path}): if it dies without a STOP, "
                 "its instances go to STOP")

    def _tell(self, text: str, problem: bool = False) -> None:
        if text != self._told:
            self._told = text
            (self.warn if problem else self.say)(text)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
        self._pidfd = self.pid = None

    # ------------------------------------------------------------------ gone

    def _exited(self) -> None:
        pid = self.pid
        assert pid is not None
        self._unwatch()
        self._report(Gone(pid, f"keepalived (pid {pid}) exited"))
        self._check(reschedule=False)  # a new keepalived may already have written its pidfile

    def _report(self, gone: Gone) -> None:
        if gone.pid == self._reported:
            return
        self._reported = gone.pid
        self.say(f"{gone.why}: its instances go to STOP")
        self.on_gone(gone)

    def gone_now(self) -> Gone | None:
        """Has keepalived gone (as opposed to reloading)?  Answered now, for SIGTERM.

        Gone: the keepalived watched has exited, or (none watched) the pidfile
        names a pid that no keepalived holds any more.  Not gone: it lives, or
        there is no usable pidfile (nothing is known: do nothing).  Reported to
        ``on_gone`` as well, once per pid.
        """
        if self._pidfd is not None:
            if not _readable(self._pidfd):
                return None
            pid = self.pid
            assert pid is not None
            self._unwatch()
            gone = Gone(pid, f"keepalived (pid {pid}) exited")
        else:
            reading = read_pidfile(self.path)
            if reading.pid is None or reading.pid == self._reported:
                return None
            name = process_name(reading.pid)
            if name is not None and is_keepalived(*name):
                return None
            gone = Gone(reading.pid, f"keepalived pidfile {self.path} names pid {reading.pid}, "
                                     + ("which is not running" if name is None else f"which is now {name[0]!r}"))
        self._report(gone)
        return gone


def _signature(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


__all__ = ["Gone", "KeepalivedWatch", "PIDFILE_CHECK", "Reading", "is_keepalived", "parse_pid", "process_name",
           "read_pidfile"]


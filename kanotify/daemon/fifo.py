"""keepalived's notify FIFO: its lines parsed into events, and a reader that survives keepalived.

keepalived writes one line per event, in the order the events happen (the
only ordered channel it has: notify scripts run concurrently).  The forms,
from keepalived's ``vrrp_notify.c`` and ``check/ipwrapper.c``::

    INSTANCE "VI_1" MASTER 100          VRRP state of an instance (priority)
    GROUP "VG_1" BACKUP 0               of a sync group (priority always 0)
    INSTANCE "VI_1" MASTER_RX_LOWER_PRI 100   a master heard a lower priority: re-assert
    INSTANCE "VI_1" MASTER_PRIORITY 110       priority changed (notify_priority_changes)
    VS [192.0.2.100]:tcp:80 UP          checker: a virtual server
    RS [192.0.2.21]:tcp:80 [192.0.2.100]:tcp:80 DOWN    checker: a real server

STATE is ``MASTER``, ``BACKUP``, ``FAULT``, ``STOP`` or ``DELETED`` (handled
like STOP).  The name is between double quotes, without escaping.  Newer
keepalived versions end a line with a NUL byte; NUL bytes are dropped.
Anything else -- garbage, a line longer than :data:`MAX_LINE` -- is an
:class:`Unparsed` event: logged and skipped, never fatal.

:class:`FifoReader` owns the FIFO: non-blocking reads, partial lines kept
until their newline, reopen after EOF (keepalived closed its end), and a new
FIFO followed when keepalived recreates it (another inode after a reload).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass

from ..model import State

#: the longest line kept; keepalived's are under 300 bytes (a name is at most 63 characters)
MAX_LINE = 4096

_VRRP_RE = re.compile(r'(INSTANCE|GROUP) "([^"]*)" ([A-Z_]+) (-?\d{1,10})')
_LVS_RE = re.compile(r"(VS|RS) (.+) (UP|DOWN)")
_VRRP_STATES = {"MASTER", "BACKUP", "FAULT", "STOP", "DELETED"}
_PRIORITY_WORDS = {"MASTER_PRIORITY", "BACKUP_PRIORITY"}


@dataclass(frozen=True)
class VrrpEvent:
    """``INSTANCE|GROUP "NAME" STATE PRIORITY``: a state change, or ``MASTER_RX_LOWER_PRI``.

    ``reassert`` is true for ``MASTER_RX_LOWER_PRI``: the instance stays
    MASTER and its VIPs are announced again.
    """

    kind: str  # INSTANCE | GROUP
    name: str
    state: State
    priority: int
    line: str
    reassert: bool = False


@dataclass(frozen=True)
class PriorityEvent:
    """``MASTER_PRIORITY``/``BACKUP_PRIORITY``: journaled, nothing to converge."""

    kind: str
    name: str
    word: str
    priority: int
    line: str


@dataclass(frozen=True)
class LvsEvent:
    """A checker line (``VS ...``/``RS ...``): keepalived's own health checks, logged only."""

    kind: str  # VS | RS
    what: str
    up: bool
    line: str


@dataclass(frozen=True)
class Unparsed:
    """A line that is none of the above; ``why`` says what is wrong with it."""

    line: str
    why: str


Event = VrrpEvent | PriorityEvent | LvsEvent | Unparsed


def parse_line(raw: bytes) -> Event:
    """One FIFO line (without its newline) as an event; never raises."""
    data = raw.replace(b"\0", b"").rstrip(b"\r")
    if len(data) > MAX_LINE:
        return Unparsed(_shown(data[:80]) + "...", f"line of {len(data)} bytes, longer than {MAX_LINE}")
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError:
        return Unparsed(_shown(data), "not UTF-8 text")
    line = line.strip(" \t")
    if not line:
        return Unparsed(line, "empty line")
    match = _VRRP_RE.fullmatch(line)
    if match:
        kind, name, word, number = match.groups()
        priority = int(number)
        if not 0 <= priority <= 255:
            return Unparsed(line, f"priority {priority} out of 0..255")
        if word in _VRRP_STATES:
            return VrrpEvent(kind, name, State.parse(word), priority, line)
        if word == "MASTER_RX_LOWER_PRI":
            return VrrpEvent(kind, name, State.MASTER, priority, line, reassert=True)
        if word in _PRIORITY_WORDS:
            return PriorityEvent(kind, name, word, priority, line)
        return Unparsed(line, f"unknown state {word!r}")
    match = _LVS_RE.fullmatch(line)
    if match:
        kind, what, updown = match.groups()
        return LvsEvent(kind, what, updown == "UP", line)
    return Unparsed(line, "not a keepalived notify FIFO line")


def _shown(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")[:200]


@dataclass(frozen=True)
class Chunk:
    """What one :meth:`FifoReader.read` found: whole lines, whether the FIFO hit EOF, a half line left at EOF."""

    lines: list[bytes]
    eof: bool = False
    half: bytes = b""


class FifoReader:
    """Reads lines from the FIFO at ``path`` without ever blocking.

    Call :meth:`read` when the descriptor is readable: it returns the whole
    lines that arrived (a partial line waits for its newline, within
    :data:`MAX_LINE`: a longer one is returned once, to be reported as too
    long, and the rest of it is skipped up to its newline).  At EOF -- every
    writer closed, as keepalived does when it stops -- the reader closes
    itself (:meth:`open` it again later) and hands back the half line it still
    had.  :meth:`replaced` tells when the path now names another FIFO
    (keepalived recreated it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.inode: tuple[int, int] | None = None
        self._partial = b""
        self._skipping = False  # inside an over-long line: drop until its newline

    def open(self) -> bool:
        """Open the FIFO (non-blocking, read-only); False when it does not exist or is not a FIFO."""
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode):
            os.close(fd)
            return False
        self.fd, self.inode = fd, (st.st_dev, st.st_ino)
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None
        self.inode = None
        self._partial = b""
        self._skipping = False

    def replaced(self) -> bool:
        """Does the path now name something other than the FIFO we have open?"""
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # gone: keep the open one until a new one appears
        return self.inode is not None and (st.st_dev, st.st_ino) != self.inode

    def read(self) -> Chunk:
        """The whole lines available now (without newlines), and whether every writer has gone (EOF)."""
        if self.fd is None:
            return Chunk([], eof=True)
        lines: list[bytes] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return Chunk(lines)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                half = b"" if self._skipping else self._partial
                self._partial, self._skipping = b"", False
                return Chunk(lines, eof=True, half=half)
            lines.extend(self._split(data))
            if len(data) < 65536:
                return Chunk(lines)

    def _split(self, chunk: bytes) -> list[bytes]:
        data = self._partial + chunk
        parts = data.split(b"\n")
        self._partial = parts.pop()
        lines = []
        for part in parts:
            if self._skipping:
                self._skipping = False  # the newline that ends an over-long line
                continue
            lines.append(part)
        if len(self._partial) > MAX_LINE:
            if not self._skipping:
                lines.append(self._partial)  # reported once as too long by parse_line
            self._skipping = True
            self._partial = b""
        return lines


__all__ = ["MAX_LINE", "Chunk", "Event", "FifoReader", "LvsEvent", "PriorityEvent", "Unparsed", "VrrpEvent", "parse_line"]

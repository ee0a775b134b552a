"""The listener's control socket: the wire format, the peer check, and the one-shot client.

While ``kanotify listen`` runs, a one-shot ``kanotify master|backup|fault|stop|
notify|reconcile`` hands its request to it instead of doing the work itself:
the listener has the config parsed, its modules imported and its sockets open,
and it applies requests in the order they arrive.  The client prints the
listener's answer and exits with its code, so the output, the exit code and
the journal line (its trigger is the client's argv) are the ones an
in-process run would have given.

The socket is ``<state_dir>/control.sock``, mode 0600; the listener also
checks the peer's credentials (``SO_PEERCRED``): only root (or the listener's
own user) may talk to it.  One request per connection, one JSON object on one
line each way, at most :data:`MAX_MESSAGE` bytes::

    -> {"op": "run", "argv": ["master", "VI_1"], "config": "/etc/kanotify/kanotify.toml",
        "ticket": ["<boot id>", 123456, 4242], "cwd": "/"}
    <- {"code": 0, "stdout": "...", "stderr": "..."}
    <- {"refused": "the listener serves /etc/a.toml, not /etc/b.toml"}     (run it in-process)
    <- {"error": "..."}                                                    (a bad request)

Other ops: ``yield`` (a newer listener takes over: finish and exit).

The client side (:func:`hand_over`) is on the path of every notification, so
this module imports nothing heavy -- no pyroute2, no typer, not even the
config machinery: the socket's directory and the time to wait come from a
plain scan of the config file (:mod:`kanotify.config.prescan`).  A listener that does
not answer within ``lock_timeout`` is given up on: the caller then runs the
request in-process, under the same lock and with the same ticket, so order
still holds, and says so in the journal line.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import time

from ..config import prescan

SOCKET_NAME = "control.sock"
MAX_MESSAGE = 64 * 1024
#: one-shot commands a running listener does for the caller
HANDED_OVER = ("master", "backup", "fault", "stop", "notify", "reconcile")


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET_NAME)


#: sun_path's size, without its NUL: a longer socket path is reached through its directory
_SUN_PATH = 107


def at_unix_path(sock: socket.socket, path: str, method: str) -> None:
    """``sock.bind(path)`` or ``sock.connect(path)``, for a path longer than a Unix socket address allows.

    A long path is used relative to its directory (``chdir`` there and back);
    only single-threaded callers come here: the client, the listener at start.
    """
    if len(os.fsencode(path)) <= _SUN_PATH:
        getattr(sock, method)(path)
        return
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(os.path.dirname(path))
        getattr(sock, method)(os.path.basename(path))
    finally:
        os.fchdir(here)
        os.close(here)


def encode(message: dict[str, object]) -> bytes:
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"control message of {len(data)} bytes, more than {MAX_MESSAGE}")
    return data


class ProtocolError(ValueError):
    """A control message that is not one JSON object on one line within the size limit."""


def decode(line: bytes) -> dict[str, object]:
    if len(line) > MAX_MESSAGE:
        raise ProtocolError(f"message longer than {MAX_MESSAGE} bytes")
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError("not a JSON object") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def peer_allowed(uid: int) -> bool:
    """Root, or the listener's own user (an unprivileged test run)."""
    return uid == 0 or uid == os.geteuid()


# --------------------------------------------------------------------------- the client


class Answer:
    """What came of handing a request over.

    ``code`` is set when the listener did the work (print ``stdout``/``stderr``
    and exit with it).  Otherwise ``fallback`` says why the caller must run the
    request itself: no listener, it refused (another config), or it did not
    answer in time (then ``note`` is for the journal line).  A plain class: a
    dataclass would import ``inspect`` on the notify path.
    """

    __slots__ = ("code", "stdout", "stderr", "fallback", "note")

    def __init__(self, code: int | None = None, stdout: str = "", stderr: str = "", *, fallback: str = "",
                 note: str = "") -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.fallback = fallback
        self.note = note

    def __repr__(self) -> str:
        return f"Answer(code={self.code!r}, fallback={self.fallback!r})"


def wants_listener(argv: list[str], words: list[str], no_daemon: bool, dry_run: bool) -> bool:
    """Is this invocation one a running listener does?  (A dry-run or ``--help`` stays here.)"""
    if no_daemon or dry_run or not words or words[0].lower() not in HANDED_OVER:
        return False
    return not any(w in ("--help", "-h") for w in argv)


def hand_over(argv: list[str], config: str, ticket: tuple[str, int, int]) -> Answer:
    """Send ``argv`` to the listener of ``config``'s state_dir and wait for its answer."""
    path = os.path.abspath(config)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError:
        return Answer(fallback="config unreadable here")  # the in-process run reports it properly
    where = socket_path(prescan.state_dir(raw))
    timeout = prescan.lock_timeout(raw)
    try:
        request = encode({"op": "run", "argv": argv, "config": path, "ticket": list(ticket), "cwd": os.getcwd()})
    except ValueError:
        return Answer(fallback="request too long")  # the in-process run says what is wrong with the words
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            at_unix_path(sock, where, "connect")
        except OSError:
            return Answer(fallback="no listener")  # none running (no socket, or a stale one)
        try:
            sock.sendall(request)
            reply = _read_line(sock, deadline)
        except (OSError, TimeoutError) as exc:
            return Answer(fallback="no answer", note=_note(where, timeout, exc))
    finally:
        sock.close()
    if reply is None:
        return Answer(fallback="no answer", note=_note(where, timeout, None))
    try:
        message = decode(reply)
    except ProtocolError as exc:
        return Answer(fallback="bad answer", note=f"the listener at {where} answered garbage ({exc}): "
                                                   "applied in-process")
    if "refused" in message:
        return Answer(fallback=str(message["refused"]))
    code = message.get("code")
    if not isinstance(code, int):
        return Answer(fallback="bad answer", note=f"the listener at {where} answered {message.get('error')!r}: "
                                                   "applied in-process")
    return Answer(code, str(message.get("stdout", "")), str(message.get("stderr", "")))


def ask_to_yield(path: str) -> str | None:
    """Ask the listener at control socket ``path`` to yield its lock; what went wrong, or None
    (none there is no problem: the lock is free or about to be)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            at_unix_path(sock, path, "connect")
            sock.sendall(encode({"op": "yield"}))
            sock.recv(4096)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            return f"could not ask the other listener to yield ({exc.strerror})"
    return None


def _note(where: str, timeout: float, exc: BaseException | None) -> str:
    why = f" ({exc})" if exc is not None and str(exc) else ""
    return f"the listener at {where} did not answer within {timeout:g}s (lock_timeout){why}: applied in-process"


def _read_line(sock: socket.socket, deadline: float) -> bytes | None:
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return None  # the listener went away without answering
        data += chunk
        if len(data) > MAX_MESSAGE:
            return data  # decode() refuses it
    return data


__all__ = [
    "Answer", "HANDED_OVER", "MAX_MESSAGE", "ProtocolError", "SOCKET_NAME", "decode", "encode",
    "hand_over", "peer_allowed", "peer_uid", "socket_path", "wants_listener",
]

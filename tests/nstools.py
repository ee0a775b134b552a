"""Namespace helpers shared by the root test suites (tests/netns, tests/reliability).

Importable as ``nstools`` (from tests/unit and the guest tests too) because ``tests/conftest.py`` puts ``tests/`` on
``sys.path`` (pytest's default prepend import mode).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import subprocess
import traceback
from pathlib import Path
from typing import Any, Callable

CLONE_NEWNET = 0x40000000


def run_cmd(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def run_in_netns(name: str, fn: Callable[..., Any], *args: Any, timeout: float = 60.0, **kw: Any) -> Any:
    """Fork, ``setns`` into ``/run/netns/NAME``, run ``fn``; return its result or raise its exception."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_fd)
            try:
                fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({name}): {os.strerror(err)}")
                os.close(fd)
                payload = ("ok", fn(*args, **kw), None)
            except BaseException as exc:  # noqa: BLE001 - shipped to the parent
                payload = ("err", exc, traceback.format_exc())
            try:
                data = pickle.dumps(payload)
            except Exception as exc:  # noqa: BLE001
                data = pickle.dumps(("err", RuntimeError(f"unpicklable result: {exc!r}"), traceback.format_exc()))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    try:
        with os.fdopen(read_fd, "rb") as src:
            while True:
                ready, _, _ = select.select([src], [], [], timeout)
                if not ready:
                    os.kill(pid, signal.SIGKILL)
                    raise AssertionError(f"code running in netns {name} did not finish in {timeout}s")
                chunk = src.read1(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError(f"code running in netns {name} died without a result")
    kind, value, tb = pickle.loads(b"".join(chunks))
    if kind == "err":
        if tb:
            value.add_note(f"--- raised inside netns {name}:\n{tb}")
        raise value
    return value


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for a non-reaping init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def whole_lines(path: Path) -> list[str]:
    """The file's whole lines: a writer appending at this moment may have written part of its last one.

    One ``write()`` on ``O_APPEND`` keeps writers from mixing their lines, but ``read()`` takes no lock
    against a ``write()`` in progress: kanotify's own journal readers skip a last line without its
    newline too.
    """
    return [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n") and line.strip()]

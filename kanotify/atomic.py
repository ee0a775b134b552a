"""Replacing a file atomically: a reader sees the old content or the new, never a mix.

One way for every file kanotify writes whole (``state.json``, the config cache,
``health.json``, ``/etc/sysctl.d/90-kanotify.conf``): write a temporary file
beside it (``<path>.tmp-<pid>``, so a writer killed half-way leaves a file its
owner can recognise and clean up), give it its mode whatever the umask, and
rename it over the target.  ``durable`` adds the two fsyncs (the data, then
the directory for the rename) that make the new content survive a crash of
the machine, not only of the process.
"""

from __future__ import annotations

import os

#: between a target's name and the writer's pid in its temporary file's name
TEMP_INFIX = ".tmp-"


def replace_file(path: str, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Make ``path`` contain exactly ``data`` (mode ``mode``) in one rename; raises OSError."""
    tmp = f"{path}{TEMP_INFIX}{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)  # the rename itself must survive a crash
        finally:
            os.close(dfd)

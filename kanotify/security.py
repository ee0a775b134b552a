"""File ownership rules, the same ones keepalived's ``enable_script_security`` applies.

kanotify runs as root from keepalived: a config file or hook that another user
can write is a way to run code as root.  Such files are refused with a clear
message (``--allow-insecure`` overrides, for tests only).
"""

from __future__ import annotations

import os
import stat

from .errors import ConfigError, Problem


def insecure_reason(path: str, *, follow: bool = True) -> str | None:
    """Why ``path`` is unsafe to trust as root, or None when it is fine."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if st.st_uid != 0 and st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_config_file(path: str) -> None:
    """Refuse a config file that someone other than root could change.

    The file itself must be owned by root and not writable by group/others, and
    so must every directory above it -- both on the path as given and on the
    resolved one -- or another user could simply replace the file (or a
    symlink to it).  keepalived's ``enable_script_security`` rule.
    """
    reason = insecure_reason(path)
    if reason:
        raise ConfigError([Problem(path, "", f"refused: {reason} (chown root and chmod go-w)")])
    for where in (os.path.dirname(os.path.abspath(path)), path):
        reason = insecure_path_reason(where)
        if reason:
            raise ConfigError([Problem(path, "", f"refused: {reason}: another user could replace the config")])


def insecure_path_reason(path: str) -> str | None:
    """Why ``path`` or any directory above it is unsafe to trust as root, or None.

    keepalived's ``enable_script_security`` rule, applied to every component of
    the resolved path (symlinks followed first, so a link cannot point the check
    somewhere else): each must be owned by root (or by us, for unprivileged
    test runs) and not writable by group or others -- except a directory with
    the sticky bit (``/tmp``), where others cannot replace our entries.  Stricter
    than keepalived in one point: a group-writable component is refused even
    when its group is root.
    """
    real = os.path.realpath(path)
    parts = [p for p in real.split(os.sep) if p]
    prefixes = [os.sep] + [os.sep + os.path.join(*parts[: i + 1]) for i in range(len(parts))]
    for component in prefixes:
        try:
            st = os.stat(component)
        except OSError as exc:
            return f"{component}: cannot stat: {exc.strerror}"
        if st.st_uid != 0 and st.st_uid != os.geteuid():
            return f"{component} is owned by uid {st.st_uid}, not root"
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if not sticky_dir and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{component} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None

"""File ownership rules: keepalived's ``enable_script_security``, one walk for its two users.

kanotify runs as root from keepalived: a config file or hook that another user
can write is a way to run code as root.  Such files are refused with a clear
message (``--allow-insecure`` overrides, for tests only).  ``kanotify doctor``
asks the same question the way keepalived itself answers it, for the scripts
keepalived.conf runs (:func:`insecure_component`).

Both go through :func:`first_insecure`: one walk over the components of a path,
one :class:`Rule` per user.  The rule lives here, at the top, because the notify
path (the config file) and the hooks need it; the keepalived tools only use it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable

from .errors import ConfigError, Problem

Stat = Callable[[str], os.stat_result]


@dataclass(frozen=True)
class Rule:
    """keepalived's script-security rule, and the two points where kanotify's own use of it differs.

    Every component is owned by a trusted uid and, unless it is a directory with
    the sticky bit (``/tmp``, where others cannot replace our entries) or a
    symlink, not writable by others -- nor by its group, except a root group
    where ``root_group_may_write``.  With ``file_types``, every component but the
    last is a directory and the last a file or a symlink.
    """

    trusted_uids: frozenset[int]
    root_group_may_write: bool
    file_types: bool


#: keepalived 2.2.7's check_security(), for the scripts it runs
KEEPALIVED = Rule(frozenset({0}), root_group_may_write=True, file_types=True)


def kanotify_rule() -> Rule:
    """kanotify's own files: stricter on a root group, and our uid trusted too (unprivileged test runs)."""
    return Rule(frozenset({0, os.geteuid()}), root_group_may_write=False, file_types=False)


def _judge(st: os.stat_result, rule: Rule, last: bool) -> str | None:
    """Why one entry breaks *rule* (``"is owned by ..."``), or None."""
    mode = st.st_mode
    if rule.file_types and ((not last and not stat.S_ISDIR(mode)) or (
            last and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)))):
        return "is of the wrong file type (keepalived: 'Wrong file type found in script path')"
    if st.st_uid not in rule.trusted_uids:
        return f"is owned by uid {st.st_uid}, not root"
    if (stat.S_ISDIR(mode) and mode & stat.S_ISVTX) or stat.S_ISLNK(mode):
        return None
    group = mode & stat.S_IWGRP and not (rule.root_group_may_write and st.st_gid == 0)
    if group or mode & stat.S_IWOTH:
        return f"is writable by group or others (mode {stat.S_IMODE(mode):04o})"
    return None


def first_insecure(path: str, rule: Rule, stat_fn: Stat) -> tuple[str, str] | None:
    """The first component of *path*, from ``/`` down, that breaks *rule*, and why; None when all pass."""
    parts = [p for p in path.split(os.sep) if p]
    prefixes = [os.sep] + [os.sep + os.path.join(*parts[: i + 1]) for i in range(len(parts))]
    for i, component in enumerate(prefixes):
        try:
            st = stat_fn(component)
        except OSError as exc:
            return component, f"cannot stat: {exc.strerror}"
        why = _judge(st, rule, last=i == len(prefixes) - 1)
        if why:
            return component, why
    return None


def insecure_component(path: str, lstat: Stat = os.lstat) -> tuple[str, str] | None:
    """keepalived's check_security(): the first unsafe component of *path* and why, or None.

    Every component is ``lstat``-ed, as keepalived does (the caller resolves the
    path as keepalived's check_script_secure() does first).
    """
    return first_insecure(path, KEEPALIVED, lstat)


def insecure_path_reason(path: str) -> str | None:
    """Why ``path`` or any directory above it is unsafe to trust as root, or None.

    The rule applied to every component of the resolved path (symlinks followed
    first, so a link cannot point the check somewhere else).  Stricter than
    keepalived in one point: a group-writable component is refused even when its
    group is root.
    """
    found = first_insecure(os.path.realpath(path), kanotify_rule(), os.stat)
    return None if found is None else f"{found[0]} {found[1]}"


def insecure_reason(path: str) -> str | None:
    """Why ``path`` itself (the file, symlinks followed) is unsafe to trust as root, or None when it is fine."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    why = _judge(st, kanotify_rule(), last=True)
    return why.removeprefix("is ") if why else None


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

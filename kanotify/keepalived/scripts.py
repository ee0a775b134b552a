"""The scripts a keepalived.conf runs, split as keepalived splits them, and as whom keepalived runs them.

:func:`scripts` finds every script reference (notify lines, fifo scripts,
``vrrp_script``, ``MISC_CHECK``, quorum and real-server notifies);
:func:`script_identity`, :func:`is_executable` and :func:`resolved_paths` follow
keepalived 2.2.7's own rules (``script_user``, ``is_executable()``,
``check_script_secure()``); :func:`kanotify_command` reads kanotify's own words
when a script runs kanotify.  :mod:`kanotify.keepalived.doctor` checks them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Sequence

from .conf import KeepalivedConf, Statement, script_argv

#: script keywords, by the block they live in (keepalived 2.2.7)
INSTANCE_SCRIPTS = ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop", "notify_deleted",
                    "notify_master_rx_lower_pri")
GROUP_SCRIPTS = ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop")
GLOBAL_SCRIPTS = ("notify_fifo_script", "vrrp_notify_fifo_script", "lvs_notify_fifo_script", "startup_script",
                  "shutdown_script")


@dataclass(frozen=True)
class Script:
    """A script a keepalived.conf line runs."""

    stmt: Statement
    block: Statement | None  # the vrrp_instance / vrrp_sync_group / ... it is in; None for global_defs
    argv: tuple[str, ...]
    user: str | None

    @property
    def kanotify(self) -> list[str] | None:
        """kanotify's own words (after the program) when this script runs kanotify."""
        argv = list(self.argv)
        if not argv:
            return None
        prog = os.path.basename(argv[0])
        if prog == "kanotify":
            return argv[1:]
        if prog.startswith("python") and argv[1:3] == ["-m", "kanotify"]:
            return argv[3:]
        return None


def scripts(conf: KeepalivedConf) -> list[Script]:
    """Every script reference of the file, with its argv as keepalived splits it."""
    found: list[Script] = []

    def add(stmt: Statement, block: Statement | None, user_word: bool = True) -> None:
        argv, rest = script_argv(stmt)
        user = rest[0] if user_word and rest else None
        found.append(Script(stmt, block, tuple(argv or ()), user))

    for s in conf.global_defs():
        if s.keyword in GLOBAL_SCRIPTS:
            add(s, None)
    for inst in conf.top("vrrp_instance"):
        for s in inst.block or ():
            if s.keyword in INSTANCE_SCRIPTS:
                add(s, inst)
    for grp in conf.top("vrrp_sync_group"):
        for s in grp.block or ():
            if s.keyword in GROUP_SCRIPTS:
                add(s, grp)
    for vscript in conf.top("vrrp_script"):
        for s in vscript.children("script"):
            add(s, vscript)
    for vs in conf.top("virtual_server"):
        for s in vs.walk():
            if s.keyword in ("quorum_up", "quorum_down", "notify_up", "notify_down"):
                add(s, vs)
            if s.keyword == "MISC_CHECK":
                user = s.child("user")
                for path in s.children("misc_path"):
                    add(path, s, user_word=False)
                    if user is not None and user.args:
                        found[-1] = Script(path, s, found[-1].argv, user.args[0])
    return found


def uid_gid(user: str | None, group: str | None = None) -> tuple[int, int] | None:
    import grp
    import pwd

    try:
        entry = pwd.getpwnam(user) if user else None
    except KeyError:
        return None
    if entry is None:
        return None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            return None
    return entry.pw_uid, gid


def script_identity(conf: KeepalivedConf, script: Script) -> tuple[str, int, int]:
    """Who keepalived runs the script as: its own user, else script_user, else keepalived_script, else root."""
    if script.user:
        ids = uid_gid(script.user)
        return (script.user, *ids) if ids else (script.user, -1, -1)
    found = conf.global_("script_user")
    default = found[-1] if found else None
    if default is not None and default.args:
        ids = uid_gid(default.args[0], default.arg(1))
        return (default.args[0], *ids) if ids else (default.args[0], -1, -1)
    ids = uid_gid("keepalived_script")
    if ids:
        return "keepalived_script", *ids
    return "root", 0, 0


def is_executable(st: os.stat_result, uid: int, gid: int) -> bool:
    """keepalived's is_executable()."""
    mode = st.st_mode
    return bool((uid == 0 and mode & 0o111) or (uid == st.st_uid and mode & stat.S_IXUSR) or (
        uid != st.st_uid and ((gid == st.st_gid and mode & stat.S_IXGRP) or (gid != st.st_gid and mode & stat.S_IXOTH))))


def resolved_paths(path: str) -> tuple[str, str | None]:
    """keepalived's check_script_secure(): the path it checks, and the real file when that differs."""
    real = os.path.realpath(path)
    if real == path:
        return path, None
    if os.path.basename(real) != os.path.basename(path):
        candidate = os.path.join(os.path.dirname(real), os.path.basename(path))
        try:
            same = os.path.samefile(candidate, real)
        except OSError:
            same = False
        if same:
            return candidate, real
    return real, None


def find_in_path(name: str) -> str | None:
    for directory in (os.environ.get("PATH") or "/bin:/usr/bin").split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def kanotify_command(words: Sequence[str]) -> tuple[str | None, list[str], str | None]:
    """kanotify's words -> (command, its arguments, --config value); global options read from their one table."""
    from ..options import lookup

    config = None
    rest: list[str] = []
    i = 0
    while i < len(words):
        hit = lookup(words[i])
        if hit is not None:
            option, value, _count = hit
            if option.takes_value and value is None and i + 1 < len(words):
                value = words[i + 1]
                i += 1
            if option.dest == "config":
                config = value
        elif not words[i].startswith("-"):
            rest.append(words[i])
        i += 1
    if not rest:
        return None, [], config
    return rest[0].lower(), rest[1:], config

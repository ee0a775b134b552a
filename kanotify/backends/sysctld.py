"""The host's sysctl.d files: persisting the config's sysctls (``kanotify sysctl --persist``), and
reading back what the host persists.

A backend: it reads and writes the host's boot configuration (``/etc/sysctl.d``), the half of the
sysctl domain that outlives a reboot (:mod:`kanotify.backends.sysctl` is the live half, and lends
it the key-to-path rule).

:func:`render` turns the config's ``[sysctl]`` table into a sysctl.d file;
:func:`write_if_changed` writes it atomically (temp file in the target
directory, fsync, rename, fsync of the directory) and only when its content
differs, so a second run reports ``unchanged`` and leaves the file alone.

:func:`persisted` reads the sysctl.d search path the way systemd-sysctl does
(``doctor`` asks it whether a value survives a reboot): ``*.conf`` in
``/etc/sysctl.d``, ``/run/sysctl.d``, ``/usr/local/lib/sysctl.d``,
``/usr/lib/sysctl.d``, ``/lib/sysctl.d`` -- a name in an earlier directory
hides the same name in a later one, a link to ``/dev/null`` masks it -- applied
in the order of their file names, then ``/etc/sysctl.conf``; later assignments
win, an explicit key wins over a glob, ``-key`` ignores errors (and without a
value excludes the key from a glob).  Its ``root`` is a parameter so tests
read a tree of their own, never the host's ``/etc``.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from typing import Sequence

from ..atomic import replace_file
from .sysctl import key_to_relpath

DEFAULT_PATH = "/etc/sysctl.d/90-kanotify.conf"
SEARCH_DIRS = ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d")
SYSCTL_CONF = "etc/sysctl.conf"
#: keys whose lo twin is persisted too: networkd and NetworkManager reset lo's conf
LO_TWINS = {
    "net.ipv4.conf.all.arp_ignore": "net.ipv4.conf.lo.arp_ignore",
    "net.ipv4.conf.all.arp_announce": "net.ipv4.conf.lo.arp_announce",
}

HEADER = """\
# Written by `kanotify sysctl --persist` from {config}.
# Do not edit: change the [sysctl] table there and run the command again.
#
# systemd-sysctl (or `sysctl --system`) applies this file at boot.  systemd-networkd,
# NetworkManager and cloud-init can reset per-interface values -- net.ipv4.conf.lo.*
# in particular -- when they bring an interface up, after this file was applied.
# kanotify sets every [sysctl] value again on each VRRP transition and on
# `kanotify reconcile` (run it from a timer), which repairs such a reset.
"""


@dataclass(frozen=True)
class Persisted:
    """A value the host would set at boot, and where it comes from."""

    value: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def render(sysctls: Sequence[tuple[str, str]], source: str) -> str | None:
    """The sysctl.d file for a config's ``[sysctl]`` table (read from *source*), or None when it is empty."""
    if not sysctls:
        return None
    keys = {k for k, _ in sysctls}
    lines = [HEADER.format(config=source)]
    lines.extend(f"{key} = {value}" for key, value in sysctls)
    added = [(LO_TWINS[k], v) for k, v in sysctls if k in LO_TWINS and LO_TWINS[k] not in keys]
    if added:
        lines.append("")
        lines.append("# Not in the config, added for lo: the kernel uses max(all, lo), and persisting lo's own")
        lines.append("# value keeps it right if a network manager resets lo but not all.")
        lines.extend(f"{key} = {value}" for key, value in added)
    return "\n".join(lines) + "\n"


def write_if_changed(path: str, content: str) -> bool:
    """Write *content* to *path* atomically, mode 0644; False (nothing written) when it is already there."""
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == content:
                return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    replace_file(path, content.encode(), mode=0o644)
    return True


# --------------------------------------------------------------------------- reading the host's files


def boot_files(root: str = "/") -> list[str]:
    """The files systemd-sysctl reads, in the order it applies them."""
    chosen: dict[str, str] = {}
    for directory in SEARCH_DIRS:
        try:
            names = os.listdir(os.path.join(root, directory))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = os.path.join(root, directory, name)
    files = [chosen[name] for name in sorted(chosen)]
    files = [f for f in files if os.path.realpath(f) != "/dev/null"]  # masked
    conf = os.path.join(root, SYSCTL_CONF)
    if os.path.isfile(conf) and conf not in files and not any(os.path.realpath(f) == os.path.realpath(conf)
                                                                for f in files):
        files.append(conf)
    return files


@dataclass
class BootSysctls:
    """What the host sets at boot: explicit keys, glob assignments and glob exclusions (``/proc/sys`` paths)."""

    explicit: dict[str, Persisted]
    globs: list[tuple[str, Persisted]]
    excluded: list[str]
    files: list[str]

    def lookup(self, key: str) -> Persisted | None:
        """What boot sets *key* to, or None; an explicit assignment wins over any glob."""
        rel = key_to_relpath(key)
        if rel in self.explicit:
            return self.explicit[rel]
        if any(fnmatch.fnmatchcase(rel, pattern) for pattern in self.excluded):
            return None
        found: Persisted | None = None
        for pattern, entry in self.globs:
            if fnmatch.fnmatchcase(rel, pattern):
                found = entry  # later files and lines win
        return found


def persisted(root: str = "/") -> BootSysctls:
    """Read every file of :func:`boot_files` below *root*."""
    boot = BootSysctls({}, [], [], boot_files(root))
    for path in boot.files:
        shown = "/" + os.path.relpath(path, root) if os.path.abspath(root) != "/" else path
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            key, eq, value = line.partition("=")
            key = key.strip()
            if key.startswith("-"):
                key = key[1:].strip()
                if not eq:  # "-pattern" alone: leave these keys out of the globs
                    boot.excluded.append(key_to_relpath(key))
                    continue
            if not eq or not key:
                continue
            entry = Persisted(" ".join(value.split()), shown, number)
            rel = key_to_relpath(key)
            if any(c in rel for c in "*?["):
                boot.globs.append((rel, entry))
            else:
                boot.explicit[rel] = entry
    return boot

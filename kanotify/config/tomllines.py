"""Line numbers for TOML key paths (``instance[0].vip[1].dev`` -> 14), found by scanning the text.

``tomllib`` does not report where valid values are, so the error path scans
the text for table headers and ``key =`` lines, counting ``[[arrays]]`` the
way :mod:`kanotify.config.tomlcheck` key paths do.  Best effort: a path not found
falls back to its nearest enclosing table (a missing key points at its
table's header), and only the error path pays for it.
"""

from __future__ import annotations

import re
import tomllib

from .tomlcheck import join

_KEYPART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_KEYS = rf"{_KEYPART}(?:[ \t]*\.[ \t]*{_KEYPART})*"
_HEADER_RE = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_KEYS})[ \t]*\]\]?[ \t]*(?:#.*)?\Z")
_ASSIGN_RE = re.compile(rf"[ \t]*({_KEYS})[ \t]*=")
_LAST_SEGMENT_RE = re.compile(r"""(?:\[\d+\]|\.?(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+))\Z""")


class LineIndex:
    """Best-effort map from key paths to the line where each is first written.

    >>> LineIndex('[[a]]\\nx = 1\\n[[a]]\\ny = 2\\n').find("a[1].y")
    4
    """

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        arrays: dict[str, int] = {}
        current = ""
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            if in_string is not None:
                if in_string in line:
                    in_string = None if line.count(in_string) % 2 else in_string
                continue
            header = _HEADER_RE.match(line)
            if header:
                current = ""
                parts = split_keys(header.group(2))
                for i, part in enumerate(parts):
                    current = join(current, part)
                    if i == len(parts) - 1 and header.group(1) == "[[":
                        arrays[current] = arrays.get(current, -1) + 1
                        current = f"{current}[{arrays[current]}]"
                    elif current in arrays:
                        current = f"{current}[{arrays[current]}]"
                self.lines.setdefault(current, number)
                continue
            assign = _ASSIGN_RE.match(line)
            if assign:
                path = current
                for part in split_keys(assign.group(1)):
                    path = join(path, part)
                    self.lines.setdefault(path, number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    in_string = quote
                    break

    def find(self, path: str) -> int | None:
        """The line of ``path``, else of its nearest enclosing table, else None."""
        while path:
            if path in self.lines:
                return self.lines[path]
            match = _LAST_SEGMENT_RE.search(path)
            if not match:
                return None
            path = path[: match.start()]
        return None


def split_keys(text: str) -> list[str]:
    """A dotted TOML key (``a."b.c".d``) as its parts, quotes resolved."""
    parts = []
    for part in re.findall(_KEYPART, text):
        if part[0] in "\"'":
            try:
                part = tomllib.loads(f"k = {part}")["k"]
            except tomllib.TOMLDecodeError:
                part = part[1:-1]
        parts.append(part)
    return parts

"""Read a plain ``[settings]`` value from a config file's bytes, without parsing the file.

Two callers need a setting before (or instead of) validating the whole file:
the config cache needs ``state_dir`` to find its entry, and the client that
hands a notification to a running listener needs ``state_dir`` (the control
socket's directory) and ``lock_timeout`` (how long to wait for an answer) --
on a path that must not import the config machinery.  The scan is exact and
conservative: exactly one ``[settings]`` header and, below it and before the
next table header, exactly one ``KEY = VALUE`` line whose value is a basic
string without escapes or a plain number (a trailing comment is fine).
Anything else gives ``None``, and the caller uses the default -- a wrong guess
costs a cache miss or an in-process run, never a wrong answer.

Free of imports beyond ``re`` on purpose.
"""

from __future__ import annotations

import os
import re

#: where the config file is unless ``--config`` or ``$KANOTIFY_CONFIG`` says otherwise
DEFAULT_CONFIG = "/etc/kanotify/kanotify.toml"
#: The defaults of the settings read here; tests/unit/test_prescan.py checks they are Settings' own.
DEFAULT_STATE_DIR = "/run/kanotify"
DEFAULT_LOCK_TIMEOUT = 10.0


def config_path(explicit: str | None = None) -> str:
    """``--config``, else ``$KANOTIFY_CONFIG``, else the default path."""
    return explicit or os.environ.get("KANOTIFY_CONFIG") or DEFAULT_CONFIG

_SETTINGS_HEADER_RE = re.compile(rb"^[ \t]*\[[ \t]*settings[ \t]*\][ \t]*(?:#[^\n]*)?\r?$", re.M)
_ANY_HEADER_RE = re.compile(rb"^[ \t]*\[", re.M)
_VALUE = rb'(?:"([^"\\\n]*)"|([0-9][0-9_.eE+-]*))'


def _settings_body(raw: bytes) -> bytes | None:
    if raw.startswith(b"\xef\xbb\xbf"):  # a byte order mark, as the loader allows
        raw = raw[3:]
    headers = set()
    at = raw.find(b"settings")
    while at != -1:  # a find per candidate: a regex over every line of a 1 MB file costs 5 ms
        header = _SETTINGS_HEADER_RE.match(raw, raw.rfind(b"\n", 0, at) + 1)
        if header:
            headers.add(header.end())
        at = raw.find(b"settings", at + 1)
    if len(headers) != 1:
        return None
    body_start = headers.pop()
    following = _ANY_HEADER_RE.search(raw, body_start)
    return raw[body_start : following.start() if following else len(raw)]


def settings_value(raw: bytes, key: str) -> str | None:
    """The text of ``key``'s value in ``[settings]`` (a string's contents, a number's digits), or None."""
    body = _settings_body(raw)
    if body is None:
        return None
    pattern = re.compile(rb"^[ \t]*" + re.escape(key.encode()) + rb"[ \t]*=[ \t]*" + _VALUE
                         + rb"[ \t]*(?:#[^\n]*)?\r?$", re.M)
    found = pattern.findall(body)
    if len(found) != 1:
        return None
    text, number = found[0]
    try:
        return (text or number).decode("utf-8")
    except UnicodeDecodeError:
        return None


def state_dir(raw: bytes) -> str:
    """The ``state_dir`` the file declares (always an absolute path; the default when unsure)."""
    value = settings_value(raw, "state_dir")
    if value is None or not value.startswith("/") or "\0" in value:
        return DEFAULT_STATE_DIR
    return value


def lock_timeout(raw: bytes) -> float:
    """The ``lock_timeout`` the file declares (the default when unsure or out of range)."""
    value = settings_value(raw, "lock_timeout")
    try:
        seconds = float(value.replace("_", "")) if value is not None else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT
    return seconds if 0 < seconds <= 3600 else DEFAULT_LOCK_TIMEOUT


__all__ = ["DEFAULT_CONFIG", "DEFAULT_LOCK_TIMEOUT", "DEFAULT_STATE_DIR", "config_path", "lock_timeout", "settings_value", "state_dir"]

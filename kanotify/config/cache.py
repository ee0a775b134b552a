"""A cache of the validated config in ``state_dir``, so a notification does not parse it again.

Parsing and validating a large config (1000 services x 10 real servers) costs
about 0.25 s natively and more in a VM, on every notification and every
reconcile.  The result depends on the file's bytes and path only, so a run that
has validated it leaves the validated :class:`~kanotify.config.values.Config` in
``<state_dir>/config.cache``, and later runs load that instead (about 20 times
faster: ``benchmarks/config_load.py``).

Where the cache is must be known before the file is parsed: it is the
``state_dir`` the file declares, found by a cheap, exact scan of the raw text
(:func:`declared_state_dir`: one plain ``state_dir = "..."`` line inside the
``[settings]`` table; anything unusual means the default).  The scan does not
have to be right for the cache to be: an entry is used only when everything
it records matches --

* the SHA-256 of the file's bytes, its path, and the owner, group and mode of
  the file that was read (the ones :mod:`kanotify.security` checks), so one
  changed byte, a ``chmod`` or a ``chown`` is a miss;
* kanotify's version, a hash of the code that defines a validated config
  (this module, :mod:`kanotify.config.schema`, :mod:`kanotify.config.values`, :mod:`kanotify.config.tomlcheck`,
  :mod:`kanotify.model`) and Python's version, so an upgraded kanotify never
  reads an entry written by another one;
* the ``state_dir`` it was found in, which is the one the validated config
  declares (an entry is written only when the scan and the validation agree);
* the SHA-256 of the stored payload, so a torn or damaged entry is a miss.

Anything else -- no entry, a mismatch, a damaged entry, a state dir that is a
symlink, not ours or open to others, an entry that is a symlink, not a regular
file, not ours or not mode 0600 -- is a miss: the file is validated from
scratch (so a broken config still gets every error message) and the entry is
rewritten, atomically (temp file + rename), only by the process that has just
validated it, and only into a state dir that passes :func:`kanotify.store.is_private_dir`
(never created here).  Writing is best effort: it never fails a run.
``kanotify check`` never uses the cache (it is the operator's "is my file
right"); the commands that load the config for a run do (notifications,
``reconcile``, ``plan``, ``status``).

Serialization: pickle, deliberately.  Measured on the 11,000-object config:
loading a pickle takes ~10 ms (8 with the cyclic GC paused), a hand-written
JSON form ~17 ms (JSON decode 4 ms, rebuilding the value objects the rest) --
and that JSON form would be a second copy of the whole config model, to be
kept in step with :mod:`kanotify.model` forever.  Pickle rebuilds whatever the
dataclasses are.
Its danger is that loading a pickle can run code.  It is acceptable here because
of what is checked *before* the payload is unpickled: the state dir is a real
directory owned by our euid (root, on a director) with mode 0700, and the entry
is a regular file owned by our euid with mode 0600, opened without following
symlinks -- so only root could have written it, and root can already change
kanotify itself.  On top of that, the header (key and payload digest) must
match before unpickling starts, and the unpickler resolves only the classes a
config is made of (kanotify's value types, :mod:`ipaddress`, :mod:`datetime`);
anything else is a damaged entry.
"""

from __future__ import annotations

import gc
import io
import json
import os
import pickle
import stat
import sys
import time
from types import MappingProxyType
from typing import Any

from .. import __version__
from . import prescan
from ..atomic import TEMP_INFIX, replace_file
from .schema import parse_config_bytes, read_config_file
from .values import Config
from ..store import is_private_dir

CACHE_FILE = "config.cache"
FORMAT = 1
#: smaller files are validated directly, without the cache: parsing them costs less than
#: importing hashlib and hashing (natively the two break even at about 20 KiB)
MIN_SIZE = 32 * 1024

#: the sources whose code decides what a validated config is (hashed into every key)
_SCHEMA_SOURCES = ("config/cache.py", "config/schema.py", "config/values.py", "config/tomlcheck.py", "model.py")
#: an entry larger than this is not read (a config is a few MB at most)
_MAX_ENTRY = 256 * 1024 * 1024
#: temp files of writers killed before their rename are removed after this many seconds
_STALE_TEMP = 60.0

def declared_state_dir(raw: bytes) -> str:
    """The ``state_dir`` a config file's bytes declare, by a plain scan without parsing.

    Exactly one ``[settings]`` header and, below it and before the next table
    header, exactly one ``state_dir = "/abs/path"`` line (a basic string without
    escapes; a trailing comment is fine).  Anything else -- no such line, two of
    them, escapes, a literal string, a dotted key, an inline table -- gives the
    default ``state_dir``.  Always an absolute path.  (:mod:`kanotify.config.prescan`.)
    """
    return prescan.state_dir(raw)


def load_config_cached(path: str) -> Config:
    """:func:`~kanotify.config.schema.load_config`, served from the cache when its entry matches the file.

    The same result and the same :class:`~kanotify.errors.ConfigError` as
    :func:`~kanotify.config.schema.load_config` in every case; only faster on a hit.
    """
    raw, st = read_config_file(path)
    if len(raw) < MIN_SIZE:
        return parse_config_bytes(raw, path)
    state_dir = declared_state_dir(raw)
    key = _key(path, raw, st, state_dir)
    if key is not None:
        cached = _read(state_dir, key)
        if cached is not None and cached.path == path and cached.settings.state_dir == state_dir:
            return cached
    config = parse_config_bytes(raw, path)  # a ConfigError leaves the cache alone
    if key is not None and config.settings.state_dir == state_dir:
        write_entry(state_dir, key, config)
    return config


# --------------------------------------------------------------------------- the key

_schema: str | None = None


def _schema_digest() -> str:
    """SHA-256 of the code that defines a validated config, read once per process (the code
    running is the code read at start-up, whatever an upgrade puts on disk later)."""
    global _schema
    if _schema is None:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # kanotify/
        parts = []
        for name in _SCHEMA_SOURCES:
            with open(os.path.join(package, name), "rb") as fh:
                parts.append(name.encode() + b"\0" + fh.read())
        _schema = _sha256(b"\0".join(parts))
    return _schema


def _sha256(data: bytes) -> str:
    import hashlib  # here, not at the top: a small config never needs it (hashlib costs ~3 ms)

    return hashlib.sha256(data).hexdigest()


def _key(path: str, raw: bytes, st: os.stat_result, state_dir: str) -> dict[str, Any] | None:
    """Everything an entry must have been written for; None when the code cannot be hashed (no cache)."""
    try:
        schema = _schema_digest()
    except OSError:
        return None
    return {
        "format": FORMAT,
        "kanotify": __version__,
        "schema": schema,
        "python": sys.version,
        "path": path,
        "sha256": _sha256(raw),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mode": st.st_mode,
        "state_dir": state_dir,
    }


# --------------------------------------------------------------------------- reading


def _read(state_dir: str, key: dict[str, Any]) -> Config | None:
    """The entry's config when the entry can be trusted and its key is ``key``; None otherwise."""
    if not is_private_dir(state_dir):
        return None
    entry = os.path.join(state_dir, CACHE_FILE)
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the notification
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o600
                or st.st_size > _MAX_ENTRY):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    header_line, newline, payload = data.partition(b"\n")
    if not newline:
        return None
    try:
        header = json.loads(header_line)
        if not isinstance(header, dict) or header.pop("payload", None) != _sha256(payload):
            return None
        if header != key:
            return None
        collecting = gc.isenabled()  # a one-shot run has it off already (kanotify.__main__)
        gc.disable()  # tens of thousands of new objects, no cycles among them: a third faster
        try:
            config = _Unpickler(io.BytesIO(payload)).load()
        finally:
            if collecting:
                gc.enable()
    except Exception:  # noqa: BLE001 - a damaged entry of any kind is a miss, never a crash
        return None
    return config if isinstance(config, Config) else None


#: where the classes of a validated config are defined (all imported by the time an entry is read)
_TRUSTED_MODULES = ("kanotify.config.values", "kanotify.model", "ipaddress", "datetime")


class _Unpickler(pickle.Unpickler):
    """Resolves only the classes a validated config is made of."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, "_read_only"):
            return _read_only
        if module in _TRUSTED_MODULES:
            found = getattr(sys.modules.get(module), name, None)
            if isinstance(found, type) and found.__module__ == module:  # defined there, not imported
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a config")


def _read_only(items: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(items)


# --------------------------------------------------------------------------- writing


class _Pickler(pickle.Pickler):
    """Pickles a config; its read-only mappings (``hooks``, plugin options) included."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is MappingProxyType:
            return _read_only, (dict(obj),)
        return NotImplemented


def write_entry(state_dir: str, key: dict[str, Any], config: Config) -> bool:
    """Store ``config`` (just validated) under ``key``; best effort: False instead of any error."""
    try:
        if not is_private_dir(state_dir):
            return False
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(config)
        payload = buffer.getvalue()
        header = json.dumps({**key, "payload": _sha256(payload)}, sort_keys=True)
        _remove_stale_temp_files(state_dir)
        # no fsync: after a crash, a torn entry fails its digest and is rewritten
        replace_file(os.path.join(state_dir, CACHE_FILE), header.encode() + b"\n" + payload, durable=False)
    except Exception:  # noqa: BLE001 - a cache that cannot be written is only a slower next run
        return False
    return True


def _remove_stale_temp_files(state_dir: str) -> None:
    """Temp files of writers killed between write and rename (a live writer's is younger)."""
    prefix = CACHE_FILE + TEMP_INFIX
    now = time.time()
    for name in os.listdir(state_dir):
        if name.startswith(prefix):
            path = os.path.join(state_dir, name)
            try:
                if now - os.lstat(path).st_mtime > _STALE_TEMP:
                    os.unlink(path)
            except OSError:
                pass

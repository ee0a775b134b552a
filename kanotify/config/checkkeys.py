"""The ``check`` keys of keepalived's other checkers (issue 21): read beside :mod:`kanotify.config.schema`'s.

``address``/``source``/``source_port`` (keepalived's ``connect_ip``,
``bindto``, ``bind_port``), HTTP ``digest``, and the keys of the ``dns``,
``udp``, ``smtp``, ``file`` checks and of a ``command`` check's ``dynamic``
weight.  :func:`check_keys_more` reads them from one check table,
:func:`check_set_problems` judges the checks of one real server together.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from ..model import DNS_TYPES, PORT_CHECKS, HealthCheck, IPAddress, RealServer
from .tomlcheck import Table, got, literal

#: the keys read here, after schema's own
CHECK_KEYS_MORE = ("address", "source", "source_port", "digest", "dns_type", "dns_name", "payload", "require_reply",
                   "reply", "helo_name", "file", "weight", "reverse", "dynamic")
_CONNECTING = ("tcp", "http", "https", "dns", "udp", "smtp", "ping")
#: key -> the check types it means something for
CHECK_KEY_TYPES_MORE: dict[str, tuple[str, ...]] = {
    "port": (*PORT_CHECKS, "command"),  # a command may be given a port for its own reasons (kept as before)
    "address": _CONNECTING, "source": _CONNECTING, "source_port": PORT_CHECKS,
    "digest": ("http", "https"), "dns_type": ("dns",), "dns_name": ("dns",),
    "payload": ("udp",), "require_reply": ("udp",), "reply": ("udp",), "helo_name": ("smtp",),
    "file": ("file",), "weight": ("file",), "reverse": ("file",), "dynamic": ("command",),
}
_HEX = re.compile(r"[0-9A-Fa-f]{2}(?:[ :]?[0-9A-Fa-f]{2})*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_*-]{1,63}(?<!-)")


def _hex(value: str) -> str | None:
    if not _HEX.fullmatch(value):
        return f"expected bytes as hex digits (pairs, optionally separated by spaces or colons), got {literal(value)}"
    return None


def _digest(value: str) -> str | None:
    if not re.fullmatch(r"[0-9A-Fa-f]{32}", value):
        return f"expected an MD5 digest: 32 hex digits (as keepalived's genhash prints it), got {literal(value)}"
    return None


def _dns_name(value: str) -> str | None:
    name = value.rstrip(".") if value != "." else ""
    if len(name) > 253 or (name and not all(_LABEL.fullmatch(label) for label in name.split("."))):
        return f'expected a domain name like "example.com" (or "." for the root), got {literal(value)}'
    return None


def _host_name(value: str) -> str | None:
    if len(value) > 255 or any(c.isspace() or ord(c) < 32 for c in value):
        return f"expected a name without spaces (at most 255 characters), got {literal(value)}"
    return None


def _abs_path(value: str) -> str | None:
    if not os.path.isabs(value) or "\0" in value:
        return f"expected an absolute path, got {literal(value)}"
    return None


def _address(reader: Any, ct: Table, name: str) -> IPAddress | None:
    text = ct.text(name, "an IP address")
    if text is None:
        return None
    parsed = reader.address(text)
    if isinstance(parsed, str):
        ct.problem(name, parsed)
        return None
    return parsed


def check_keys_more(reader: Any, ct: Table, values: dict[str, object]) -> None:
    """Read :data:`CHECK_KEYS_MORE` from ``ct`` into ``values`` (only those given); problems go to ``ct``."""
    if ct.has("address"):
        values["address"] = _address(reader, ct, "address")
    if ct.has("source"):
        values["source"] = _address(reader, ct, "source")
    if ct.has("source_port"):
        values["source_port"] = ct.integer("source_port", 1, 65535)
    if ct.has("digest"):
        digest = ct.text("digest", "an MD5 digest (32 hex digits)", check=_digest)
        values["digest"] = None if digest is None else digest.lower()
    if ct.has("dns_type"):
        kind = ct.choice("dns_type", tuple(DNS_TYPES))
        values["dns_type"] = kind
    if ct.has("dns_name"):
        name = ct.text("dns_name", "a domain name", check=_dns_name)
        values["dns_name"] = None if name is None else "" if name == "." else name.rstrip(".")
    for key in ("payload", "reply"):
        if ct.has(key):
            text = ct.text(key, "bytes as hex digits", check=_hex)
            values[key] = None if text is None else bytes.fromhex(text.replace(":", "").replace(" ", ""))
    if ct.has("require_reply"):
        values["require_reply"] = ct.boolean("require_reply", None)
    if ct.has("helo_name"):
        values["helo_name"] = ct.text("helo_name", "a host name for HELO", check=_host_name)
    if ct.has("file"):
        values["file"] = ct.text("file", "an absolute path", check=_abs_path)
    if ct.has("weight"):
        values["weight"] = _signed(ct, "weight", 254)
    if ct.has("reverse"):
        values["reverse"] = ct.boolean("reverse", None)
    if ct.has("dynamic"):
        values["dynamic"] = ct.boolean("dynamic", None)
    if values.get("reply") and values.get("require_reply") is False:
        ct.problem("reply", "expected require_reply = true (or no require_reply) with reply: a reply that is not "
                            "required is never compared")


def _signed(ct: Table, name: str, limit: int) -> int | None:
    value = ct.data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not -limit <= value <= limit:
        ct.problem(name, f"expected an integer -{limit}..{limit} (keepalived's track_file weight), "
                         f"got {literal(value)}")
        return None
    return value


@dataclass(frozen=True)
class _CheckKeys:
    """A ``check`` table's keys, each validated on its own: name -> (value, key path it was written at)."""

    path: str
    keys: Mapping[str, tuple[object, str]]
    array: bool = False  # one of ``[[...check]]``: a whole check, merged with no other


#: a check table with a problem (reported already)
_BROKEN = _CheckKeys("", {})


def check_tables(reader: Any, t: Table, header: str) -> list[_CheckKeys] | None:
    """A ``check`` table as a list of one, or an array of them (``[[...check]]``: several checks, all must pass).

    ``None`` when there is none; a broken one is :data:`_BROKEN` in the list.
    """
    value = t.data.get("check")
    if not isinstance(value, list):
        one = reader.check_table(t, header)
        return None if one is None else [one]
    if not value:
        t.problem("check", f"expected at least one check table ([[{header}]]), got an empty array")
        return [_BROKEN]
    result: list[_CheckKeys] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            reader.problems.add(f"{t.at('check')}[{i}]", f"expected a table ([[{header}]]), {got(item)}")
            result.append(_BROKEN)
            continue
        one = reader.check_table(Table(reader.problems, t.path, {"check": item}, ("check",)), header,
                               at=f"{t.at('check')}[{i}]")
        result.append(_BROKEN if one is None or one is _BROKEN else replace(one, array=True))
    return result


def health_checks(
    reader: Any, rpath: str, service: list[_CheckKeys] | None, real: list[_CheckKeys] | None, server: RealServer | None,
) -> list[HealthCheck]:
    """The checks of one real server: its own array, else its service's, a single table of both merged."""
    if service is None and real is None:
        return []
    if server is None or _BROKEN in (service or ()) or _BROKEN in (real or ()):
        return []
    pairs: list[tuple[_CheckKeys | None, _CheckKeys | None]]
    if real is not None and real[0].array:
        pairs = [(None, one) for one in real]  # the real server's own checks replace its service's
    elif real is not None and service is not None and service[0].array:
        at = f"{real[0].path}"
        message = ("expected [[instance.service.real.check]] tables: the service has several checks, which one "
                   "table cannot override; give the real server all its checks as an array")
        if (at, message) not in reader.problems.items:
            reader.problems.add(at, message)
        return []
    elif real is not None:
        pairs = [(service[0] if service else None, real[0])]
    else:
        assert service is not None
        pairs = [(one, None) for one in service]
    checks: list[HealthCheck] = []
    for service_keys, real_keys in pairs:
        check = reader.health_check(rpath, service_keys, real_keys, server)
        if check is None:
            return []
        checks.append(check)
    tables = [real_keys or service_keys for service_keys, real_keys in pairs]
    for at, message in check_set_problems(checks, [t.path if t else rpath for t in tables]):
        if (at, message) not in reader.problems.items:
            reader.problems.add(at, message)
        return []
    return checks


def check_set_problems(checks: Sequence[HealthCheck], paths: Sequence[str]) -> list[tuple[str, str]]:
    """What is wrong with these checks of one real server together: (key path, message)."""
    first = checks[0]
    for check, path in zip(checks[1:], paths[1:]):
        if check.on_failure != first.on_failure:
            return [(f"{path}.on_failure", f"expected on_failure = {literal(first.on_failure)} as in {paths[0]}: "
                                           "a real server with several checks is drained or removed as one")]
    return []


__all__ = ["CHECK_KEYS_MORE", "CHECK_KEY_TYPES_MORE", "check_keys_more", "check_set_problems", "check_tables",
           "health_checks"]

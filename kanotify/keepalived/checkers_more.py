"""keepalived's connection options and other checkers as kanotify check keys (issue 21).

The lines :func:`kanotify.keepalived.checkers._map_checker` adds for
``connect_ip``/``bindto``/``bind_port`` (:func:`connection_lines`), and for
the keys of ``DNS_CHECK``, ``UDP_CHECK``, ``SMTP_CHECK`` and ``FILE_CHECK``
(:func:`checker_lines`), each with the line it came from; what cannot be
mapped is a :class:`~kanotify.keepalived.imported.Note` with its reason.
"""

from __future__ import annotations

import re

from ..config.values import ip_or_none
from ..model import DNS_TYPES, RealServer
from .conf import Statement, Where
from .imported import CheckLine, Note, VSBlock, note_at, toml_str, uint_in


def hex_bytes(text: str, masks: bool) -> tuple[bytes | None, int | None]:
    """keepalived's read_hex_str (parser.c): bytes of one or two hex digits, spaces between single ones.

    Returns (the bytes, the index of the first byte with a masked nibble ``x``
    when ``masks``, else None); (None, None) where keepalived rejects it.
    """
    out = bytearray()
    first_mask: int | None = None
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos >= len(text):
            break
        digits = ""
        masked = False
        for _ in range(2):
            if pos >= len(text) or (digits and text[pos] == " "):
                break
            ch = text[pos]
            pos += 1
            if masks and ch in "xX":
                masked, ch = True, "0"
            elif ch not in "0123456789abcdefABCDEF":
                return None, None
            digits += ch
        if masked and first_mask is None:
            first_mask = len(out)
        out.append(int(digits, 16))
    return (bytes(out) or None), first_mask


def connection_lines(kind: str, raw: dict[str, Statement], real: RealServer, notes: list[Note],
                     sources: set[Where], comments: list[str]) -> list[CheckLine]:
    """``connect_ip``, ``bindto`` and ``bind_port`` as ``address``, ``source`` and ``source_port``."""
    lines: list[CheckLine] = []
    family = real.address.version
    if "connect_ip" in raw:
        s = raw["connect_ip"]
        address = ip_or_none(s.arg(0) or "")
        if address is None:
            notes.append(note_at(s, "keepalived rejects it: expected an IP address (the real server's own is checked)"))
        elif address == real.address:
            sources.add(s.where)
            comments.append(f"connect_ip {address} ({s.where}): the real server's own address, kanotify's default")
        else:
            sources.add(s.where)
            family = address.version
            lines.append(CheckLine("address", toml_str(str(address)), f"connect_ip ({s.where})"))
    if "bindto" in raw:
        s = raw["bindto"]
        source = ip_or_none(s.arg(0) or "")
        if source is None:
            notes.append(note_at(s, "keepalived rejects it: expected an IP address"))
        elif source.version != family:
            notes.append(note_at(s, f"an IPv{source.version} source for an IPv{family} check: keepalived's bind() "
                                    "fails and every check fails with it"))
        else:
            sources.add(s.where)
            lines.append(CheckLine("source", toml_str(str(source)), f"bindto ({s.where})"))
    if "bind_port" in raw:
        s = raw["bind_port"]
        port = uint_in(s.arg(0), 1, 65535)
        if kind == "ping":
            notes.append(note_at(s, "keepalived's PING_CHECK has no port: it ignores it"))
        elif port is None:
            notes.append(note_at(s, "keepalived ignores it: expected an integer 1..65535"))
        else:
            sources.add(s.where)
            lines.append(CheckLine("source_port", str(port), f"bind_port ({s.where})"))
    return lines


def checker_lines(kind: str, raw: dict[str, Statement], vs: VSBlock, notes: list[Note], sources: set[Where],
                  comments: list[str], blockers: list[str]) -> list[CheckLine]:
    """The keys of a DNS_CHECK, UDP_CHECK, SMTP_CHECK or FILE_CHECK."""
    lines: list[CheckLine] = []
    if kind == "dns":
        if "type" in raw:
            s = raw["type"]
            name = next((t for t in DNS_TYPES if t.lower() == (s.arg(0) or "").lower()), None)
            if name is None:
                notes.append(note_at(s, f"keepalived ignores it (its types: {', '.join(DNS_TYPES)}): it asks SOA"))
            else:
                sources.add(s.where)
                lines.append(CheckLine("dns_type", toml_str(name), f"type ({s.where})"))
        else:
            comments.append("no type: keepalived asks SOA, kanotify's default")
        if "name" in raw and raw["name"].args:
            s = raw["name"]
            sources.add(s.where)
            name_text = s.args[0]
            lines.append(CheckLine("dns_name", toml_str(name_text if name_text else "."), f"name ({s.where})"))
    elif kind == "udp":
        if "payload" in raw:
            s = raw["payload"]
            data, _ = hex_bytes(" ".join(s.args), masks=False)
            if data is None:
                notes.append(note_at(s, "keepalived rejects it (not hex): it sends its own 32 bytes"))
            else:
                sources.add(s.where)
                lines.append(CheckLine("payload", toml_str(data.hex(" ")), f"payload ({s.where})"))
        if "require_reply" in raw:
            s = raw["require_reply"]
            sources.add(s.where)
            lines.append(CheckLine("require_reply", "true", f"require_reply ({s.where})"))
            if s.args:
                data, masked = hex_bytes(" ".join(s.args), masks=True)
                if data is None:
                    notes.append(note_at(s, "keepalived rejects the reply (not hex): any reply passes"))
                else:
                    if masked is not None:
                        comments.append(f"require_reply ({s.where}): kanotify's reply has no masked nibbles (x); "
                                        f"the {masked} byte(s) before the first one are compared")
                        data = data[:masked]
                    if data:
                        lines.append(CheckLine("reply", toml_str(data.hex(" ")), f"require_reply ({s.where})"))
        for name in ("min_reply_length", "max_reply_length"):
            if name in raw:
                notes.append(note_at(raw[name], "kanotify compares the reply's first bytes, not its length"))
    elif kind == "smtp":
        if "helo_name" in raw and raw["helo_name"].args:
            s = raw["helo_name"]
            sources.add(s.where)
            lines.append(CheckLine("helo_name", toml_str(s.args[0]), f"helo_name ({s.where})"))
        else:
            comments.append("no helo_name: keepalived's smtpchecker.keepalived.org, kanotify's default")
    elif kind == "file":
        lines.extend(_file_lines(raw, vs, notes, sources, comments, blockers))
    return lines


def _file_lines(raw: dict[str, Statement], vs: VSBlock, notes: list[Note], sources: set[Where],
                comments: list[str], blockers: list[str]) -> list[CheckLine]:
    """FILE_CHECK { track_file NAME; weight W [reverse] } with the track_file NAME { file PATH; weight } block."""
    if "track_file" not in raw or not raw["track_file"].args:
        blockers.append("keepalived ignores a FILE_CHECK without track_file")
        return []
    s = raw["track_file"]
    block = vs.track_files.get(s.args[0])
    if block is None:
        blockers.append(f"track_file {s.args[0]} ({s.where}) is not defined: keepalived ignores the FILE_CHECK")
        return []
    sources.add(s.where)
    paths = [f for f in block.children("file") if f.args]
    if not paths:
        blockers.append(f"track_file {s.args[0]} ({block.where}) has no file: keepalived ignores it")
        return []
    path = paths[-1]
    sources.add(path.where)
    lines = [CheckLine("file", toml_str(path.args[0]), f"track_file {s.args[0]} file ({path.where})")]
    weight, reverse, origin = 1, False, "track_file's default weight 1"
    for source in ([w for w in block.children("weight") if w.args][-1:], [raw["weight"]] if "weight" in raw else []):
        for w in source:
            if not re.fullmatch(r"-?[0-9]+", w.args[0] if w.args else "") or not -254 <= int(w.args[0]) <= 254:
                notes.append(note_at(w, "keepalived ignores it: expected a weight -254..254"))
                continue
            sources.add(w.where)
            weight, origin = int(w.args[0]), f"weight ({w.where})"
            reverse = len(w.args) > 1 and w.args[1] == "reverse"
    lines.append(CheckLine("weight", str(weight), origin))
    if reverse:
        lines.append(CheckLine("reverse", "true", origin))
    comments.append("keepalived watches the file with inotify; kanotify reads it every interval")
    return lines


__all__ = ["checker_lines", "connection_lines", "hex_bytes"]

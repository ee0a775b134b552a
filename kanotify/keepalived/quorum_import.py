"""A ``virtual_server``'s quorum keywords as kanotify service keys: ``quorum``, ``hysteresis``, ``sorry_server``.

keepalived 2.2.7 (``check_parser.c``, ``check_data.c`` ``alloc_ssvr``, ``ipwrapper.c``):

- ``quorum N`` (1..UINT_MAX; anything else: an error, and 1), ``hysteresis N``
  (0..UINT_MAX; anything else: ignored) become ``quorum``/``hysteresis``, with
  ``quorum_withdraw = false``: keepalived leaves the VIPs to VRRP when the
  quorum is lost, and so does the import (set it to true for kanotify's VIP
  withdrawal, e.g. behind ECMP).
- ``sorry_server IP [PORT]`` becomes ``[instance.service.sorry_server]``: weight 1,
  the forwarding method the virtual server had when the line was read (NAT
  before any ``lvs_method``), changed by ``sorry_server_lvs_method``; with DR and
  TUN the service's port (as for real servers); ``sorry_server_inhibit`` is
  ``inhibit = true``.
- ``quorum_up``/``quorum_down`` scripts: keepalived runs them with ``execve``;
  kanotify runs no script line itself, so they stay comments with the lines
  for the ``quorum_command`` example hook (``hooks/quorum_command.py``), which
  runs the same argv from ``kanotify_quorum_up``/``kanotify_quorum_down``.
- ``omega``: keepalived then runs those scripts at shutdown too; kanotify calls
  no quorum hook at shutdown (the STOP run's hooks see it): said in a comment.
"""

from __future__ import annotations

from ..model import IPAddress, ServiceKey
from .conf import Statement, script_argv
from .imported import ImportedQuorum, Note, QuorumBlock, VSBlock, note_at, parse_ip, toml_str, uint_in

UINT_MAX = 2**32 - 1
FORWARDS = {"DR": "dr", "NAT": "nat", "TUN": "tun"}


def _block(vs: VSBlock) -> QuorumBlock:
    return vs.quorum


def _quorum(vs: VSBlock, s: Statement) -> None:
    value = uint_in(s.arg(0), 1, UINT_MAX)
    block = _block(vs)
    block.quorum, block.quorum_where = (value if value is not None else 1), s.where
    if value is None:
        vs.notes.append(note_at(s, "keepalived rejects it and uses quorum 1 (imported as 1)"))


def _hysteresis(vs: VSBlock, s: Statement) -> None:
    value = uint_in(s.arg(0), 0, UINT_MAX)
    if value is None:
        vs.notes.append(note_at(s, f"keepalived ignores it (expected 0..{UINT_MAX})"))
        return
    block = _block(vs)
    block.hysteresis, block.hysteresis_where = value, s.where


def _sorry(vs: VSBlock, s: Statement) -> None:
    address = parse_ip(s.arg(0))
    port_word = s.arg(1, "0") or "0"
    port = uint_in(port_word, 0, 65535)
    if address is None or port is None:
        vs.notes.append(note_at(s, "keepalived skips a sorry server with an invalid address or port"))
        return
    _block(vs).sorry = (address, port, vs.forward or "nat", s.where)


def _sorry_inhibit(vs: VSBlock, s: Statement) -> None:
    block = _block(vs)
    if block.sorry is None:
        vs.notes.append(note_at(s, "keepalived ignores sorry_server_inhibit before or without sorry_server"))
    else:
        block.inhibit = s.where


def _sorry_method(vs: VSBlock, s: Statement) -> None:
    block = _block(vs)
    forward = FORWARDS.get(s.arg(0) or "")
    if block.sorry is None:
        vs.notes.append(note_at(s, "keepalived ignores sorry_server_lvs_method without sorry_server"))
    elif forward is None:
        vs.notes.append(note_at(s, "keepalived knows DR, NAT and TUN only; it ignores this line"))
    else:
        address, port, _old, where = block.sorry
        block.sorry = (address, port, forward, where)
        block.method = s.where
        if len(s.args) > 1:
            vs.notes.append(note_at(s, "tunnel options (type gue/gre, port, csum): kanotify configures plain IPIP "
                                       "tunnels"))


def _script(vs: VSBlock, s: Statement) -> None:
    _block(vs).scripts.append(s)


def _omega(vs: VSBlock, s: Statement) -> None:
    _block(vs).omega = s.where


#: the virtual_server keywords this module maps, by canonical name
QUORUM_KEYWORDS = {
    "quorum": _quorum,
    "hysteresis": _hysteresis,
    "sorry_server": _sorry,
    "sorry_server_inhibit": _sorry_inhibit,
    "sorry_server_lvs_method": _sorry_method,
    "quorum_up": _script,
    "quorum_down": _script,
    "omega": _omega,
}


def service_quorum(vs: VSBlock, key: ServiceKey, service_port: int, real_keys: set[tuple[IPAddress, int]],
                   first: bool) -> tuple[ImportedQuorum | None, list[Note]]:
    """The quorum keys of one service made from ``vs`` (one of several for a group), and the notes (first only)."""
    block = vs.quorum
    notes: list[Note] = []
    lines: list[tuple[str, str, str]] = []
    comments: list[str] = []
    if block.quorum is not None:
        lines.append(("quorum", str(block.quorum), f"quorum ({block.quorum_where})"))
    if block.hysteresis is not None:
        limit = block.quorum if block.quorum is not None else 1
        if block.hysteresis >= limit:  # keepalived's check_check_config: "setting hysteresis to quorum - 1"
            lines.append(("hysteresis", str(limit - 1), f"hysteresis {block.hysteresis} ({block.hysteresis_where}) "
                                                        f">= quorum {limit}: keepalived sets quorum - 1"))
        else:
            lines.append(("hysteresis", str(block.hysteresis), f"hysteresis ({block.hysteresis_where})"))
    sorry: list[tuple[str, str, str]] = []
    if block.sorry is not None:
        address, port, forward, where = block.sorry
        if forward != "nat":
            port = service_port  # as for real servers: DR and TUN keep the service's port
        port = port or service_port
        if address.version != key.family:
            if first:
                notes.append(Note(where, f"sorry_server {address}", "its address family differs from the service's: "
                                                                     "keepalived refuses it"))
        elif (address, port) in real_keys:
            if first:
                notes.append(Note(where, f"sorry_server {address}", "it is one of the real servers: keepalived then "
                                                                     "only sets that real server's weight; kanotify's "
                                                                     "sorry server must be another server"))
        else:
            sorry = [("address", toml_str(str(address)), f"sorry_server ({where})"), ("port", str(port), ""),
                     ("forward", toml_str(forward), f"sorry_server_lvs_method ({block.method})" if block.method
                      else "the virtual server's lvs_method when sorry_server was read (keepalived's default NAT)")]
            if block.inhibit is not None:
                sorry.append(("inhibit", "true", f"sorry_server_inhibit ({block.inhibit})"))
    if lines or sorry:
        lines.append(("quorum_withdraw", "false", "keepalived leaves the VIPs to VRRP; true unbinds them while "
                                                  "the quorum is lost"))
    if block.omega is not None:
        comments.append(f"omega ({block.omega}): keepalived runs quorum_down/notify_down scripts at shutdown too; "
                        "kanotify calls no quorum hook at shutdown (kanotify_after_transition sees the STOP)")
    if first:
        for s in block.scripts:
            notes.append(_script_note(s, key))
    quorum = ImportedQuorum(tuple(lines), tuple(sorry), tuple(comments)) if lines or sorry or comments else None
    return quorum, notes


def _script_note(s: Statement, key: ServiceKey) -> Note:
    argv, rest = script_argv(s)
    hook = "up" if s.keyword == "quorum_up" else "down"
    if argv is None:
        return note_at(s, "keepalived cannot parse this script line either")
    user = f"; keepalived runs it as {rest[0]}, the hook as kanotify's user" if rest else ""
    return note_at(s, f"a script: kanotify runs no script line itself; the example hook hooks/quorum_command.py "
                      f"runs this argv from kanotify_quorum_{hook} (install it, then these lines){user}",
                   (f'[hooks.quorum_command.per_service.{toml_str(str(key))}]',
                    f"{hook} = [{', '.join(toml_str(w) for w in argv)}]"))


__all__ = ["QUORUM_KEYWORDS", "service_quorum"]

"""The tunnel of a ``forward = "tun"`` real server: ``tun_type``, ``tun_port``, ``tun_flags``.

The rules are ipvsadm's (``--tun-type``, ``--tun-port``, ``--tun-nocsum|--tun-csum|--tun-remcsum``) and
keepalived's (``lvs_method TUN type gue port N csum``, check_parser.c): a port for gue only, and required
there (the kernel refuses a gue tunnel with port 0); a checksum option for gue and gre, remote checksum
offload for gue only; one option per real server.
"""

from __future__ import annotations

from ..model import TUN_FLAGS, TUN_TYPES
from .tomlcheck import Table, literal


def real_tunnel(t: Table, forward: str | None) -> tuple[str, int, str] | None:
    """``tun_type``, ``tun_port``, ``tun_flags`` of a real server: what ipvsadm's ``--tun-*`` and
    keepalived's ``lvs_method TUN type ...`` accept (a port for gue only and then required; csum for
    gue and gre; remcsum for gue); None after a problem."""
    given = [name for name in ("tun_type", "tun_port", "tun_flags") if t.has(name)]
    if forward is None:  # forward itself is wrong: that is the problem to report
        return None
    if forward != "tun":
        for name in given:
            t.problem(name, f"only for forward = \"tun\" (this real server's forward is {literal(forward)})")
        return None if given else ("ipip", 0, "nocsum")
    kind = t.choice("tun_type", TUN_TYPES, default="ipip")
    port = t.integer("tun_port", 1, 65535, default=0)
    flags = t.choice("tun_flags", TUN_FLAGS, default="nocsum")
    if kind is None or port is None or flags is None:
        return None
    ok = True
    if kind == "gue" and not port:
        t.problem("tun_port", "missing required key for tun_type = \"gue\": expected the real server's "
                              "GUE (fou) UDP port, an integer 1..65535")
        ok = False
    if kind != "gue" and t.has("tun_port"):
        t.problem("tun_port", f"only for tun_type = \"gue\" (this tunnel is {literal(kind)})")
        ok = False
    if kind == "ipip" and t.has("tun_flags"):
        t.problem("tun_flags", "ipip tunnels have no checksum option: expected no tun_flags, or tun_type "
                               "\"gue\" or \"gre\"")
        ok = False
    elif kind == "gre" and flags == "remcsum":
        t.problem("tun_flags", "expected \"nocsum\" or \"csum\" for tun_type = \"gre\" (remote "
                               "checksum offload is gue's only)")
        ok = False
    return (kind, port, flags) if ok else None

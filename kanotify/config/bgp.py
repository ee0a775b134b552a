"""``[bgp]``: read and validate the BGP wiring table (binding is announcing).

Kept out of :mod:`.schema` (which is near its size limit) and called by it::

    [bgp]
    interface = "kav0"              # the dummy link; created (up, no ARP) if missing, never deleted
    daemon = "bird"                 # bird | frr: what doctor and status read
    control = "/run/bird/bird.ctl"  # optional: the daemon's control socket
"""

from __future__ import annotations

from typing import Callable

from .tomlcheck import Problems, Table, literal
from .values import BGP_DAEMONS, BgpSpec, _check_abs_path

_BGP_KEYS = ("interface", "daemon", "control")


def read_bgp(problems: Problems, top: Table, check_dev: Callable[[str], str | None]) -> BgpSpec | None:
    """``[bgp]`` from the file's top table, or None (absent, or a problem that was recorded)."""
    data = top.table("bgp", "bgp")
    if data is None:
        return None
    t = Table(problems, "bgp", data, _BGP_KEYS)
    mark = problems.mark()
    interface = t.text("interface", "the name of a dummy link (e.g. \"kav0\")", required=True,
                       check=lambda value: check_dev(value) or _not_lo(value))
    daemon = t.choice("daemon", BGP_DAEMONS, default="bird")
    control = t.text("control", "an absolute path", check=_check_abs_path)
    t.done()
    if problems.since(mark) or interface is None or daemon is None:
        return None
    return BgpSpec(interface, daemon, control)


def _not_lo(value: str) -> str | None:
    if value == "lo":
        return ("expected a dummy link of its own (e.g. \"kav0\"): a BGP daemon exporting lo "
                f"would announce every address on it, got {literal(value)}")
    return None


__all__ = ["read_bgp"]

"""keepalived's service quorum: ``quorum``, ``hysteresis``, ``quorum_withdraw`` and ``[instance.service.sorry_server]``.

The semantics are keepalived's (ipwrapper.c, update_quorum_state); docs/health.md, "Quorum and the sorry server".
"""

from __future__ import annotations

from typing import Any, Callable

from ..model import Quorum, RealServer, format_hostport
from .tomlcheck import Table

_SORRY_KEYS = ("address", "port", "forward", "weight", "inhibit")


def read_quorum(t: Table, reals: list[RealServer],
                read_real: Callable[[str, dict[str, Any]], RealServer | None]) -> Quorum | None:
    """``quorum``, ``hysteresis`` and ``[instance.service.sorry_server]`` (keepalived's); None: none given."""
    if not (t.has("quorum") or t.has("hysteresis") or t.has("sorry_server") or t.has("quorum_withdraw")):
        return None
    quorum = t.integer("quorum", 1, 2**32 - 1, default=1)
    hysteresis = t.integer("hysteresis", 0, 2**32 - 1, default=0)
    if quorum is not None and hysteresis is not None and hysteresis >= quorum:
        # keepalived (check_data.c) lowers it to quorum - 1 with an error; kanotify's config says so instead
        t.problem("hysteresis", f"expected hysteresis < quorum ({quorum}), got {hysteresis}")
        hysteresis = None
    sorry = None
    inhibit = False
    data = t.table("sorry_server", "instance.service.sorry_server")
    if data is not None:
        path = t.at("sorry_server")
        st = Table(t.problems, path, data, _SORRY_KEYS)
        inhibit = bool(st.boolean("inhibit", False))
        st.done()
        plain = {k: v for k, v in data.items() if k in _SORRY_KEYS and k != "inhibit"}
        sorry = read_real(path, plain)
        if sorry is not None and any(r.key == sorry.key for r in reals):
            st.problem("address", f"expected a server that is not one of the service's real servers, got "
                                  f"{format_hostport(sorry.address, sorry.port)} (a real server of it)")
        if sorry is not None and sorry.weight == 0:
            st.problem("weight", "expected a weight 1..65535: the sorry server takes the traffic when the "
                                 "quorum is lost (sorry_server_inhibit sets 0 while it holds)")
    # a sorry server answers for the service: its VIPs stay (keepalived's behaviour) unless asked
    withdraw = t.boolean("quorum_withdraw", t.has("quorum") and data is None)
    if quorum is None or hysteresis is None or withdraw is None:
        return None
    return Quorum(quorum, hysteresis, withdraw, sorry, inhibit)

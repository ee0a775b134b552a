"""The config rules of the hashing schedulers (mh, sh) that make directors behind ECMP agree.

mh builds its lookup table from the order of the service's destination list and from each destination's
last non-zero weight, sh from the order and the current weights (ip_vs_mh.c, ip_vs_sh.c): a real server
written at weight 0, or removed on a failed check, would give directors with different histories
different tables. docs/ipvs.md, "Active-active directors".
"""

from __future__ import annotations

from typing import Any

from ..model import HASH_SCHEDULERS
from .tomlcheck import Problems


def hash_scheduler_reals(problems: Problems, path: str, data: dict[str, Any], scheduler: str | None) -> None:
    """mh and sh build their table from the order and weights of the destinations: no weight 0, no remove."""
    if scheduler not in HASH_SCHEDULERS:
        return
    weights = "the last non-zero weights" if scheduler == "mh" else "the weights"
    why = (f"scheduler {scheduler} builds its table from the order and {weights} of the real servers, and every "
           "director must build the same one")
    checks = [(f"{path}.check", data.get("check"))]
    for i, real in enumerate(data.get("real") or ()):
        if not isinstance(real, dict):
            continue
        rpath = f"{path}.real[{i}]"
        if real.get("weight") == 0 and not isinstance(real.get("weight"), bool):
            problems.add(f"{rpath}.weight", f"expected a weight 1..65535: {why}; to take this real "
                                            "server out of service write drain = true (it keeps its weight)")
        checks.append((f"{rpath}.check", real.get("check")))
    tables: list[tuple[str, Any]] = []
    for cpath, check in checks:  # a check is a table, or an array of them (several checks)
        tables.extend([(f"{cpath}[{i}]", c) for i, c in enumerate(check)] if isinstance(check, list)
                      else [(cpath, check)])
    for cpath, check in tables:
        if isinstance(check, dict) and check.get("on_failure") == "remove":
            problems.add(f"{cpath}.on_failure", f'expected "drain": {why}; a removed real server '
                                                "would reshuffle the flows of the others")

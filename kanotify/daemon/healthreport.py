"""``<state_dir>/health.json``: the listener's health checks as it last wrote them, read as values.

The checker (:mod:`kanotify.daemon.health`) writes the file; ``kanotify status``
and ``kanotify metrics`` read it through :func:`read_report` -- without importing
the checker (asyncio, ssl, the socket machinery).  The format::

    {"pid": 4242, "written": 1765000000.5, "late": {"0.05": 120, ...},
     "reals": [{"service": "tcp 192.0.2.100:80", "real": "192.0.2.21:80", "check": "tcp connect ...",
                "up": false, "since": 1765000000.1, "last_error": "connection refused",
                "last_check": 1765000000.4, "checks": 12}, ...]}

An entry or a field of the wrong type is left out, never fatal: the file is
rewritten every few seconds and read by whoever wants a picture of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..model import RealKey, ServiceKey, format_hostport

HEALTH_FILE = "health.json"


@dataclass(frozen=True)
class RealHealth:
    """One checked real server: ``RealHealth("tcp 192.0.2.100:80", "192.0.2.21:80", "tcp connect", False, ...)``."""

    service: str
    real: str
    check: str
    up: bool
    since: float | None = None
    last_error: str | None = None
    last_check: float | None = None
    checks: int = 0
    weight: int | None = None  # the weight its dynamic checks set (None: the configured one)

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "real": self.real, "check": self.check, "up": self.up,
                "since": self.since, "last_error": self.last_error, "last_check": self.last_check,
                "checks": self.checks, **({"weight": self.weight} if self.weight is not None else {})}


@dataclass(frozen=True)
class HealthReport:
    """What ``health.json`` says; also a :class:`~kanotify.plan.HealthView` (``status`` judges drift with it)."""

    pid: int | None
    written: float | None
    late: tuple[tuple[str, int], ...]
    reals: tuple[RealHealth, ...]
    #: each tracked service's quorum: {"service", "quorum", "hysteresis", "up_weight", "up", "since", "pending"}
    quorum: tuple[dict[str, Any], ...] = ()

    @cached_property
    def lost(self) -> frozenset[str]:
        """The services (as written) whose quorum is lost."""
        return frozenset(str(q.get("service")) for q in self.quorum if q.get("up") is False)

    def quorum_lost(self, service: ServiceKey) -> bool:
        return str(service) in self.lost

    def quorum_of(self, service: str) -> dict[str, Any] | None:
        """``status --json``'s ``quorum`` of ``service``: ``{"quorum": Q, "up_weight": W, "up": bool}``."""
        for q in self.quorum:
            if q.get("service") == service:
                return {"quorum": q.get("quorum"), "hysteresis": q.get("hysteresis"), "up_weight": q.get("up_weight"),
                        "up": q.get("up"), "since": q.get("since"), "pending": q.get("pending")}
        return None

    @cached_property
    def down(self) -> frozenset[tuple[str, str]]:
        """(service, real) as written, of every real server reported DOWN."""
        return frozenset((r.service, r.real) for r in self.reals if not r.up)

    def is_down(self, service: ServiceKey, real: RealKey) -> bool:
        return (str(service), format_hostport(*real)) in self.down

    @cached_property
    def weights(self) -> dict[tuple[str, str], int]:
        """(service, real) as written -> the weight its dynamic checks set."""
        return {(r.service, r.real): r.weight for r in self.reals if r.weight is not None}

    def weight_of(self, service: ServiceKey, real: RealKey) -> int | None:
        return self.weights.get((str(service), format_hostport(*real))) if self.weights else None

    def written_by(self, pid: int) -> bool:
        """Was it written by the process ``pid`` (a file without a pid: by anyone)?"""
        return self.pid is None or self.pid == pid


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _real(entry: object) -> RealHealth | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("up"), bool):
        return None
    error, checks, weight = entry.get("last_error"), entry.get("checks"), entry.get("weight")
    return RealHealth(
        str(entry.get("service")), str(entry.get("real")), str(entry.get("check", "")), entry["up"],
        _number(entry.get("since")), error if isinstance(error, str) else None, _number(entry.get("last_check")),
        checks if isinstance(checks, int) and not isinstance(checks, bool) else 0,
        weight if isinstance(weight, int) and not isinstance(weight, bool) else None,
    )


def parse_report(data: object) -> HealthReport | None:
    """The report in ``health.json``'s decoded JSON; None when it is not an object."""
    if not isinstance(data, dict):
        return None
    pid, late, listed, quorum = data.get("pid"), data.get("late"), data.get("reals"), data.get("quorum")
    reals = tuple(r for e in listed if (r := _real(e)) is not None) if isinstance(listed, list) else ()
    return HealthReport(
        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        _number(data.get("written")),
        tuple((str(k), v) for k, v in late.items() if isinstance(v, int)) if isinstance(late, dict) else (),
        reals,
        tuple(q for q in quorum if isinstance(q, dict) and isinstance(q.get("up"), bool))
        if isinstance(quorum, list) else (),
    )


def read_report(state_dir: str) -> HealthReport | None:
    """``health.json`` in ``state_dir`` as the listener last wrote it; None when missing or not JSON."""
    try:
        with open(os.path.join(state_dir, HEALTH_FILE), "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return parse_report(data)


__all__ = ["HEALTH_FILE", "HealthReport", "RealHealth", "parse_report", "read_report"]

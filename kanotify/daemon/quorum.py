"""Service quorum, kept by the listener's health checks: keepalived 2.2.7's ``update_quorum_state``.

The quorum of a service is the sum of the configured weights of its UP real
servers (a real server without a check is always UP).  keepalived's rules
(``ipwrapper.c``): the quorum is lost when that sum is 0 or falls below
``quorum - hysteresis``, gained again when it is ``quorum + hysteresis`` or
more; at the start it is up when the sum is ``quorum + hysteresis`` or more.
One rule is kanotify's own (spec, "Active-active"): after the quorum was lost
it is gained again only once every checked real server of the service has
been checked since (a full round), so a director that comes back has the same
picture of its real servers as its peers before it attracts traffic again.

:class:`QuorumBook` is plain state, driven by :class:`kanotify.daemon.health.Health`
in the loop's thread: no I/O, no clock of its own (unit-tested on its own).
What a lost quorum does is the planner's (:func:`kanotify.plan.desired_for`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config.values import Config
from ..model import Quorum, RealKey, ServiceKey


@dataclass(frozen=True)
class QuorumChange:
    """A service's quorum was lost or gained."""

    service: ServiceKey
    up: bool
    rule: Quorum
    up_weight: int

    def __str__(self) -> str:
        if self.up:
            return (f"quorum of {self.service} gained: up weight {self.up_weight} >= "
                    f"{self.rule.quorum}+{self.rule.hysteresis}, every real server checked since it was lost")
        return (f"quorum of {self.service} lost: up weight {self.up_weight} < "
                f"{self.rule.quorum}-{self.rule.hysteresis}" if self.up_weight else
                f"quorum of {self.service} lost: no real server UP")


@dataclass
class ServiceQuorum:
    """One service's quorum state."""

    service: ServiceKey
    rule: Quorum
    weights: dict[RealKey, int]  # every real server's configured weight
    checked: frozenset[RealKey]  # those with a check
    up: bool = True
    up_weight: int = 0
    since: float = 0.0
    #: after a loss: the checked real servers not checked since (the quorum is gained only once it is empty)
    pending: set[RealKey] = field(default_factory=set)

    def to_json(self) -> dict[str, object]:
        return {"service": str(self.service), "quorum": self.rule.quorum, "hysteresis": self.rule.hysteresis,
                "up_weight": self.up_weight, "up": self.up, "since": self.since, "pending": len(self.pending)}


class QuorumBook:
    """The quorum of every tracked service of a config (:attr:`ServiceSpec.quorum_tracked`)."""

    def __init__(self) -> None:
        self.services: dict[ServiceKey, ServiceQuorum] = {}
        self.lost: frozenset[ServiceKey] = frozenset()

    def configure(self, config: Config, is_down: Callable[[ServiceKey, RealKey], bool],
                  now: float) -> list[QuorumChange]:
        """Track ``config``'s services; one that stays keeps its state.  A new one that starts without its
        quorum is a change (keepalived: "Starting with quorum down"); a kept one is judged again."""
        old = self.services
        self.services = {}
        changes: list[QuorumChange] = []
        for inst in config.instances:
            for spec in inst.services:
                key = spec.service.key
                if not spec.quorum_tracked or key in self.services:
                    continue
                q = ServiceQuorum(key, spec.quorum_rule, {r.key: r.weight for r in spec.reals},
                                  frozenset(k for k, _check in spec.checks), since=now)
                self.services[key] = q
                q.up_weight = self._weigh(q, is_down)
                before = old.get(key)
                if before is None:
                    q.up = not q.rule.lost(q.up_weight, was_up=False)
                    if not q.up:
                        q.pending = set(q.checked)
                        changes.append(QuorumChange(key, False, q.rule, q.up_weight))
                    continue
                q.up, q.since, q.pending = before.up, before.since, before.pending & q.checked
                change = self._judge(q, now)
                if change is not None:
                    changes.append(change)
        self._note()
        return changes

    def checked(self, service: ServiceKey, real: RealKey, changed: bool,
                is_down: Callable[[ServiceKey, RealKey], bool], now: float) -> QuorumChange | None:
        """One check of ``real`` ended (``changed``: it went UP or DOWN): the service's quorum change, if any."""
        q = self.services.get(service)
        if q is None:
            return None
        shrank = False
        if q.pending and real in q.pending:
            q.pending.discard(real)
            shrank = not q.pending
        if not changed and not shrank:
            return None
        if changed:  # by the one real server's weight: a mass failure of 10,000 real servers must stay linear
            weight = q.weights.get(real, 0)
            q.up_weight += -weight if is_down(service, real) else weight
        change = self._judge(q, now)
        if change is not None:
            self._note()
        return change

    def forget_real(self, service: ServiceKey, real: RealKey) -> None:
        """``real`` is not checked any more (it left the config): the round does not wait for it."""
        q = self.services.get(service)
        if q is not None:
            q.pending.discard(real)

    def _judge(self, q: ServiceQuorum, now: float) -> QuorumChange | None:
        if q.up:
            if q.rule.lost(q.up_weight, was_up=True):
                q.up, q.since, q.pending = False, now, set(q.checked)
                return QuorumChange(q.service, False, q.rule, q.up_weight)
        elif not q.pending and not q.rule.lost(q.up_weight, was_up=False):
            q.up, q.since = True, now
            return QuorumChange(q.service, True, q.rule, q.up_weight)
        return None

    @staticmethod
    def _weigh(q: ServiceQuorum, is_down: Callable[[ServiceKey, RealKey], bool]) -> int:
        return sum(weight for real, weight in q.weights.items() if not is_down(q.service, real))

    def _note(self) -> None:
        self.lost = frozenset(key for key, q in self.services.items() if not q.up)

    def snapshot(self) -> list[dict[str, object]]:
        return [q.to_json() for q in self.services.values()]


__all__ = ["QuorumBook", "QuorumChange", "ServiceQuorum"]

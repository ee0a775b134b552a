"""The interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence, runtime_checkable

from ..actions import Action
from ..model import Observed, ServiceKey, Vip


@dataclass(frozen=True)
class Scope:
    """What to observe: only managed things are ever read back or touched.

    ``ipvs`` is False when no IPVS service is managed and ``ipvs_exclusive`` is
    off, so a VIP-only host never opens the IPVS netlink family at all.
    """

    sysctls: tuple[str, ...] = ()
    vips: frozenset[Vip] = frozenset()
    services: frozenset[ServiceKey] = frozenset()
    ipvs: bool = False


@runtime_checkable
class Backend(Protocol):
    """Observe the system and apply actions to it.

    ``apply`` raises :class:`~kanotify.errors.ApplyError` (with the errno when
    there is one) if the action could not be applied; "already there" and
    "already gone" are success.  ``apply_many`` lets a backend batch (IPVS
    sends many messages with one ACK barrier); it returns one exception or
    ``None`` per action, in order.
    """

    def observe(self, scope: Scope) -> Observed: ...

    def apply(self, action: Action) -> None: ...

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]: ...

    def close(self) -> None: ...


class Applier(Protocol):
    """Anything with ``apply(action)``: a whole backend or one domain's backend."""

    def apply(self, action: Action) -> None: ...


def apply_each(backend: Applier, actions: Iterable[Action]) -> list[BaseException | None]:
    """Default ``apply_many``: one action at a time, errors collected."""
    results: list[BaseException | None] = []
    for action in actions:
        try:
            backend.apply(action)
        except Exception as exc:  # noqa: BLE001 - reported per action by the engine
            results.append(exc)
        else:
            results.append(None)
    return results


class OneAtATime:
    """Mixin for backends without batching: ``apply_many`` applies each action in turn."""

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
        return apply_each(self, actions)  # type: ignore[arg-type]  # (self has apply)

"""The interfaces every backend implements, and the one-at-a-time default for batching.

Backends are the only code that touches the system. A backend turns kernel state into value
objects (:meth:`Backend.observe`) and applies actions (:meth:`Backend.apply_many`).
:func:`kanotify.backends.system.system_backend` makes the real one;
:class:`~kanotify.backends.memory.MemoryBackend` implements the same interface in memory,
behaving as the kernel does, for unit tests and plugin authors.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence, runtime_checkable

from ..actions import Action
from ..model import Observed, Scope

#: Effective ARP policy per interface: ``{"eth0": {"arp_ignore": 1, "arp_announce": 2}}``.
ArpPolicy = dict[str, dict[str, int]]


@runtime_checkable
class Backend(Protocol):
    """Observe the system and apply actions to it: what the engine and ``status`` ask of a backend.

    ``apply`` raises :class:`~kanotify.errors.ApplyError` (with the errno when
    there is one) if the action could not be applied; "already there" and
    "already gone" are success.  ``apply_many`` applies a sequence in order and
    returns one exception or ``None`` per action; a backend that can batch
    (IPVS sends many messages with one ACK barrier) does so there, the others
    inherit :class:`OneAtATime`.  ``effective_arp`` is the ARP policy the kernel
    really uses per interface (``max(all, interface)``), for ``status``.
    """

    def observe(self, scope: Scope) -> Observed: ...

    def apply(self, action: Action) -> None: ...

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]: ...

    def effective_arp(self) -> ArpPolicy: ...

    def close(self) -> None: ...


class DomainBackend(Protocol):
    """One domain's backend inside the system backend (sysctl, address, garp, ipvs, hook)."""

    def apply(self, action: Action) -> None: ...

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]: ...

    def close(self) -> None: ...


class Applier(Protocol):
    """Anything with ``apply(action)``."""

    def apply(self, action: Action) -> None: ...


def apply_each(backend: Applier, actions: Iterable[Action]) -> list[BaseException | None]:
    """One action at a time, errors collected: the default ``apply_many``."""
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

    def apply(self, action: Action) -> None:  # pragma: no cover - every user defines it
        raise NotImplementedError

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
        return apply_each(self, actions)


__all__ = ["ArpPolicy", "Backend", "DomainBackend", "OneAtATime", "Scope", "apply_each"]

"""Backends: the only code that touches the system.

A backend turns kernel state into value objects (:meth:`Backend.observe`) and
applies actions (:meth:`Backend.apply_many`).  :func:`system_backend` makes the
real one; :class:`~kanotify.backends.memory.MemoryBackend` implements the same
interface in memory, behaving as the kernel does, for unit tests and plugin
authors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ArpPolicy, Backend, OneAtATime, Scope

if TYPE_CHECKING:
    from .garp import Repeater


def system_backend(
    netns: str | None = None, *, garp_repeater: Repeater | None = None, long_lived: bool = False
) -> Backend:
    """The backend of this host (or of network namespace ``netns``).

    Its domain backends (and their sockets) are
    created only when an observation or action needs them.  ``garp_repeater``
    sends GARP repeats (the listener's thread); default: a detached process.
    ``long_lived``: it serves many runs (the listener), and keeps what it
    decoded for the next observe.
    """
    from .system import SystemBackend  # keeps ``import kanotify.backends`` cheap

    return SystemBackend(netns, garp_repeater, long_lived=long_lived)


__all__ = ["ArpPolicy", "Backend", "OneAtATime", "Scope", "system_backend"]

"""Backends: the only code that touches the system.

A backend turns kernel state into value objects (:meth:`Backend.observe`) and
applies single actions (:meth:`Backend.apply`).  :class:`~kanotify.backends.memory.MemoryBackend`
implements the same interface in memory for unit tests and plugin authors;
:func:`~kanotify.backends.system.SystemBackend` is the real one.
"""

from .base import Backend, Scope

__all__ = ["Backend", "Scope"]

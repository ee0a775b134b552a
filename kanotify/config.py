"""TOML config -> validated, frozen value objects; every problem reported at once.

The loader below is the only place that reads the config file.  It never
touches the system: a config that fails validation raises
:class:`~kanotify.errors.ConfigError` carrying one :class:`~kanotify.errors.Problem`
per mistake (file, key path like ``instance[0].service[1].real[0].port``, what
was expected), and the CLI exits 78.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .model import Group, Instance

DEFAULT_CONFIG = "/etc/kanotify/kanotify.toml"


@dataclass(frozen=True)
class HookSettings:
    """A ``[hooks.NAME]`` table: the engine's keys plus the plugin's own options."""

    enabled: bool = True
    required: bool = False  # a failure of a required hook fails the run
    timeout: float | None = None  # seconds; None: settings.hook_timeout
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Settings:
    """``[settings]``; every key optional."""

    state_dir: str = "/run/kanotify"
    journal: str = "/var/lib/kanotify/journal.jsonl"
    hooks_dir: str = "/etc/kanotify/hooks.d"
    syslog: bool = True
    ipvs_exclusive: bool = False
    lock_timeout: float = 10.0
    garp_count: int = 5
    garp_interval: float = 0.2
    drain_timeout: float = 300.0
    hook_timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    """A whole, valid config file."""

    path: str
    settings: Settings = Settings()
    sysctls: tuple[tuple[str, str], ...] = ()
    instances: tuple[Instance, ...] = ()
    groups: tuple[Group, ...] = ()
    hooks: Mapping[str, HookSettings] = field(default_factory=lambda: MappingProxyType({}))

    def instance(self, name: str) -> Instance | None:
        for inst in self.instances:
            if inst.name == name:
                return inst
        return None

    def group(self, name: str) -> Group | None:
        for grp in self.groups:
            if grp.name == name:
                return grp
        return None

    @property
    def instance_names(self) -> tuple[str, ...]:
        return tuple(inst.name for inst in self.instances)


def config_path(explicit: str | None = None) -> str:
    """``--config``, else ``$KANOTIFY_CONFIG``, else the default path."""
    return explicit or os.environ.get("KANOTIFY_CONFIG") or DEFAULT_CONFIG

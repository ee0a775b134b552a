"""Verify only what was changed: the scope to read back after applying, and the picture after it.

After applying, the engine reads the system again and plans once more: what
that plan still wants to change did not take.  Only what the applied actions
touched can have changed, so only that is read back -- the sysctl keys set,
the VIPs bound or removed, the IPVS services that were written (their real
servers with them), the sync daemons when one was started or stopped -- and
the verify plan covers exactly that (see
:meth:`kanotify.model.Desired.restricted`).  A 1000-service director whose
health check drains one real server reads back one service, not 11,000
objects.

Anything the engine cannot attribute (a hook plugin's action, whose effect is
unknown, or an action type this module does not know) widens the read-back to
the whole scope, as before.  Pure: no I/O here.
"""

from __future__ import annotations

from typing import Iterable

from .actions import (
    Action,
    AddLink,
    AddReal,
    AddService,
    BindVip,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    SendGarp,
    SetLink,
    SetSysctl,
    StartSyncDaemon,
    StopSyncDaemon,
    UnbindVip,
)
from .model import Desired, Observed, Scope, ServiceKey, Vip


def touched_scope(desired: Desired, actions: Iterable[Action]) -> Scope:
    """What ``actions`` (the ones that ran) can have changed, as a scope to observe.

    ``services_only`` is set: IPVS is read back service by service, for the
    touched services alone.  Falls back to ``desired.scope`` (everything) when
    an action's effect is unknown.
    """
    sysctls: list[str] = []
    vip_keys: set[tuple[str, str]] = set()
    services: set[ServiceKey] = set()
    daemons = False
    links: set[str] = set()
    last: ServiceKey | None = None  # a service's real servers come one after the other: hash its key once
    for action in actions:
        if action.is_noop or isinstance(action, SendGarp):  # an announcement changes no state
            continue
        if isinstance(action, (AddReal, EditReal, DeleteReal)):
            if action.service is not last:
                last = action.service
                services.add(last)
        elif isinstance(action, SetSysctl):
            sysctls.append(action.key)
        elif isinstance(action, (BindVip, UnbindVip)):
            vip_keys.add(action.vip.key)
        elif isinstance(action, (AddService, DeleteService)):
            services.add(action.service.key)
        elif isinstance(action, EditService):
            services.add(action.new.key)
        elif isinstance(action, (StartSyncDaemon, StopSyncDaemon)):
            daemons = True
        elif isinstance(action, AddLink):
            links.add(action.link.name)
        elif isinstance(action, SetLink):
            links.add(action.new.name)
        else:
            return desired.scope  # a hook's action, or one this module does not know
    wanted = set(dict.fromkeys(sysctls))
    return Scope(
        sysctls=tuple(key for key, _ in desired.sysctls if key in wanted),
        vips=frozenset(vip for vip in desired.managed_vips if vip.key in vip_keys),
        services=frozenset(services),
        ipvs=bool(services),
        sync_daemons=daemons and desired.manage_sync_daemons,
        services_only=True,
        links=tuple(link.name for link in desired.links if link.name in links),
    )


def merged(before: Observed, again: Observed, scope: Scope) -> Observed:
    """The system after applying: ``before``, with what ``scope`` covers replaced by ``again``.

    What the scope does not cover was not touched, so its first reading still
    holds; the engine records drains from this complete picture.
    """
    if not scope.services_only:
        return again
    vip_keys = {vip.key for vip in scope.vips}
    vips: frozenset[Vip] = frozenset(v for v in before.vips if v.key not in vip_keys) | again.vips
    services = before.services
    if scope.ipvs:
        if before.services is None or again.services is None:
            services = again.services if before.services is None else before.services
        else:
            services = {k: v for k, v in before.services.items() if k not in scope.services}
            services.update(again.services)
    return Observed(
        sysctls={**before.sysctls, **again.sysctls},
        vips=vips,
        services=services,
        ipvs_error=again.ipvs_error if scope.ipvs or scope.sync_daemons else before.ipvs_error,
        daemons=again.daemons if scope.sync_daemons else before.daemons,
        links={**before.links, **again.links},
    )


__all__ = ["merged", "touched_scope"]

"""The planner: a pure function from (desired, observed) to an ordered list of actions.

No I/O happens here, which is what makes dry-run free and the planner testable
with tables of cases.  Order matters for traffic:

1. sysctls -- the ARP policy is in force before a VIP lands on ``lo``;
2. VIP removals -- a host leaving MASTER stops attracting traffic first;
3. IPVS -- services are ready before a host entering MASTER attracts traffic;
4. IPVS sync daemons (with ``[sync_daemon]``) -- stops first, then starts, as
   keepalived does: entering MASTER stops the backup daemon only once the
   services are in place (its synced connection entries are what lets the
   connections of the old master go on here), then starts the master daemon,
   still before the VIP attracts traffic; leaving MASTER stops the master
   daemon and starts the backup one;
5. VIP binds, then 6. GARP for what was just bound.

So entering MASTER is sysctls, IPVS, sync daemons, VIPs, GARP; leaving MASTER
is VIPs, then IPVS, then sync daemons; and a reconcile of several instances
moving in opposite directions orders each of them right.

Only managed objects ever appear in a plan; foreign addresses and services are
not even mentioned (except foreign IPVS services with ``ipvs_exclusive``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Mapping, Protocol

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
    RESTART_REASON,
    Noop,
    SendGarp,
    SetLink,
    SetSysctl,
    StartSyncDaemon,
    StopSyncDaemon,
    UnbindVip,
)
from .config.values import Config
from .model import (
    HASH_SCHEDULERS,
    SYNC_STATES,
    Desired,
    IPAddress,
    Link,
    Observed,
    ObservedService,
    RealKey,
    RealServer,
    RealServerStats,
    ServiceKey,
    ServiceSpec,
    State,
    VipSpec,
    format_hostport,
    normalize_sysctl,
)

#: (service, (real address, real port)) -> when kanotify started draining it
DrainKey = tuple[str, str]


@dataclass(frozen=True)
class Plan:
    """An ordered list of actions, no-ops included."""

    actions: tuple[Action, ...] = ()

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if not a.is_noop)

    @property
    def has_changes(self) -> bool:
        return any(not a.is_noop for a in self.actions)

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class PlanOptions:
    """Settings the planner needs besides desired and observed state."""

    garp_count: int = 5
    garp_interval: float = 0.2
    #: announce VIPs that are already bound too (keepalived's MASTER_RX_LOWER_PRI: re-assert MASTER)
    announce: bool = False
    drain_timeout: float = 300.0
    now: float = 0.0
    #: drain_key(...) -> time the drain started, as recorded by the engine
    draining: Mapping[DrainKey, float] = field(default_factory=dict)


def drain_key(service: ServiceKey, real: tuple[IPAddress, int]) -> DrainKey:
    return (str(service), format_hostport(*real))


# --------------------------------------------------------------------------- desired state


class HealthView(Protocol):
    """What the planner asks of the health checks (``kanotify listen``'s): is this real server DOWN?"""

    def is_down(self, service: ServiceKey, real: RealKey) -> bool: ...

    def weight_of(self, service: ServiceKey, real: RealKey) -> int | None:
        """The weight a dynamic check (a ``command`` with ``dynamic``, a ``file``) set; None: the configured one."""


class QuorumView(Protocol):
    """A :class:`HealthView` that also knows the services whose quorum is lost (the listener's, health.json)."""

    def quorum_lost(self, service: ServiceKey) -> bool: ...


def desired_for(
    config: Config, states: Mapping[str, State], instances: Iterable[str] | None = None,
    health: HealthView | None = None,
) -> Desired:
    """What the host should look like when each instance is in ``states[name]``.

    ``instances`` limits the scope (a notification converges its own instance);
    an instance missing from ``states`` is treated as BACKUP: never grab a VIP
    on a guess.  With ``health``, a real server its check found DOWN is desired
    at weight 0 (``on_failure = "drain"``) or not at all (``"remove"``);
    without it (no listener runs the checks), every real server has its
    configured weight.  A service whose quorum ``health`` says is lost
    (:class:`QuorumView`; keepalived's ``quorum``) gets its sorry server instead
    of its real servers, and, when the config gives ``quorum``, the instance's
    VIPs on the service's address are not desired.  The sync daemons follow ``[sync_daemon].instance`` and are
    managed only when that instance is in the scope: a notification for
    another instance leaves them alone.
    """
    names = set(config.instance_names if instances is None else instances)
    sync = config.sync_daemon
    if sync is not None and sync.mode != "both" and sync.instance not in names:
        sync = None  # they follow another instance: left alone (in mode both every run keeps them running)
    scoped = [inst for inst in config.instances if inst.name in names]
    vips: list[VipSpec] = []
    services: list[ServiceSpec] = []
    down: dict[tuple[ServiceKey, RealKey], str] = {}
    lost = getattr(health, "quorum_lost", None)
    for inst in scoped:
        state = states.get(inst.name, State.BACKUP)
        withdrawn: set[IPAddress] = set()
        for spec in inst.services:
            if state in spec.states:
                quorum_lost = lost is not None and spec.quorum_tracked and bool(lost(spec.service.key))
                if quorum_lost and spec.quorum is not None and spec.quorum.withdraw and spec.service.key.address:
                    withdrawn.add(spec.service.key.address)
                if health is not None and spec.checks:
                    spec = _healthy(spec, health, down)
                if spec.quorum is not None and spec.quorum.sorry is not None:
                    spec = _sorry(spec, quorum_lost, down)
                services.append(spec)
        vips.extend(spec for spec in inst.vips if state in spec.states
                    and (not withdrawn or spec.vip.address.ip not in withdrawn))
    return Desired(
        sysctls=config.sysctls,
        vips=tuple(vips),
        services=tuple(services),
        managed_vips=frozenset(spec.vip for inst in scoped for spec in inst.vips),
        managed_services=frozenset(s.service.key for inst in scoped for s in inst.services),
        protected_services=frozenset(
            s.service.key for inst in config.instances for s in inst.services
        ),
        ipvs_exclusive=config.settings.ipvs_exclusive,
        down=down,
        sync_daemons=sync.daemons(states.get(sync.instance or "", State.BACKUP)) if sync is not None else (),
        manage_sync_daemons=sync is not None,
        links=(Link(config.bgp.interface),) if config.bgp is not None else (),
    )


def _healthy(spec: ServiceSpec, health: HealthView, down: dict[tuple[ServiceKey, RealKey], str]) -> ServiceSpec:
    """``spec`` with its DOWN real servers drained (weight 0) or left out, as their checks say."""
    key = spec.service.key
    reals: list[RealServer] = []
    added: list[tuple[RealKey, int]] = []
    for real in spec.reals:
        check = spec.check_for(real.key)
        if check is None or not health.is_down(key, real.key):
            weight = None if check is None else health.weight_of(key, real.key)
            reals.append(real if weight is None else replace(real, weight=weight))
            continue
        down[(key, real.key)] = check.on_failure
        if check.on_failure == "drain":
            reals.append(replace(real, weight=0))
            if real.weight:  # added (after a restart, a flush) at its weight, then drained: mh/sh keep its slots
                added.append((real.key, real.weight))
    return replace(spec, reals=tuple(reals), add_weights=spec.add_weights + tuple(added))


def _sorry(spec: ServiceSpec, quorum_lost: bool, down: dict[tuple[ServiceKey, RealKey], str]) -> ServiceSpec:
    """keepalived's sorry server: in the service while its quorum is lost, its real servers then drained or
    removed (as their checks' ``on_failure`` says; drained without a check); at weight 0 while the quorum holds
    with ``sorry_inhibit``, else not there."""
    rule = spec.quorum
    assert rule is not None and rule.sorry is not None
    if not quorum_lost:
        return replace(spec, reals=spec.reals + (replace(rule.sorry, weight=0),)) if rule.sorry_inhibit else spec
    key = spec.service.key
    reals: list[RealServer] = []
    for real in spec.reals:
        check = spec.check_for(real.key)
        how = down.get((key, real.key)) or (check.on_failure if check is not None else "drain")
        if (key, real.key) not in down:
            down[(key, real.key)] = how
        if how == "drain":
            reals.append(real if real.weight == 0 else replace(real, weight=0))
    return replace(spec, reals=tuple(reals) + (rule.sorry,))


# --------------------------------------------------------------------------- planner


def plan(desired: Desired, observed: Observed, options: PlanOptions = PlanOptions()) -> Plan:
    """Compute the ordered actions that take ``observed`` to ``desired``."""
    sysctls = _plan_sysctls(desired, observed)
    links = _plan_links(desired, observed)
    removals, binds, garps = _plan_vips(desired, observed, options)
    ipvs = _plan_ipvs(desired, observed, options)
    daemons = _plan_sync_daemons(desired, observed)
    return Plan(tuple(sysctls + links + removals + ipvs + daemons + binds + garps))


def _plan_links(desired: Desired, observed: Observed) -> list[Action]:
    """The ``[bgp]`` dummy link: created when missing, set up and ARP off when not; never deleted.

    A link of that name but of another kind is the operator's: only its flags are set
    (``doctor`` says it is not a dummy).
    """
    actions: list[Action] = []
    for want in desired.links:
        have = observed.links.get(want.name)
        if have is None:
            actions.append(AddLink(want))
        elif (have.up, have.noarp) == (want.up, want.noarp):
            actions.append(Noop(f"{have} already there"))
        else:
            actions.append(SetLink(have, replace(want, kind=have.kind)))
    return actions


def _plan_sysctls(desired: Desired, observed: Observed) -> list[Action]:
    actions: list[Action] = []
    for key, value in desired.sysctls:
        current = observed.sysctls.get(key)
        if current is not None and normalize_sysctl(current) == normalize_sysctl(value):
            actions.append(Noop(f"sysctl {key} already {value}"))
        else:
            actions.append(SetSysctl(key, value, current))
    return actions


def _plan_vips(
    desired: Desired, observed: Observed, options: PlanOptions
) -> tuple[list[Action], list[Action], list[Action]]:
    """(no-ops and removals, binds, announcements)."""
    bound = {vip.key: vip for vip in observed.vips}
    wanted = {spec.vip.key: spec for spec in desired.vips}
    removals: list[Action] = []
    binds: list[Action] = []
    noops: list[Action] = []
    garps: list[Action] = []
    # on a [bgp] dummy link the BGP daemon announces: no neighbours, nothing to send GARP to
    quiet = {link.name for link in desired.links}
    for vip in sorted(desired.managed_vips, key=lambda v: (v.family, v)):  # IPv4 and IPv6 do not compare
        have = bound.get(vip.key)
        spec = wanted.get(vip.key)
        if spec is None:
            if have is None:
                noops.append(Noop(f"{vip} already absent"))
            else:
                removals.append(UnbindVip(have))
            continue
        announce = spec.garp and spec.vip.dev != "lo" and spec.vip.dev not in quiet and options.garp_count > 0
        if have == spec.vip:
            noops.append(Noop(f"{vip} already bound"))
            if announce and options.announce:
                garps.append(SendGarp(spec.vip, options.garp_count, options.garp_interval))
            continue
        if have is not None:  # bound with another label: labels cannot be edited in place
            removals.append(UnbindVip(have))
        binds.append(BindVip(spec.vip))
        if announce:
            garps.append(SendGarp(spec.vip, options.garp_count, options.garp_interval))
    return noops + removals, binds, garps


def _plan_ipvs(desired: Desired, observed: Observed, options: PlanOptions) -> list[Action]:
    if not desired.needs_ipvs:
        return []
    wanted = {spec.service.key: spec for spec in desired.services}
    if observed.services is None:
        # IPVS could not be read.  Nothing managed can exist there; what is desired
        # is planned in full so its failure is reported per action.
        actions: list[Action] = []
        for key in sorted(desired.managed_services - wanted.keys()):
            actions.append(Noop(f"ipvs service {key} absent (IPVS not available)"))
        for spec in _sorted_specs(wanted.values()):
            actions.append(AddService(spec.service))
            actions.extend(_add_all(spec))
        return actions

    adds: list[Action] = []
    edits: list[Action] = []
    real_changes: list[Action] = []
    real_removals: list[Action] = []
    deletes: list[Action] = []
    noops: list[Action] = []

    for spec in _sorted_specs(wanted.values()):
        key = spec.service.key
        have = observed.services.get(key)
        if have is None:
            adds.append(AddService(spec.service))
            real_changes.extend(_add_all(spec))
            continue
        service_same = have.service.same_config(spec.service)
        if not service_same:
            edits.append(EditService(have.service, spec.service))
        reorder = _reordered(spec, have) if spec.service.scheduler in HASH_SCHEDULERS else {}
        reals_same = found = 0
        for rs in spec.reals if not reorder else ():
            current = have.reals.get(rs.key)
            if current is None:
                real_changes.extend(_add(spec, rs))
                continue
            found += 1
            if current[0] == rs:
                reals_same += 1
            else:
                why = "health check: DOWN" if (key, rs.key) in desired.down else ""
                real_changes.append(EditReal(key, current[0], rs, why))
        if reorder:
            found, reals_same = _plan_order(spec, have, reorder, desired, real_changes)
        # One no-op per service, not per real server: 1000 services x 10 reals must not
        # make an 11,000-entry journal line on every reconcile.
        if service_same or reals_same:
            what = f"ipvs service {key}" if service_same else f"the other real servers of {key}"
            noops.append(Noop(f"{what} up to date ({reals_same} of {len(spec.reals)} real servers)"))
        if found == len(have.reals):  # every real server there is desired (a spec's keys are distinct)
            continue
        for rkey in sorted(have.reals.keys() - {rs.key for rs in spec.reals}, key=_real_sort):
            if desired.down.get((key, rkey)) == "remove":
                real_removals.append(DeleteReal(key, have.reals[rkey][0], "health check: DOWN"))
            else:
                real_removals.append(_drain(key, *have.reals[rkey], options))

    for key in sorted(desired.managed_services - wanted.keys()):
        have = observed.services.get(key)
        if have is None:
            noops.append(Noop(f"ipvs service {key} already absent"))
        else:
            deletes.append(DeleteService(have.service, "not desired in this state"))

    if desired.ipvs_exclusive:
        for key in sorted(observed.services.keys() - desired.protected_services):
            deletes.append(DeleteService(observed.services[key].service, "not in config, ipvs_exclusive"))

    return noops + adds + edits + real_changes + real_removals + deletes


def _plan_sync_daemons(desired: Desired, observed: Observed) -> list[Action]:
    """Stops (and the stop half of restarts) first, then starts: master and backup never share a step."""
    if not desired.manage_sync_daemons:
        return []
    wanted = {d.state: d for d in desired.sync_daemons}
    if observed.daemons is None:
        # IPVS could not be read: nothing can be running to stop; what is wanted is
        # planned so that its failure is reported.
        actions: list[Action] = [
            Noop(f"{state} sync daemon not running (IPVS not available)")
            for state in SYNC_STATES if state not in wanted
        ]
        return actions + [StartSyncDaemon(wanted[state]) for state in SYNC_STATES if state in wanted]
    running = {d.state: d for d in observed.daemons}
    noops: list[Action] = []
    stops: list[Action] = []
    starts: list[Action] = []
    for state in SYNC_STATES:
        want, have = wanted.get(state), running.get(state)
        if want is None:
            if have is None:
                noops.append(Noop(f"{state} sync daemon already stopped"))
            else:
                stops.append(StopSyncDaemon(have, "not wanted in this state"))
        elif have is None:
            starts.append(StartSyncDaemon(want))
        elif have == want:
            noops.append(Noop(f"{state} sync daemon already running ({have.parameters})"))
        else:  # the kernel cannot change a running daemon: stop it, start the configured one
            stops.append(StopSyncDaemon(have, RESTART_REASON))
            starts.append(StartSyncDaemon(want, replaces=have))
    return noops + stops + starts


def _add(spec: ServiceSpec, real: RealServer) -> list[Action]:
    """Add ``real``; one desired at weight 0 is added at its configured weight and then drained.

    The kernel keeps a destination's last non-zero weight, and mh builds its table
    from it: one added at weight 0 gets no slots, and the table differs from that of
    a director where it was drained after being added.
    """
    weight = spec.add_weight(real)
    if real.weight or not weight:
        return [AddReal(spec.service.key, real)]
    added = replace(real, weight=weight)
    return [AddReal(spec.service.key, added),
            EditReal(spec.service.key, added, real, f"drain: added at weight {weight} first")]


def _add_all(spec: ServiceSpec) -> list[Action]:
    """Add the real servers of a new service; for mh/sh from the end of the list (the kernel adds at the head)."""
    reals = reversed(spec.reals) if spec.service.scheduler in HASH_SCHEDULERS else spec.reals
    return [action for rs in reals for action in _add(spec, rs)]


def _reordered(spec: ServiceSpec, have: ObservedService) -> dict[RealKey, int]:
    """The real servers of an mh/sh service to (re-)add, by config position: empty when none is missing
    and the kernel lists them in the config's order.

    The kernel inserts a new destination at the head of the list, and mh/sh build
    their table from that order: a real server that must go before others already
    there is added by deleting and re-adding those others.  What is kept is the
    longest tail of the config's list that the kernel already lists in that order
    (other destinations in between, being drained, do not matter); everything
    before it is (re-)added from its end.
    """
    wanted = [rs.key for rs in spec.reals]
    position = {rkey: n for n, rkey in enumerate(have.reals)}
    last = len(position)
    keep = len(wanted)
    while keep > 0:
        n = position.get(wanted[keep - 1])
        if n is None or n >= last:
            break
        last = n
        keep -= 1
    return {wanted[i]: i for i in range(keep)}


def _plan_order(
    spec: ServiceSpec, have: ObservedService, redo: Mapping[RealKey, int], desired: Desired, out: list[Action],
) -> tuple[int, int]:
    """Plan an mh/sh service whose kernel list must change: (re-)adds from the end of ``redo`` (each
    delete right before its re-add: the gap of a connection is one netlink message), then the edits of
    the real servers kept in place.  Returns (desired real servers there, of them up to date)."""
    key = spec.service.key
    found = same = 0
    for n in range(len(redo) - 1, -1, -1):
        rs = spec.reals[n]
        current = have.reals.get(rs.key)
        if current is not None:
            found += 1
            after = spec.reals[n + 1] if n + 1 < len(spec.reals) else None
            before = f" before {format_hostport(*after.key)}" if after is not None else ""
            out.append(DeleteReal(key, current[0], f"re-added{before}: the kernel lists the config's order "
                                                   f"(scheduler {spec.service.scheduler})"))
        out.extend(_add(spec, rs))
    for rs in spec.reals[len(redo):]:
        current = have.reals[rs.key]
        found += 1
        if current[0] == rs:
            same += 1
        else:
            why = "health check: DOWN" if (key, rs.key) in desired.down else ""
            out.append(EditReal(key, current[0], rs, why))
    return found, same


def _drain(service: ServiceKey, real: RealServer, stats: RealServerStats, options: PlanOptions) -> Action:
    """A real server removed from the config of a service that stays: drain, then delete."""
    if stats.connections == 0 or options.drain_timeout <= 0:
        return DeleteReal(service, real, "removed from config, no connections")
    started = options.draining.get(drain_key(service, real.key))
    if real.weight != 0:
        return EditReal(service, real, replace(real, weight=0), f"drain: {stats.connections} connections")
    if started is not None and options.now - started >= options.drain_timeout:
        return DeleteReal(service, real, f"drain timeout {options.drain_timeout:g}s reached")
    left = options.drain_timeout - (options.now - started) if started is not None else options.drain_timeout
    return Noop(
        f"real server {real} of {service} draining: {stats.connections} connections, "
        f"deleted in at most {max(left, 0):.0f}s"
    )


def _sorted_specs(specs: Iterable[ServiceSpec]) -> list[ServiceSpec]:
    return sorted(specs, key=lambda s: _service_sort(s.service.key))


def _service_sort(key: ServiceKey) -> tuple[object, ...]:
    return (key.protocol, key.family, str(key.address), key.port, key.fwmark)


def _real_sort(key: tuple[IPAddress, int]) -> tuple[object, ...]:
    return (key[0].version, int(key[0]), key[1])


def next_draining(
    desired: Desired, observed: Observed, prior: Mapping[DrainKey, float], now: float
) -> dict[DrainKey, float]:
    """The drain start times to record after a run: kept for reals still draining."""
    result: dict[DrainKey, float] = {}
    if observed.services is None:
        return result
    wanted = {spec.service.key: spec for spec in desired.services}
    for key, spec in wanted.items():
        have = observed.services.get(key)
        if have is None:
            continue
        reals = have.reals
        if len(reals) <= len(spec.reals) and all(rs.key in reals for rs in spec.reals):
            continue  # nothing there that is not desired (one lookup each instead of two sets)
        desired_reals = {rs.key for rs in spec.reals}
        for rkey in reals.keys() - desired_reals:
            if (key, rkey) in desired.down:
                continue  # removed for its health, not from the config: no drain
            dk = drain_key(key, rkey)
            result[dk] = prior.get(dk, now)
    return result


__all__ = ["DrainKey", "HealthView", "Plan", "QuorumView", "PlanOptions", "desired_for", "drain_key", "next_draining", "plan"]

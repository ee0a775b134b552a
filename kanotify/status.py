"""``kanotify status``: recorded states, what the kernel has, and the drift between them.

Read-only: no lock is taken and nothing is written.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import __version__
from .backends import system
from .backends.base import ArpPolicy, Backend
from .config.values import Config
from .daemon.healthreport import read_report
from .fingerprint import added_weights, fingerprint
from .model import HASH_SCHEDULERS, SYNC_STATES, Link, State, SyncDaemon
from .plan import PlanOptions, desired_for, plan
from .store import StateStore, listener_pid

if TYPE_CHECKING:
    from .backends.bgpd import Runner

#: The IPVS sysctls that decide what happens to connections on drain and failover (docs/ipvs.md).
#: There is no ``sync_period`` key: the period is the second number of ``sync_threshold``.
IPVS_CONNECTION_SYSCTLS = (
    "net.ipv4.vs.expire_nodest_conn",
    "net.ipv4.vs.expire_quiescent_template",
    "net.ipv4.vs.sync_threshold",
    "net.ipv4.vs.sync_refresh_period",
)


def collect_status(config: Config, backend_factory: Callable[[], Backend] | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (this is also the ``--json`` output)."""
    store = StateStore(config.settings.state_dir)
    saved, warnings = store.load(repair=False)  # read-only and unlocked: leave a corrupt file to the next run
    recorded = saved.states()
    states = {name: recorded.get(name, State.BACKUP) for name in config.instance_names}
    listener = listener_pid(store.dir)
    checked = any(spec.checks for inst in config.instances for spec in inst.services)
    reported = read_report(store.dir) if listener is not None else None
    health: dict[str, Any] | None = None
    if checked or listener is not None:
        health = {"listener": listener, "written": reported.written if reported else None,
                  "reals": [r.to_json() for r in reported.reals] if reported else []}
    # the drift is judged with the listener's health: a drained DOWN real server is not drift
    desired = desired_for(config, states,
                          health=reported if reported is not None and (reported.reals or reported.quorum) else None)
    # Foreign IPVS services and sync daemons are shown too (read, never touched), and the
    # IPVS sysctls whether configured or not.
    scope = replace(desired.scope, ipvs=True, sync_daemons=True,
                    sysctls=tuple(dict.fromkeys(desired.scope.sysctls + IPVS_CONNECTION_SYSCTLS)))
    backend = (backend_factory or system.system_backend)()
    try:
        observed = backend.observe(scope)
        arp = _effective_arp(backend)
    finally:
        backend.close()
    drift = plan(desired, observed, PlanOptions(garp_count=0, drain_timeout=config.settings.drain_timeout,
                                                 draining=saved.draining))

    desired_vips = {spec.vip.key for spec in desired.vips}
    bound = {vip.key: vip for vip in observed.vips}
    owner = {spec.vip.key: inst.name for inst in config.instances for spec in inst.vips}
    services = []
    added = added_weights(config)
    for key, svc in sorted((observed.services or {}).items(), key=lambda kv: str(kv[0])):
        # mh/sh: in the kernel's order, which their table is built from (docs/ipvs.md)
        listed = (svc.reals.values() if svc.service.scheduler in HASH_SCHEDULERS
                  else sorted(svc.reals.values(), key=lambda x: str(x[0])))
        services.append({
            "service": str(svc.service),
            "managed": key in desired.protected_services,
            "fingerprint": fingerprint(svc, added.get(key)),
            "reals": [
                {"real": str(rs), "active": st.active_conns, "inactive": st.inactive_conns}
                for rs, st in listed
            ],
            # the listener's judgement of its quorum (keepalived's): {"quorum": Q, "up_weight": W, "up": bool, ...}
            "quorum": reported.quorum_of(str(key)) if reported is not None else None,
        })
    return {
        "version": __version__,  # kanotify's: the same as `kanotify --version` and the metrics' kanotify_build_info
        "config": config.path,
        "instances": [
            {
                "instance": name,
                "state": recorded[name].value if name in recorded else None,
                "effective": states[name].value,
                "since": saved.instances[name].since if name in saved.instances else None,
            }
            for name in config.instance_names
        ],
        "vips": [
            {
                "vip": str(vip),
                "instance": owner.get(vip.key),
                "desired": vip.key in desired_vips,
                "bound": vip.key in bound,
            }
            for vip in sorted(desired.managed_vips, key=lambda v: (v.family, v))  # IPv4 and IPv6 do not compare
        ],
        "ipvs": {"available": observed.services is not None, "error": observed.ipvs_error, "services": services},
        "sysctls": [
            {"key": key, "desired": value, "current": observed.sysctls.get(key)} for key, value in desired.sysctls
        ],
        "sync_daemons": _sync_daemons(config, states, desired.sync_daemons, observed.daemons),
        "ipvs_sysctls": [
            {"key": key, "current": observed.sysctls.get(key), "desired": dict(desired.sysctls).get(key)}
            for key in IPVS_CONNECTION_SYSCTLS
        ],
        "arp": arp,
        "drift": [str(a) for a in drift.changes],
        "health": health,
        "warnings": warnings,
        **({"bgp": collect_bgp(config, observed.links)} if config.bgp is not None else {}),
    }


def collect_bgp(config: Config, links: Mapping[str, Link], runner: Runner | None = None) -> dict[str, Any]:
    """``[bgp]``: the dummy link and the daemon's sessions, read-only (``status --json``'s ``bgp``).

    ``{"daemon": "bird", "interface": {...}, "sessions": [{"name", "state", "since"}], "error": None}``
    """
    from .backends.bgpd import BgpReader, BgpReadError

    spec = config.bgp
    assert spec is not None
    link = links.get(spec.interface)
    report: dict[str, Any] = {
        "daemon": spec.daemon,
        "interface": {"name": spec.interface, "exists": link is not None,
                      "kind": link.kind if link else None, "up": link.up if link else None,
                      "noarp": link.noarp if link else None},
        "sessions": [],
        "error": None,
    }
    try:
        report["sessions"] = [s.to_json() for s in BgpReader(spec, runner).sessions()]
    except BgpReadError as exc:
        report["error"] = str(exc)
    return report


def _sync_daemons(
    config: Config, states: dict[str, State], wanted: tuple[SyncDaemon, ...], running: tuple[SyncDaemon, ...] | None
) -> dict[str, Any]:
    """Running and wanted sync daemons per state (``running`` is None when IPVS could not be read)."""
    spec = config.sync_daemon
    want = {d.state: d for d in wanted}
    have = {d.state: d for d in running or ()}
    return {
        "managed": spec is not None,
        "mode": spec.mode if spec else None,
        "instance": spec.instance if spec else None,
        "state": states[spec.instance].value if spec and spec.instance else None,
        "available": running is not None,
        "daemons": [
            {
                "state": state,
                "running": str(have[state]) if state in have else None,
                "wanted": str(want[state]) if state in want else None,
                "ok": spec is None or (have.get(state) == want.get(state)),
            }
            for state in SYNC_STATES
            if spec is not None or state in have
        ],
    }


def _effective_arp(backend: Backend) -> ArpPolicy:
    """Effective arp_ignore/arp_announce per interface = max(all, interface)."""
    try:
        return dict(backend.effective_arp())
    except Exception:  # noqa: BLE001 - status must show the rest even if /proc is odd
        return {}


def format_status(report: dict[str, Any], verbose: int = 0) -> str:
    lines = [f"config: {report['config']}"]
    lines.append("instances:")
    for inst in report["instances"]:
        state = inst["state"] or f"unrecorded (treated as {inst['effective']})"
        since = f" since {inst['since']}" if inst.get("since") else ""
        lines.append(f"  {inst['instance']:<16} {state}{since}")
    if report["vips"]:
        lines.append("vips:")
        for vip in report["vips"]:
            mark = "bound " if vip["bound"] else "absent"
            want = "wanted" if vip["desired"] else "not wanted"
            flag = "" if vip["bound"] == vip["desired"] else "   <- drift"
            lines.append(f"  {mark} {vip['vip']} ({vip['instance']}: {want}){flag}")
    ipvs = report["ipvs"]
    lines.append("ipvs:" + ("" if ipvs["available"] else f" not available ({ipvs['error']})"))
    for svc in ipvs["services"]:
        quorum = svc.get("quorum")
        held = "" if not quorum else (f"  quorum {'UP' if quorum['up'] else 'LOST'}: up weight {quorum['up_weight']}"
                                      f" (quorum {quorum['quorum']}, hysteresis {quorum['hysteresis']})")
        lines.append(f"  {'managed' if svc['managed'] else 'foreign'} {svc['service']} "
                     f"(fingerprint {svc['fingerprint']}){held}")
        for rs in svc["reals"]:
            lines.append(f"    -> {rs['real']} active {rs['active']} inactive {rs['inactive']}")
    if report["sysctls"]:
        lines.append("sysctls:")
        for item in report["sysctls"]:
            ok = "ok   " if item["current"] == item["desired"] else "DRIFT"
            lines.append(f"  {ok} {item['key']} = {item['current']} (want {item['desired']})")
    lines.extend(_format_sync(report["sync_daemons"], ipvs["error"]))
    lines.append("ipvs connection sysctls (drain and failover, see docs/ipvs.md; set them in [sysctl]):")
    for item in report["ipvs_sysctls"]:
        current = "missing (ip_vs not loaded)" if item["current"] is None else item["current"]
        want = f" (want {item['desired']})" if item["desired"] is not None else ""
        lines.append(f"  {item['key']} = {current}{want}")
    if report["arp"]:
        lines.append("effective ARP policy (max of all and interface):")
        for iface, values in sorted(report["arp"].items()):
            lines.append(
                f"  {iface:<16} arp_ignore {values.get('arp_ignore')} arp_announce {values.get('arp_announce')}"
            )
    health = report.get("health")
    if health is not None:
        if health["listener"] is None:
            lines.append("health checks: not running (they run in kanotify listen; weights are the configured ones)")
        else:
            lines.append(f"health checks (kanotify listen, pid {health['listener']}):")
            seen: dict[tuple[object, object], int] = {}
            for real in health["reals"]:
                key = (real.get("service"), real.get("real"))
                seen[key] = seen.get(key, 0) + 1
            for real in health["reals"]:
                mark = "UP  " if real.get("up") else "DOWN"
                since = _clock(real.get("since"))
                error = f"; last error: {real['last_error']}" if real.get("last_error") else ""
                weight = f"; weight {real['weight']}" if real.get("weight") is not None else ""
                # several checks of one real server: say which (it is DOWN while any is)
                which = f" ({real.get('check')})" if seen[(real.get("service"), real.get("real"))] > 1 else ""
                lines.append(f"  {mark} {real.get('real')} of {real.get('service')}{which} since {since}{weight}{error}")
    if "bgp" in report:
        lines.extend(_format_bgp(report["bgp"]))
    if report["drift"]:
        lines.append("drift (what reconcile would change):")
        lines.extend(f"  + {line}" for line in report["drift"])
    else:
        lines.append("drift: none")
    for warning in report.get("warnings", ()):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def _format_sync(sync: dict[str, Any], error: str | None) -> list[str]:
    if sync["managed"] and sync["mode"] == "both":
        head = "sync daemons (mode both: master and backup always):"
    elif sync["managed"]:
        head = f"sync daemons (follow {sync['instance']}, {sync['state']}):"
    else:
        head = "sync daemons (not managed: no [sync_daemon]; never touched):"
    if not sync["available"]:
        return [f"{head} not available ({error})"]
    lines = [head]
    for item in sync["daemons"]:
        if not sync["managed"]:
            lines.append(f"  running {item['running']}")
        elif item["running"] and item["ok"]:
            lines.append(f"  ok    {item['running']}")
        elif item["ok"]:
            lines.append(f"  ok    {item['state']} sync daemon stopped")
        elif item["running"] and item["wanted"]:
            lines.append(f"  DRIFT {item['running']} (want {item['wanted']})")
        elif item["running"]:
            lines.append(f"  DRIFT {item['running']} (want it stopped)")
        else:
            lines.append(f"  DRIFT {item['state']} sync daemon not running (want {item['wanted']})")
    if len(lines) == 1:
        lines[0] += " none running"
    return lines


def _format_bgp(bgp: dict[str, Any]) -> list[str]:
    link = bgp["interface"]
    if link["exists"]:
        flags = f"{link['kind'] or 'not a dummy'}, {'up' if link['up'] else 'DOWN'}, " \
                f"{'no ARP' if link['noarp'] else 'ARP on'}"
    else:
        flags = "missing"
    lines = [f"bgp ({bgp['daemon']}, read-only; VIPs on {link['name']}: {flags}):"]
    if bgp["error"]:
        lines.append(f"  sessions not readable: {bgp['error']}")
    elif not bgp["sessions"]:
        lines.append("  no BGP sessions configured")
    for session in bgp["sessions"]:
        lines.append(f"  {session['name']:<16} {session['state']:<12} since {session['since']}")
    return lines


def _clock(value: object) -> str:
    """A wall-clock time (seconds) as ISO 8601 UTC, to the second."""
    if not isinstance(value, (int, float)):
        return "?"
    return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

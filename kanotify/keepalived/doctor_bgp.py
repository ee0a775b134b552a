"""``kanotify doctor``'s rows for the ``[bgp]`` wiring: binding is announcing, so check the chain.

The dummy link exists and is a dummy (up, no ARP); the BGP daemon answers, has sessions and
exports the VIPs bound on the link (and nothing else); graceful restart is off and BFD is up
on every session (a dead director is withdrawn at once); the services use a scheduler that
picks the same real server on every director (mh/sh).  ``sloppy_tcp`` and the sync daemon's
mode have rows of their own (:mod:`kanotify.keepalived.doctor_active`: one row per fact),
which are stricter with ``[bgp]``.  Read-only: the daemon is asked through ``birdc -r`` /
``vtysh -c show``.

Returns plain tuples (status, check, what, fix, where, command) that
:mod:`kanotify.keepalived.doctor` turns into its rows, so this module does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..config.values import BgpSpec, Config
from ..model import IPInterface, Link

if TYPE_CHECKING:
    from .hostfacts import Host

PASS, WARN, FAIL = "pass", "warn", "fail"
CHECK = "bgp"
#: schedulers whose choice two directors make alike (the same table from the same config)
HASHING = ("mh", "sh")

RowTuple = tuple[str, str, str, str, str, "str | None"]


class BgpFacts(Protocol):
    """What the ``[bgp]`` rows read besides the host's sysctls and addresses (a fake in unit tests)."""

    def link(self, name: str) -> Link | None: ...

    def wiring(self, spec: BgpSpec) -> dict[str, Any]: ...  # BgpReader.wiring; raises BgpReadError


class SystemBgpFacts:
    """This host: the link through rtnetlink, the daemon through its read-only commands."""

    def link(self, name: str) -> Link | None:
        from ..backends.link import LinkBackend

        backend = LinkBackend()
        try:
            return backend.observe([name]).get(name)
        finally:
            backend.close()

    def wiring(self, spec: BgpSpec) -> dict[str, Any]:
        from ..backends.bgpd import BgpReader

        return BgpReader(spec).wiring(spec.interface)


def _row(status: str, what: str, fix: str = "", where: str = "", command: str | None = None) -> RowTuple:
    return (status, CHECK, what, fix, where, command)


def bgp_rows(config: Config | None, host: Host, facts: BgpFacts | None = None) -> list[RowTuple]:
    """Every ``[bgp]`` row; none without ``[bgp]``."""
    if config is None or config.bgp is None:
        return []
    from ..backends.bgpd import BgpReadError

    spec = config.bgp
    facts = facts or SystemBgpFacts()
    rows = [_link_row(spec, facts.link(spec.interface), config.path)]
    bound = [a for a in host.addresses(spec.interface) if a.network.prefixlen == a.max_prefixlen]
    try:
        wiring = facts.wiring(spec)
    except BgpReadError as exc:
        rows.append(_row(FAIL, f"cannot ask {spec.daemon}: {exc}", f"start {spec.daemon}, or set [bgp] control to "
                         "its control socket", config.path))
    else:
        rows.extend(_daemon_rows(spec, wiring, bound))
    rows.extend(_scheduler_rows(config))
    return rows


def _link_row(spec: BgpSpec, link: Link | None, where: str) -> RowTuple:
    name = spec.interface
    if link is None:
        return _row(WARN, f"{name} does not exist yet: kanotify creates it (dummy, up, no ARP) on its next run",
                    "kanotify reconcile", where, "kanotify reconcile")
    if link.kind != "dummy":
        return _row(FAIL, f"{name} is a {link.kind or 'plain'} link, not a dummy: the daemon would announce "
                          "whatever else is on it, and a link that goes down withdraws the VIPs",
                    f"give [bgp] interface a name of its own; kanotify creates the dummy link", where)
    if not link.up or not link.noarp:
        return _row(WARN, f"{link}: kanotify sets it up and ARP off on its next run", "kanotify reconcile", where,
                    "kanotify reconcile")
    return _row(PASS, f"{link}")


def _daemon_rows(spec: BgpSpec, wiring: dict[str, Any], bound: list[IPInterface]) -> list[RowTuple]:
    rows: list[RowTuple] = []
    sessions = wiring["sessions"]
    if not sessions:
        return [_row(FAIL, f"{spec.daemon} has no BGP session", "configure the session to the router "
                     f"(examples/{'bird-director.conf' if spec.daemon == 'bird' else 'frr-director.conf'})")]
    down = [f"{s.name} {s.state}" for s in sessions if not s.established]
    rows.append(_row(WARN if down else PASS, f"{spec.daemon} sessions: " + ", ".join(
        f"{s.name} {s.state}" for s in sessions), "check the router and the link" if down else ""))
    rows.extend(_export_rows(spec, wiring, bound))
    if wiring["graceful_restart"]:
        fix = "graceful restart off; in the bgp protocol" if spec.daemon == "bird" else \
            "bgp graceful-restart-disable under router bgp"
        rows.append(_row(FAIL, "graceful restart is offered: the router would keep forwarding to a dead director "
                               "for the restart time", fix))
    else:
        rows.append(_row(PASS, "graceful restart off"))
    no_bfd = [name for name, state in wiring["bfd"].items() if state.lower() != "up"]
    if no_bfd:
        rows.append(_row(FAIL, "BFD not up on " + ", ".join(f"{n} ({wiring['bfd'][n]})" for n in no_bfd)
                         + ": a director that dies silently is withdrawn only after the hold time",
                         "bfd on; and a bfd protocol (BIRD) / neighbor X bfd (FRR), on the router too"))
    else:
        rows.append(_row(PASS, "BFD up on every session"))
    return rows


def _export_rows(spec: BgpSpec, wiring: dict[str, Any], bound: list[IPInterface]) -> list[RowTuple]:
    rows: list[RowTuple] = []
    vips = {str(a.network) for a in bound}
    if wiring.get("redistributes_everything"):
        rows.append(_row(WARN, "FRR redistributes every connected route: the router learns the director's own "
                               "subnets too", f"redistribute connected route-map M, with match interface "
                               f"{spec.interface}"))
    if not vips:
        if wiring["exports_interface"] is False:
            rows.append(_row(FAIL, f"{spec.daemon} does not export {spec.interface}", "see examples/frr-director.conf"))
        else:
            rows.append(_row(WARN, f"no VIP bound on {spec.interface} now: cannot see whether {spec.daemon} exports it",
                             "run doctor again while the VIPs are bound"))
        return rows
    for session, exported in sorted(wiring["exported"].items()):
        missing = sorted(vips - exported)
        extra = sorted(exported - vips)
        if missing:
            rows.append(_row(FAIL, f"bound on {spec.interface} but not exported to {session}: {', '.join(missing)}",
                             "export the interface's addresses (examples/bird-director.conf, frr-director.conf)"))
        elif extra:
            rows.append(_row(WARN, f"{session} is also sent {', '.join(extra[:5])}: not on {spec.interface}",
                             "export only the VIPs kanotify binds (the examples' filters)"))
        else:
            rows.append(_row(PASS, f"{session} is sent exactly the VIPs on {spec.interface}: {', '.join(sorted(vips))}"))
    return rows


def _scheduler_rows(config: Config) -> list[RowTuple]:
    """Without an mh/sh service, ECMP's moves reset flows (with one, the ``sloppy_tcp`` row says the rest)."""
    services = [s for inst in config.instances for s in inst.services]
    if any(s.service.scheduler in HASHING for s in services):
        return []
    if not services:
        return [_row(PASS, "no IPVS service: nothing for ECMP to move")]
    return [_row(WARN, "ECMP moves flows between directors, and only mh/sh pick the same real server on every "
                       "director: a moved flow of another scheduler is reset unless the sync daemons share it",
                 'scheduler = "mh" with flags ["mh-port"] (and sloppy_tcp)', config.path)]


__all__ = ["BgpFacts", "SystemBgpFacts", "bgp_rows"]

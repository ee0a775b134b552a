"""``kanotify doctor``'s checks for active-active directors behind ECMP (docs/ipvs.md).

Directors that serve one VIP at once must pick the same real server for every
flow: ``sloppy_tcp`` so that a flow ECMP moves is picked up, and the same
IPVS table, which the fingerprints show.  This director's fingerprints come
from the kernel (``Context.fingerprints``); the other directors' are given on
the command line (``--peer-fingerprint SERVICE=HEX``) or read from files the
operator distributes (``--peer-fingerprints PATH``: another director's
``kanotify status --json``, so no new format and the name of the file says
which director it is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ..errors import UsageError
from ..model import HASH_SCHEDULERS
from .doctor import FAIL, PASS, WARN, Context, Row


@dataclass(frozen=True)
class PeerFingerprints:
    """One other director's fingerprints: ``source`` says where they came from (a file, the command line)."""

    source: str
    services: Mapping[str, str]  # service text as in status ("tcp 192.0.2.10:80") -> hex


def parse_peer_options(pairs: Iterable[str], files: Iterable[str]) -> list[PeerFingerprints]:
    """``--peer-fingerprint SERVICE=HEX`` values and ``--peer-fingerprints PATH`` files; UsageError names the bad one."""
    peers: list[PeerFingerprints] = []
    given: dict[str, str] = {}
    for pair in pairs:
        service, sep, value = pair.rpartition("=")
        value = value.strip().lower()
        if not sep or not service.strip() or not value or any(c not in "0123456789abcdef" for c in value):
            raise UsageError(f"--peer-fingerprint {pair!r}: expected SERVICE=HEX, e.g. "
                             "'tcp 192.0.2.10:80=3f0c...' (the service and fingerprint from a peer's kanotify status)")
        given[" ".join(service.split())] = value
    if given:
        peers.append(PeerFingerprints("--peer-fingerprint", given))
    for path in files:
        peers.append(PeerFingerprints(path, _read_status(path)))
    return peers


def _read_status(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            data: Any = json.load(f)
    except OSError as exc:
        raise UsageError(f"--peer-fingerprints {path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--peer-fingerprints {path}: expected another director's `kanotify status --json`, "
                         f"not JSON: {exc}") from None
    try:
        services = data["ipvs"]["services"]
        return {_service_key(str(s["service"])): str(s["fingerprint"]) for s in services if s.get("managed")}
    except (KeyError, TypeError, AttributeError):
        raise UsageError(f"--peer-fingerprints {path}: expected another director's `kanotify status --json` "
                         "(ipvs.services[].service and .fingerprint)") from None


def _service_key(text: str) -> str:
    """``tcp 192.0.2.10:80 scheduler mh flags mh-port`` (status's text of a service) -> ``tcp 192.0.2.10:80``."""
    return text.split(" scheduler ", 1)[0]


def check_sloppy_tcp(ctx: Context) -> list[Row]:
    """mh/sh services serve flows that ECMP may move here mid-stream: ``sloppy_tcp`` picks them up.

    With ``[bgp]`` the director is certainly behind ECMP: not 1 on the host is a fail, with the command."""
    hashed = [str(spec.service.key) for inst in (ctx.config.instances if ctx.config else ())
              for spec in inst.services if spec.service.scheduler in HASH_SCHEDULERS]
    if not hashed:
        return []
    key = "net.ipv4.vs.sloppy_tcp"
    wanted = dict(ctx.config.sysctls).get(key) if ctx.config else None
    current = ctx.host.sysctl(key)
    if ctx.config is not None and ctx.config.bgp is not None:
        if current == "1":
            return [Row(PASS, "sloppy_tcp", f"{key} = 1 for the mh/sh services ({', '.join(hashed[:3])})")]
        what = (f"{key} = {current if current is not None else 'missing'}: a flow that ECMP moves to this "
                f"director mid-stream is dropped and reset instead of picked up ({', '.join(hashed[:3])})")
        if wanted == "1":  # configured, not applied yet
            return [Row(FAIL, "sloppy_tcp", what, "kanotify sets it on its next run", ctx.config_path or "",
                        "kanotify reconcile")]
        return [Row(FAIL, "sloppy_tcp", what, f'"{key}" = 1 in [sysctl]', ctx.config_path or "",
                    f"sysctl -w {key}=1")]
    if wanted == "1" or current == "1":
        return [Row(PASS, "sloppy_tcp", f"{key} = 1 for the mh/sh services ({', '.join(hashed[:3])})")]
    return [Row(WARN, "sloppy_tcp", f"{key} is {current if current is not None else 'absent'}: behind ECMP, a "
                f"connection moved to this director mid-stream is reset ({', '.join(hashed[:3])})",
                f'add "{key}" = 1 under [sysctl] (docs/ipvs.md, active-active)', ctx.config_path or "")]


def check_sync_mode(ctx: Context) -> list[Row]:
    """What ``[sync_daemon] mode`` does for directors behind ECMP (with ``[bgp]`` this director certainly is)."""
    config = ctx.config
    sync = config.sync_daemon if config is not None else None
    if config is not None and sync is None and config.bgp is not None:
        return [Row(WARN, "sync mode", "no [sync_daemon] behind ECMP ([bgp]): a moved flow is picked up by "
                    "sloppy_tcp + mh alone; persistence templates and non-mh services are not shared",
                    '[sync_daemon] mode = "both"', ctx.config_path or "")]
    if config is None or sync is None:
        return []
    if sync.mode == "both":
        return [Row(PASS, "sync mode", f"mode both: master (sync id {sync.sync_id}) and backup (sync id 0) daemons "
                    "always, so a connection ECMP moves here is known here")]
    hashed = any(spec.service.scheduler in HASH_SCHEDULERS for inst in config.instances for spec in inst.services)
    if config.bgp is not None:
        return [Row(WARN, "sync mode", f"mode follow behind ECMP ([bgp]): the daemons follow {sync.instance}, and "
                    "with every director active each runs only its master daemon: none hears the others",
                    'mode = "both" in [sync_daemon]', ctx.config_path or "")]
    if hashed:
        return [Row(WARN, "sync mode", f"mode follow with mh/sh services: the daemons follow {sync.instance}, so "
                    "directors active at once behind ECMP do not share connections (fine for an active/passive "
                    "pair)", 'with several directors active at once: mode = "both" in [sync_daemon]',
                    ctx.config_path or "")]
    return [Row(PASS, "sync mode", f"mode follow: the daemons follow {sync.instance}'s VRRP state")]


def check_peer_fingerprints(ctx: Context, peers: list[PeerFingerprints],
                            mine: Callable[[], Mapping[str, str]] | None) -> list[Row]:
    """This director's fingerprint of each service equals every peer's."""
    if not peers:
        return []
    if mine is None:
        return [Row(FAIL, "fingerprint", "this director's IPVS services could not be read to compare",
                    "run doctor as root on a director with IPVS")]
    try:
        own = mine()
    except Exception as exc:  # noqa: BLE001 - the row says why
        return [Row(FAIL, "fingerprint", f"this director's IPVS services could not be read: {exc}",
                    "run doctor as root on a director with IPVS")]
    rows: list[Row] = []
    for peer in peers:
        for service, theirs in sorted(peer.services.items()):
            ours = own.get(service)
            if ours is None:
                rows.append(Row(FAIL, "fingerprint", f"{service}: {peer.source} has it, this director's kernel "
                                "does not", "converge this director (kanotify reconcile) or check the config"))
            elif ours == theirs:
                rows.append(Row(PASS, "fingerprint", f"{service}: {ours} here and in {peer.source}"))
            else:
                rows.append(Row(FAIL, "fingerprint", f"{service}: {ours} here, {theirs} in {peer.source}: the "
                                "directors send some flows to different real servers",
                                "compare `kanotify status` on both (real servers in the kernel's order, weights) "
                                "and the config files; kanotify reconcile restores the config's order"))
        for service in sorted(own.keys() - peer.services.keys()):
            rows.append(Row(WARN, "fingerprint", f"{service}: here, not in {peer.source}"))
    return rows


__all__ = ["PeerFingerprints", "check_peer_fingerprints", "check_sloppy_tcp", "check_sync_mode", "parse_peer_options"]

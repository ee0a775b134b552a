"""The director's BGP daemon, read-only: its sessions, what it exports, graceful restart, BFD.

kanotify never speaks BGP and never changes the daemon: ``status`` shows its sessions and
``doctor`` checks its wiring, through the daemon's own read-only commands --
BIRD 2's ``birdc -r`` (restricted: show commands only) and FRR's ``vtysh -c 'show ...'``.
The parsers are pure functions over the daemons' real output (the unit tests feed them
outputs captured from BIRD 2.0.12 and FRR 8.4); :class:`BgpReader` runs the commands.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..config.values import BgpSpec

#: seconds one birdc/vtysh command may take
TIMEOUT = 5.0

#: runs argv, returns (exit code, stdout + stderr); tests pass their own
Runner = Callable[[Sequence[str]], tuple[int, str]]


class BgpReadError(Exception):
    """The daemon could not be asked (not installed, not running, no access)."""


@dataclass(frozen=True)
class BgpSession:
    """One BGP session as the daemon reports it: ``name`` (BIRD's protocol name, FRR's peer),
    ``state`` ("Established", "Active", "Connect", "Idle", ...), ``since`` (the daemon's text)."""

    name: str
    state: str
    since: str
    neighbor: str | None = None

    @property
    def established(self) -> bool:
        return self.state == "Established"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "since": self.since}


@dataclass(frozen=True)
class BirdProtocol:
    """A row of ``birdc show protocols``."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str


# --------------------------------------------------------------------------- BIRD 2 parsers

_BIRD_HEADER = re.compile(r"^Name\s+Proto\s+Table\s+State\s+Since\s+Info")


def parse_bird_protocols(text: str) -> list[BirdProtocol]:
    """``birdc show protocols``: one :class:`BirdProtocol` per row (banner and header skipped)."""
    rows: list[BirdProtocol] = []
    seen_header = False
    for line in text.splitlines():
        if _BIRD_HEADER.match(line):
            seen_header = True
            continue
        if not seen_header or not line.strip() or line[0].isspace():
            continue
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        rows.append(BirdProtocol(parts[0], parts[1], parts[2], parts[3], parts[4],
                                 parts[5].strip() if len(parts) > 5 else ""))
    return rows


def bird_sessions(protocols: list[BirdProtocol]) -> list[BgpSession]:
    """The BGP protocols as sessions: the state is BGP's (the Info column's first word), else BIRD's."""
    sessions = []
    for p in protocols:
        if p.proto != "BGP":
            continue
        state = p.info.split()[0] if p.info else p.state
        sessions.append(BgpSession(p.name, state, p.since))
    return sessions


def parse_bird_protocol_all(text: str) -> dict[str, Any]:
    """``birdc show protocols all NAME`` of a BGP protocol: its neighbor and whether this side
    offers graceful restart (the "Graceful restart" local capability)."""
    neighbor = None
    local_caps: list[str] = []
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Neighbor address:"):
            neighbor = stripped.split(":", 1)[1].strip()
        if stripped in ("Local capabilities", "Neighbor capabilities"):
            section = stripped
            continue
        if section is not None:
            indent = len(line) - len(line.lstrip())
            if indent <= 4:  # the capability lists are indented deeper than the session fields
                section = None
            elif section == "Local capabilities" and indent == 6:
                local_caps.append(stripped)
    return {"neighbor": neighbor, "graceful_restart": any(c.startswith("Graceful restart") for c in local_caps),
            "local_capabilities": local_caps}


def parse_bird_routes(text: str) -> list[tuple[str, str | None]]:
    """``birdc show route ...``: (prefix, device) per route ("dev kav0" lines; None when via a gateway)."""
    routes: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        if line and not line[0].isspace():
            word = line.split()[0]
            if "/" in word:
                routes.append((word, None))
        elif routes and line.strip().startswith("dev "):
            routes[-1] = (routes[-1][0], line.split()[1])
    return routes


def parse_bird_bfd(text: str) -> dict[str, str]:
    """``birdc show bfd sessions``: neighbor address -> state ("Up", "Down", "Init", ...)."""
    sessions: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and _is_ip(parts[0]):
            sessions[parts[0]] = parts[2]
    return sessions


# --------------------------------------------------------------------------- FRR parsers


def parse_frr_summary(text: str) -> list[BgpSession]:
    """``vtysh -c 'show bgp summary json'``: a session per peer of every address family."""
    data = _json(text)
    sessions: dict[str, BgpSession] = {}
    for family in data.values() if isinstance(data, dict) else ():
        peers = family.get("peers") if isinstance(family, dict) else None
        for peer, info in (peers or {}).items():
            if peer not in sessions and isinstance(info, dict):
                sessions[peer] = BgpSession(peer, str(info.get("state", "?")), str(info.get("peerUptime", "?")), peer)
    return list(sessions.values())


def parse_frr_running(text: str, interface: str) -> dict[str, Any]:
    """``vtysh -c 'show running-config'``: graceful restart, what exports ``interface``, BFD neighbors.

    ``exports_interface`` is true when connected routes are redistributed through a
    route-map that matches ``interface``; ``networks`` are the ``network`` statements
    (with import-check, announced only while the address is there).
    """
    lines = [line.rstrip() for line in text.splitlines()]
    maps_matching: set[str] = set()
    current_map = None
    redistribute_maps: set[str] = set()
    redistribute_plain = False
    networks: set[str] = set()
    bfd: set[str] = set()
    gr_disabled = gr_on = False
    import_check_off = False
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "route-map" and len(words) >= 2:
            current_map = words[1]
        elif not line.startswith(" "):
            current_map = None
        if current_map and words[:2] == ["match", "interface"] and words[2:3] == [interface]:
            maps_matching.add(current_map)
        if words[:2] == ["redistribute", "connected"]:
            if "route-map" in words:
                redistribute_maps.add(words[words.index("route-map") + 1])
            else:
                redistribute_plain = True
        if words[0] == "network" and len(words) >= 2:
            networks.add(words[1])
        if words[0] == "neighbor" and len(words) >= 3 and words[2] == "bfd":
            bfd.add(words[1])
        if words == ["bgp", "graceful-restart-disable"]:
            gr_disabled = True
        elif words[:2] == ["bgp", "graceful-restart"] and words[2:3] != ["helper"]:
            gr_on = True
        if words[:4] == ["no", "bgp", "network", "import-check"]:
            import_check_off = True
    return {
        "graceful_restart": gr_on or not gr_disabled,
        "exports_interface": bool(redistribute_maps & maps_matching),
        "redistributes_everything": redistribute_plain,
        "networks": networks,
        "import_check": not import_check_off,
        "bfd_neighbors": bfd,
    }


def parse_frr_bfd(text: str) -> dict[str, str]:
    """``vtysh -c 'show bfd peers json'``: peer -> status ("up", "down", ...)."""
    data = _json(text)
    return {str(p.get("peer")): str(p.get("status")) for p in data if isinstance(p, dict)} \
        if isinstance(data, list) else {}


def parse_frr_advertised(text: str) -> set[str]:
    """``vtysh -c 'show ip bgp neighbors X advertised-routes json'``: the prefixes."""
    data = _json(text)
    routes = data.get("advertisedRoutes") if isinstance(data, dict) else None
    return set(routes) if isinstance(routes, dict) else set()


# --------------------------------------------------------------------------- running the commands


def _run(argv: Sequence[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not installed"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)}: no answer within {TIMEOUT:g} s"
    return done.returncode, done.stdout + done.stderr


class BgpReader:
    """Asks the ``[bgp]`` daemon read-only questions; :class:`BgpReadError` when it cannot be asked."""

    def __init__(self, spec: BgpSpec, runner: Runner | None = None) -> None:
        self.spec = spec
        self.runner = runner or _run

    def _ask(self, *command: str) -> str:
        if self.spec.daemon == "bird":
            argv = ["birdc", "-r", *(["-s", self.spec.control] if self.spec.control else []), *command]
        else:
            argv = ["vtysh", *(["--vty_socket", self.spec.control] if self.spec.control else []),
                    "-c", " ".join(command)]
        if self.runner is _run and shutil.which(argv[0]) is None and shutil.which(
                argv[0], path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise BgpReadError(f"{argv[0]} is not installed")
        code, out = self.runner(argv)
        if code != 0 or (self.spec.daemon == "bird" and "Unable to connect" in out):
            first = next((line for line in out.splitlines() if line.strip()), f"exit {code}")
            raise BgpReadError(f"{' '.join(argv)}: {first.strip()}")
        return out

    def sessions(self) -> list[BgpSession]:
        if self.spec.daemon == "bird":
            return bird_sessions(parse_bird_protocols(self._ask("show", "protocols")))
        return parse_frr_summary(self._ask("show", "bgp", "summary", "json"))

    def wiring(self, interface: str) -> dict[str, Any]:
        """What doctor checks: the sessions, per session the exported prefixes, graceful restart
        (any session offering it), BFD state per neighbor, and whether ``interface`` is exported
        (None: cannot tell from the daemon, e.g. BIRD with no address on it)."""
        if self.spec.daemon == "bird":
            return self._bird_wiring(interface)
        return self._frr_wiring(interface)

    def _bird_wiring(self, interface: str) -> dict[str, Any]:
        protocols = parse_bird_protocols(self._ask("show", "protocols"))
        sessions = bird_sessions(protocols)
        exports_interface: bool | None = None
        for p in protocols:
            if p.proto == "Direct":
                routes = parse_bird_routes(self._ask("show", "route", "protocol", p.name))
                if any(dev == interface for _, dev in routes):
                    exports_interface = True
        exported: dict[str, set[str]] = {}
        neighbors: dict[str, str | None] = {}
        graceful = False
        for s in sessions:
            detail = parse_bird_protocol_all(self._ask("show", "protocols", "all", s.name))
            neighbors[s.name] = detail["neighbor"]
            graceful = graceful or detail["graceful_restart"]
            if s.established:
                exported[s.name] = {prefix for prefix, _ in parse_bird_routes(self._ask("show", "route", "export", s.name))}
        try:
            bfd = parse_bird_bfd(self._ask("show", "bfd", "sessions"))
        except BgpReadError:
            bfd = {}  # no BFD protocol configured: BIRD says so
        return {"sessions": sessions, "exported": exported, "graceful_restart": graceful,
                "bfd": {s.name: bfd.get(neighbors[s.name] or "", "none") for s in sessions},
                "exports_interface": exports_interface}

    def _frr_wiring(self, interface: str) -> dict[str, Any]:
        sessions = parse_frr_summary(self._ask("show", "bgp", "summary", "json"))
        running = parse_frr_running(self._ask("show", "running-config"), interface)
        exported = {
            s.name: parse_frr_advertised(self._ask("show", "ip", "bgp", "neighbors", s.name, "advertised-routes", "json"))
            for s in sessions if s.established
        }
        peers = parse_frr_bfd(self._ask("show", "bfd", "peers", "json"))
        bfd = {s.name: (peers.get(s.name, "none") if s.name in running["bfd_neighbors"] else "none") for s in sessions}
        exports = True if running["exports_interface"] else (None if running["networks"] else False)
        return {"sessions": sessions, "exported": exported, "graceful_restart": running["graceful_restart"],
                "bfd": bfd, "exports_interface": exports, "networks": running["networks"],
                "redistributes_everything": running["redistributes_everything"]}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


__all__ = ["BgpReadError", "BgpReader", "BgpSession", "BirdProtocol", "bird_sessions", "parse_bird_bfd",
           "parse_bird_protocol_all", "parse_bird_protocols", "parse_bird_routes", "parse_frr_advertised",
           "parse_frr_bfd", "parse_frr_running", "parse_frr_summary"]

"""Value types: what the host should look like and what it does look like.

Everything here is a frozen, hashable dataclass without I/O.  The config loader
builds them from TOML, the backends build them from kernel state, and the
planner compares them.  Comparisons are on configuration only, never on
counters (connection counts live in :class:`RealServerStats`).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]


class State(enum.StrEnum):
    """A VRRP state as keepalived reports it, lower case (the journal's ``from``/``to``).

    >>> State.parse("MASTER") is State.MASTER
    True
    >>> State.parse("deleted") is State.STOP   # keepalived's DELETED is handled like STOP
    True
    """

    MASTER = "master"
    BACKUP = "backup"
    FAULT = "fault"
    STOP = "stop"

    @classmethod
    def parse(cls, text: str) -> "State":
        word = text.strip().lower()
        if word == "deleted":
            return cls.STOP
        try:
            return cls(word)
        except ValueError:
            raise ValueError(
                f"unknown state {text!r}: expected one of master, backup, fault, stop "
                "(any case; keepalived's DELETED counts as stop)"
            ) from None


class Outcome(enum.StrEnum):
    """What came of a run: the journal's ``outcome``.

    The engine writes the first three; a reader of the journal derives the last two
    for a ``started`` record that has no ``final`` one (:func:`kanotify.journal.pair_runs`).

    >>> Outcome.CONVERGED == "converged"
    True
    """

    #: the system is as the plan wanted (a dry-run: planning worked)
    CONVERGED = "converged"
    #: an action failed, verification found a difference, or a required hook failed
    FAILED = "failed"
    #: a newer notification was recorded before this one ran: it did nothing
    SUPERSEDED = "superseded"
    #: (reader only) a started run never wrote its final record: its process is gone, or a later run started
    INTERRUPTED = "interrupted"
    #: (reader only) a started run's process still runs and no later run has started: it is under way
    RUNNING = "running"


PROTOCOLS = ("tcp", "udp", "sctp")
FORWARDS = ("dr", "nat", "tun")
#: Tunnel encapsulations of ``forward = "tun"`` (the kernel's IP_VS_CONN_F_TUNNEL_TYPE_*, 5.2+; gre 5.3+).
TUN_TYPES = ("ipip", "gue", "gre")
#: Tunnel checksum options, one per real server as ipvsadm sets them (IP_VS_TUNNEL_ENCAP_FLAG_*).
TUN_FLAGS = ("nocsum", "csum", "remcsum")
SCHEDULERS = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
)
#: Service flags kanotify manages, by their ipvsadm names.  ``mh-*`` and ``sh-*`` are the same two
#: kernel bits (IP_VS_SVC_F_SCHED1/2); each scheduler speaks its own names (:func:`scheduler_flags`).
SERVICE_FLAGS = ("one-packet", "sh-fallback", "sh-port", "mh-fallback", "mh-port")
#: ``[sync_daemon] mode``: follow one instance's VRRP state, or run master and backup daemons always
SYNC_MODES = ("follow", "both")
#: schedulers whose table is built from the order and weights of the destination list
HASH_SCHEDULERS = ("mh", "sh")


def scheduler_flags(scheduler: str, flags: frozenset[str]) -> frozenset[str]:
    """``flags`` under ``scheduler``'s own names: ``mh-port`` with mh, ``sh-port`` with every other one.

    >>> sorted(scheduler_flags("mh", frozenset({"sh-port", "one-packet"})))
    ['mh-port', 'one-packet']
    """
    prefix = "mh-" if scheduler == "mh" else "sh-"
    return frozenset(prefix + f[3:] if f[:3] in ("sh-", "mh-") else f for f in flags)


def normalize_sysctl(value: str) -> str:
    """A sysctl value as text with whitespace runs folded: ``"4096\\t87380\\n"`` -> ``"4096 87380"``.

    The one normalization used wherever a value is compared: in the config, the
    planner and the read-back of the sysctl backend.
    """
    return " ".join(str(value).split())


def format_hostport(address: IPAddress, port: int) -> str:
    """``192.0.2.1:80`` or ``[2001:db8::1]:80``, as ipvsadm prints them."""
    # !s: the same text without ipaddress's __format__ around str() (a journal line of a big
    # sync writes 20,000 of these)
    if address.version == 6:
        return f"[{address!s}]:{port}"
    return f"{address!s}:{port}"


# --------------------------------------------------------------------------- VIPs


@dataclass(frozen=True, order=True)
class Vip:
    """An address bound to a device.

    Identity is the address with its prefix plus the device: the kernel allows
    ``192.0.2.100/24`` on ``eth0`` and ``192.0.2.100/32`` on ``lo`` at once, and
    those are two different VIPs.  The label is part of the desired state.

    >>> str(Vip(ipaddress.ip_interface("192.0.2.100/32"), "lo", "lo:0"))
    '192.0.2.100/32 dev lo label lo:0'
    """

    address: IPInterface
    dev: str
    label: str | None = None  # None: the kernel's default, which is the device name

    def __post_init__(self) -> None:
        if self.label == self.dev:
            object.__setattr__(self, "label", None)

    @property
    def key(self) -> tuple[str, str]:
        return (self.address.with_prefixlen, self.dev)

    @property
    def family(self) -> int:
        return self.address.version

    def __str__(self) -> str:
        text = f"{self.address.with_prefixlen} dev {self.dev}"
        if self.label:
            text += f" label {self.label}"
        return text


# --------------------------------------------------------------------------- IPVS


@dataclass(frozen=True, order=True)
class ServiceKey:
    """What identifies an IPVS virtual service.

    Either ``protocol``/``address``/``port`` or ``fwmark`` (with an address
    family, as the kernel keys fwmark services by family too).

    >>> str(ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 80))
    'tcp 192.0.2.100:80'
    >>> str(ServiceKey.mark(5))
    'fwmark 5'
    """

    protocol: str  # tcp | udp | sctp | fwmark
    family: int  # 4 | 6
    address: IPAddress | None = None
    port: int = 0
    fwmark: int = 0

    @classmethod
    def inet(cls, protocol: str, address: IPAddress, port: int) -> "ServiceKey":
        return cls(protocol=protocol, family=address.version, address=address, port=port)

    @classmethod
    def mark(cls, fwmark: int, family: int = 4) -> "ServiceKey":
        return cls(protocol="fwmark", family=family, fwmark=fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.protocol == "fwmark"

    def __str__(self) -> str:
        # Kept once written, in the instance dict (not a field: equality, hash and the frozen
        # fields are untouched): every real server's action names its service's key.
        text: str | None = self.__dict__.get("_text")
        if text is None:
            if self.is_fwmark:
                text = f"fwmark {self.fwmark}" + (" (inet6)" if self.family == 6 else "")
            else:
                assert self.address is not None
                text = f"{self.protocol} {format_hostport(self.address, self.port)}"
            self.__dict__["_text"] = text
        return text


@dataclass(frozen=True)
class VirtualService:
    """The editable configuration of an IPVS service.

    ``persistence`` is the timeout in seconds (0 = off); ``netmask`` the
    persistence granularity as a prefix length (32 / 128 = per client).
    ``flags`` holds only the flags kanotify manages (:data:`SERVICE_FLAGS`); the
    kernel's internal "hashed" flag never appears here.

    >>> str(VirtualService(ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 80), "wrr"))
    'tcp 192.0.2.100:80 scheduler wrr'
    """

    key: ServiceKey
    scheduler: str = "wlc"
    persistence: int = 0
    netmask: int | None = None  # None: full length of the family
    flags: frozenset[str] = frozenset()

    @property
    def effective_netmask(self) -> int:
        full = 32 if self.key.family == 4 else 128
        return full if self.netmask is None else self.netmask

    def same_config(self, other: "VirtualService") -> bool:
        return self.describe_config() == other.describe_config()

    def describe_config(self) -> tuple[object, ...]:
        return (self.scheduler, self.persistence, self.effective_netmask, self.flags)

    def __str__(self) -> str:
        text = f"{self.key} scheduler {self.scheduler}"
        if self.persistence:
            text += f" persistent {self.persistence}s"
            if self.effective_netmask != (32 if self.key.family == 4 else 128):
                text += f" netmask /{self.effective_netmask}"
        if self.flags:
            text += " flags " + ",".join(sorted(self.flags))
        return text


@dataclass(frozen=True)
class RealServer:
    """A real server (IPVS destination) of a service.

    >>> str(RealServer(ipaddress.ip_address("192.0.2.21"), 80, "dr", 1))
    '192.0.2.21:80 dr weight 1'
    """

    address: IPAddress
    port: int
    forward: str = "dr"  # dr | nat | tun
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    #: the tunnel of ``forward = "tun"`` (the defaults: plain IPIP, what the kernel reports for the others too)
    tun_type: str = "ipip"  # ipip | gue | gre
    tun_port: int = 0  # gue's UDP destination port; 0 otherwise
    tun_flags: str = "nocsum"  # nocsum | csum (gue, gre) | remcsum (gue)

    @property
    def key(self) -> tuple[IPAddress, int]:
        return (self.address, self.port)

    @property
    def tunnel(self) -> str:
        """``gue port 6080 csum``: the tunnel as keepalived's ``lvs_method TUN`` writes it; "" for plain IPIP.

        >>> RealServer(ipaddress.ip_address("192.0.2.21"), 80, "tun", tun_type="gue", tun_port=6080).tunnel
        'gue port 6080'
        """
        if self.tun_type == "ipip" and not self.tun_port and self.tun_flags == "nocsum":
            return ""
        text = self.tun_type + (f" port {self.tun_port}" if self.tun_port else "")
        return text + (f" {self.tun_flags}" if self.tun_flags != "nocsum" else "")

    def __str__(self) -> str:
        text = f"{format_hostport(self.address, self.port)} {self.forward}"
        tunnel = self.tunnel
        if tunnel:
            text += f" {tunnel}"
        text += f" weight {self.weight}"
        if self.u_threshold or self.l_threshold:
            text += f" thresholds {self.l_threshold}-{self.u_threshold}"
        return text


@dataclass(frozen=True)
class RealServerStats:
    """Counters of a real server; observed only, never compared for drift."""

    active_conns: int = 0
    inactive_conns: int = 0

    @property
    def connections(self) -> int:
        return self.active_conns + self.inactive_conns


# --------------------------------------------------------------------------- IPVS sync daemon

#: Sync daemon states, as IPVS numbers them (1 master, 2 backup).
SYNC_STATES = ("master", "backup")
#: The kernel's defaults when a start request leaves them out (``start_sync_thread``).
SYNC_DEFAULT_GROUP = ipaddress.IPv4Address("224.0.0.81")
SYNC_DEFAULT_PORT = 8848
SYNC_DEFAULT_TTL = 1
#: Longest interface name the kernel's policy takes (``IP_VS_IFNAME_MAXLEN`` - 1).
SYNC_IFNAME_MAX = 15


@dataclass(frozen=True, eq=False)
class SyncDaemon:
    """One IPVS connection-sync daemon: what ``ipvsadm --start-daemon`` starts.

    ``state`` is ``"master"`` (sends this director's connections) or
    ``"backup"`` (receives them); both may run at once.  ``interface`` is the
    multicast interface, ``sync_id`` the id in every sync message (0..255; a
    backup with id 0 accepts any), ``group``/``port``/``ttl`` the multicast
    group (IPv4 or IPv6), UDP port and TTL.  ``maxlen`` is the largest sync
    message payload; ``None`` means the kernel's default, which it computes
    from the interface MTU when the daemon starts (1500 - IP/UDP headers for a
    master: 1472 over IPv4, 1452 over IPv6; the interface MTU, at least 1500,
    minus headers for a backup).

    Equality compares configuration: every field, and ``maxlen`` only when both
    sides set it.  The kernel always reports a number for ``maxlen``, so a
    daemon read back from the kernel equals the ``SyncDaemon`` it was started
    from, defaults included; a daemon running with another explicit ``maxlen``
    does not.  (``None`` matches any ``maxlen``, so this equality is not
    transitive across three values; compare desired with observed.)

    Values the kernel would silently change are refused (``ValueError``):
    port and TTL 0 (the kernel substitutes its default), a ``sync_id`` above
    255 (the sync protocol carries 8 bits), a ``maxlen`` outside the range the
    kernel clamps to (a master 1..65507, a backup 1024..65507; 65487 over IPv6).

    >>> d = SyncDaemon("master", "eth0", 51)
    >>> str(d)
    'master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)'
    >>> d == SyncDaemon("master", "eth0", 51, maxlen=1472)   # as the kernel reports it
    True
    >>> d == SyncDaemon("master", "eth0", 52)
    False
    """

    state: str
    interface: str
    sync_id: int = 0
    maxlen: int | None = None  # None: the kernel's default (computed from the MTU)
    group: IPAddress = SYNC_DEFAULT_GROUP
    port: int = SYNC_DEFAULT_PORT
    ttl: int = SYNC_DEFAULT_TTL

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(f"{self.state} sync daemon: {problem}")

    def _problem(self) -> str:
        if self.state not in SYNC_STATES:
            return f"state {self.state!r}: expected master or backup"
        name = self.interface
        if not name or len(name.encode()) > SYNC_IFNAME_MAX or any(c in name for c in "\0/ \t\n"):
            return f"interface {name!r}: expected a device name of 1..{SYNC_IFNAME_MAX} characters"
        if not 0 <= self.sync_id <= 255:
            return f"sync_id {self.sync_id}: expected 0..255"
        if not isinstance(self.group, (ipaddress.IPv4Address, ipaddress.IPv6Address)) or not self.group.is_multicast:
            return f"group {self.group}: expected a multicast address (IPv4 224.0.0.0/4 or IPv6 ff00::/8)"
        if not 1 <= self.port <= 65535:
            return f"port {self.port}: expected 1..65535"
        if not 1 <= self.ttl <= 255:
            return f"ttl {self.ttl}: expected 1..255"
        if self.maxlen is not None:
            low, high = (1 if self.state == "master" else 1024), 65535 - self.header_len
            if not low <= self.maxlen <= high:
                return f"maxlen {self.maxlen}: expected {low}..{high} (the kernel would clamp it)"
        return ""

    @property
    def family(self) -> int:
        """4 or 6: the family of the multicast group."""
        return self.group.version

    @property
    def header_len(self) -> int:
        """IP + UDP header bytes of a sync message (the kernel subtracts them from the MTU)."""
        return 28 if self.family == 4 else 48

    def _key(self) -> tuple[object, ...]:
        return (self.state, self.interface, self.sync_id, self.group, self.port, self.ttl)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SyncDaemon):
            return NotImplemented
        if self._key() != other._key():
            return False
        return self.maxlen is None or other.maxlen is None or self.maxlen == other.maxlen

    def __hash__(self) -> int:
        return hash(self._key())  # without maxlen: equal values must hash alike

    @property
    def parameters(self) -> str:
        """``mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1``, as ipvsadm lists them."""
        maxlen = "" if self.maxlen is None else f", maxlen={self.maxlen}"
        return (
            f"mcast={self.interface}, syncid={self.sync_id}{maxlen}, "
            f"group={self.group}, port={self.port}, ttl={self.ttl}"
        )

    def __str__(self) -> str:
        return f"{self.state} sync daemon ({self.parameters})"


# --------------------------------------------------------------------------- desired state


@dataclass(frozen=True)
class VipSpec:
    """A ``[[instance.vip]]`` entry: a VIP and the states in which it is bound."""

    vip: Vip
    states: frozenset[State] = frozenset({State.MASTER})
    garp: bool = True


CHECK_TYPES = ("tcp", "http", "https", "command", "dns", "udp", "ping", "smtp", "file")
#: the DNS query types a ``dns`` check may ask (keepalived 2.2.7 check_dns.c DNS_TYPE), with their numbers
DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "RRSIG": 46, "DNSKEY": 48}
#: the check types that connect to a port (the real server's, else ``port``)
PORT_CHECKS = ("tcp", "http", "https", "dns", "udp", "smtp")
ON_FAILURE = ("drain", "remove")

#: a real server within its service: (address, port)
RealKey = tuple[IPAddress, int]


@dataclass(frozen=True)
class HealthCheck:
    """How ``kanotify listen`` checks one real server (``[instance.service.real.check]``).

    ``type`` is ``tcp`` (a connect), ``http``/``https`` (a GET of ``path``,
    answered with one of ``status``, default 200..299, ``host`` as the Host
    header, the body's MD5 ``digest`` if given; https verifies the certificate
    only with ``verify``), ``command`` (``command`` run without a shell: exit 0
    is up, with ``dynamic`` 2..255 too, setting the weight; killed at
    ``timeout``), or keepalived's ``dns``, ``udp``, ``ping``, ``smtp`` and
    ``file`` checkers (:mod:`kanotify.daemon.checks`).  ``address``,
    ``source`` and ``source_port`` are keepalived's connect_ip, bindto and
    bind_port.
    ``port`` 0 means the real server's port.  The real server is DOWN after
    1 + ``retry`` consecutive failures ``retry_delay`` seconds apart, UP again
    after one success; checks run every ``interval`` seconds.  ``initial``
    ``down`` starts it DOWN until its first success (keepalived's ``alpha``).
    ``on_failure``: ``drain`` sets its weight to 0 (existing connections stay;
    keepalived's ``inhibit_on_failure``), ``remove`` deletes it from IPVS.

    >>> str(HealthCheck("http", path="/health", status=(200,)))
    'http GET /health (200) every 6s, timeout 3s, DOWN after 2 failures 1s apart, then drain'
    """

    type: str
    port: int = 0
    path: str = "/"
    status: tuple[int, ...] = ()  # (): 200..299
    host: str | None = None
    command: tuple[str, ...] = ()
    interval: float = 6.0
    timeout: float = 3.0
    retry: int = 1
    retry_delay: float = 1.0
    on_failure: str = "drain"
    verify: bool = False
    initial: str = "up"
    # keepalived's connect_ip, bindto and bind_port: check this address, from this source address and port
    address: IPAddress | None = None
    source: IPAddress | None = None
    source_port: int = 0
    digest: str | None = None  # http(s): the MD5 of the body (lower-case hex), as keepalived's genhash prints it
    dns_type: str = "SOA"  # dns: the query's type (DNS_TYPES) and name ("" is the root)
    dns_name: str = ""
    payload: bytes = b""  # udp: the datagram sent (b"": keepalived's default, 32 bytes "keepalived check - ...")
    require_reply: bool = False  # udp: no answer within timeout is a failure (else only an ICMP error is)
    reply: bytes = b""  # udp: the answer must start with these bytes
    helo_name: str = "smtpchecker.keepalived.org"  # smtp: the HELO argument (keepalived's default)
    file: str = ""  # file: the file whose number decides (keepalived's track_file)
    weight: int = 1  # file: the number times this is added to the weight (0: non-zero means DOWN)
    reverse: bool = False  # file: the number counts negatively (0 weight: zero means DOWN)
    dynamic: bool = False  # command: exit 2..255 is UP with weight exit-2 (keepalived's misc_dynamic)

    def accepts(self, code: int) -> bool:
        """Is ``code`` an answer that means up?"""
        return code in self.status if self.status else 200 <= code <= 299

    def __str__(self) -> str:
        if self.type in ("http", "https"):
            codes = ",".join(map(str, self.status)) if self.status else "2xx"
            what = f"{self.type} GET {self.path} ({codes})"
            if self.digest:
                what += f" digest {self.digest}"
        elif self.type == "command":
            what = "command " + " ".join(self.command) + (" (dynamic weight)" if self.dynamic else "")
        elif self.type == "dns":
            what = f"dns {self.dns_type} {self.dns_name or '.'}"
        elif self.type == "udp":
            what = "udp" + (f" payload {self.payload.hex()}" if self.payload else "") + (
                f" reply {self.reply.hex() or 'required'}" if self.require_reply else "")
        elif self.type == "smtp":
            what = f"smtp HELO {self.helo_name}"
        elif self.type == "file":
            what = f"file {self.file} weight {self.weight}" + (" reverse" if self.reverse else "")
        else:
            what = f"{self.type} connect" if self.type == "tcp" else self.type
        if self.address is not None:
            what += f" to {self.address}"
        if self.port:
            what += f" port {self.port}"
        if self.source is not None or self.source_port:
            what += f" from {self.source or '*'}" + (f":{self.source_port}" if self.source_port else "")
        return (f"{what} every {self.interval:g}s, timeout {self.timeout:g}s, DOWN after {1 + self.retry} "
                f"failures {self.retry_delay:g}s apart, then {self.on_failure}")


@dataclass(frozen=True)
class Quorum:
    """A service's quorum (keepalived 2.2.7's ``quorum``, ``hysteresis``, ``sorry_server``; ipwrapper.c).

    The quorum is the sum of the weights of the service's UP real servers (a
    real server without a check is always UP).  It is lost when that sum is 0
    or below ``quorum - hysteresis``, gained again at ``quorum + hysteresis``
    or more (and, in kanotify, once every checked real server of the service
    has been checked since it was lost: a full round).  While it is lost, a
    ``sorry`` server is put in the service and the real servers still UP are
    drained or removed (their check's ``on_failure``); ``sorry_inhibit`` keeps
    the sorry server in the service at weight 0 while the quorum holds.
    ``withdraw`` (the config gave ``quorum``): while it is lost, the VIPs of
    the instance whose address is the service's address are unbound.

    >>> str(Quorum(2, 1))
    'quorum 2, hysteresis 1'
    """

    quorum: int = 1
    hysteresis: int = 0
    withdraw: bool = False
    sorry: RealServer | None = None
    sorry_inhibit: bool = False

    def lost(self, up_weight: int, was_up: bool) -> bool:
        """Is the quorum down with ``up_weight``, when it was ``was_up`` before? (keepalived's thresholds)"""
        if was_up:
            return up_weight == 0 or up_weight < self.quorum - self.hysteresis
        return up_weight == 0 or up_weight < self.quorum + self.hysteresis

    def __str__(self) -> str:
        text = f"quorum {self.quorum}, hysteresis {self.hysteresis}"
        if self.sorry is not None:
            text += f", sorry server {format_hostport(self.sorry.address, self.sorry.port)}"
        return text


#: keepalived's default quorum: 1, no hysteresis, no sorry server (and no VIP withdrawal)
DEFAULT_QUORUM = Quorum()


@dataclass(frozen=True)
class ServiceSpec:
    """An ``[[instance.service]]`` entry with its real servers (and how each is health-checked)."""

    service: VirtualService
    reals: tuple[RealServer, ...] = ()
    states: frozenset[State] = frozenset({State.MASTER})
    checks: tuple[tuple[RealKey, HealthCheck], ...] = ()
    #: keepalived's service quorum (:class:`Quorum`); None: keepalived's default (1, no hysteresis, no VIP withdrawal)
    quorum: "Quorum | None" = None
    #: the weight a real server desired at weight 0 (``drain = true``, a health drain) is added at
    #: before it is drained: mh and sh give a destination added at weight 0 no slots
    add_weights: tuple[tuple[RealKey, int], ...] = ()

    def add_weight(self, real: RealServer) -> int:
        """The weight to add ``real`` at: its own, or for one desired at 0, its configured weight."""
        if real.weight:
            return real.weight
        for key, weight in self.add_weights:
            if key == real.key:
                return weight
        return 0

    def check_for(self, real: RealKey) -> HealthCheck | None:
        """The first check of ``real`` (its ``on_failure`` is every one's: the config reader makes sure)."""
        return self._checks_by_real.get(real)

    def checks_for(self, real: RealKey) -> tuple[HealthCheck, ...]:
        """Every check of ``real``: UP only while all pass (keepalived's checkers of one real server)."""
        return self._all_checks_by_real.get(real, ())

    @functools.cached_property
    def _all_checks_by_real(self) -> dict[RealKey, tuple[HealthCheck, ...]]:
        found: dict[RealKey, list[HealthCheck]] = {}
        for key, check in self.checks:
            found.setdefault(key, []).append(check)
        return {key: tuple(checks) for key, checks in found.items()}
    @property
    def quorum_rule(self) -> "Quorum":
        """The quorum this service is judged by (keepalived's default 1 when the config gives none)."""
        return self.quorum if self.quorum is not None else DEFAULT_QUORUM

    @property
    def quorum_tracked(self) -> bool:
        """Can its quorum change, or does it act on it? (checked real servers, or a quorum/sorry server set)"""
        return bool(self.checks) or self.quorum is not None

    @functools.cached_property
    def _checks_by_real(self) -> dict[RealKey, HealthCheck]:
        # a lookup per real server, by the planner on every health run: a scan of ``checks`` made that
        # quadratic (10,000 real servers in one service: 50 million comparisons)
        found: dict[RealKey, HealthCheck] = {}
        for key, check in self.checks:
            found.setdefault(key, check)  # the first one, as the scan found it
        return found


@dataclass(frozen=True)
class SyncDaemonSpec:
    """The ``[sync_daemon]`` table: the sync daemons follow the VRRP state of ``instance``.

    MASTER runs the master daemon, BACKUP and FAULT the backup daemon, STOP
    neither (:meth:`daemons`).  Both daemons get the same parameters, so a
    ``maxlen`` must suit a backup too (at least 1024).

    >>> spec = SyncDaemonSpec("VI_1", "eth0", 51)
    >>> [str(d) for d in spec.daemons(State.FAULT)]
    ['backup sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)']
    >>> spec.daemons(State.STOP)
    ()
    """

    instance: str | None  # None with mode "both": no instance drives them
    interface: str
    sync_id: int = 0
    maxlen: int | None = None
    group: IPAddress = SYNC_DEFAULT_GROUP
    port: int = SYNC_DEFAULT_PORT
    ttl: int = SYNC_DEFAULT_TTL
    #: "follow": the daemons follow ``instance``'s state; "both": master and backup always (active-active)
    mode: str = "follow"

    def daemon(self, state: str) -> SyncDaemon:
        """The ``"master"`` or ``"backup"`` daemon with these parameters.

        In mode ``both`` the backup daemon listens with sync id 0, which accepts the
        messages of every master (each director's master sends with ``sync_id``).
        """
        sync_id = 0 if self.mode == "both" and state == "backup" else self.sync_id
        return SyncDaemon(state, self.interface, sync_id, self.maxlen, self.group, self.port, self.ttl)

    def daemons(self, state: State) -> tuple[SyncDaemon, ...]:
        """The daemons that run while the instance is in ``state`` (in mode ``both``: in every state).

        >>> [str(d) for d in SyncDaemonSpec(None, "eth1", 7, mode="both").daemons(State.BACKUP)]
        ['master sync daemon (mcast=eth1, syncid=7, group=224.0.0.81, port=8848, ttl=1)', \
'backup sync daemon (mcast=eth1, syncid=0, group=224.0.0.81, port=8848, ttl=1)']
        """
        if self.mode == "both":
            return (self.daemon("master"), self.daemon("backup"))
        if state is State.MASTER:
            return (self.daemon("master"),)
        if state in (State.BACKUP, State.FAULT):
            return (self.daemon("backup"),)
        return ()


@dataclass(frozen=True)
class Instance:
    """A keepalived ``vrrp_instance`` that kanotify manages."""

    name: str
    vips: tuple[VipSpec, ...] = ()
    services: tuple[ServiceSpec, ...] = ()


@dataclass(frozen=True)
class Group:
    """A keepalived ``vrrp_sync_group``: GROUP notifications apply to its instances."""

    name: str
    instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class Desired:
    """What the host should look like, for one planning scope.

    ``managed_vips``/``managed_services`` are everything the config declares
    anywhere in the scope (any state): those are removed when not desired.
    Anything else is foreign and never touched (except IPVS services when
    ``ipvs_exclusive``).
    """

    sysctls: tuple[tuple[str, str], ...] = ()
    vips: tuple[VipSpec, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    managed_vips: frozenset[Vip] = frozenset()
    managed_services: frozenset[ServiceKey] = frozenset()
    #: every service the whole config declares: never deleted as "foreign"
    protected_services: frozenset[ServiceKey] = frozenset()
    ipvs_exclusive: bool = False
    #: real servers a health check found DOWN, and what their check does about it ("drain" | "remove")
    down: Mapping[tuple[ServiceKey, RealKey], str] = field(default_factory=dict)
    #: the IPVS sync daemons that should run (none, the master's or the backup's) ...
    sync_daemons: tuple[SyncDaemon, ...] = ()
    #: ... when they are managed at all: ``[sync_daemon]`` is configured and its
    #: instance is in this scope.  Otherwise running daemons are not even observed.
    manage_sync_daemons: bool = False
    #: links that must exist as given (``[bgp] interface``): created or set, never deleted
    links: tuple[Link, ...] = ()

    @property
    def needs_ipvs(self) -> bool:
        return bool(self.managed_services) or self.ipvs_exclusive

    def restricted(self, scope: "Scope") -> "Desired":
        """Only what ``scope`` covers (its sysctl keys, VIPs, with ``ipvs`` services, with ``sync_daemons`` those).

        Planning this against an observation of ``scope`` plans exactly those
        objects: the verify after applying (:mod:`kanotify.verify`).
        """
        keys = set(scope.sysctls)
        vip_keys = {vip.key for vip in scope.vips}
        services = scope.services if scope.ipvs else frozenset()
        return Desired(
            sysctls=tuple(item for item in self.sysctls if item[0] in keys),
            vips=tuple(spec for spec in self.vips if spec.vip.key in vip_keys),
            services=tuple(spec for spec in self.services if spec.service.key in services),
            managed_vips=frozenset(vip for vip in self.managed_vips if vip.key in vip_keys),
            managed_services=self.managed_services & services,
            protected_services=self.protected_services,
            ipvs_exclusive=self.ipvs_exclusive and scope.ipvs,
            down=self.down,
            sync_daemons=self.sync_daemons if scope.sync_daemons else (),
            manage_sync_daemons=self.manage_sync_daemons and scope.sync_daemons,
            links=tuple(link for link in self.links if link.name in scope.links),
        )

    @property
    def scope(self) -> "Scope":
        """What a backend must observe to plan this: the managed objects, nothing else."""
        return Scope(
            sysctls=tuple(key for key, _ in self.sysctls),
            vips=self.managed_vips,
            services=self.managed_services,
            ipvs=self.needs_ipvs,
            sync_daemons=self.manage_sync_daemons,
            links=tuple(link.name for link in self.links),
        )


@dataclass(frozen=True)
class Link:
    """A network link kanotify makes sure of: the ``[bgp]`` dummy link, up, without ARP.

    Created when missing, never deleted.  ``kind`` is the kernel's
    ``IFLA_INFO_KIND`` ("dummy"; "" for a link without one, such as ``lo``).

    >>> str(Link("kav0"))
    'dummy link kav0 (up, no ARP)'
    """

    name: str
    kind: str = "dummy"
    up: bool = True
    noarp: bool = True

    def __str__(self) -> str:
        return (f"{self.kind or 'plain'} link {self.name} "
                f"({'up' if self.up else 'down'}, {'no ARP' if self.noarp else 'ARP on'})")


@dataclass(frozen=True)
class Scope:
    """What to observe: only managed things are ever read back or touched.

    ``ipvs`` is False when no IPVS service is managed and ``ipvs_exclusive`` is
    off, so a VIP-only host never opens the IPVS netlink family at all.
    ``sync_daemons`` asks for the running IPVS sync daemons (only when they are
    managed: without ``[sync_daemon]`` they are never read, let alone touched).
    ``services_only``: observe only the IPVS services in ``services`` (the
    verify after applying, :mod:`kanotify.verify`) instead of the whole table.
    """

    sysctls: tuple[str, ...] = ()
    vips: frozenset[Vip] = frozenset()
    services: frozenset[ServiceKey] = frozenset()
    ipvs: bool = False
    sync_daemons: bool = False
    services_only: bool = False
    #: names of the links to read (``[bgp] interface``)
    links: tuple[str, ...] = ()


# --------------------------------------------------------------------------- observed state


@dataclass(frozen=True)
class ObservedService:
    """An IPVS service as the kernel has it, with its real servers and counters."""

    service: VirtualService
    reals: Mapping[tuple[IPAddress, int], tuple[RealServer, RealServerStats]] = field(
        default_factory=dict
    )


@dataclass(frozen=True)
class Observed:
    """What the backends read from the kernel, normalized into value types.

    ``sysctls`` maps a key to its current value (as text, whitespace
    normalized) or ``None`` when the key does not exist.  ``vips`` holds the
    managed VIPs that are bound.  ``services`` holds *every* IPVS service (the
    planner needs the foreign ones for ``ipvs_exclusive``); it is ``None`` when
    IPVS was not observed (not needed, or not available: see ``ipvs_error``).
    ``daemons`` holds the running IPVS sync daemons (master first); ``None``
    when they were not observed (not managed, or IPVS not available).
    """

    sysctls: Mapping[str, str | None] = field(default_factory=dict)
    vips: frozenset[Vip] = frozenset()
    services: Mapping[ServiceKey, ObservedService] | None = None
    ipvs_error: str | None = None
    daemons: tuple[SyncDaemon, ...] | None = None
    #: the links asked for by name that exist (a missing one is absent)
    links: Mapping[str, Link] = field(default_factory=dict)

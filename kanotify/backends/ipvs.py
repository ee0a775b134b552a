"""IPVS through generic netlink: observe every service, apply minimal-diff actions, in batches.

:class:`IpvsBackend` turns the planner's IPVS actions (``AddService``,
``EditService``, ``DeleteService``, ``AddReal``, ``EditReal``, ``DeleteReal``)
into IPVS netlink commands, and the kernel's tables back into
:mod:`kanotify.model` value types.  The messages themselves are built and
parsed by :mod:`kanotify.backends.netlink.ipvs_msg` (plain ``struct``); this module
owns the socket.

* Edits are in place: IPVS's ``SET_SERVICE``/``SET_DEST`` keep a service's
  real servers and a real server's connections.  Nothing here ever deletes to
  edit (pyroute2's ``"update"`` command is a delete; it is not used).
* Converged is not an error: adding what exists with the same configuration,
  and deleting what is already gone, succeed.  Adding what exists with another
  configuration edits it to the desired one.
* ``apply_many`` sends its messages in batches without ``NLM_F_ACK`` and ends
  each batch with one message that asks for an ACK: the kernel processes a
  socket's messages in order, so that ACK is a barrier, and every failure
  still comes back as an error carrying its message's sequence number, which
  maps it to its action.  One round trip per batch instead of per message.
* ``writes`` counts the write commands sent, so tests can prove that a
  second sync writes nothing and that an edit is one ``SET`` (no DEL + NEW).
* The connection-sync daemons are observed with :meth:`IpvsBackend.daemons`
  and started/stopped one at a time (:meth:`~IpvsBackend.start_daemon`,
  :meth:`~IpvsBackend.stop_daemon`), with the same "converged is not an
  error" rule.
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Collection, Sequence, TypeVar

from ..actions import (
    Action,
    AddReal,
    AddService,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
)
from ..errors import ApplyError
from ..model import (
    SYNC_STATES,
    IPAddress,
    ObservedService,
    RealServer,
    RealServerStats,
    ServiceKey,
    SyncDaemon,
    VirtualService,
)
from .netlink import ipvs_msg as m
from .netlink import framing as nl
from .netlink.nlsock import NetlinkSocket
from .retry import TRANSIENT_ERRNOS, call_with_retry

T = TypeVar("T")

#: Up to this many services, ``observe(only=...)`` asks for each one instead of dumping them all.
_FETCH_ONE_BY_ONE = 16

#: Errnos that mean "the thing to delete is already gone".
_GONE = frozenset({errno.ESRCH, errno.ENOENT})

_NOT_AVAILABLE = (
    "IPVS is not available in this kernel (modprobe ip_vs): "
    "the generic netlink family 'IPVS' does not exist"
)


class _Uncertain(Exception):
    """A batch's replies were lost (receive buffer overrun): its outcome is unknown."""


class IpvsSocket(NetlinkSocket):
    """A generic netlink socket bound to the IPVS family.

    ``timeout`` bounds every wait for the kernel's answer; ``rcvbuf`` is the
    receive buffer asked for (with ``SO_RCVBUFFORCE`` when allowed) so error
    replies of a whole batch fit.  ``netns`` opens the socket inside the named
    network namespace (``ip netns`` name or a path).
    """

    def __init__(self, timeout: float = 5.0, rcvbuf: int = 4 << 20, netns: str | None = None) -> None:
        super().__init__(nl.NETLINK_GENERIC, "IPVS netlink", timeout=timeout, rcvbuf=rcvbuf, netns=netns)
        try:
            self.family = self._resolve_family()
        except BaseException:
            self.sock.close()
            raise

    def _resolve_family(self) -> int:
        seq = self.next_seq()
        try:
            replies = self.request(m.getfamily_request(m.IPVS_GENL_NAME, seq), seq)
        except ApplyError as exc:
            if exc.errno == errno.ENOENT:
                raise ApplyError(_NOT_AVAILABLE, errno.ENOPROTOOPT) from None
            raise
        for msg in replies:
            return m.family_id(msg.payload)
        raise ApplyError(_NOT_AVAILABLE, errno.ENOPROTOOPT)

    # ------------------------------------------------------------------ requests

    def dump(self, cmd: int, attrs: bytes = b"") -> list[nl.Message]:
        """A DUMP request of this family."""
        seq = self.next_seq()
        return self.request(m.genlmsg(self.family, cmd, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq, attrs), seq)

    def dump_raw(self, cmd: int, attrs: bytes = b"") -> list[tuple[bytes, int, int]]:
        """:meth:`dump`, its replies left in the receive buffers (``NetlinkSocket.request_raw``)."""
        seq = self.next_seq()
        return self.request_raw(m.genlmsg(self.family, cmd, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq, attrs), seq)

    def batch(self, messages: Sequence[tuple[int, bytes]]) -> dict[int, tuple[int, str]]:
        """Send pre-encoded messages at once; the last must carry NLM_F_ACK (the barrier).

        Returns ``{seq: (errno, text)}`` for every message the kernel refused.
        Raises :class:`_Uncertain` if replies were lost to a receive-buffer
        overrun; the socket is then resynchronized and usable again.
        """
        if not messages:
            return {}
        barrier = messages[-1][0]
        self.requests += 1
        self._send(b"".join(data for _seq, data in messages))
        failed: dict[int, tuple[int, str]] = {}
        while True:
            try:
                received = self._recv()
            except ApplyError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._resync()
                    raise _Uncertain() from exc
                raise
            for msg in received:
                if msg.type != nl.NLMSG_ERROR:
                    continue
                code, text = nl.parse_error(msg)
                if code:
                    failed[msg.seq] = (code, text)
                if msg.seq == barrier:
                    return failed

    def _resync(self) -> None:
        """After an overrun: empty the receive queue, then one fresh request read up to its own answer.

        The queue must be emptied first: while it is full, the kernel drops
        the answer to the fresh request too.
        """
        while True:  # the socket is non-blocking (NetlinkSocket)
            try:
                self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
        seq = self.next_seq()
        self.request(m.getfamily_request(m.IPVS_GENL_NAME, seq), seq)


# --------------------------------------------------------------------------- the backend


class IpvsBackend:
    """Observe and change the IPVS tables of this host (or of network namespace ``netns``).

    The socket is opened on first use (a host that never needs IPVS never
    opens it) and closed by :meth:`close` or the ``with`` block.  ``writes``
    counts write commands sent (new/set/del), ``requests`` kernel round trips,
    ``overruns`` batches whose replies overflowed the receive buffer (they are
    then re-applied one action at a time, which is safe because every action
    is idempotent here).
    ``batch_size`` messages share one ACK in :meth:`apply_many`.  ``memo``:
    keep the real servers decoded for the next observe (a backend that
    observes the same table again and again, the listener's, then builds
    none; ``ipvs_msg.decode_dests``).

    >>> with IpvsBackend() as ipvs:            # doctest: +SKIP
    ...     services = ipvs.observe()
    """

    def __init__(
        self,
        netns: str | None = None,
        *,
        timeout: float = 5.0,
        batch_size: int = 256,
        retry_budget: float = 2.0,
        rcvbuf: int = 4 << 20,
        memo: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._memo: m.RealsMemo | None = {} if memo else None
        self.netns = netns
        self.timeout = timeout
        self.batch_size = batch_size
        self.retry_budget = retry_budget
        self.rcvbuf = rcvbuf
        self.writes = 0
        self.overruns = 0  # batches whose replies were lost and that were re-applied one by one
        self._sock: IpvsSocket | None = None
        self._requests_closed = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "IpvsBackend":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._requests_closed += self._sock.requests
            self._sock.close()
            self._sock = None

    @property
    def requests(self) -> int:
        """Kernel round trips so far (dumps, requests, batches)."""
        return self._requests_closed + (self._sock.requests if self._sock else 0)

    @property
    def socket(self) -> IpvsSocket:
        """The open IPVS socket (opened now if needed); ApplyError(ENOPROTOOPT) without IPVS."""
        if self._sock is None:
            self._sock = IpvsSocket(timeout=self.timeout, rcvbuf=self.rcvbuf, netns=self.netns)
        return self._sock

    # ------------------------------------------------------------------ observe

    def services(self) -> list[VirtualService]:
        """Every IPVS service, normalized (no real servers)."""
        sock = self.socket
        try:
            msgs = self._retrying(sock.dump, m.IPVS_CMD_GET_SERVICE, what="list ipvs services")
            return [m.service_from_payload(msg.payload) for msg in msgs]
        except ApplyError as exc:
            raise ApplyError(f"list ipvs services: {exc}", exc.errno) from None
        except m.DecodeError as exc:
            raise ApplyError(f"list ipvs services: unreadable answer from the kernel: {exc}", errno.EPROTO) from exc

    def reals(self, key: ServiceKey) -> dict[tuple[IPAddress, int], tuple[RealServer, RealServerStats]]:
        """The real servers of one service with their counters (empty if it does not exist)."""
        sock = self.socket

        def what() -> str:  # only written when something went wrong: an observe asks 1000 services
            return f"list real servers of ipvs service {key}"

        try:
            replies = self._retrying(sock.dump_raw, m.IPVS_CMD_GET_DEST, m.service_nest(key), what=what)
            return m.decode_dests(replies, key.family, self._memo)
        except ApplyError as exc:
            raise ApplyError(f"{what()}: {exc}", exc.errno) from None
        except m.DecodeError as exc:
            raise ApplyError(f"{what()}: unreadable answer from the kernel: {exc}", errno.EPROTO) from exc

    def get_service(self, key: ServiceKey) -> VirtualService | None:
        """One service as the kernel has it, or ``None``."""
        sock = self.socket
        seq = sock.next_seq()
        data = m.service_request(sock.family, m.IPVS_CMD_GET_SERVICE, seq, key, nl.NLM_F_REQUEST | nl.NLM_F_ACK)
        try:
            replies = sock.request(data, seq)
        except ApplyError as exc:
            if exc.errno in _GONE:
                return None
            raise ApplyError(f"get ipvs service {key}: {exc}", exc.errno) from None
        return m.service_from_payload(replies[0].payload) if replies else None

    def observe(self, only: Collection[ServiceKey] | None = None) -> dict[ServiceKey, ObservedService]:
        """Every IPVS service with its real servers and their connection counters.

        Foreign services are included: the planner needs them for
        ``ipvs_exclusive`` and never touches them otherwise.  ``only`` limits
        it to those services (the ones that exist), e.g. the ones a run just
        wrote: a few are fetched one by one, more from one service dump.

        One dump of real servers per service, one after the other: the kernel
        runs one dump at a time per netlink socket and answers a second dump
        request sent before the first one's ``NLMSG_DONE`` was read with
        EBUSY (measured on Linux 7.2: ``tests/kernel/guest/test_guest_ipvs_observe.py``),
        so dumps cannot be pipelined on one socket.
        """
        if only is not None and len(only) <= _FETCH_ONE_BY_ONE:
            services = [svc for svc in map(self.get_service, sorted(only, key=str)) if svc is not None]
        else:
            services = self.services()
            if only is not None:
                wanted = set(only)
                services = [svc for svc in services if svc.key in wanted]
        result: dict[ServiceKey, ObservedService] = {}
        for service in services:
            result[service.key] = ObservedService(service, self.reals(service.key))
        return result

    # ------------------------------------------------------------------ apply

    def apply(self, action: Action) -> None:
        """Apply one action, retrying transient errors; ApplyError names the action and errno."""
        if action.is_noop:
            return
        try:
            self._retrying(self._send_one, action, what=str(action))
        except ApplyError as exc:
            self._after_failure(action, exc)

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
        """Apply in order, ``batch_size`` messages per kernel round trip; one result per action."""
        results: list[BaseException | None] = [None] * len(actions)
        pending = [(i, a) for i, a in enumerate(actions) if not a.is_noop]
        for start in range(0, len(pending), self.batch_size):
            self._apply_batch(pending[start : start + self.batch_size], results)
        return results

    # ------------------------------------------------------------------ internals

    def _retrying(self, fn: Callable[..., T], *args: object, what: str | Callable[[], str]) -> T:
        """``fn(*args)``; only if it fails with a transient errno, retried by :func:`call_with_retry`.

        The first attempt is made directly so the common case never imports
        tenacity (~25 ms natively) on the notify path.  ``what`` may be a
        function that writes the text only then.
        """
        try:
            return fn(*args)
        except ApplyError as exc:
            if exc.errno not in TRANSIENT_ERRNOS:
                raise
        return call_with_retry(fn, *args, what=what if isinstance(what, str) else what(), budget=self.retry_budget)

    def _apply_batch(self, chunk: list[tuple[int, Action]], results: list[BaseException | None]) -> None:
        try:
            sock = self.socket
        except ApplyError as exc:
            for i, _action in chunk:
                results[i] = ApplyError(f"{_action}: {exc}", exc.errno)
            return
        encoded: list[tuple[int, int, Action, bytes]] = []  # (index, seq, action, message)
        for i, action in chunk:
            try:
                seq = sock.next_seq()
                encoded.append((i, seq, action, self._encode(action, seq, nl.NLM_F_REQUEST)))
            except (ValueError, ApplyError) as exc:
                results[i] = exc if isinstance(exc, ApplyError) else ApplyError(f"{action}: {exc}", errno.EINVAL)
        if not encoded:
            return
        # The barrier: the last message asks for an ACK.
        i, seq, action, _data = encoded[-1]
        encoded[-1] = (i, seq, action, self._encode(action, seq, nl.NLM_F_REQUEST | nl.NLM_F_ACK))
        self.writes += len(encoded)
        try:
            failed = sock.batch([(seq, data) for _i, seq, _a, data in encoded])
        except _Uncertain:
            self.overruns += 1
            # Replies lost: apply each again, one at a time.  Every action is
            # idempotent here (exists -> compared, gone -> converged).
            for i, _seq, action, _data in encoded:
                results[i] = self._capture(action)
            return
        for i, seq, action, _data in encoded:
            if seq not in failed:
                continue
            code, text = failed[seq]
            error = ApplyError(text or os.strerror(code), code)
            if code in (errno.EEXIST, *_GONE) or code in TRANSIENT_ERRNOS:
                results[i] = self._capture_after_failure(action, error)
            else:
                results[i] = self._error(action, error)

    def _capture(self, action: Action) -> BaseException | None:
        try:
            self.apply(action)
        except Exception as exc:  # noqa: BLE001 - reported per action
            return exc
        return None

    def _capture_after_failure(self, action: Action, exc: ApplyError) -> BaseException | None:
        if exc.errno in TRANSIENT_ERRNOS:
            return self._capture(action)
        try:
            self._after_failure(action, exc)
        except Exception as err:  # noqa: BLE001 - reported per action
            return err
        return None

    def _send_one(self, action: Action) -> None:
        sock = self.socket
        seq = sock.next_seq()
        data = self._encode(action, seq, nl.NLM_F_REQUEST | nl.NLM_F_ACK)
        self.writes += 1
        sock.request(data, seq)

    def _encode(self, action: Action, seq: int, flags: int) -> bytes:
        fam = self.socket.family
        if isinstance(action, AddService):
            return m.service_request(fam, m.IPVS_CMD_NEW_SERVICE, seq, action.service, flags)
        if isinstance(action, EditService):
            return m.service_request(fam, m.IPVS_CMD_SET_SERVICE, seq, action.new, flags)
        if isinstance(action, DeleteService):
            return m.service_request(fam, m.IPVS_CMD_DEL_SERVICE, seq, action.service.key, flags)
        if isinstance(action, AddReal):
            return m.dest_request(fam, m.IPVS_CMD_NEW_DEST, seq, action.service, action.real, flags)
        if isinstance(action, EditReal):
            return m.dest_request(fam, m.IPVS_CMD_SET_DEST, seq, action.service, action.new, flags)
        if isinstance(action, DeleteReal):
            return m.dest_request(fam, m.IPVS_CMD_DEL_DEST, seq, action.service, action.real, flags, full=False)
        raise ApplyError(f"{action}: the IPVS backend cannot apply {type(action).__name__}")

    def _after_failure(self, action: Action, exc: ApplyError) -> None:
        """Decide what a refused command means: converged, converge another way, or a real error."""
        code = exc.errno
        if isinstance(action, (DeleteService, DeleteReal)) and code in _GONE:
            return  # already gone
        if isinstance(action, AddService) and code == errno.EEXIST:
            current = self.get_service(action.service.key)
            if current is not None and current.same_config(action.service):
                return
            if current is not None:  # exists with another configuration: edit it in place
                self.apply(EditService(current, action.service))
                return
        if isinstance(action, AddReal) and code == errno.EEXIST:
            have = self.reals(action.service).get(action.real.key)
            if have is not None and have[0] == action.real:
                return
            if have is not None:
                self.apply(EditReal(action.service, have[0], action.real))
                return
        raise self._error(action, exc)

    @staticmethod
    def _error(action: Action, exc: ApplyError) -> ApplyError:
        return _explained(str(action), exc, _hint(action, exc.errno))

    # ------------------------------------------------------------------ sync daemons

    def daemons(self) -> tuple[SyncDaemon, ...]:
        """The running IPVS sync daemons: none, a master, a backup or both (master first)."""
        what = "list ipvs sync daemons"
        try:
            sock = self.socket
            msgs = self._retrying(sock.dump, m.IPVS_CMD_GET_DAEMON, what=what)
            found = [m.daemon_from_payload(msg.payload) for msg in msgs]
        except ApplyError as exc:
            raise _explained(what, exc, _daemon_hint(exc.errno, None)) from None
        except nl.DecodeError as exc:
            raise ApplyError(f"{what}: unreadable answer from the kernel: {exc}", errno.EPROTO) from exc
        return tuple(sorted(found, key=lambda d: SYNC_STATES.index(d.state)))

    def start_daemon(self, daemon: SyncDaemon) -> None:
        """Start ``daemon``.  Already running with exactly this configuration is success.

        A daemon of the same state running with other parameters is an
        :class:`ApplyError` with errno EEXIST whose message shows both: the
        kernel cannot change a running daemon, so the caller stops that one
        (:meth:`stop_daemon`) and starts this one.  Other refusals carry the
        kernel's errno and a hint (ENODEV: no such interface; EINVAL: mixed
        IPv4/IPv6 destinations; ENOPROTOOPT: no IPVS in this kernel).
        """
        what = f"start {daemon}"
        flags = nl.NLM_F_REQUEST | nl.NLM_F_ACK

        def encode(family: int, seq: int) -> bytes:
            return m.daemon_start_request(family, seq, daemon, flags)

        try:
            self._retrying(self._daemon_command, encode, what=what)
        except ApplyError as exc:
            if exc.errno != errno.EEXIST:
                raise _explained(what, exc, _daemon_hint(exc.errno, daemon)) from None
            running = next((d for d in self.daemons() if d.state == daemon.state), None)
            if running == daemon:
                return  # converged
            raise ApplyError(
                f"{what}: the {daemon.state} sync daemon already runs with other parameters: {running} [EEXIST] "
                "(the kernel cannot change a running daemon: stop it, then start this one)",
                errno.EEXIST,
            ) from None

    def stop_daemon(self, state: str) -> None:
        """Stop the sync daemon of ``state`` (``"master"`` or ``"backup"``); none running is success.

        An unknown state is a ``ValueError``, raised before anything is sent.
        """
        what = f"stop {state} sync daemon"
        flags = nl.NLM_F_REQUEST | nl.NLM_F_ACK

        def encode(family: int, seq: int) -> bytes:
            return m.daemon_stop_request(family, seq, state, flags)

        try:
            self._retrying(self._daemon_command, encode, what=what)
        except ApplyError as exc:
            if exc.errno == errno.ESRCH:
                return  # already stopped
            raise _explained(what, exc, _daemon_hint(exc.errno, None)) from None

    def _daemon_command(self, encode: Callable[[int, int], bytes]) -> None:
        """One daemon write with a fresh sequence number (``encode(family, seq)``), answered by an ACK."""
        sock = self.socket
        seq = sock.next_seq()
        data = encode(sock.family, seq)
        self.writes += 1
        sock.request(data, seq)


def _explained(what: str, exc: ApplyError, hint: str) -> ApplyError:
    """``what: detail [ERRNAME] (hint)``: the error an operator reads, errno kept."""
    code = exc.errno
    detail = str(exc)
    prefix = f"{what}: "
    if detail.startswith(prefix):
        detail = detail[len(prefix) :]
    name = errno.errorcode.get(code or 0, str(code))
    return ApplyError(f"{what}: {detail} [{name}]" + (f" ({hint})" if hint else ""), code)


def _daemon_hint(code: int | None, daemon: SyncDaemon | None) -> str:
    """What a refused sync daemon command most likely means (measured on Linux 7.2).

    ``daemon`` is the one being started (``None`` for a stop or a dump).
    SyncDaemon already refuses every value the kernel's checks would, so a
    start's EINVAL is the one thing left: mixed-family real servers.
    """
    if daemon is None:
        return "needs root (CAP_NET_ADMIN)" if code in (errno.EPERM, errno.EACCES) else ""
    if code == errno.ENODEV:
        return f"no such interface {daemon.interface}"
    if code == errno.EINVAL:
        return (
            "mixed IPv4/IPv6 destinations: a service has real servers of the other address family, "
            "which the sync protocol cannot carry"
        )
    if code == errno.EADDRNOTAVAIL:
        return f"no usable IPv{daemon.family} source address on {daemon.interface} yet (duplicate address detection?)"
    if code == errno.ENETUNREACH:
        return f"{daemon.interface} is down or cannot reach {daemon.group} (IPv{daemon.family} disabled on it?)"
    if code == errno.EAFNOSUPPORT:
        return "this kernel's IPVS has no IPv6 support"
    if code in (errno.EPERM, errno.EACCES):
        return "needs root (CAP_NET_ADMIN)"
    return ""  # ENOPROTOOPT (no IPVS) explains itself: see _NOT_AVAILABLE


def _hint(action: Action, code: int | None) -> str:
    """A sentence that tells an operator what an IPVS errno most likely means for this action."""
    if code == errno.ENOENT and isinstance(action, (AddService, EditService)):
        service = action.service if isinstance(action, AddService) else action.new
        return f"no IPVS scheduler {service.scheduler!r} in this kernel: modprobe ip_vs_{service.scheduler}"
    if code == errno.ESRCH and isinstance(action, (EditService, AddReal, EditReal)):
        return "the virtual service does not exist"
    if code == errno.ENOENT and isinstance(action, EditReal):
        return "the real server does not exist"
    if code == errno.EEXIST:
        return "it already exists"
    if code == errno.EINVAL:
        return "the kernel rejected an attribute value"
    if code == errno.ERANGE:
        return "the lower threshold is above the upper threshold"
    if code == errno.EAFNOSUPPORT:
        return "address family not supported here (mixed IPv4/IPv6 needs tun forwarding)"
    if code in (errno.EPERM, errno.EACCES):
        return "needs root (CAP_NET_ADMIN)"
    if code == errno.ENOPROTOOPT:
        return "IPVS is not available: modprobe ip_vs"
    return ""


__all__ = ["IpvsBackend", "IpvsSocket"]

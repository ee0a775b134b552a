"""IpvsBackend's decisions without a kernel: retries, batch error mapping, lost replies, the table.

The kernel-facing behaviour is proven in the UML guest (``tests/kernel/guest/``);
these pin the paths a real kernel rarely takes (transient errors, receive
overruns, races between observing and starting a sync daemon) with a scripted
socket.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from kanotify.actions import AddReal, AddService, DeleteService, EditService, Noop
from kanotify.backends import ipvs as ipvs_mod
from kanotify.backends.netlink import ipvs_msg as m
from kanotify.backends.netlink import framing as nl
from kanotify.backends.ipvs import IpvsBackend
from kanotify.errors import ApplyError
from kanotify.model import ObservedService, RealServer, RealServerStats, ServiceKey, SyncDaemon, VirtualService

ip = ipaddress.ip_address
KEY = ServiceKey.inet("tcp", ip("192.0.2.100"), 80)
SERVICE = VirtualService(KEY, "wrr")


class ScriptedSocket:
    """Stands in for IpvsSocket: answers requests from a script of errnos (0 = ACK)."""

    family = 0x20

    def __init__(self, request_errors: list[int] | None = None, batch_errors: dict[int, int] | None = None,
                 uncertain: bool = False, dumps: dict[int, list[bytes]] | None = None) -> None:
        self.request_errors = list(request_errors or [])
        self.dumps = dict(dumps or {})  # genl command -> reply payloads
        self.batch_errors = dict(batch_errors or {})  # position in the batch -> errno
        self.uncertain = uncertain
        self.requests = 0
        self.sent: list[int] = []  # genl commands, in order
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def request(self, data: bytes, seq: int) -> list[Any]:
        self.requests += 1
        (msg,) = nl.iter_messages(data)
        self.sent.append(msg.payload[0])
        code = self.request_errors.pop(0) if self.request_errors else 0
        if code:
            raise ApplyError("scripted", code)
        return []

    def dump(self, cmd: int, attrs: bytes = b"") -> list[Any]:
        self.requests += 1
        self.sent.append(cmd)
        return [nl.Message(self.family, nl.NLM_F_MULTI, 0, payload) for payload in self.dumps.get(cmd, [])]

    def batch(self, messages: list[tuple[int, bytes]]) -> dict[int, tuple[int, str]]:
        self.requests += 1
        flags = [next(nl.iter_messages(data)).flags for _seq, data in messages]
        assert [bool(f & nl.NLM_F_ACK) for f in flags] == [False] * (len(messages) - 1) + [True], "one barrier, last"
        self.sent.extend(next(nl.iter_messages(data)).payload[0] for _seq, data in messages)
        if self.uncertain:
            self.uncertain = False
            raise ipvs_mod._Uncertain()
        return {messages[pos][0]: (code, "") for pos, code in self.batch_errors.items()}

    def close(self) -> None:
        pass


def backend_with(sock: ScriptedSocket, **kw: Any) -> IpvsBackend:
    backend = IpvsBackend(retry_budget=1.0, **kw)
    backend._sock = sock  # type: ignore[assignment]
    return backend


def test_transient_error_is_retried() -> None:
    sock = ScriptedSocket(request_errors=[errno.EBUSY, errno.EAGAIN, 0])
    backend = backend_with(sock)
    backend.apply(AddService(SERVICE))
    assert sock.sent == [m.IPVS_CMD_NEW_SERVICE] * 3
    assert backend.writes == 3


def test_permanent_error_is_not_retried() -> None:
    sock = ScriptedSocket(request_errors=[errno.EINVAL])
    backend = backend_with(sock)
    try:
        backend.apply(EditService(SERVICE, VirtualService(KEY, "rr")))
    except ApplyError as exc:
        assert exc.errno == errno.EINVAL
        assert str(exc).startswith("edit ipvs service tcp 192.0.2.100:80: scheduler wrr -> rr")
        assert "[EINVAL]" in str(exc)
    else:
        raise AssertionError("no error")
    assert sock.sent == [m.IPVS_CMD_SET_SERVICE]


def test_batch_maps_errors_to_their_actions() -> None:
    actions = [
        AddService(SERVICE),
        Noop("nothing"),
        AddReal(KEY, RealServer(ip("192.0.2.21"), 80)),
        DeleteService(VirtualService(ServiceKey.mark(3))),
        AddReal(KEY, RealServer(ip("192.0.2.22"), 80)),
    ]
    # Positions count only the messages sent (the Noop sends none).
    sock = ScriptedSocket(batch_errors={1: errno.EINVAL, 2: errno.ESRCH, 3: errno.EBUSY})
    backend = backend_with(sock)
    results = backend.apply_many(actions)
    assert results[0] is None and results[1] is None
    assert isinstance(results[2], ApplyError) and results[2].errno == errno.EINVAL
    assert "add real server 192.0.2.21:80" in str(results[2])
    assert results[3] is None  # deleting what is gone is converged
    assert results[4] is None  # EBUSY: re-sent on its own, which succeeded
    assert sock.sent == [
        m.IPVS_CMD_NEW_SERVICE, m.IPVS_CMD_NEW_DEST, m.IPVS_CMD_DEL_SERVICE, m.IPVS_CMD_NEW_DEST,
        m.IPVS_CMD_NEW_DEST,
    ]
    assert backend.writes == 5


def test_batches_are_cut_at_batch_size() -> None:
    sock = ScriptedSocket()
    backend = backend_with(sock, batch_size=3)
    actions = [AddService(VirtualService(ServiceKey.mark(i), "rr")) for i in range(1, 8)]
    assert backend.apply_many(actions) == [None] * 7
    assert sock.requests == 3  # 3 + 3 + 1


def test_lost_replies_reapply_each_action() -> None:
    sock = ScriptedSocket(uncertain=True)
    backend = backend_with(sock)
    actions = [AddService(SERVICE), AddReal(KEY, RealServer(ip("192.0.2.21"), 80))]
    assert backend.apply_many(actions) == [None, None]
    assert backend.overruns == 1
    assert sock.sent == [m.IPVS_CMD_NEW_SERVICE, m.IPVS_CMD_NEW_DEST] * 2


# --------------------------------------------------------------------------- sync daemons

MASTER = SyncDaemon("master", "eth0", 51)


def daemon_reply(daemon: SyncDaemon) -> bytes:
    """The dump part the kernel sends for a running daemon (it always reports maxlen)."""
    if daemon.maxlen is None:
        daemon = replace(daemon, maxlen=1500 - daemon.header_len)
    (msg,) = nl.iter_messages(m.daemon_start_request(0x20, 1, daemon, 0))
    return bytes([m.IPVS_CMD_NEW_DAEMON]) + msg.payload[1:]


def test_daemons_lists_master_first() -> None:
    backup = SyncDaemon("backup", "eth1", 7, group=ip("ff02::81"))
    sock = ScriptedSocket(dumps={m.IPVS_CMD_GET_DAEMON: [daemon_reply(backup), daemon_reply(MASTER)]})
    assert backend_with(sock).daemons() == (MASTER, backup)


def test_starting_a_running_identical_daemon_is_converged() -> None:
    sock = ScriptedSocket(request_errors=[errno.EEXIST], dumps={m.IPVS_CMD_GET_DAEMON: [daemon_reply(MASTER)]})
    backend = backend_with(sock)
    backend.start_daemon(MASTER)
    assert sock.sent == [m.IPVS_CMD_NEW_DAEMON, m.IPVS_CMD_GET_DAEMON]
    assert backend.writes == 1


def test_starting_over_a_daemon_with_other_parameters_names_both() -> None:
    running = SyncDaemon("master", "eth0", 9, maxlen=1400)
    sock = ScriptedSocket(request_errors=[errno.EEXIST], dumps={m.IPVS_CMD_GET_DAEMON: [daemon_reply(running)]})
    with pytest.raises(ApplyError) as info:
        backend_with(sock).start_daemon(MASTER)
    assert info.value.errno == errno.EEXIST
    text = str(info.value)
    assert text.startswith(f"start {MASTER}: the master sync daemon already runs with other parameters: {running}")
    assert "stop it, then start this one" in text


def test_stopping_a_stopped_daemon_is_converged() -> None:
    sock = ScriptedSocket(request_errors=[errno.ESRCH])
    backend = backend_with(sock)
    backend.stop_daemon("backup")
    assert sock.sent == [m.IPVS_CMD_DEL_DAEMON]


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENODEV, "(no such interface eth0)"),
        (errno.EINVAL, "(mixed IPv4/IPv6 destinations: a service has real servers of the other address family"),
        (errno.EADDRNOTAVAIL, "(no usable IPv4 source address on eth0 yet"),
        (errno.ENETUNREACH, "(eth0 is down or cannot reach 224.0.0.81"),
        (errno.EPERM, "(needs root (CAP_NET_ADMIN))"),
    ],
)
def test_daemon_errors_carry_errno_and_hint(code: int, hint: str) -> None:
    sock = ScriptedSocket(request_errors=[code, code])  # ENODEV is transient: tried twice with no budget
    backend = IpvsBackend(retry_budget=0)
    backend._sock = sock  # type: ignore[assignment]
    with pytest.raises(ApplyError) as info:
        backend.start_daemon(MASTER)
    assert info.value.errno == code
    assert str(info.value).startswith(f"start {MASTER}: scripted [{errno.errorcode[code]}] {hint}")


def test_stop_error_other_than_esrch_is_reported() -> None:
    sock = ScriptedSocket(request_errors=[errno.EPERM])
    with pytest.raises(ApplyError, match=r"^stop master sync daemon: scripted \[EPERM\] \(needs root"):
        backend_with(sock).stop_daemon("master")


def test_stop_of_an_unknown_state_sends_nothing() -> None:
    sock = ScriptedSocket()
    with pytest.raises(ValueError, match="sync daemon state 'primary'"):
        backend_with(sock).stop_daemon("primary")
    assert sock.sent == []

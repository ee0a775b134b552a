"""Live LVS-DR traffic through the guest's IPVS: edits keep connections, drains keep them too.

A real TCP connection (client -> VIP on the director -> real server, answered
directly by the real server) gives the kernel's own evidence that an edit
happened in place: the service's connection counter (``ipvsadm -Ln --stats``)
lives in the service object, so a delete + re-add starts it again at 0 (tried:
it does).  Connection entries and a real server's counters are *not* such
evidence -- IPVS keeps a deleted real server in its "trash" and revives it,
counters and all, when it is re-added, and established connections are found
by address, not through the service -- so for real servers the proof is the
write counter: one SET_DEST.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import replace

from ipvs_guest_support import Lan, connect_from
from ipvs_guest_support import connections, ip, make_config, save, service_stats, spec, sync
from kanotify.backends.ipvs import IpvsBackend
from kanotify.model import RealServer, ServiceKey, VirtualService
from kanotify.plan import PlanOptions, drain_key

VIP = ip("192.0.2.100")
RS1 = RealServer(ip("192.0.2.21"), 80, "dr", 1)
RS2 = RealServer(ip("192.0.2.22"), 80, "dr", 1)


def _hello(sock: socket.socket) -> str:
    """The name the real server sends first on every connection."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        assert chunk, "connection closed before the real server said hello"
        data += chunk
    return data.decode().strip()


def _still_alive(sock: socket.socket, expect: str) -> None:
    """The connection still reaches its real server (which echoes lines)."""
    sock.sendall(b"ping\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        assert chunk, "connection was reset: the IPVS connection entry is gone"
        data += chunk
    assert data.decode().strip() == f"{expect} ping"


def _wait_for_service_conns(lan: Lan, key: str, count: int) -> None:
    """The service counters are summed by the kernel's estimator every 2 s: wait for it."""
    deadline = time.monotonic() + 20
    while service_stats(lan.director).get(key) != count:
        assert time.monotonic() < deadline, f"{key}: Conns never reached {count}: {service_stats(lan.director)}"
        time.sleep(0.2)


def test_edits_keep_a_live_connection(lan: Lan) -> None:
    service = VirtualService(ServiceKey.inet("tcp", VIP, 80), "rr")
    with IpvsBackend(netns=lan.director) as ipvs:
        sync(ipvs, make_config(spec(service, RS1)))
        client = connect_from(lan.client, str(VIP), 80)
        try:
            assert _hello(client) == "rs1"
            assert connections(lan.director)["192.0.2.21:80"][0] == 1
            _wait_for_service_conns(lan, "TCP 192.0.2.100:80", 1)

            edited = replace(service, scheduler="wrr", persistence=60, netmask=24)
            rs1 = replace(RS1, weight=5, u_threshold=100, l_threshold=10)
            result = sync(ipvs, make_config(spec(edited, rs1)))
            assert result.kinds() == ["EditService", "EditReal"]
            assert result.writes == 2

            assert save(lan.director) == [
                "-A -t 192.0.2.100:80 -s wrr -p 60 -M 255.255.255.0",
                "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 5",
            ]
            assert connections(lan.director)["192.0.2.21:80"][0] == 1  # the entry survived
            # Same service object: a re-created one would count 0 here.
            assert service_stats(lan.director)["TCP 192.0.2.100:80"] == 1
            _still_alive(client, "rs1")
        finally:
            client.close()


def test_drain_keeps_connections_then_deletes(lan: Lan) -> None:
    service = VirtualService(ServiceKey.inet("tcp", VIP, 80), "rr")
    with IpvsBackend(netns=lan.director) as ipvs:
        sync(ipvs, make_config(spec(service, RS1, RS2)))
        client = connect_from(lan.client, str(VIP), 80)
        try:
            busy = _hello(client)
            drained, kept = (RS1, RS2) if busy == "rs1" else (RS2, RS1)
            busy_key = f"{drained.address}:80"

            # The busy real server leaves the config: weight 0, not deleted.
            config = make_config(spec(service, kept))
            result = sync(ipvs, config)
            assert result.kinds() == ["EditReal"]
            assert "drain" in str(result.changes[0])
            rules = save(lan.director)
            assert f"-a -t 192.0.2.100:80 -r {busy_key} -g -w 0" in rules
            assert connections(lan.director)[busy_key][0] == 1
            _still_alive(client, busy)

            # New connections go to the other real server only.
            others = []
            for _ in range(3):
                extra = connect_from(lan.client, str(VIP), 80)
                others.append(_hello(extra))
                extra.close()
            assert set(others) == {"rs1" if kept is RS1 else "rs2"}

            # While it drains, a reconcile writes nothing.
            waiting = sync(ipvs, config, options=PlanOptions(now=1000.0, draining={}))
            assert waiting.writes == 0
            assert any("draining" in str(action) for action in waiting.plan)

            # Once the drain timeout has passed, it is deleted even with connections.
            started = {drain_key(service.key, drained.key): 1000.0}
            done = sync(ipvs, config, options=PlanOptions(now=1000.0 + 300, drain_timeout=300, draining=started))
            assert done.kinds() == ["DeleteReal"]
            assert done.writes == 1
            assert save(lan.director) == [
                "-A -t 192.0.2.100:80 -s rr",
                f"-a -t 192.0.2.100:80 -r {kept.address}:80 -g -w 1",
            ]
        finally:
            client.close()


def test_drained_real_is_deleted_once_its_connections_are_gone(lan: Lan) -> None:
    """The other way a drain ends: the kernel's counters drop to 0, the next reconcile deletes."""
    service = VirtualService(ServiceKey.inet("tcp", VIP, 80), "rr")
    with IpvsBackend(netns=lan.director) as ipvs:
        sync(ipvs, make_config(spec(service, RS1)))
        client = connect_from(lan.client, str(VIP), 80)
        assert _hello(client) == "rs1"
        config = make_config(spec(service, RS2))
        assert sync(ipvs, config).kinds() == ["AddReal", "EditReal"]  # RS2 in, RS1 drained
        # Abort the connection (RST): IPVS keeps the entry in CLOSE state for 10 s.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        deadline = time.monotonic() + 40
        while connections(lan.director).get("192.0.2.21:80") != (0, 0):
            assert time.monotonic() < deadline, f"connections never expired: {connections(lan.director)}"
            time.sleep(0.5)
        observed = ipvs.observe()[service.key].reals[RS1.key]
        assert observed[0].weight == 0 and observed[1].connections == 0
        done = sync(ipvs, config, options=PlanOptions(now=1.0, draining={drain_key(service.key, RS1.key): 0.0}))
        assert done.kinds() == ["DeleteReal"]
        assert "no connections" in str(done.changes[0])
        assert save(lan.director) == ["-A -t 192.0.2.100:80 -s rr", "-a -t 192.0.2.100:80 -r 192.0.2.22:80 -g -w 1"]

"""IpvsBackend against a real kernel IPVS: every attribute, converged cases, errors, batches."""

from __future__ import annotations

import errno

import pytest

from ipvs_guest_support import ip, ipvsadm, save, thresholds
from kanotify.actions import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService
from kanotify.backends.ipvs import IpvsBackend
from kanotify.errors import ApplyError
from kanotify.model import ObservedService, RealServer, RealServerStats, ServiceKey, VirtualService

NO_CONNS = RealServerStats(0, 0)

TCP = ServiceKey.inet("tcp", ip("192.0.2.100"), 80)
UDP6 = ServiceKey.inet("udp", ip("2001:db8::100"), 53)
SCTP = ServiceKey.inet("sctp", ip("198.51.100.7"), 5060)
MARK4 = ServiceKey.mark(5)
MARK6 = ServiceKey.mark(6, 6)

#: (services with their reals, exactly what ipvsadm-save -n must print)
ROUND_TRIP: list[tuple[VirtualService, tuple[RealServer, ...], list[str]]] = [
    (
        VirtualService(TCP, "sh", 300, 24, frozenset({"one-packet", "sh-fallback", "sh-port"})),
        (
            RealServer(ip("192.0.2.21"), 80, "dr", 3, 1000, 10),
            RealServer(ip("192.0.2.22"), 8080, "nat", 0),
            RealServer(ip("192.0.2.23"), 80, "tun", 65535),
        ),
        [
            "-A -t 192.0.2.100:80 -s sh -p 300 -M 255.255.255.0 -o -b sh-fallback,sh-port",
            "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 3",
            "-a -t 192.0.2.100:80 -r 192.0.2.22:8080 -m -w 0",
            "-a -t 192.0.2.100:80 -r 192.0.2.23:80 -i -w 65535 --tun-type ipip",
        ],
    ),
    (
        VirtualService(UDP6, "wrr", 60, 64),
        (RealServer(ip("2001:db8::21"), 53, "dr", 2), RealServer(ip("2001:db8::22"), 53, "tun", 1, 50, 5)),
        [
            "-A -u [2001:db8::100]:53 -s wrr -p 60 -M 64",
            "-a -u [2001:db8::100]:53 -r [2001:db8::21]:53 -g -w 2",
            "-a -u [2001:db8::100]:53 -r [2001:db8::22]:53 -i -w 1 --tun-type ipip",
        ],
    ),
    (
        VirtualService(SCTP, "mh", flags=frozenset({"mh-port", "mh-fallback"})),  # ipvsadm's names, read back
        (RealServer(ip("198.51.100.21"), 5060, "nat", 1),),
        [
            "-A --sctp-service 198.51.100.7:5060 -s mh -b mh-fallback,mh-port",
            "-a --sctp-service 198.51.100.7:5060 -r 198.51.100.21:5060 -m -w 1",
        ],
    ),
    (
        VirtualService(MARK4, "rr", 120),
        (RealServer(ip("192.0.2.31"), 0, "dr", 1),),
        ["-A -f 5 -s rr -p 120", "-a -f 5 -r 192.0.2.31:0 -g -w 1"],
    ),
    (
        VirtualService(MARK6, "lc"),
        (RealServer(ip("2001:db8::31"), 0, "tun", 4),),
        ["-A -f 6 -6 -s lc", "-a -f 6 -6 -r [2001:db8::31]:0 -i -w 4 --tun-type ipip"],
    ),
]


@pytest.mark.parametrize("service,reals,expected", ROUND_TRIP, ids=lambda v: str(v) if isinstance(v, VirtualService) else "")
@pytest.mark.parametrize("batch", [False, True], ids=["one-at-a-time", "batched"])
def test_round_trip_of_every_attribute(
    ipvs: IpvsBackend, service: VirtualService, reals: tuple[RealServer, ...], expected: list[str], batch: bool
) -> None:
    actions = [AddService(service), *(AddReal(service.key, rs) for rs in reals)]
    if batch:
        assert ipvs.apply_many(actions) == [None] * len(actions)
    else:
        for action in actions:
            ipvs.apply(action)
    assert ipvs.writes == len(actions)
    assert sorted(save()) == sorted(expected)
    shown = thresholds()
    for rs in reals:
        host = f"[{rs.address}]" if rs.address.version == 6 else str(rs.address)
        assert shown[f"{host}:{rs.port}"] == (rs.u_threshold, rs.l_threshold)
    assert ipvs.observe() == {
        service.key: ObservedService(service, {rs.key: (rs, NO_CONNS) for rs in reals})
    }


def test_observe_normalizes_services_made_by_ipvsadm(ipvs: IpvsBackend) -> None:
    """The kernel's hashed flag and ipvsadm's defaults never show up as configuration."""
    ipvsadm("-A", "-t", "192.0.2.100:80")  # ipvsadm's default scheduler, no persistence
    ipvsadm("-A", "-t", "192.0.2.100:443", "-s", "rr", "-p")  # ipvsadm's default persistence
    ipvsadm("-A", "-u", "[2001:db8::100]:53", "-s", "wrr", "-p", "30")
    ipvsadm("-a", "-t", "192.0.2.100:80", "-r", "192.0.2.21")  # ipvsadm's defaults: dr, weight 1
    observed = ipvs.observe()
    assert observed[TCP].service == VirtualService(TCP, "wlc")
    assert observed[TCP].reals == {
        (ip("192.0.2.21"), 80): (RealServer(ip("192.0.2.21"), 80, "dr", 1), NO_CONNS)
    }
    https = ServiceKey.inet("tcp", ip("192.0.2.100"), 443)
    assert observed[https].service == VirtualService(https, "rr", 360)
    assert observed[UDP6].service == VirtualService(UDP6, "wrr", 30)
    assert observed[UDP6].service.netmask is None
    for obs in observed.values():
        assert obs.service.flags == frozenset()


def test_ipv4_netmask_zero_round_trip(ipvs: IpvsBackend) -> None:
    service = VirtualService(TCP, "rr", 60, 0)
    ipvs.apply(AddService(service))
    assert save() == ["-A -t 192.0.2.100:80 -s rr -p 60 -M 0.0.0.0"]
    assert ipvs.observe()[TCP].service == service


# --------------------------------------------------------------------------- edits


def test_edit_service_is_one_set_and_keeps_real_servers(ipvs: IpvsBackend) -> None:
    old = VirtualService(TCP, "wrr")
    real = RealServer(ip("192.0.2.21"), 80, "dr", 5)
    ipvs.apply_many([AddService(old), AddReal(TCP, real)])
    before = ipvs.writes
    new = VirtualService(TCP, "sh", 600, 16, frozenset({"sh-port"}))
    ipvs.apply(EditService(old, new))
    assert ipvs.writes - before == 1
    assert save() == [
        "-A -t 192.0.2.100:80 -s sh -p 600 -M 255.255.0.0 -b sh-port",
        "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 5",
    ]
    ipvs.apply(EditService(new, old))  # and back: flags and persistence are really cleared
    assert save() == ["-A -t 192.0.2.100:80 -s wrr", "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 5"]


def test_edit_real_changes_forwarding_weight_thresholds(ipvs: IpvsBackend) -> None:
    old = RealServer(ip("192.0.2.21"), 80, "dr", 1)
    ipvs.apply_many([AddService(VirtualService(TCP, "wrr")), AddReal(TCP, old)])
    new = RealServer(ip("192.0.2.21"), 80, "tun", 9, 100, 20)
    before = ipvs.writes
    ipvs.apply(EditReal(TCP, old, new))
    assert ipvs.writes - before == 1
    assert save()[1] == "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -i -w 9 --tun-type ipip"
    assert thresholds()["192.0.2.21:80"] == (100, 20)
    assert ipvs.observe()[TCP].reals[new.key][0] == new


# --------------------------------------------------------------------------- converged, not errors


def test_add_identical_service_and_real_is_converged(ipvs: IpvsBackend) -> None:
    service = VirtualService(TCP, "wrr", 30)
    real = RealServer(ip("192.0.2.21"), 80, "dr", 2)
    ipvs.apply_many([AddService(service), AddReal(TCP, real)])
    rules = save()
    ipvs.apply(AddService(service))
    ipvs.apply(AddReal(TCP, real))
    assert ipvs.apply_many([AddService(service), AddReal(TCP, real)]) == [None, None]
    assert save() == rules


def test_add_existing_with_other_config_edits_it_in_place(ipvs: IpvsBackend) -> None:
    ipvsadm("-A", "-t", "192.0.2.100:80", "-s", "rr")
    ipvsadm("-a", "-t", "192.0.2.100:80", "-r", "192.0.2.21:80", "-m", "-w", "7")
    wanted = VirtualService(TCP, "wrr", 30)
    real = RealServer(ip("192.0.2.21"), 80, "dr", 2)
    assert ipvs.apply_many([AddService(wanted), AddReal(TCP, real)]) == [None, None]
    assert save() == ["-A -t 192.0.2.100:80 -s wrr -p 30", "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 2"]


def test_delete_missing_is_converged(ipvs: IpvsBackend) -> None:
    ipvsadm("-A", "-t", "192.0.2.100:80", "-s", "rr")
    gone = VirtualService(ServiceKey.inet("tcp", ip("192.0.2.100"), 81))
    real = RealServer(ip("192.0.2.99"), 80)
    ipvs.apply(DeleteService(gone))
    ipvs.apply(DeleteReal(TCP, real))  # service exists, real does not
    ipvs.apply(DeleteReal(gone.key, real))  # neither exists
    assert ipvs.apply_many([DeleteService(gone), DeleteReal(TCP, real), DeleteReal(gone.key, real)]) == [None] * 3
    assert save() == ["-A -t 192.0.2.100:80 -s rr"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("batch", [False, True], ids=["one-at-a-time", "batched"])
def test_errors_name_the_action_and_errno(ipvs: IpvsBackend, batch: bool) -> None:
    ipvs.apply(AddService(VirtualService(TCP, "rr")))
    missing = VirtualService(ServiceKey.inet("tcp", ip("192.0.2.100"), 81), "rr")
    cases = [
        (AddService(VirtualService(missing.key, "nosuch")), errno.ENOENT, "modprobe ip_vs_nosuch"),
        (EditService(missing, VirtualService(missing.key, "wrr")), errno.ESRCH, "does not exist"),
        (AddReal(missing.key, RealServer(ip("192.0.2.21"), 80)), errno.ESRCH, "does not exist"),
        (EditReal(TCP, RealServer(ip("192.0.2.9"), 80), RealServer(ip("192.0.2.9"), 80, weight=2)), errno.ENOENT,
         "real server does not exist"),
        (AddReal(TCP, RealServer(ip("192.0.2.21"), 80, u_threshold=1, l_threshold=5)), errno.ERANGE, "threshold"),
        (AddService(VirtualService(ServiceKey.inet("tcp", ip("2001:db8::1"), 80), "rr", 60, 0)), errno.EINVAL,
         "rejected an attribute"),  # IPv6 persistence netmask must be 1..128
    ]
    if batch:
        results = ipvs.apply_many([action for action, _code, _text in cases])
    else:
        results = []
        for action, _code, _text in cases:
            with pytest.raises(ApplyError) as info:
                ipvs.apply(action)
            results.append(info.value)
    for (action, code, text), result in zip(cases, results):
        assert isinstance(result, ApplyError), action
        assert result.errno == code, result
        message = str(result)
        assert message.startswith(str(action)), message
        assert errno.errorcode[code] in message and text in message, message
    assert save() == ["-A -t 192.0.2.100:80 -s rr"]


def test_a_failure_in_a_batch_does_not_stop_the_others(ipvs: IpvsBackend) -> None:
    actions = []
    for port in range(1000, 1100):
        key = ServiceKey.inet("tcp", ip("198.51.100.1"), port)
        actions.append(AddService(VirtualService(key, "nosuch" if port == 1042 else "wrr")))
        actions.append(AddReal(key, RealServer(ip("203.0.113.1"), port)))
    results = ipvs.apply_many(actions)
    failed = {i for i, r in enumerate(results) if r is not None}
    assert failed == {84, 85}  # the bad service, and its real server (no such service)
    assert results[84].errno == errno.ENOENT and results[85].errno == errno.ESRCH  # type: ignore[union-attr]
    assert len(ipvs.observe()) == 99


# --------------------------------------------------------------------------- batching


def test_batches_share_one_round_trip(ipvs: IpvsBackend) -> None:
    """1000 services x 10 real servers: 11,000 writes in a few dozen kernel round trips."""
    actions = []
    for i in range(1000):
        key = ServiceKey.inet("tcp", ip("198.51.100.1"), 10000 + i)
        actions.append(AddService(VirtualService(key, "wrr")))
        actions.extend(AddReal(key, RealServer(ip("203.0.113.1") + j, 10000 + i, "dr", j)) for j in range(10))
    ipvs.socket  # opened (family lookup) before counting
    before = ipvs.requests
    assert ipvs.apply_many(actions) == [None] * len(actions)
    assert ipvs.writes == 11000
    assert ipvs.requests - before == -(-11000 // ipvs.batch_size)
    rules = save()
    assert len(rules) == 11000
    assert "-a -t 198.51.100.1:10999 -r 203.0.113.10:10999 -g -w 9" in rules
    observed = ipvs.observe()
    assert len(observed) == 1000 and all(len(o.reals) == 10 for o in observed.values())
    before = ipvs.writes
    assert ipvs.apply_many([DeleteService(o.service) for o in observed.values()]) == [None] * 1000
    assert ipvs.writes - before == 1000
    assert save() == []


def test_lost_replies_fall_back_to_one_at_a_time() -> None:
    """A receive buffer too small for a batch's error replies: nothing is lost, all converge."""
    ipvsadm("-C")
    try:
        services = [VirtualService(ServiceKey.inet("tcp", ip("198.51.100.1"), p), "rr") for p in range(2000, 2300)]
        with IpvsBackend() as setup:
            assert setup.apply_many([AddService(s) for s in services]) == [None] * 300
        # Every add below fails with EEXIST (a reply each) into a tiny receive buffer.
        with IpvsBackend(rcvbuf=4096, batch_size=300) as tiny:
            changed = [VirtualService(s.key, "wrr") if s.key.port % 2 else s for s in services]
            results = tiny.apply_many([AddService(s) for s in changed])
            assert results == [None] * 300
            assert tiny.overruns >= 1, "the test did not overflow the receive buffer"
        assert {o.service for o in IpvsBackend().observe().values()} == set(changed)
    finally:
        ipvsadm("-C")


def test_socket_in_another_network_namespace(ipvs: IpvsBackend) -> None:
    from ipvs_guest_support import run

    ns = "kt-ipvs-ns"
    run(["ip", "netns", "add", ns])
    try:
        with IpvsBackend(netns=ns) as other:
            other.apply(AddService(VirtualService(TCP, "rr")))
            assert list(other.observe()) == [TCP]
        assert save(netns=ns) == ["-A -t 192.0.2.100:80 -s rr"]
        assert save() == []  # the root namespace's IPVS is untouched
        assert ipvs.observe() == {}
    finally:
        run(["ip", "netns", "del", ns], check=False)

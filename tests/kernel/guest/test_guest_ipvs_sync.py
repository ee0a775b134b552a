"""Minimal-diff sync in a real kernel: planner (desired_for + plan) + IpvsBackend, checked with ipvsadm."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ipvs_guest_support import ip, ipvsadm, make_config, save, spec, sync, thresholds
from kanotify.actions import DeleteReal, DeleteService, EditReal, EditService
from kanotify.backends.ipvs import IpvsBackend
from kanotify.model import RealServer, ServiceKey, ServiceSpec, State, VirtualService

WEB = VirtualService(ServiceKey.inet("tcp", ip("192.0.2.100"), 80), "wrr")
WEB_REALS = (RealServer(ip("192.0.2.21"), 80, "dr", 1), RealServer(ip("192.0.2.22"), 80, "dr", 2))
STICKY = VirtualService(ServiceKey.inet("tcp", ip("192.0.2.100"), 443), "sh", 300, 24, frozenset({"sh-port"}))
DNS6 = VirtualService(ServiceKey.inet("udp", ip("2001:db8::100"), 53), "rr", 60, 64, frozenset({"one-packet"}))
DNS6_REALS = (RealServer(ip("2001:db8::21"), 53, "dr", 1), RealServer(ip("2001:db8::22"), 53, "tun", 3, 100, 10))
MARK = VirtualService(ServiceKey.mark(7), "lc", 120)
MARK6 = VirtualService(ServiceKey.mark(8, 6), "wlc")
SIP = VirtualService(ServiceKey.inet("sctp", ip("198.51.100.100"), 5060), "rr")

SPECS = (
    spec(WEB, *WEB_REALS),
    spec(STICKY, RealServer(ip("192.0.2.21"), 443, "tun", 1), RealServer(ip("192.0.2.23"), 8443, "nat", 1)),
    spec(DNS6, *DNS6_REALS),
    spec(MARK, RealServer(ip("192.0.2.31"), 0, "dr", 1)),
    spec(MARK6, RealServer(ip("2001:db8::31"), 0, "tun", 1)),
    spec(SIP, RealServer(ip("198.51.100.21"), 5060, "nat", 1)),
)
N_OBJECTS = len(SPECS) + sum(len(s.reals) for s in SPECS)

EXPECTED_SAVE = sorted([
    "-A -t 192.0.2.100:80 -s wrr",
    "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 1",
    "-a -t 192.0.2.100:80 -r 192.0.2.22:80 -g -w 2",
    "-A -t 192.0.2.100:443 -s sh -p 300 -M 255.255.255.0 -b sh-port",
    "-a -t 192.0.2.100:443 -r 192.0.2.21:443 -i -w 1 --tun-type ipip",
    "-a -t 192.0.2.100:443 -r 192.0.2.23:8443 -m -w 1",
    "-A -u [2001:db8::100]:53 -s rr -p 60 -M 64 -o",
    "-a -u [2001:db8::100]:53 -r [2001:db8::21]:53 -g -w 1",
    "-a -u [2001:db8::100]:53 -r [2001:db8::22]:53 -i -w 3 --tun-type ipip",
    "-A -f 7 -s lc -p 120",
    "-a -f 7 -r 192.0.2.31:0 -g -w 1",
    "-A -f 8 -6 -s wlc",
    "-a -f 8 -6 -r [2001:db8::31]:0 -i -w 1 --tun-type ipip",
    "-A --sctp-service 198.51.100.100:5060 -s rr",
    "-a --sctp-service 198.51.100.100:5060 -r 198.51.100.21:5060 -m -w 1",
])


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "one-at-a-time"])
def test_sync_then_second_sync_writes_nothing(ipvs: IpvsBackend, batch: bool) -> None:
    config = make_config(*SPECS)
    first = sync(ipvs, config, batch=batch)
    assert first.writes == N_OBJECTS
    assert set(first.kinds()) == {"AddService", "AddReal"}
    assert sorted(save()) == EXPECTED_SAVE
    assert thresholds()["[2001:db8::22]:53"] == (100, 10)
    observed = ipvs.observe()
    for s in SPECS:
        assert observed[s.service.key].service == s.service
        assert {k: v[0] for k, v in observed[s.service.key].reals.items()} == {r.key: r for r in s.reals}

    second = sync(ipvs, config, batch=batch)
    assert second.changes == ()
    assert second.writes == 0


SERVICE_CHANGES = {
    "scheduler": lambda s: replace(s, scheduler="rr"),
    "persistence on": lambda s: replace(s, persistence=900),
    "persistence timeout": lambda s: replace(s, persistence=30),
    "persistence off": lambda s: replace(s, persistence=0, netmask=None),
    "netmask": lambda s: replace(s, netmask=16),
    "one-packet": lambda s: replace(s, flags=s.flags | {"one-packet"}),
    "sh-fallback": lambda s: replace(s, flags=s.flags | {"sh-fallback"}),
    "sh-port off": lambda s: replace(s, flags=s.flags - {"sh-port"}),
}


@pytest.mark.parametrize("change", list(SERVICE_CHANGES), ids=str)
def test_service_attribute_change_is_one_edit_in_place(ipvs: IpvsBackend, change: str) -> None:
    base = spec(STICKY, RealServer(ip("192.0.2.21"), 443, "dr", 1))
    sync(ipvs, make_config(base))
    new_service = SERVICE_CHANGES[change](STICKY)
    result = sync(ipvs, make_config(ServiceSpec(new_service, base.reals, base.states)))
    assert result.kinds() == ["EditService"]
    assert isinstance(result.changes[0], EditService)
    assert result.writes == 1  # one SET_SERVICE: not a DEL + NEW
    assert ipvs.observe()[STICKY.key].service == new_service
    rules = save()
    assert rules[1] == "-a -t 192.0.2.100:443 -r 192.0.2.21:443 -g -w 1"  # real server kept
    assert sync(ipvs, make_config(ServiceSpec(new_service, base.reals, base.states))).writes == 0


REAL_CHANGES = {
    "forward dr->tun": (lambda r: replace(r, forward="tun"), "-i -w 1 --tun-type ipip"),
    "forward dr->nat": (lambda r: replace(r, forward="nat"), "-m -w 1"),
    "weight": (lambda r: replace(r, weight=40), "-g -w 40"),
    "weight 0": (lambda r: replace(r, weight=0), "-g -w 0"),
    "upper threshold": (lambda r: replace(r, u_threshold=500), "-g -w 1"),
    "lower threshold": (lambda r: replace(r, u_threshold=500, l_threshold=50), "-g -w 1"),
}


@pytest.mark.parametrize("change", list(REAL_CHANGES), ids=str)
def test_real_attribute_change_is_one_edit_in_place(ipvs: IpvsBackend, change: str) -> None:
    real = RealServer(ip("192.0.2.21"), 80, "dr", 1)
    other = RealServer(ip("192.0.2.22"), 80, "dr", 1)
    sync(ipvs, make_config(spec(WEB, real, other)))
    mutate, shown = REAL_CHANGES[change]
    new_real = mutate(real)
    result = sync(ipvs, make_config(spec(WEB, new_real, other)))
    assert result.kinds() == ["EditReal"]
    assert isinstance(result.changes[0], EditReal)
    assert result.writes == 1  # one SET_DEST: not a DEL + NEW
    assert f"-a -t 192.0.2.100:80 -r 192.0.2.21:80 {shown}" in save()
    assert thresholds()["192.0.2.21:80"] == (new_real.u_threshold, new_real.l_threshold)
    assert ipvs.observe()[WEB.key].reals[real.key][0] == new_real
    assert sync(ipvs, make_config(spec(WEB, new_real, other))).writes == 0


def test_removed_real_without_connections_is_deleted_at_once(ipvs: IpvsBackend) -> None:
    sync(ipvs, make_config(spec(WEB, *WEB_REALS)))
    result = sync(ipvs, make_config(spec(WEB, WEB_REALS[0])))
    assert result.kinds() == ["DeleteReal"]
    assert isinstance(result.changes[0], DeleteReal) and "no connections" in str(result.changes[0])
    assert save() == ["-A -t 192.0.2.100:80 -s wrr", "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 1"]


FOREIGN_BEFORE = ["-A -t 192.0.2.200:80 -s rr", "-a -t 192.0.2.200:80 -r 192.0.2.41:80 -m -w 3"]
FOREIGN_AFTER = ["-A -f 99 -s lc -p 60", "-A -u [2001:db8::200]:53 -s sh -b sh-port"]


def _add_foreign(rules: list[str]) -> None:
    for rule in rules:
        ipvsadm(*rule.split())


def test_foreign_services_survive_and_go_only_with_ipvs_exclusive(ipvs: IpvsBackend) -> None:
    _add_foreign(FOREIGN_BEFORE)
    config = make_config(*SPECS)
    first = sync(ipvs, config)
    assert first.writes == N_OBJECTS
    assert "192.0.2.200" not in "\n".join(str(a) for a in first.plan.actions)  # not even mentioned
    _add_foreign(FOREIGN_AFTER)
    assert sync(ipvs, config).writes == 0
    assert sorted(save()) == sorted(EXPECTED_SAVE + FOREIGN_BEFORE + FOREIGN_AFTER)

    exclusive = sync(ipvs, make_config(*SPECS, exclusive=True))
    assert exclusive.kinds() == ["DeleteService"] * 3
    assert all(isinstance(a, DeleteService) and "ipvs_exclusive" in str(a) for a in exclusive.changes)
    assert exclusive.writes == 3
    assert sorted(save()) == EXPECTED_SAVE
    assert sync(ipvs, make_config(*SPECS, exclusive=True)).writes == 0


def test_backup_leaves_no_managed_service_and_keeps_foreign_ones(ipvs: IpvsBackend) -> None:
    config = make_config(*SPECS)
    sync(ipvs, config)
    _add_foreign(FOREIGN_BEFORE)
    result = sync(ipvs, config, State.BACKUP)
    assert result.kinds() == ["DeleteService"] * len(SPECS)
    assert result.writes == len(SPECS)  # a service's real servers go with it
    assert sorted(save()) == sorted(FOREIGN_BEFORE)
    assert sync(ipvs, config, State.BACKUP).writes == 0


def test_master_after_flush_restores_everything(ipvs: IpvsBackend) -> None:
    config = make_config(*SPECS)
    sync(ipvs, config)
    ipvsadm("-C")
    result = sync(ipvs, config)
    assert result.writes == N_OBJECTS
    assert sorted(save()) == EXPECTED_SAVE
    assert sync(ipvs, config).writes == 0


def test_states_select_services(ipvs: IpvsBackend) -> None:
    """A service declared for backup only is absent in master and present in backup."""
    on_backup = spec(MARK, RealServer(ip("192.0.2.31"), 0), states=(State.BACKUP,))
    config = make_config(spec(WEB, *WEB_REALS), on_backup)
    sync(ipvs, config)
    assert [r for r in save() if r.startswith("-A")] == ["-A -t 192.0.2.100:80 -s wrr"]
    sync(ipvs, config, State.BACKUP)
    assert save() == ["-A -f 7 -s lc -p 120", "-a -f 7 -r 192.0.2.31:0 -g -w 1"]

"""Service quorum (keepalived's quorum, hysteresis, sorry_server): the book, the checker's rounds, the planner,
the engine (journal, idempotence), status and metrics, config errors."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from kanotify.backends.memory import MemoryBackend
from kanotify.config.schema import parse_config
from kanotify.daemon.health import Health
from kanotify.daemon.healthreport import read_report
from kanotify.daemon.quorum import QuorumBook
from kanotify.engine import Engine
from kanotify.errors import ConfigError
from kanotify.metrics.exposition import render
from kanotify.metrics.facts import ListenerMetrics
from kanotify.model import Quorum, RealKey, ServiceKey, State
from kanotify.plan import desired_for
from kanotify.run import RunKind

SERVICE = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 80)


def real(last: int) -> RealKey:
    return (ipaddress.ip_address(f"192.0.2.{last}"), 80)


def config_text(service_keys: str = "quorum = 4\n  hysteresis = 1", tmp: Path | str = "/tmp/unused",
                weights: tuple[int, ...] = (2, 2, 1), sorry: str = "") -> str:
    reals = "".join(f'    [[instance.service.real]]\n    address = "192.0.2.{21 + i}"\n    weight = {w}\n'
                    for i, w in enumerate(weights))
    return f"""
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  [[instance.vip]]
  address = "192.0.2.101/32"
  dev = "lo"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  {service_keys}
    [instance.service.check]
    type = "tcp"
{sorry}{reals}"""


# --------------------------------------------------------------------------- keepalived's thresholds


@pytest.mark.parametrize(("weight", "was_up", "lost"), [
    (4, True, False), (3, True, False),  # quorum 4, hysteresis 1: held down to 3 ...
    (2, True, True),  # ... lost below quorum - hysteresis
    (4, False, True),  # not gained back at 4 ...
    (5, False, False),  # ... only at quorum + hysteresis
    (0, True, True), (0, False, True),
])
def test_keepalived_thresholds(weight: int, was_up: bool, lost: bool) -> None:
    assert Quorum(4, 1).lost(weight, was_up) is lost


def test_weight_zero_always_loses_even_when_quorum_minus_hysteresis_is_not_positive() -> None:
    rule = Quorum(3, 2)  # keepalived: "!weight_sum || weight_sum < threshold"; threshold 1 here
    assert not rule.lost(1, was_up=True) and rule.lost(0, was_up=True)
    assert rule.lost(4, was_up=False) and not rule.lost(5, was_up=False)


class Book:
    """A QuorumBook over a config, with a DOWN set to drive it."""

    def __init__(self, text: str) -> None:
        self.config = parse_config(text)
        self.down: set[RealKey] = set()
        self.book = QuorumBook()
        self.changes = self.book.configure(self.config, self.is_down, 0.0)

    def is_down(self, service: ServiceKey, key: RealKey) -> bool:
        return key in self.down

    def check(self, last: int, up: bool) -> Any:
        changed = (real(last) in self.down) == up
        (self.down.discard if up else self.down.add)(real(last))
        return self.book.checked(SERVICE, real(last), changed, self.is_down, 1.0)


def test_the_book_follows_hysteresis_both_ways_and_waits_for_a_full_round() -> None:
    b = Book(config_text())  # weights 2, 2, 1: 5 up, quorum 4, hysteresis 1
    assert b.changes == [] and b.book.lost == frozenset()
    assert b.check(23, up=False) is None  # 4: held
    change = b.check(21, up=False)  # 2 < 4 - 1: lost
    assert change is not None and not change.up and change.up_weight == 2
    assert str(change) == "quorum of tcp 192.0.2.100:80 lost: up weight 2 < 4-1"
    assert b.book.lost == {SERVICE}
    assert b.check(21, up=True) is None  # 4 < 4 + 1: not yet
    assert b.check(23, up=True) is None  # 5, but 192.0.2.22 was not checked since the loss
    gained = b.check(22, up=True)  # the round is complete
    assert gained is not None and gained.up and b.book.lost == frozenset()
    assert b.book.snapshot()[0] == {"service": "tcp 192.0.2.100:80", "quorum": 4, "hysteresis": 1,
                                    "up_weight": 5, "up": True, "since": 1.0, "pending": 0}


def test_a_round_alone_does_not_bring_it_back_below_the_threshold() -> None:
    b = Book(config_text())
    b.check(21, up=False)
    b.check(22, up=False)
    for last in (21, 22, 23):
        assert b.check(last, up=last == 23) is None  # a full round, but 1 < 5
    assert b.check(21, up=True) is None and b.check(22, up=True).up  # 5 >= 5, the round done long since


def test_a_service_that_starts_without_its_quorum_is_a_change_and_kept_over_a_reload() -> None:
    b = Book(config_text("quorum = 6"))  # 5 < 6 at the start: keepalived's "Starting with quorum down"
    assert [(c.up, c.up_weight) for c in b.changes] == [(False, 5)]
    again = b.book.configure(parse_config(config_text("quorum = 6")), b.is_down, 2.0)
    assert again == [] and b.book.lost == {SERVICE}  # kept, not told twice
    lower = b.book.configure(parse_config(config_text("quorum = 5")), b.is_down, 3.0)
    assert lower == [] and b.book.lost == {SERVICE}  # still waits for its round
    b.check(21, up=True), b.check(22, up=True)
    assert b.check(23, up=True).up


def test_the_default_quorum_is_one_and_tracks_only_services_with_checks_or_keys() -> None:
    b = Book(config_text(""))
    assert b.book.services[SERVICE].rule == Quorum()
    for last in (21, 22):
        b.check(last, up=False)
    assert b.check(23, up=False).up is False  # no real server UP: lost
    plain = parse_config('[[instance]]\nname = "VI_1"\n[[instance.service]]\nprotocol = "tcp"\n'
                         'address = "192.0.2.100"\nport = 80\n[[instance.service.real]]\naddress = "192.0.2.21"\n')
    book = QuorumBook()
    assert book.configure(plain, lambda s, r: False, 0.0) == [] and book.services == {}


# --------------------------------------------------------------------------- the checker drives it


def test_the_checker_reports_quorum_changes_after_the_real_servers_change(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        changes: list[Any] = []
        quorum: list[Any] = []
        health = Health(loop, changes.extend, str(tmp_path), clock=lambda: 100.0, on_quorum=quorum.extend)
        health.configure(parse_config(config_text("quorum = 2\n  hysteresis = 0", weights=(2, 2))))
        t21, t22 = (health.targets[(SERVICE, real(n), 0)] for n in (21, 22))
        for target in (t21, t21, t22):
            health._result(target, "connection refused")  # retry = 1: DOWN after 2 failures
        assert [c.up for c in changes] == [False] and quorum == []  # 2 left: 2 >= 2, held
        health._result(t22, "connection refused")
        assert [c.up for c in changes] == [False, False] and [q.up for q in quorum] == [False]
        assert health.down_now().quorum_lost(SERVICE) and health.quorum_lost(SERVICE)
        health._result(t21, None)  # 2 UP again, but 192.0.2.22 not checked since the loss
        assert [q.up for q in quorum] == [False] and health.quorum_lost(SERVICE)
        health._result(t22, "connection refused")  # still DOWN, but the round is complete: gained
        assert [q.up for q in quorum] == [False, True] and not health.down_now().quorum_lost(SERVICE)
        health._write()
        report = read_report(str(tmp_path))
        assert report is not None and report.quorum_of(str(SERVICE)) == {
            "quorum": 2, "hysteresis": 0, "up_weight": 2, "up": True, "since": 100.0, "pending": 0}
        assert json.loads((tmp_path / "health.json").read_text())["quorum"][0]["service"] == str(SERVICE)
    finally:
        health.stop()
        loop.close()


# --------------------------------------------------------------------------- the planner and the engine


class Lost:
    def __init__(self, down: set[RealKey] | None = None, lost: bool = True) -> None:
        self.down, self.lost = down or set(), lost

    def is_down(self, service: ServiceKey, key: RealKey) -> bool:
        return key in self.down

    def weight_of(self, service: ServiceKey, key: RealKey) -> int | None:
        return None

    def quorum_lost(self, service: ServiceKey) -> bool:
        return self.lost and service == SERVICE


SORRY = '    [instance.service.sorry_server]\n    address = "192.0.2.99"\n    port = 8080\n    forward = "nat"\n'


def test_desired_withdraws_only_the_vips_on_the_service_address_and_only_with_quorum_given() -> None:
    config = parse_config(config_text("quorum = 4"))
    desired = desired_for(config, {"VI_1": State.MASTER}, health=Lost())
    assert [str(v.vip.address) for v in desired.vips] == ["192.0.2.101/32"]
    held = desired_for(config, {"VI_1": State.MASTER}, health=Lost(lost=False))
    assert len(held.vips) == 2
    default = desired_for(parse_config(config_text("")), {"VI_1": State.MASTER}, health=Lost())
    assert len(default.vips) == 2  # keepalived's default quorum 1: the hooks are told, the VIPs stay


def test_the_sorry_server_replaces_the_real_servers_while_the_quorum_is_lost() -> None:
    config = parse_config(config_text("hysteresis = 0", sorry=SORRY))
    desired = desired_for(config, {"VI_1": State.MASTER}, health=Lost({real(22)}))
    [spec] = desired.services
    assert [str(r) for r in spec.reals] == ["192.0.2.21:80 dr weight 0", "192.0.2.22:80 dr weight 0",
                                            "192.0.2.23:80 dr weight 0", "192.0.2.99:8080 nat weight 1"]
    assert len(desired.vips) == 2  # no quorum key: the VIPs stay
    given = desired_for(parse_config(config_text("quorum = 2", sorry=SORRY)), {"VI_1": State.MASTER}, health=Lost())
    assert len(given.vips) == 2  # a sorry server answers for the service: its VIPs stay unless quorum_withdraw
    kept = parse_config(config_text("quorum = 2\n  quorum_withdraw = false"))
    assert len(desired_for(kept, {"VI_1": State.MASTER}, health=Lost()).vips) == 2
    held = desired_for(config, {"VI_1": State.MASTER}, health=Lost(lost=False))
    assert [r.address.packed[-1] for r in held.services[0].reals] == [21, 22, 23]


def test_sorry_inhibit_keeps_it_at_weight_zero_and_without_a_listener_too() -> None:
    config = parse_config(config_text("", sorry=SORRY + "    inhibit = true\n"))
    for health in (None, Lost(lost=False)):
        spec = desired_for(config, {"VI_1": State.MASTER}, health=health).services[0]
        assert str(spec.reals[-1]) == "192.0.2.99:8080 nat weight 0"


def test_a_quorum_health_run_unbinds_and_binds_the_vip_journaled_and_idempotent(tmp_path: Path) -> None:
    config = parse_config(config_text("quorum = 4\n  quorum_withdraw = true", tmp=tmp_path, sorry=SORRY))
    backend = MemoryBackend()
    engine = Engine(config, backend_factory=lambda: backend)
    held = Lost(lost=False)
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=held)
    assert len(backend.addresses) == 2
    lost = Lost({real(21), real(22), real(23)})
    result = engine.reconcile(argv=["kanotify", "listen", "health: quorum lost"], kind=RunKind.HEALTH,
                              services=[SERVICE], health=lost, quorum=[(SERVICE, False)])
    applied = [str(r.action) for r in result.results if r.status == "applied"]
    assert applied[0] == "remove 192.0.2.100/32 dev lo"  # withdrawn first, then the sorry server
    assert applied[-1] == "add real server 192.0.2.99:8080 nat weight 1 to tcp 192.0.2.100:80"
    assert [str(v.address) for v in backend.addresses] == ["192.0.2.101/32"]
    reals = {str(rs.address): rs.weight for rs, _ in backend.services[SERVICE].reals.values()}
    assert reals == {"192.0.2.21": 0, "192.0.2.22": 0, "192.0.2.23": 0, "192.0.2.99": 1}
    assert result.outcome == "converged" and result.record["command"] == "health"
    journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert journal[-1]["command"] == "health" and "quorum lost" in " ".join(journal[-1]["trigger"])
    again = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, services=[SERVICE], health=lost,
                             quorum=[(SERVICE, False)])
    assert not again.plan.has_changes  # the second run changes nothing
    repair = engine.reconcile(argv=["t"], kind=RunKind.REPAIR, health=lost)
    assert not repair.plan.has_changes  # a repair keeps the withdrawal: it is not drift
    back = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, services=[SERVICE], health=held,
                            quorum=[(SERVICE, True)])
    assert back.outcome == "converged" and len(backend.addresses) == 2
    assert set(backend.services[SERVICE].reals) == {real(21), real(22), real(23)}


def test_the_metric_says_whether_each_tracked_service_holds_its_quorum() -> None:
    config = parse_config(config_text("quorum = 4"))
    facts = ListenerMetrics().facts(config, Lost())
    assert facts.quorum_up == (("tcp 192.0.2.100:80", False),)
    text = render(facts).decode()
    assert 'kanotify_service_quorum_up{service="tcp 192.0.2.100:80"} 0.0' in text


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("keys", "path", "message"), [
    ("quorum = 0", "instance[0].service[0].quorum", "expected an integer 1..4294967295, got 0"),
    ("hysteresis = -1", "instance[0].service[0].hysteresis", "expected an integer 0..4294967295, got -1"),
    ('quorum = "2"', "instance[0].service[0].quorum", "expected an integer"),
    ("quorum = 2\nhysteresis = 2", "instance[0].service[0].hysteresis", "expected hysteresis < quorum (2), got 2"),
    ("hysteresis = 1", "instance[0].service[0].hysteresis", "expected hysteresis < quorum (1), got 1"),
    ('[instance.service.sorry_server]\n  address = "192.0.2.21"', "instance[0].service[0].sorry_server.address",
     "expected a server that is not one of the service's real servers"),
    ('[instance.service.sorry_server]\n  address = "192.0.2.99"\n  weight = 0',
     "instance[0].service[0].sorry_server.weight", "expected a weight 1..65535"),
    ('[instance.service.sorry_server]\n  address = "192.0.2.99"\n  inhibit = "yes"',
     "instance[0].service[0].sorry_server.inhibit", "expected true or false"),
    ('[instance.service.sorry_server]\n  address = "2001:db8::1"', "instance[0].service[0].sorry_server.address",
     "expected an IPv4 address like the service"),
])
def test_bad_quorum_keys_name_the_key_and_what_was_expected(keys: str, path: str, message: str) -> None:
    text = ('[[instance]]\nname = "VI_1"\n[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.100"\n'
            f'port = 80\n[[instance.service.real]]\naddress = "192.0.2.21"\n')
    if keys.startswith("["):
        text += keys.replace("\n  ", "\n") + "\n"
    else:
        text = text.replace("port = 80\n", f"port = 80\n{keys}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "kanotify.toml")
    assert [(p.path, message in p.message) for p in caught.value.problems] == [(path, True)], caught.value.problems
    assert "kanotify.toml" in str(caught.value)


# --------------------------------------------------------------------------- status


def test_status_shows_the_listener_s_quorum_and_a_withdrawn_vip_is_not_drift(tmp_path: Path) -> None:
    import fcntl
    import os

    from kanotify.status import collect_status, format_status

    config = parse_config(config_text("quorum = 4", tmp=tmp_path))
    backend = MemoryBackend()
    engine = Engine(config, backend_factory=lambda: backend)
    lost = Lost({real(21), real(22)})
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=lost)
    loop = asyncio.new_event_loop()
    health = Health(loop, lambda changes: None, str(tmp_path / "state"), clock=lambda: 100.0)
    try:
        health.configure(config)
        for key in (real(21), real(21), real(22), real(22)):
            health._result(health.targets[(SERVICE, key, 0)], "connection refused")
        health._write()
    finally:
        health.stop()
        loop.close()
    lock = os.open(tmp_path / "state" / "listen.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(lock, f"{os.getpid()}\n".encode())
        fcntl.flock(lock, fcntl.LOCK_EX)  # a listener holds its lock: status reads its health.json
        report = collect_status(config, backend_factory=lambda: backend)
    finally:
        os.close(lock)
    [service] = report["ipvs"]["services"]
    # lost at 192.0.2.21's DOWN (3 < 4); 192.0.2.22 checked since, 192.0.2.21 and .23 not: the round waits for 2
    assert service["quorum"] == {"quorum": 4, "hysteresis": 0, "up_weight": 1, "up": False, "since": 100.0,
                                 "pending": 2}
    assert [(v["vip"], v["desired"], v["bound"]) for v in report["vips"]] == [
        ("192.0.2.100/32 dev lo", False, False), ("192.0.2.101/32 dev lo", True, True)]
    assert report["drift"] == []  # the withdrawn VIP and the drained real servers are what is wanted
    text = format_status(report)
    assert [line for line in text.splitlines() if "quorum" in line] == [
        f"  managed {service['service']} (fingerprint {service['fingerprint']})  quorum LOST: up weight 1 "
        "(quorum 4, hysteresis 0)"]


BGP_MH = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
[bgp]
interface = "kav0"
[[instance]]
name = "ANYCAST"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "kav0"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "mh"
  flags = ["mh-port"]
  quorum = 1
""" + "".join(f'    [[instance.service.real]]\n    address = "192.0.2.{21 + i}"\n    [instance.service.real.check]\n'
              '    type = "tcp"\n' for i in range(3))


def test_bgp_mh_quorum_withdraws_the_vip_from_the_dummy_link_and_keeps_the_link_and_the_table(tmp_path: Path) -> None:
    """[bgp] + mh (issue 23): losing the quorum unbinds the VIP from kav0 (the route is withdrawn) but keeps
    the link and every destination (drained, never deleted: the mh table stays the peers'); a repair keeps
    the withdrawal; the quorum back binds the VIP again; each step twice, the second a no-op."""
    config = parse_config(BGP_MH.format(tmp=tmp_path))
    backend = MemoryBackend()
    engine = Engine(config, backend_factory=lambda: backend)
    held = Lost(lost=False)
    engine.transition(["ANYCAST"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=held)
    assert [(str(a.address), a.dev) for a in backend.addresses] == [("192.0.2.100/32", "kav0")]
    order = list(backend.services[SERVICE].reals)
    lost = Lost({real(21), real(22), real(23)})
    for _ in range(2):
        result = engine.reconcile(argv=["kanotify", "listen", "health: quorum lost"], kind=RunKind.HEALTH,
                                  services=[SERVICE], health=lost, quorum=[(SERVICE, False)])
        assert result.outcome == "converged"
    assert not result.plan.has_changes  # the second run changes nothing
    assert not backend.addresses and backend.links["kav0"].kind == "dummy"  # withdrawn; the link stays
    assert list(backend.services[SERVICE].reals) == order  # drained in place: the same mh table order
    assert {rs.weight for rs, _ in backend.services[SERVICE].reals.values()} == {0}
    assert not engine.reconcile(argv=["t"], kind=RunKind.REPAIR, health=lost).plan.has_changes
    for _ in range(2):
        back = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, services=[SERVICE], health=held,
                                quorum=[(SERVICE, True)])
        assert back.outcome == "converged"
    assert not back.plan.has_changes
    assert [(str(a.address), a.dev) for a in backend.addresses] == [("192.0.2.100/32", "kav0")]
    assert list(backend.services[SERVICE].reals) == order
    assert {rs.weight for rs, _ in backend.services[SERVICE].reals.values()} == {1}

"""[bgp]: the config table, the dummy link in the plan, the memory twin (issue 23).

The kernel side (rtnetlink creating a real dummy link) is tested in the UML guest
(tests/kernel/guest/test_guest_bgp_link.py): the host kernel has no dummy driver.
"""

from __future__ import annotations

import pytest

from kanotify.actions import AddLink, BindVip, Noop, SetLink
from kanotify.backends.memory import MemoryBackend
from kanotify.backends.netlink import rtlink
from kanotify.config.schema import parse_config
from kanotify.config.values import BgpSpec
from kanotify.errors import ConfigError
from kanotify.model import Link, State
from kanotify.plan import desired_for, plan
from kanotify.testing import KanotifyEnv

ANYCAST = """
[bgp]
interface = "kav0"
[[instance]]
name = "ANYCAST"
  [[instance.vip]]
  address = "192.0.2.10/32"
  dev = "kav0"
"""


def messages(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bgp.toml")
    return [str(p) for p in info.value.problems]


def test_bgp_table_defaults_and_every_key() -> None:
    assert parse_config(ANYCAST).bgp == BgpSpec("kav0", "bird", None)
    full = ANYCAST.replace('interface = "kav0"', 'interface = "kav0"\ndaemon = "frr"\ncontrol = "/run/frr"')
    assert parse_config(full).bgp == BgpSpec("kav0", "frr", "/run/frr")
    assert parse_config('[[instance]]\nname = "A"\n').bgp is None


@pytest.mark.parametrize("body, where, expected", [
    ('daemon = "bird"', "bgp.interface", "missing required key"),
    ('interface = "lo"', "bgp.interface", "dummy link of its own"),
    ('interface = "a/b"', "bgp.interface", "expected an interface name"),
    ('interface = "kav0"\ndaemon = "gobgp"', "bgp.daemon", "expected one of"),
    ('interface = "kav0"\ncontrol = "bird.ctl"', "bgp.control", "expected an absolute path"),
    ('interface = "kav0"\nasn = 65001', "bgp.asn", "unknown key"),
])
def test_bad_bgp_table_names_file_key_and_expectation(body: str, where: str, expected: str) -> None:
    found = messages('[[instance]]\nname = "A"\n[bgp]\n' + body + "\n")
    assert len(found) == 1, found
    assert found[0].startswith("bgp.toml:") and f": {where}: " in found[0] and expected in found[0], found


def test_the_link_is_desired_in_every_state_and_planned_before_the_vips() -> None:
    config = parse_config(ANYCAST)
    for state in State:
        assert desired_for(config, {"ANYCAST": state}).links == (Link("kav0"),)
    backend = MemoryBackend(devices={"lo"})
    desired = desired_for(config, {"ANYCAST": State.MASTER})
    actions = list(plan(desired, backend.observe(desired.scope)))
    assert [type(a) for a in actions] == [AddLink, BindVip], actions  # and no GARP on the dummy link
    assert str(actions[0]) == "create dummy link kav0 (up, no ARP)"


@pytest.mark.parametrize("have, expected", [
    (None, "create dummy link kav0 (up, no ARP)"),
    (Link("kav0", up=False), "set link kav0 up, ARP off (was down, ARP off)"),
    (Link("kav0", noarp=False), "set link kav0 up, ARP off (was up, ARP on)"),
    (Link("kav0"), "dummy link kav0 (up, no ARP) already there"),
    (Link("kav0", kind="veth", noarp=False), "set link kav0 up, ARP off (was up, ARP on)"),
])
def test_link_plan_table(have: Link | None, expected: str) -> None:
    backend = MemoryBackend(devices={"lo"} | ({"kav0"} if have else set()))
    if have is not None:
        backend.links["kav0"] = have
    desired = desired_for(parse_config(ANYCAST), {"ANYCAST": State.BACKUP})
    actions = list(plan(desired, backend.observe(desired.scope)))
    assert str(actions[0]) == expected
    for action in actions:
        if not action.is_noop:
            backend.apply(action)
    assert all(a.is_noop for a in plan(desired, backend.observe(desired.scope)))
    assert backend.link("kav0").kind == (have.kind if have else "dummy")  # a kind is never changed


def test_engine_creates_the_link_binds_then_stop_unbinds_and_keeps_the_link(kanotify_env: KanotifyEnv) -> None:
    h = kanotify_env.engine(toml=ANYCAST, backend=MemoryBackend(devices={"lo"}))
    first = h.transition("ANYCAST", "master")
    assert h.actions(first) == ["create dummy link kav0 (up, no ARP)", "bind 192.0.2.10/32 dev kav0"]
    writes = len(h.backend.writes)
    second = h.transition("ANYCAST", "master")
    assert len(h.backend.writes) == writes and all(r.action.is_noop for r in second.results)
    h.transition("ANYCAST", "stop")
    assert "kav0" in h.backend.devices and not h.backend.addresses
    journal = h.journal[-1]
    assert journal["actions"][0] == {"action": "dummy link kav0 (up, no ARP) already there", "status": "noop"}


def test_dry_run_shows_the_link_and_creates_nothing(kanotify_env: KanotifyEnv) -> None:
    h = kanotify_env.engine(toml=ANYCAST, backend=MemoryBackend(devices={"lo"}))
    h.plan("master")
    assert "create dummy link kav0 (up, no ARP)" in h.actions()
    assert "kav0" not in h.backend.devices and not h.backend.writes


def test_twin_add_link_of_an_existing_device_only_sets_flags() -> None:
    backend = MemoryBackend(devices={"lo", "kav0"})
    backend.links["kav0"] = Link("kav0", "dummy", up=False)
    backend.apply(AddLink(Link("kav0")))
    assert backend.link("kav0") == Link("kav0")
    assert isinstance(backend.writes[-1], AddLink)
    with pytest.raises(Exception, match="no such link"):
        backend.apply(SetLink(Link("kav1"), Link("kav1")))
    assert not any(isinstance(w, Noop) for w in backend.writes)


def test_rtlink_messages_round_trip() -> None:
    raw = rtlink.new_dummy_request(7, "kav0", rtlink.IFF_UP | rtlink.IFF_NOARP, rtlink.IFF_UP | rtlink.IFF_NOARP)
    payload = raw[16:]
    found = rtlink.decode(payload)
    assert found == rtlink.LinkMessage(0, "kav0", rtlink.IFF_UP | rtlink.IFF_NOARP, "dummy")
    assert rtlink.decode(b"\0" * 4) is None
    assert rtlink.decode(rtlink.getlink_request(1, "kav0")[16:]) == rtlink.LinkMessage(0, "kav0", 0, "")


def test_keepalived_gone_leaves_the_instances_on_the_bgp_link_alone() -> None:
    """keepalived dying on a host that also runs an ANYCAST instance: only what keepalived drove goes to STOP."""
    from kanotify.daemon.worker import driven_by_keepalived

    config = parse_config(ANYCAST + '[[instance]]\nname = "VI_1"\n  [[instance.vip]]\n  address = "192.0.2.100/24"\n'
                                    '  dev = "eth0"\n')
    recorded = {"ANYCAST": State.MASTER, "VI_1": State.MASTER}
    assert driven_by_keepalived(config, recorded) == ("VI_1",)
    assert driven_by_keepalived(config, {"ANYCAST": State.MASTER, "VI_1": State.STOP}) == ()
    no_bgp = parse_config(ANYCAST.replace('[bgp]\ninterface = "kav0"\n', ""))
    assert driven_by_keepalived(no_bgp, {"ANYCAST": State.MASTER}) == ("ANYCAST",)

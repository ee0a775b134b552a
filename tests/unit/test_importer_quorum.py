"""``kanotify import`` of a virtual_server's quorum keywords: quorum, hysteresis, sorry_server (+ inhibit,
lvs_method), quorum_up/quorum_down, omega -- keepalived 2.2.7's rules (check_parser.c, alloc_ssvr)."""

from __future__ import annotations

import tomllib

from kanotify.config.schema import parse_config
from kanotify.keepalived.conf import parse_text
from kanotify.keepalived.importer import import_conf, render

CONF = """
virtual_server 192.0.2.100 80 {
  lb_algo rr
  lb_kind DR
  protocol TCP
  quorum 3
  hysteresis 1
  sorry_server 192.0.2.99 8080
  sorry_server_inhibit
  quorum_up "/usr/local/bin/up.sh arg1" keepalived_script
  quorum_down /usr/local/bin/down.sh
  omega
  real_server 192.0.2.21 80 {
    weight 2
    TCP_CHECK {
      connect_timeout 3
    }
  }
  real_server 192.0.2.22 80 {
    TCP_CHECK {
      connect_timeout 3
    }
  }
}
"""


def imported(text: str = CONF):
    result = import_conf(parse_text(text, "k.conf"))
    toml = render(result)
    return result, toml, parse_config(toml, "<import>").instances[0].services[0]


def test_quorum_hysteresis_and_the_sorry_server_become_service_keys() -> None:
    _result, toml, spec = imported()
    rule = spec.quorum
    assert rule is not None and (rule.quorum, rule.hysteresis, rule.withdraw, rule.sorry_inhibit) == (3, 1, False, True)
    # the forwarding method the virtual server had when the line was read (DR): the service's port, as real servers
    assert str(rule.sorry) == "192.0.2.99:80 dr weight 1"
    assert "quorum_withdraw = false    # keepalived leaves the VIPs to VRRP" in toml
    assert "omega (k.conf:12): keepalived runs quorum_down/notify_down scripts at shutdown too" in toml


def test_sorry_server_lvs_method_and_the_nat_default() -> None:
    text = CONF.replace("  lb_kind DR\n", "").replace("  sorry_server_inhibit\n", "  sorry_server_lvs_method NAT\n")
    _result, _toml, spec = imported(text.replace("  real_server 192.0.2.21 80 {", "  real_server 192.0.2.21 80 {\n"
                                                 "    lvs_method NAT"))
    assert spec.quorum is not None and str(spec.quorum.sorry) == "192.0.2.99:8080 nat weight 1"
    assert not spec.quorum.sorry_inhibit


def test_the_scripts_are_commented_with_the_hook_lines_that_run_the_same_argv() -> None:
    result, _toml, _spec = imported()
    notes = {n.keyword.split()[0]: n for n in result.services[0].notes}
    up, down = notes["quorum_up"], notes["quorum_down"]
    assert "kanotify_quorum_up" in up.reason and "keepalived runs it as keepalived_script" in up.reason
    table = tomllib.loads("\n".join(up.proposal) + "\n" + down.proposal[1])
    assert table["hooks"]["quorum_command"]["per_service"]["tcp 192.0.2.100:80"] == {
        "up": ["/usr/local/bin/up.sh", "arg1"], "down": ["/usr/local/bin/down.sh"]}


def test_no_note_says_kanotify_lacks_quorum_or_a_sorry_server() -> None:
    result, _toml, _spec = imported()
    for note in result.services[0].notes:
        assert "kanotify has no" not in note.reason and note.keyword.split()[0] in ("quorum_up", "quorum_down")


def test_what_keepalived_ignores_or_fixes_is_said() -> None:
    text = CONF.replace("quorum 3", "quorum 0").replace("hysteresis 1", "hysteresis x")
    text = text.replace("  sorry_server 192.0.2.99 8080\n  sorry_server_inhibit\n",
                        "  sorry_server_inhibit\n  sorry_server_lvs_method NAT\n")
    result, _toml, spec = imported(text)
    reasons = [n.reason for n in result.services[0].notes]
    assert "keepalived rejects it and uses quorum 1 (imported as 1)" in reasons
    assert any(r.startswith("keepalived ignores it (expected 0..") for r in reasons)
    assert "keepalived ignores sorry_server_inhibit before or without sorry_server" in reasons
    assert "keepalived ignores sorry_server_lvs_method without sorry_server" in reasons
    assert spec.quorum is not None and spec.quorum.quorum == 1 and spec.quorum.sorry is None


def test_hysteresis_of_quorum_or_more_is_lowered_to_quorum_minus_one_as_keepalived_does() -> None:
    _result, toml, spec = imported(CONF.replace("hysteresis 1", "hysteresis 5"))
    assert spec.quorum is not None and spec.quorum.hysteresis == 2
    assert "hysteresis = 2    # hysteresis 5 (k.conf:7) >= quorum 3: keepalived sets quorum - 1" in toml


def test_a_sorry_server_that_is_a_real_server_is_noted() -> None:
    result, _toml, spec = imported(CONF.replace("sorry_server 192.0.2.99 8080", "sorry_server 192.0.2.21 80"))
    assert spec.quorum is not None and spec.quorum.sorry is None
    assert any("it is one of the real servers" in n.reason for n in result.services[0].notes)

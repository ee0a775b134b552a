"""``kanotify import``: keepalived's IPVS sync daemon -> the ``[sync_daemon]`` table.

Every case imports a small keepalived.conf and reads the TOML back with
kanotify's own config loader (the table compared is the loader's
:class:`SyncDaemonSpec`).  keepalived 2.2.7's rules (global_parser.c
lvs_syncd_handler, vrrp_parser.c vrrp_lvs_syncd_handler, vrrp.c
vrrp_complete_init, check_daemon.c): the first line with an interface counts,
the sync id not given is the instance's virtual_router_id (0 for the legacy
``lvs_sync_daemon_interface``), invalid values are ignored.  That keepalived
runs the same daemons is shown in the UML guest
(tests/kernel/guest/test_guest_import_roundtrip.py).
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import subprocess
import sys
from pathlib import Path

from kanotify.config.schema import build_config, parse_config
from kanotify.errors import ConfigError
from kanotify.keepalived.conf import parse_text
from kanotify.keepalived.imported import ImportResult
from kanotify.keepalived.importer import import_conf, render
from kanotify.model import SyncDaemonSpec

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))
VRRP = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n}\nvrrp_instance VI_2 {\n interface eth0\n" \
       " virtual_router_id 52\n}\n"
VS = "virtual_server 192.0.2.100 80 {\n protocol TCP\n real_server 192.0.2.21 80 {\n }\n}\n"


def imported(text: str, instance: str | None = None) -> tuple[ImportResult, str, SyncDaemonSpec | None]:
    """The import of *text*, its TOML, and the [sync_daemon] the config loader reads from it."""
    result = import_conf(parse_text(text, "k.conf"), instance)
    toml = render(result)
    return result, toml, parse_config(toml, "imported.toml").sync_daemon


def globals_(*lines: str, vrrp: str = VRRP) -> str:
    return "global_defs {\n" + "".join(f" {line}\n" for line in lines) + "}\n" + vrrp + VS


def reasons(result: ImportResult) -> str:
    return "\n".join(f"{n.keyword} ({n.where}): {n.reason}" for n in result.notes)


def loader_says(table: dict[str, object]) -> list[str]:
    """kanotify's own problem texts for a [sync_daemon] *table*."""
    try:
        build_config({"instance": [{"name": "VI_1"}], "sync_daemon": table})
    except ConfigError as exc:
        return [f"{p.path}: {p.message}" for p in exc.problems]
    return []


def test_every_option_is_imported() -> None:
    result, toml, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1 id 9 maxlen 1400 port 8850 ttl 3 "
                                           "group 224.0.0.82"))
    assert spec == SyncDaemonSpec("VI_1", "eth0", 9, 1400, ipaddress.ip_address("224.0.0.82"), 8850, 3)
    assert result.sync_daemon is not None and result.sync_daemon.table == {
        "interface": "eth0", "instance": "VI_1", "sync_id": 9, "maxlen": 1400, "port": 8850, "ttl": 3,
        "group": "224.0.0.82"}
    assert "[sync_daemon]    # lvs_sync_daemon (k.conf:2)" in toml
    assert "Delete lvs_sync_daemon from keepalived.conf when kanotify runs them" in toml
    assert "No maxlen" not in toml and not result.notes


def test_no_id_is_the_instance_s_virtual_router_id_and_the_kernel_s_defaults_are_said() -> None:
    result, toml, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_2"), "VI_2")
    assert spec == SyncDaemonSpec("VI_2", "eth0", 52)
    assert "sync_id = 52    # no valid id: keepalived's default, the virtual_router_id of VI_2 (k.conf:10)" in toml
    assert "# No maxlen, port, ttl, group: the kernel's default, as keepalived left it (and kanotify): maxlen from " \
           "the MTU, port 8848, ttl 1, group 224.0.0.81." in toml
    # kanotify's own default sync id would be 0: it is written out
    assert re.search(r"^sync_id = 52 ", toml, re.M)


def test_the_older_positional_form() -> None:
    _, toml, spec = imported(globals_("lvs_sync_daemon eth0 VI_1 61 port 9000"))
    assert spec == SyncDaemonSpec("VI_1", "eth0", 61, port=9000)
    assert 'instance = "VI_1"    # the word after the interface' in toml
    assert "sync_id = 61    # the word after the instance" in toml
    # a keyword right after the interface is the keyword, not the instance
    _, _, spec = imported(globals_("lvs_sync_daemon eth0 id 5 inst VI_1"))
    assert spec == SyncDaemonSpec("VI_1", "eth0", 5)


def test_the_legacy_per_instance_form_keeps_sync_id_0() -> None:
    vrrp = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n lvs_sync_daemon_interface eth1\n}\n"
    result, toml, spec = imported(vrrp + VS)
    assert spec == SyncDaemonSpec("VI_1", "eth1", 0)
    assert "[sync_daemon]    # lvs_sync_daemon_interface (k.conf:4)" in toml
    assert 'instance = "VI_1"    # the vrrp_instance it is in (k.conf:1)' in toml
    assert "sync_id = 0    # lvs_sync_daemon_interface gives none: keepalived's default 0" in toml
    extra = imported(vrrp.replace("eth1", "eth1 ignored words") + VS)[0]
    assert "keepalived ignores the words after the interface" in reasons(extra)


def test_the_daemon_of_another_instance_says_how_to_import_it() -> None:
    text = globals_("lvs_sync_daemon eth0 inst VI_2 id 7")
    result, toml, spec = imported(text)
    assert result.instance == "VI_1" and spec is None and result.sync_daemon is None
    assert not re.search(r"^\[sync_daemon\]", toml, re.M)
    assert ("# not imported: lvs_sync_daemon eth0 inst VI_2 id 7 (k.conf:2): it follows vrrp_instance VI_2, and this "
            "import is for VI_1: import with --instance VI_2 to get it as [sync_daemon]; it would be:") in toml
    assert '#   instance = "VI_2"' in toml and "#   sync_id = 7" in toml
    assert imported(text, "VI_2")[2] == SyncDaemonSpec("VI_2", "eth0", 7)
    # a vrrp_instance name kanotify cannot take
    odd = imported(globals_("lvs_sync_daemon eth0 inst VI/2", vrrp=VRRP.replace("VI_2", "VI/2")))[0]
    assert "'VI/2' is not a kanotify instance name" in reasons(odd)


def test_without_an_instance_it_is_mode_both_and_what_keepalived_drops_is_not_imported() -> None:
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 id 9"))
    assert spec == SyncDaemonSpec(None, "eth0", 9, mode="both")  # both daemons always, as keepalived runs them
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_9"))
    assert spec is None and "there is no vrrp_instance 'VI_9': keepalived drops the sync daemon" in reasons(result)
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 inst"))
    assert spec is None and "there is no vrrp_instance ''" in reasons(result)
    no_vrid = "vrrp_instance VI_1 {\n interface eth0\n}\n"
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1", vrrp=no_vrid))
    assert spec is None and "has no virtual_router_id 1..255" in reasons(result)
    # ... but with an id, the sync daemon does not need the virtual_router_id
    assert imported(globals_("lvs_sync_daemon eth0 inst VI_1 id 3", vrrp=no_vrid))[2] == SyncDaemonSpec(
        "VI_1", "eth0", 3)


def test_values_keepalived_ignores_leave_its_default() -> None:
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1 id 300 maxlen 0 port 70000 ttl 0 bogus "
                                        "group 192.0.2.1"))
    assert spec == SyncDaemonSpec("VI_1", "eth0", 51)  # id 300: the virtual_router_id
    text = reasons(result)
    for fragment in ("id 300 (k.conf:2): keepalived ignores it (expected 0..255) and uses the default sync id",
                     "maxlen 0 (k.conf:2): keepalived ignores it (expected 1..65507)",
                     "port 70000 (k.conf:2): keepalived ignores it (expected 1..65535)",
                     "ttl 0 (k.conf:2): keepalived ignores it (expected 1..255)",
                     "bogus (k.conf:2): keepalived ignores an unknown lvs_sync_daemon option",
                     "group 192.0.2.1 (k.conf:2): keepalived ignores a group that is not multicast"):
        assert fragment in text
    # a bad group makes keepalived forget a good one given before it; the last valid value counts
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1 group 224.0.0.90 group nope port 1 port 2"))
    assert spec == SyncDaemonSpec("VI_1", "eth0", 51, port=2)
    assert "and forgets the group \"224.0.0.90\" given before it" in reasons(result)
    assert "port 1 (k.conf:2): port is given again: keepalived uses the last" in reasons(result)
    # the instance given first is kept, an option without a value is ignored
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1 inst VI_2 ttl"))
    assert spec == SyncDaemonSpec("VI_1", "eth0", 51)
    assert "keepalived keeps the instance given first (VI_1)" in reasons(result)
    assert "ttl (k.conf:2): no value after it: keepalived ignores it" in reasons(result)
    # keepalived takes the address in front of a range or a mask (inet_stosockaddr)
    _, toml, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1 group FF02::1:5/64"))
    assert spec is not None and spec.group == ipaddress.ip_address("ff02::1:5")
    assert 'group = "ff02::1:5"    # group FF02::1:5/64: keepalived takes the address before the /' in toml


def test_values_kanotify_refuses_keep_kanotify_s_problem_text() -> None:
    # maxlen below a backup's minimum: left out (the kernel's from the MTU), said with the loader's own words
    result, toml, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1 maxlen 600"))
    assert spec == SyncDaemonSpec("VI_1", "eth0", 51)
    (problem,) = loader_says({"interface": "eth0", "maxlen": 600})
    assert f"kanotify's config refuses it: {problem}; the [sync_daemon] leaves it out" in reasons(result)
    assert "maxlen" not in result.sync_daemon.table if result.sync_daemon else False
    # with an IPv6 group the largest maxlen is smaller
    result, _, spec = imported(globals_("lvs_sync_daemon eth0 inst VI_1 maxlen 65500 group ff02::81"))
    assert spec is not None and spec.maxlen is None and spec.group == ipaddress.ip_address("ff02::81")
    assert "1024..65487" in reasons(result)
    # an interface name kanotify cannot take: no table at all, the proposal commented
    result, toml, spec = imported(globals_("lvs_sync_daemon eth0:1 inst VI_1 maxlen 600"))
    assert spec is None
    problems = loader_says({"interface": "eth0:1", "maxlen": 600})
    assert len(problems) == 2
    assert ("lvs_sync_daemon (k.conf:2): kanotify's config refuses it: " + "; ".join(problems) + "; it would be:"
            in reasons(result))
    assert '#   interface = "eth0:1"' in toml
    # the legacy form has no length check in keepalived; kanotify's 15 bytes
    long = "vrrp_instance VI_1 {\n virtual_router_id 51\n lvs_sync_daemon_interface abcdefghijklmnop\n}\n"
    result, _, spec = imported(long + VS)
    assert spec is None
    (problem,) = loader_says({"interface": "abcdefghijklmnop"})
    assert problem in reasons(result)


def test_several_lines_the_first_with_an_interface_counts() -> None:
    result, _, spec = imported(globals_("lvs_sync_daemon", "lvs_sync_daemon abcdefghijklmnop inst VI_1",
                                        "lvs_sync_daemon eth1 inst VI_1 id 4", "lvs_sync_daemon eth0 inst VI_1 id 5"))
    assert spec == SyncDaemonSpec("VI_1", "eth1", 4)
    text = reasons(result)
    assert "lvs_sync_daemon (k.conf:2): keepalived ignores it: lvs_sync_daemon requires an interface" in text
    assert "(k.conf:3): keepalived ignores it: the interface name is 16 bytes or longer" in text
    assert ("lvs_sync_daemon eth0 inst VI_1 id 5 (k.conf:5): keepalived takes the sync daemon from the first line, "
            "the lvs_sync_daemon at k.conf:4, and ignores this one") in text
    # the global and the legacy form: keepalived reads the file in order
    legacy_first = ("vrrp_instance VI_1 {\n virtual_router_id 51\n lvs_sync_daemon_interface eth2\n}\n"
                    "global_defs {\n lvs_sync_daemon eth0 inst VI_1\n}\n" + VS)
    result, _, spec = imported(legacy_first)
    assert spec == SyncDaemonSpec("VI_1", "eth2", 0)
    assert "the lvs_sync_daemon_interface at k.conf:3, and ignores this one" in reasons(result)
    global_first = ("global_defs {\n lvs_sync_daemon eth0 inst VI_1\n}\n"
                    "vrrp_instance VI_1 {\n virtual_router_id 51\n lvs_sync_daemon_interface eth2\n}\n" + VS)
    result, _, spec = imported(global_first)
    assert spec == SyncDaemonSpec("VI_1", "eth0", 51)
    assert "lvs_sync_daemon_interface eth2 (k.conf:6): keepalived takes the sync daemon from the first line" \
        in reasons(result)


def test_json_has_the_table_or_null(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(globals_("lvs_sync_daemon eth0 inst VI_2 ttl 2"))
    for instance, expected in ((None, None), ("VI_2", {"interface": "eth0", "instance": "VI_2", "sync_id": 52,
                                                      "ttl": 2})):
        argv = [KANOTIFY, "--json", "import", str(conf)] + (["--instance", instance] if instance else [])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["sync_daemon"] == expected
        assert parse_config(data["toml"]).sync_daemon == (SyncDaemonSpec("VI_2", "eth0", 52, ttl=2) if instance
                                                          else None)
        if instance is None:
            assert any("--instance VI_2" in n["reason"] for n in data["not_imported"])


def test_random_sync_daemon_lines_always_import_to_a_config_the_loader_accepts() -> None:
    """Whatever the words (valid or not for keepalived), import never writes a [sync_daemon] kanotify refuses."""
    words = ["inst", "id", "maxlen", "port", "ttl", "group", "VI_1", "VI_2", "0", "1", "51", "255", "256", "600",
             "1024", "65487", "65507", "65535", "224.0.0.81", "ff02::81", "192.0.2.1", "ff02::1%eth0", "x", ""]
    interfaces = ["eth0", "eth0:1", "a b", "abcdefghijklmno", "abcdefghijklmnop", "é", "."]
    rnd = random.Random(13)
    tables = 0
    for _ in range(300):
        lines = []
        for _ in range(rnd.randint(1, 3)):
            head = [rnd.choice(interfaces)] + (["inst", rnd.choice(["VI_1", "VI_2"])] if rnd.random() < 0.7 else [])
            args = " ".join(f'"{w}"' if not w or " " in w else w for w in
                            head + [rnd.choice(words) for _ in range(rnd.randint(0, 8))])
            lines.append(f"lvs_sync_daemon {args}")
        legacy = f" lvs_sync_daemon_interface {rnd.choice(interfaces)}\n" if rnd.random() < 0.2 else ""
        text = globals_(*lines, vrrp=VRRP.replace(" virtual_router_id 52\n", " virtual_router_id 52\n" + legacy))
        result, _, spec = imported(text, rnd.choice([None, "VI_2"]))
        tables += spec is not None
        assert (spec is None) == (result.sync_daemon is None), text
    assert tables > 30, tables  # 50 with this seed

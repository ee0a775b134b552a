"""The keepalived.conf reader against realistic configs (tests/unit/keepalived_configs/) and keepalived's quirks.

Each config file is a kind of keepalived.conf operators write; the expectations
were cross-checked with ``keepalived -t`` 2.2.7 where it says something
(see the comments).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kanotify.keepalived.conf import (
    KeepalivedConf,
    Statement,
    decomment,
    parse_text,
    read_config,
    split_script,
    split_words,
)

CONFIGS = Path(__file__).parent / "keepalived_configs"
ALL = sorted(p.name for p in CONFIGS.glob("*.conf")) + ["includes/main.conf"]


def read(name: str, config_id: str | None = "lb1") -> KeepalivedConf:
    return read_config(str(CONFIGS / name), config_id)


def servers(conf: KeepalivedConf) -> list[Statement]:
    return conf.top("virtual_server")


def reals(vs: Statement) -> list[tuple[str, ...]]:
    return [r.args for r in vs.children("real_server")]


def test_there_are_at_least_12_realistic_configs() -> None:
    assert len(ALL) >= 12


@pytest.mark.parametrize("name", ALL)
def test_every_config_reads_without_surprises(name: str) -> None:
    conf = read(name)
    assert conf.readable
    assert conf.statements
    for stmt in conf.walk():  # every statement knows its file and line
        assert stmt.where.line >= 1 and stmt.where.file
    if name != "errors.conf":
        assert conf.messages == ()


def test_seed_004_as_the_operator_wrote_it() -> None:
    conf = read("seed004.conf")
    (gd,) = conf.top("global_defs")
    assert [s.keyword for s in gd.block or ()] == [
        "notification_email", "notification_email_from", "smtp_server", "smtp_connect_timeout", "router_id",
        "vrrp_skip_check_adv_addr", "vrrp_garp_interval", "vrrp_gna_interval",
    ]  # "#   vrrp_strict" (line 14) is a comment
    assert gd.child("notification_email").block is not None
    assert [s.keyword for s in gd.child("notification_email").block or ()] == [
        "acassen@firewall.loc", "failover@firewall.loc", "sysadmin@firewall.loc"]
    (inst,) = conf.top("vrrp_instance")
    assert inst.args == ("LVSha",) and str(inst.where).endswith("seed004.conf:19")
    assert inst.child("priority").args == ("100",)  # "##优先级..." is a comment
    (vs,) = servers(conf)
    assert vs.args == ("192.0.2.21", "80") and vs.where.line == 34 and vs.end is not None and vs.end.line == 70
    assert [(s.keyword, s.where.line) for s in vs.block or () if s.keyword != "real_server"] == [
        ("delay_loop", 35), ("lb_algo", 36), ("lb_kind", 37), ("protocol", 39), ("connect_timeout", 40),
        ("nb_get_retry", 41), ("delay_before_retry", 42)]  # line 38 "#    persistence_timeout 50" is a comment
    assert vs.child("lvs_sched").args == ("rr",)  # lb_algo is the legacy name
    assert vs.child("lvs_method").args == ("DR",)
    assert reals(vs) == [("192.0.2.12", "80"), ("192.0.2.13", "80"), ("192.0.2.14", "80")]
    url = vs.children("real_server")[0].child("HTTP_GET").child("url")
    assert url.child("path").args == ("/",) and url.child("digest").args == ("c2e7b1048523a6fc9a1a78d5fd783605",)
    assert url.where.line == 46


def test_conditional_lines_follow_the_config_id() -> None:
    lb1, lb2, other = read("conditional.conf", "lb1"), read("conditional.conf", "lb2"), read("conditional.conf", "x")
    assert lb1.global_("router_id")[0].args == ("lb1",)
    assert lb2.global_("router_id")[0].args == ("lb2",)
    assert other.global_("router_id") == []
    inst = {c: conf.top("vrrp_instance")[0] for c, conf in (("lb1", lb1), ("lb2", lb2), ("x", other))}
    assert inst["lb1"].child("priority").args == ("150",) and inst["lb1"].child("nopreempt") is None
    assert inst["lb2"].child("priority").args == ("100",) and inst["lb2"].child("nopreempt") is not None  # @^lb1
    assert reals(servers(lb1)[0]) == [("192.0.2.21", "80"), ("192.0.2.23", "80")]
    assert reals(servers(lb2)[0]) == [("192.0.2.22", "80"), ("192.0.2.23", "80")]
    assert servers(lb2)[0].children("real_server")[0].child("weight").args == ("7",)
    assert reals(servers(other)[0]) == [("192.0.2.23", "80")]


def test_definitions_plain_braced_recursive_and_multiline() -> None:
    conf = read("definitions.conf")
    (vs,) = servers(conf)
    assert vs.args == ("192.0.2.120", "80")
    assert vs.child("lvs_sched").args == ("wrr",)
    first, second = vs.children("real_server")
    # $REAL = ${VIP_NET}.21, and VIP_NET is defined after REAL: expanded when used
    assert first.args == ("192.0.2.21", "80") and second.args == ("192.0.2.22", "80")
    assert first.child("weight").args == ("2",)
    check = first.child("TCP_CHECK")  # a multi-line definition expands into a block
    assert check is not None and check.child("connect_timeout").args == ("3",)
    assert check.where.line == 22  # where $CHECK is used


def test_seq_repeats_lines_with_the_variable_set() -> None:
    web, tls = servers(read("seq.conf"))
    assert reals(web) == [(f"192.0.2.{n}", "80") for n in range(11, 21)]
    assert {r.where.line for r in web.children("real_server")} == {10}
    assert [(r.args[0], r.child("weight").args[0]) for r in tls.children("real_server")] == [
        ("192.0.2.31", "31"), ("192.0.2.33", "33"), ("192.0.2.35", "35")]


def test_includes_globs_braces_relative_to_the_including_file() -> None:
    conf = read("includes/main.conf")
    assert conf.files == (
        str(CONFIGS / "includes/main.conf"),
        str(CONFIGS / "includes/conf.d/10-vrrp.conf"),  # sorted glob
        str(CONFIGS / "includes/conf.d/20-settings.conf"),
        str(CONFIGS / "includes/services/web.conf"),  # {web,mail}: brace order, not sorted
        str(CONFIGS / "includes/services/web-reals.inc"),  # ../services/... from services/web.conf
        str(CONFIGS / "includes/services/mail.conf"),
    )
    web, mail = servers(conf)
    assert [str(r.where).rsplit("/", 1)[1] for r in web.children("real_server")] == [
        "web-reals.inc:1", "web-reals.inc:4"]  # an include inside a block
    assert mail.where.file.endswith("includes/services/mail.conf")
    assert [g.child("router_id") is not None for g in conf.top("global_defs")] == [True, False]
    assert len(conf.global_defs()) == 2  # two global_defs blocks merge


def test_comments_quotes_and_braces_on_one_line() -> None:
    conf = read("comments_quotes.conf")
    assert conf.global_("router_id")[0].args == ("lb quoted",)  # global_defs { ... } on one line
    (inst,) = conf.top("vrrp_instance")
    assert inst.child("state").args[:2] == ("BACKUP", ";")  # ';' starts no comment in keepalived
    master = inst.child("notify_master")
    assert master.args == ("/usr/local/bin/kanotify --config '/etc/kanotify/kanotify.toml' master VI_Q",)
    words = split_script(master.text)
    assert words is not None and split_script(words[1]) == [
        "/usr/local/bin/kanotify", "--config", "/etc/kanotify/kanotify.toml", "master", "VI_Q"]
    backup = split_script(inst.child("notify_backup").text)
    assert backup is not None and split_script(backup[1]) == ["/usr/local/bin/kanotify", "backup", "#1", "VI_Q"]
    (vs,) = servers(conf)
    assert vs.child("lvs_sched").args == ("rr",)  # "virtual_server ... { lvs_sched rr"
    assert vs.child("protocol").args == ("TCP",)  # "TCP#comment"
    one, two = vs.children("real_server")
    assert one.child("weight").args == ("4",)  # "{ weight 4 }"
    assert two.child("weight").args == ("5",) and two.where.line == 15  # '{' on the next line


def test_legacy_keyword_aliases() -> None:
    conf = read("legacy.conf")
    (vs,) = servers(conf)
    assert vs.child("lvs_sched").keyword == "lb_algo" and vs.child("lvs_method").keyword == "lb_kind"
    assert conf.global_("lvs_flush_on_stop")[0].keyword == "lvs_flush_onstop"
    inst = conf.top("vrrp_instance")[0]
    assert inst.child("lvs_sync_daemon_interface").args == ("eth1",)


def test_every_virtual_server_form() -> None:
    forms = [vs.args for name in ("dr_basic.conf", "fwmark.conf", "group.conf") for vs in servers(read(name))]
    assert ("192.0.2.100", "80") in forms and ("fwmark", "5") in forms and ("group", "WEB") in forms
    (web, dns) = read("group.conf").top("virtual_server_group")
    assert [e.words for e in web.block or ()] == [
        ("192.0.2.100", "80"), ("192.0.2.101-102", "80"), ("192.0.2.100", "8080"), ("fwmark", "7")]
    assert [e.words for e in dns.block or ()] == [("2001:db8::53", "53"), ("2001:db8::54-55", "53")]


def test_errors_are_messages_with_file_and_line_never_exceptions() -> None:
    conf = read("errors.conf")
    texts = [(m.where.line if m.where else None, m.text.split(":")[0]) for m in conf.messages]
    # keepalived -t: "(Line 3) Unterminated quote", "(Line 5) Extra '}' found",
    # "(Line 6) Config files missing", "There are 2 missing '}'s"
    assert (3, "unterminated quote") in texts
    assert (5, "Extra '}' found") in texts
    assert (6, "include missing-file.conf") in texts
    assert (7, "missing '}' for the block of virtual_server opened here") in texts
    assert (9, "missing '}' for the block of real_server opened here") in texts
    (vs,) = servers(conf)  # what could be read is still there
    assert reals(vs) == [("192.0.2.21", "80")]


def test_a_missing_main_file_is_a_message() -> None:
    conf = read_config("/nonexistent/keepalived.conf", "x")
    assert not conf.readable and conf.statements == ()
    assert "No such file" in conf.messages[0].text


# --------------------------------------------------------------------------- the primitives


@pytest.mark.parametrize("line, words", [
    ('a b  c', ["a", "b", "c"]),
    ('notify "/x y" root', ["notify", "/x y", "root"]),
    ('a"b c"d', ["a", "b c", "d"]),  # keepalived splits at the quote
    ("a 'b c'", ["a", "'b", "c'"]),  # single quotes mean nothing to alloc_strvec
])
def test_split_words(line: str, words: list[str]) -> None:
    assert split_words(line) == (words, None)


def test_split_words_unmatched_quote() -> None:
    words, error = split_words('router_id "x')
    assert words == ["router_id"] and error and "unmatched" in error


@pytest.mark.parametrize("line, text", [
    ("  weight 1   # comment", "weight 1"),
    ("weight 1 ! comment", "weight 1"),
    ('path "/a#b" # c', 'path "/a#b"'),
    (r"path /a\#b", "path /a#b"),
    (r"x \!y", "x !y"),
    ("#only", ""),
])
def test_decomment(line: str, text: str) -> None:
    assert decomment(line)[0] == text


def test_split_script_escapes() -> None:
    assert split_script(r'a\tb "c d" \x41') == ["a\tb", "c d", "A"]
    assert split_script('"unclosed') is None


def test_braces_inside_quotes_are_not_blocks() -> None:
    conf = parse_text('global_defs {\n  router_id "a{b}"\n}\n', "q.conf")
    assert conf.global_("router_id")[0].args == ("a{b}",)


def test_definition_expanded_recursively_and_self_reference_is_bounded() -> None:
    conf = parse_text("$A=$B\n$B=$C\n$C=x\nrouter_id $A\n$LOOP=$LOOP\nloop $LOOP\n", "d.conf")
    assert [s.words for s in conf.statements] == [("router_id", "x"), ("loop", "$LOOP")]
    assert any("expand more than" in m.text for m in conf.messages)


def test_predefined_definitions(tmp_path: Path) -> None:
    conf_file = tmp_path / "k.conf"
    conf_file.write_text("a ${_INSTANCE}\nb $_PWD\nc ${_RANDOM 5 5}\nd x${_BANG}y\n")
    conf = read_config(str(conf_file), "node7")
    assert [s.words for s in conf.statements] == [
        ("a", "node7"), ("b", str(tmp_path)), ("c", "5"), ("d", "x")]  # "!" then starts a comment, as in keepalived


def test_lst_repeats_with_several_variables() -> None:
    conf = parse_text("~LST({IP, W}, {192.0.2.1, 3}, {192.0.2.2, 4}) real_server $IP 80 { weight $W }\n", "l.conf")
    assert [(s.args, s.child("weight").args) for s in conf.statements] == [
        (("192.0.2.1", "80"), ("3",)), (("192.0.2.2", "80"), ("4",))]


def test_conditional_include_and_include_from_a_definition(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.conf").write_text("from_a 1\n")
    (tmp_path / "b.conf").write_text("from_b 1\n")
    main = tmp_path / "main.conf"
    main.write_text("$D=sub\ninclude ${D}/a.conf\ninclude $D/a.conf\n@lb1 include b.conf\n")  # $D/ is no reference
    lb1 = read_config(str(main), "lb1")
    assert [s.keyword for s in lb1.statements] == ["from_a", "from_b"]
    assert any("$D/a.conf" in m.text for m in lb1.messages)  # keepalived: only ${D} works before a '/'
    assert [s.keyword for s in read_config(str(main), "lb2").statements] == ["from_a"]


def test_executable_or_directory_includes_are_skipped_like_keepalived(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.conf").write_text("ok 1\n")
    (tmp_path / "d" / "exec.conf").write_text("exec 1\n")
    os.chmod(tmp_path / "d" / "exec.conf", 0o755)
    (tmp_path / "d" / "dir.conf").mkdir()
    main = tmp_path / "main.conf"
    main.write_text("include d/*.conf\n")
    conf = read_config(str(main), "x")
    assert [s.keyword for s in conf.statements] == ["ok"]
    assert sum("keepalived skips it" in m.text for m in conf.messages) == 2


def test_include_loops_stop(tmp_path: Path) -> None:
    (tmp_path / "loop.conf").write_text("include loop.conf\n")
    conf = read_config(str(tmp_path / "loop.conf"), "x")
    assert any("nested more than" in m.text for m in conf.messages)

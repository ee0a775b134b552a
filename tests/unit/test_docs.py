"""The docs match the code: every command they show exists, every default in docs/config.md is the code's.

Commands are taken from the typer app, so a command added there is known here
without editing this file.  Defaults are observed the way an operator meets them:
by loading a file that leaves the key out.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import pytest
import typer.main

from kanotify.daemon import checks
from kanotify.config import schema as config_module
from kanotify.config import bgp as bgp_module
from kanotify.config import quorum as quorum_module
from kanotify.cli import app
from kanotify.options import lookup
from kanotify.config.schema import parse_config
from kanotify.config.values import Config, HookSettings, Settings
from kanotify.errors import ConfigError
from kanotify.model import State, SyncDaemonSpec

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_MD = ROOT / "docs" / "config.md"

# --------------------------------------------------------------------------- commands

#: ``kanotify`` where a shell would see the program: at the start, after a space, a quote or a path
_PROGRAM_RE = re.compile(r"(?:^|(?<=[\s\"'/]))kanotify(?=\s)")
_CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")
_WORD_RE = re.compile(r"[a-z][a-z0-9-]*(?:(?:\\?\||/)[a-z][a-z0-9-]*)*\Z")


def _commands() -> dict[str, list[str]]:
    """Every command of the typer app, with its option names."""
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    return {
        name: [opt for param in command.params for opt in getattr(param, "opts", ()) if opt.startswith("-")]
        for name, command in commands.items()
    }


def command_lines(text: str) -> list[tuple[int, str]]:
    """The command lines a document shows: code spans that start with the program (a path to
    it allowed), and lines of fenced code blocks (comments dropped)."""
    found: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            found.append((number, re.sub(r"(?:^|\s)#.*", "", line)))
            continue
        for span in _CODE_SPAN_RE.finditer(line):
            code = span.group(2).strip()
            if re.match(r"(?:\S*/)?kanotify\s", code):
                found.append((number, code))
    return found


def mentions(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line, command, options written after it)`` for every ``kanotify WORD`` shown as a command.

    Global options before the command are skipped (``kanotify --config X check``);
    alternatives count each (``kanotify master|backup``, ``kanotify master/backup``).
    """
    result = []
    for number, line in command_lines(text):
        for program in _PROGRAM_RE.finditer(line):
            words = line[program.end():].split()
            i = 0
            while i < len(words) and (hit := lookup(words[i])) is not None:
                option, value, _ = hit
                i += 2 if option.takes_value and value is None else 1
            if i >= len(words) or not _WORD_RE.match(words[i].rstrip("\"'`,.;:)")):
                continue  # `kanotify ...`, `kanotify --help`: no command named
            options = [w.strip("[]|").split("=")[0] for w in words[i + 1:]]
            for command in re.split(r"\\?\||/", words[i].rstrip("\"'`,.;:)")):
                result.append((number, command, [o for o in options if re.fullmatch(r"--?[a-z][a-z-]*", o)]))
    return result


def test_the_mention_finder_finds_what_it_should() -> None:
    text = (
        "Run `kanotify listen` or `/usr/bin/kanotify --config /x.toml sysctl --persist`.\n"
        "`kanotify master\\|backup [INSTANCE]` and `kanotify master/fault`; `another kanotify run held`.\n"
        "```\n$ kanotify check   # says kanotify lies\npip install /path/to/kanotify\n"
        'notify_master "/usr/local/bin/kanotify master VI_1"\n```\n'
        "kanotify manages things (prose, not a command).\n"
    )
    assert [(n, c) for n, c, _ in mentions(text)] == [
        (1, "listen"), (1, "sysctl"), (2, "master"), (2, "backup"), (2, "master"), (2, "fault"),
        (4, "check"), (6, "master"),
    ]
    assert mentions(text)[1][2] == ["--persist"]


def test_every_command_in_the_docs_exists() -> None:
    commands = _commands()
    assert {"master", "check", "reconcile"} <= set(commands)
    wrong = []
    seen = 0
    for doc in DOCS:
        for number, command, options in mentions(doc.read_text()):
            seen += 1
            where = f"{doc.relative_to(ROOT)}:{number}"
            if command not in commands:
                wrong.append(f"{where}: `kanotify {command}` is not a command ({', '.join(sorted(commands))})")
                continue
            for option in options:
                if option not in commands[command] and lookup(option) is None:
                    wrong.append(f"{where}: `kanotify {command} {option}`: no such option")
    assert not wrong, "\n".join(wrong)
    assert seen >= 40, f"only {seen} command mentions found: is the finder still finding them?"


# --------------------------------------------------------------------------- defaults


def config_tables() -> dict[str, dict[str, str]]:
    """``{"[settings]": {"state_dir": '`"/run/kanotify"`', ...}, ...}`` from docs/config.md's key tables."""
    tables: dict[str, dict[str, str]] = {}
    section = None
    columns: list[str] = []
    fenced = False
    for line in CONFIG_MD.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        if line.startswith("#"):
            heading = re.match(r"## `([^`]+)`", line)
            section, columns = (heading.group(1) if heading else None), []
            continue
        if section is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not columns:
            columns = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: ") or "key" not in columns or "default" not in columns:
            continue
        key = cells[columns.index("key")].strip("`")
        if not key.startswith("*"):  # "*anything else*": the plugin's own options
            tables.setdefault(section, {})[key] = cells[columns.index("default")]
    return tables


def documented_literal(cell: str) -> Any:
    """The TOML value a default cell starts with (```"wlc"` (as ipvsadm)`` -> ``"wlc"``)."""
    match = re.match(r"`([^`]+)`", cell)
    assert match, f"default {cell!r} does not start with a `value`"
    return tomllib.loads(f"v = {match.group(1)}")["v"]


BASE = '[[instance]]\nname = "VI_1"\n'
SERVICE = BASE + '[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.100"\nport = 80\n'
REAL = SERVICE + '[[instance.service.real]]\naddress = "192.0.2.21"\n'
FWMARK = BASE + '[[instance.service]]\nfwmark = 5\n[[instance.service.real]]\naddress = "192.0.2.21"\n'
VIP_ETH0 = BASE + '[[instance.vip]]\naddress = "192.0.2.1"\ndev = "eth0"\n'
VIP_LO = BASE + '[[instance.vip]]\naddress = "192.0.2.1"\ndev = "lo"\n'
HOOK = BASE + "[hooks.x]\n"
CHECKED = SERVICE + '[instance.service.check]\ntype = "http"\n[[instance.service.real]]\naddress = "192.0.2.21"\n'


def _check(text: str = CHECKED) -> Any:
    spec = _first(text).instances[0].services[0]
    return spec.check_for(spec.reals[0].key)
SYNC = BASE + '[sync_daemon]\ninterface = "eth0"\n'
BGP = BASE + '[bgp]\ninterface = "kav0"\n'


def _states(states: frozenset[State]) -> list[str]:
    return sorted(s.value for s in states)


def _first(text: str) -> Config:
    return parse_config(text)


SORRY = SERVICE + '[instance.service.sorry_server]\naddress = "192.0.2.99"\n'


def _sorry() -> Any:
    return _first(SORRY).instances[0].services[0].quorum.sorry


def _sync() -> SyncDaemonSpec:
    spec = _first(SYNC).sync_daemon
    assert spec is not None
    return spec


#: (table, key) -> the code's default, as loading a file without the key shows it
OBSERVED: dict[tuple[str, str], Callable[[], Any]] = {
    ("[[instance]]", "vip"): lambda: list(_first(BASE).instances[0].vips),
    ("[[instance]]", "service"): lambda: list(_first(BASE).instances[0].services),
    ("[[instance.vip]]", "states"): lambda: _states(_first(VIP_ETH0).instances[0].vips[0].states),
    ("[[instance.service]]", "family"): lambda: {4: "inet", 6: "inet6"}[
        _first(FWMARK).instances[0].services[0].service.key.family],
    ("[[instance.service]]", "scheduler"): lambda: _first(SERVICE).instances[0].services[0].service.scheduler,
    ("[[instance.service]]", "persistence"): lambda: _first(SERVICE).instances[0].services[0].service.persistence,
    ("[[instance.service]]", "flags"): lambda: sorted(_first(SERVICE).instances[0].services[0].service.flags),
    ("[[instance.service]]", "states"): lambda: _states(_first(SERVICE).instances[0].services[0].states),
    ("[[instance.service]]", "real"): lambda: list(_first(SERVICE).instances[0].services[0].reals),
    ("[[instance.service]]", "quorum"): lambda: _first(SERVICE).instances[0].services[0].quorum_rule.quorum,
    ("[[instance.service]]", "hysteresis"): lambda: _first(SERVICE).instances[0].services[0].quorum_rule.hysteresis,
    ("[instance.service.sorry_server]", "forward"): lambda: _sorry().forward,
    ("[instance.service.sorry_server]", "weight"): lambda: _sorry().weight,
    ("[instance.service.sorry_server]", "inhibit"): lambda: _first(SORRY).instances[0].services[0].quorum.sorry_inhibit,
    ("[[instance.service.real]]", "forward"): lambda: _first(REAL).instances[0].services[0].reals[0].forward,
    ("[[instance.service.real]]", "weight"): lambda: _first(REAL).instances[0].services[0].reals[0].weight,
    ("[[instance.service.real]]", "drain"): lambda: _first(REAL).instances[0].services[0].add_weights != (),
    ("[[instance.service.real]]", "upper_threshold"):
        lambda: _first(REAL).instances[0].services[0].reals[0].u_threshold,
    ("[[instance.service.real]]", "lower_threshold"):
        lambda: _first(REAL).instances[0].services[0].reals[0].l_threshold,
    ("[[instance.service.real]]", "tun_type"):
        lambda: _first(REAL + 'forward = "tun"\n').instances[0].services[0].reals[0].tun_type,
    ("[[instance.service.real]]", "tun_flags"):
        lambda: _first(REAL + 'forward = "tun"\ntun_type = "gre"\n').instances[0].services[0].reals[0].tun_flags,
    ("[instance.service.check]", "path"): lambda: _check().path,
    ("[instance.service.check]", "interval"): lambda: _check().interval,
    ("[instance.service.check]", "timeout"): lambda: _check().timeout,
    ("[instance.service.check]", "retry"): lambda: _check().retry,
    ("[instance.service.check]", "retry_delay"): lambda: _check().retry_delay,
    ("[instance.service.check]", "on_failure"): lambda: _check().on_failure,
    ("[instance.service.check]", "verify"): lambda: _check().verify,
    ("[instance.service.check]", "initial"): lambda: _check().initial,
    ("[instance.service.check]", "dns_type"): lambda: _check().dns_type,
    ("[instance.service.check]", "helo_name"): lambda: _check().helo_name,
    ("[instance.service.check]", "weight"): lambda: _check().weight,
    ("[instance.service.check]", "reverse"): lambda: _check().reverse,
    ("[instance.service.check]", "dynamic"): lambda: _check().dynamic,
    ("[bgp]", "daemon"): lambda: _first(BGP).bgp.daemon,  # type: ignore[union-attr]
    ("[sync_daemon]", "mode"): lambda: _sync().mode,
    ("[sync_daemon]", "sync_id"): lambda: _sync().sync_id,
    ("[sync_daemon]", "group"): lambda: str(_sync().group),
    ("[sync_daemon]", "port"): lambda: _sync().port,
    ("[sync_daemon]", "ttl"): lambda: _sync().ttl,
    ("[hooks.NAME]", "enabled"): lambda: _first(HOOK).hooks["x"].enabled,
    ("[hooks.NAME]", "required"): lambda: _first(HOOK).hooks["x"].required,
}


def _setting(name: str) -> Callable[[], Any]:
    return lambda: getattr(_first(BASE).settings, name)


OBSERVED.update({("[settings]", f.name): _setting(f.name) for f in fields(Settings)})


def _required(text: str, path: str) -> bool:
    """Does leaving the key out of ``text`` give a "missing required key" problem at ``path``?"""
    try:
        parse_config(text)
    except ConfigError as exc:
        return any(p.path == path and "missing required key" in p.message for p in exc.problems)
    return False


#: defaults written as words, each with the check that the code does what they say
PROSE: dict[tuple[str, str], tuple[str, Callable[[], bool]]] = {
    ("[[instance]]", "name"): ("—", lambda: _required("[[instance]]\n", "instance[0].name")),
    ("[[instance.vip]]", "address"): ("—", lambda: _required(BASE + '[[instance.vip]]\ndev = "lo"\n',
                                                             "instance[0].vip[0].address")),
    ("[[instance.vip]]", "dev"): ("—", lambda: _required(BASE + '[[instance.vip]]\naddress = "192.0.2.1"\n',
                                                         "instance[0].vip[0].dev")),
    ("[[instance.vip]]", "label"): ("none (the kernel uses `dev`)",
                                    lambda: _first(VIP_ETH0).instances[0].vips[0].vip.label is None),
    ("[[instance.vip]]", "garp"): ("`true`, except on `lo`", lambda: (
        _first(VIP_ETH0).instances[0].vips[0].garp is True and _first(VIP_LO).instances[0].vips[0].garp is False)),
    ("[[instance.service]]", "protocol"): ("required unless `fwmark`", lambda: _required(
        BASE + '[[instance.service]]\naddress = "192.0.2.1"\nport = 80\n', "instance[0].service[0].protocol")),
    ("[[instance.service]]", "address"): ("required unless `fwmark`", lambda: _required(
        BASE + '[[instance.service]]\nprotocol = "tcp"\nport = 80\n', "instance[0].service[0].address")),
    ("[[instance.service]]", "port"): ("required unless `fwmark`", lambda: _required(
        BASE + '[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.1"\n', "instance[0].service[0].port")),
    ("[[instance.service]]", "fwmark"): ("—", lambda: (
        not _first(SERVICE).instances[0].services[0].service.key.is_fwmark)),
    ("[[instance.service]]", "persistence_netmask"): ("per client (32 / 128)", lambda: (
        _first(SERVICE + "persistence = 60\n").instances[0].services[0].service.effective_netmask == 32)),
    ("[[instance.service.real]]", "address"): ("—", lambda: _required(
        SERVICE + "[[instance.service.real]]\nport = 80\n", "instance[0].service[0].real[0].address")),
    ("[[instance.service.real]]", "port"): ("the service's port (0 for fwmark services)", lambda: (
        _first(REAL).instances[0].services[0].reals[0].port == 80
        and _first(FWMARK).instances[0].services[0].reals[0].port == 0)),
    ("[[instance.service.real]]", "tun_port"): ("none", lambda: (
        _first(REAL + 'forward = "tun"\n').instances[0].services[0].reals[0].tun_port == 0
        and _required(REAL + 'forward = "tun"\ntun_type = "gue"\n', "instance[0].service[0].real[0].tun_port"))),
    ("[[group]]", "name"): ("—", lambda: _required(BASE + '[[group]]\ninstances = ["VI_1"]\n', "group[0].name")),
    ("[[group]]", "instances"): ("—", lambda: _required(BASE + '[[group]]\nname = "G"\n', "group[0].instances")),
    ("[hooks.NAME]", "timeout"): ("`settings.hook_timeout`", lambda: _first(HOOK).hooks["x"].timeout is None),
    ("[[instance.service]]", "check"): ("none", lambda: _first(REAL).instances[0].services[0].checks == ()),
    ("[[instance.service.real]]", "check"): ("the service's `check`", lambda: _check() is not None),
    ("[instance.service.sorry_server]", "port"): ("the service's port", lambda: _sorry().port == 80),
    ("[[instance.service]]", "quorum_withdraw"): (
        "true when `quorum` is given and there is no `sorry_server`",
        lambda: _first(SERVICE.replace("port = 80\n", "port = 80\nquorum = 2\n")).instances[0].services[0].quorum.withdraw
        and _first(SORRY.replace("port = 80\n", "port = 80\nquorum = 2\n")).instances[0].services[0].quorum.withdraw
        is False and _first(SERVICE).instances[0].services[0].quorum_rule.withdraw is False),
    ("[[instance.service]]", "sorry_server"): ("none", lambda: _first(REAL).instances[0].services[0].quorum is None),
    ("[instance.service.sorry_server]", "address"): ("—", lambda: _required(
        SERVICE + "[instance.service.sorry_server]\n", "instance[0].service[0].sorry_server.address")),
    ("[instance.service.check]", "type"): ("—", lambda: _required(
        SERVICE + "[instance.service.check]\ninterval = 2\n[[instance.service.real]]\naddress = \"192.0.2.21\"\n",
        "instance[0].service[0].check.type")),
    ("[instance.service.check]", "port"): ("the real server's port", lambda: _check().port == 0),
    ("[instance.service.check]", "status"): ("200..299", lambda: (
        _check().accepts(200) and _check().accepts(299) and not _check().accepts(300))),
    ("[instance.service.check]", "host"): ("the real server's address", lambda: _check().host is None),
    ("[instance.service.check]", "command"): ("—", lambda: _check().command == ()),
    ("[instance.service.check]", "address"): ("the real server's address", lambda: _check().address is None),
    ("[instance.service.check]", "source"): ("the kernel's choice", lambda: _check().source is None),
    ("[instance.service.check]", "source_port"): ("the kernel's choice", lambda: _check().source_port == 0),
    ("[instance.service.check]", "digest"): ("none", lambda: _check().digest is None),
    ("[instance.service.check]", "dns_name"): ('`"."` (the root)', lambda: _check().dns_name == ""),
    ("[instance.service.check]", "payload"): ("keepalived's 32 bytes `keepalived check - ...`", lambda: (
        _check().payload == b"" and checks.DEFAULT_UDP_PAYLOAD == b"keepalived check - keepalived ch")),
    ("[instance.service.check]", "require_reply"): ("`false` (`true` with `reply`)", lambda: (
        _check().require_reply is False and _first(SERVICE + '[instance.service.check]\ntype = "udp"\nreply = "01"\n'
                                                   '[[instance.service.real]]\naddress = "192.0.2.21"\n')
        .instances[0].services[0].checks[0][1].require_reply is True)),
    ("[instance.service.check]", "reply"): ("none", lambda: _check().reply == b""),
    ("[instance.service.check]", "file"): ("—", lambda: _check().file == ""),
    ("[sync_daemon]", "interface"): ("—", lambda: _required(BASE + "[sync_daemon]\n", "sync_daemon.interface")),
    ("[sync_daemon]", "instance"): ("the only `[[instance]]`", lambda: (
        _sync().instance == "VI_1"
        and _required(SYNC + '[[instance]]\nname = "VI_2"\n', "sync_daemon.instance"))),
    ("[sync_daemon]", "maxlen"): ("the kernel's (from the MTU)", lambda: _sync().maxlen is None),
    ("[bgp]", "interface"): ("—", lambda: _required(BASE + '[bgp]\ndaemon = "bird"\n', "bgp.interface")),
    ("[bgp]", "control"): ("the daemon's default", lambda: _first(BGP).bgp.control is None),  # type: ignore[union-attr]
    ("[settings]", "metrics"): ("none (off)", lambda: _first(BASE).settings.metrics is None),
}

#: the keys each table of docs/config.md documents must be exactly the keys the code reads
CODE_KEYS = {
    "[settings]": config_module._SETTINGS_KEYS,
    "[[instance]]": config_module._INSTANCE_KEYS,
    "[[instance.vip]]": config_module._VIP_KEYS,
    "[[instance.service]]": config_module._SERVICE_KEYS,
    "[[instance.service.real]]": config_module._REAL_KEYS,
    "[instance.service.check]": config_module._CHECK_KEYS,
    "[instance.service.sorry_server]": quorum_module._SORRY_KEYS,
    "[[group]]": config_module._GROUP_KEYS,
    "[sync_daemon]": config_module._SYNC_DAEMON_KEYS,
    "[bgp]": bgp_module._BGP_KEYS,
    "[hooks.NAME]": config_module._HOOK_RESERVED,
}


def test_config_md_documents_exactly_the_keys_the_code_reads() -> None:
    tables = config_tables()
    assert set(tables) == set(CODE_KEYS), "a table of docs/config.md without a key list here, or the other way"
    for section, keys in CODE_KEYS.items():
        assert list(tables[section]) == list(keys), section
    assert config_module._HOOK_RESERVED == tuple(f.name for f in fields(HookSettings) if f.name != "options")


DEFAULT_CELLS = [(section, key, cell) for section, rows in config_tables().items() for key, cell in rows.items()]


@pytest.mark.parametrize(("section", "key", "cell"), DEFAULT_CELLS, ids=[f"{s}.{k}" for s, k, _ in DEFAULT_CELLS])
def test_every_default_in_config_md_is_the_codes(section: str, key: str, cell: str) -> None:
    if (section, key) in PROSE:
        words, holds = PROSE[section, key]
        assert cell == words, f"docs/config.md changed the words of this default: update PROSE ({cell!r})"
        assert holds(), f"{section} {key}: the code does not do what docs/config.md says: {cell}"
        return
    assert (section, key) in OBSERVED, f"{section} {key}: no way to observe the code's default ({cell!r})"
    documented = documented_literal(cell)
    actual = OBSERVED[section, key]()
    assert actual == documented and type(actual) in (type(documented), float), (section, key, cell, actual)


def test_every_settings_default_is_documented_as_the_dataclass_declares_it() -> None:
    documented = config_tables()["[settings]"]
    for f in fields(Settings):
        if ("[settings]", f.name) in PROSE:
            continue  # no TOML literal for "unset": checked by its PROSE entry
        assert documented_literal(documented[f.name]) == f.default, f.name


def test_readme_settings_example_shows_the_defaults() -> None:
    """README.md's ``[settings]  # every key optional`` block lists defaults: they must be the code's."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```toml\n(\[settings\]\s+# every key optional\n.*?)```", text, re.S)
    assert block, "README.md no longer has its [settings] example"
    shown = tomllib.loads(block.group(1))["settings"]
    assert shown and all(getattr(Settings(), key) == value for key, value in shown.items()), shown

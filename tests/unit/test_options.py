"""The one table of global options (kanotify/options.py) and every parser that reads it.

Today a new option added to typer but not to the hand-written parsers would
silently cost a STOP notification its detached worker (its value taken for the
command); these tests make the table and typer's options one set.
"""

from __future__ import annotations

import dataclasses

import pytest
import typer
import typer.core

from kanotify.__main__ import _is_stop_notification
from kanotify.cli import app
from kanotify.commands import Globals, split_fast
from kanotify.options import GLOBAL_OPTIONS, command_words, hoist, lookup


def _typer_options() -> dict[str, typer.core.TyperOption]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.params if isinstance(p, typer.core.TyperOption) and p.name is not None}


def test_the_table_and_typers_global_options_are_the_same_set() -> None:
    typer_options = _typer_options()
    # --version is typer's alone, like --help: eager, it ends the run before any command or global option counts
    assert typer_options.pop("_version").opts == ["--version"]
    assert set(typer_options) == {o.dest for o in GLOBAL_OPTIONS}
    for option in GLOBAL_OPTIONS:
        found = typer_options[option.dest]
        assert tuple(found.opts + found.secondary_opts) == option.names, option
        assert (not found.is_flag and not found.count) == option.takes_value, option
        assert bool(found.count) == option.count, option
        assert found.hidden == option.hidden, option


def test_globals_has_one_field_per_table_entry() -> None:
    assert [f.name for f in dataclasses.fields(Globals)] == [o.dest for o in GLOBAL_OPTIONS]


def _sample(option) -> list[str]:  # type: ignore[no-untyped-def]
    return [option.names[0], "/tmp/x.toml"] if option.takes_value else [option.names[0]]


@pytest.mark.parametrize("option", GLOBAL_OPTIONS, ids=[o.dest for o in GLOBAL_OPTIONS])
def test_stop_detection_skips_every_options_value(option) -> None:  # type: ignore[no-untyped-def]
    assert _is_stop_notification([*_sample(option), "stop", "VI_1"])
    assert _is_stop_notification(["stop", "VI_1", *_sample(option)])
    assert _is_stop_notification([*_sample(option), "notify", "INSTANCE", "VI_1", "STOP", "100"])
    assert not _is_stop_notification([*_sample(option), "master", "VI_1"])


def test_a_value_that_looks_like_a_command_is_still_the_options_value() -> None:
    assert not _is_stop_notification(["--config", "stop", "master", "VI_1"])
    assert _is_stop_notification(["--config=stop.toml", "stop"])
    assert command_words(["--config", "stop", "master", "VI_1", "-vv"]) == ["master", "VI_1"]


@pytest.mark.parametrize("option", GLOBAL_OPTIONS, ids=[o.dest for o in GLOBAL_OPTIONS])
def test_the_fast_path_parses_every_option_as_typer_does(option) -> None:  # type: ignore[no-untyped-def]
    argv = ["master", "VI_1", *_sample(option)]
    parsed = split_fast(argv)
    assert parsed is not None, argv
    fast, words = parsed
    assert words == ["master", "VI_1"]
    group = typer.main.get_command(app)
    ctx = group.make_context("kanotify", hoist(argv), resilient_parsing=True)
    assert dataclasses.asdict(fast) == {k: ctx.params[k] for k in dataclasses.asdict(fast)}


def test_hoist_moves_options_after_the_command_in_front() -> None:
    assert hoist(["master", "VI_1", "--dry-run", "--config", "x.toml"]) == [
        "--dry-run", "--config", "x.toml", "master", "VI_1"]
    assert hoist(["plan", "--config=x", "--json", "-vv"]) == ["--config=x", "--json", "-vv", "plan"]
    assert hoist(["master", "--", "--json"]) == ["master", "--", "--json"]
    assert hoist(["master", "--config"]) == ["master", "--config"]  # no value: typer explains


def test_lookup_counts_repeated_short_flags_and_refuses_values_for_flags() -> None:
    hit = lookup("-vvv")
    assert hit is not None and hit[0].dest == "verbose" and hit[2] == 3
    assert lookup("--dry-run=yes") is None
    assert lookup("--conf") is None


@pytest.mark.parametrize(("command", "fast"), [("reconcile", "_RECONCILE_OPTIONS"), ("metrics", "_METRICS_OPTIONS")])
def test_the_fast_path_knows_the_same_options_of_its_commands_as_typer(command: str, fast: str) -> None:
    """A command the typer-free path runs must understand every option typer gives it, or a new one
    would be read as a word there (and typer would never see it)."""
    from kanotify import commands

    group = typer.main.get_command(app)
    found = group.commands[command]  # type: ignore[attr-defined]
    typer_options = {opt for p in found.params for opt in getattr(p, "opts", ()) if opt.startswith("--")}
    assert typer_options == set(getattr(commands, fast))
    parsed = split_fast([command])
    assert parsed is not None and parsed[1][0] == command

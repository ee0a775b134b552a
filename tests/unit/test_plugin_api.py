"""The plugin author's view: one module (kanotify.plugin), typed, enough for a whole plugin and its test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import kanotify.plugin as api
from kanotify.plugin import KanotifyEnv, load_plugin

ROOT = Path(__file__).resolve().parents[2]

#: the shortest useful plugin, exactly as docs/hooks.md shows it
PLUGIN = '''
from kanotify.plugin import HookAction, Options, RunContext, State, command_action


def kanotify_before_transition(ctx: RunContext, options: Options) -> list[HookAction]:
    if ctx.to_state is State.MASTER:
        return [command_action("haproxy_reload", ["systemctl", "reload", "haproxy.service"])]
    return []
'''

#: and its test, typed too
PLUGIN_TEST = '''
from kanotify.plugin import KanotifyEnv, load_plugin

plugin = load_plugin("haproxy_reload.py")


def test_reload_on_master(kanotify_env: KanotifyEnv) -> None:
    env = kanotify_env.engine(plugins=[("haproxy_reload", plugin)])
    env.plan("master")
    assert "[haproxy_reload] systemctl reload haproxy.service" in env.actions()
    env.plan("backup")
    assert not any(a.startswith("[haproxy_reload]") for a in env.actions())
'''


#: strict for the plugin and its test; kanotify itself is checked by its own configuration
MYPY_INI = """\
[mypy]
warn_unused_ignores = True
[mypy-kanotify.*]
follow_imports = silent
[mypy-haproxy_reload,test_haproxy_reload]
disallow_any_explicit = True
disallow_any_generics = True
disallow_untyped_defs = True
disallow_incomplete_defs = True
disallow_untyped_calls = True
warn_return_any = True
"""


def test_the_public_module_has_what_a_plugin_needs() -> None:
    for name in ("hookimpl", "RunContext", "RunResult", "ActionResult", "HookAction", "Noop", "Options",
                 "State", "HookProblem", "ApplyError", "command_action", "remaining_time", "watched_instance",
                 "dry_run_safe", "make_engine", "make_context", "make_config", "load_plugin", "KanotifyEnv"):
        assert name in api.__all__ and hasattr(api, name), name


def test_the_shortest_plugin_works(kanotify_env: KanotifyEnv, tmp_path: Path) -> None:
    path = tmp_path / "haproxy_reload.py"
    path.write_text(PLUGIN)
    plugin = load_plugin(path)
    env = kanotify_env.engine(plugins=[("haproxy_reload", plugin)])
    assert env.plan("master").outcome == "converged"
    assert "[haproxy_reload] systemctl reload haproxy.service" in env.actions()
    assert env.statuses()["[haproxy_reload] systemctl reload haproxy.service"] == "pending"


def test_the_plugin_and_its_test_type_check_without_any(tmp_path: Path) -> None:
    (tmp_path / "haproxy_reload.py").write_text(PLUGIN)
    (tmp_path / "test_haproxy_reload.py").write_text(PLUGIN_TEST)
    (tmp_path / "mypy.ini").write_text(MYPY_INI)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--config-file", "mypy.ini",
         "haproxy_reload.py", "test_haproxy_reload.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # an editable install is invisible to mypy
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_plugins_test_passes_under_pytest(tmp_path: Path) -> None:
    (tmp_path / "haproxy_reload.py").write_text(PLUGIN)
    (tmp_path / "test_haproxy_reload.py").write_text(textwrap.dedent(PLUGIN_TEST))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_haproxy_reload.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

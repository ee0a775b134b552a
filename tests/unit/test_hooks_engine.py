"""Hooks inside real runs: order, isolation, time bounds, required hooks, security, `kanotify plan`."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from kanotify.actions import HookAction
from kanotify.hooks import dry_run_safe, hookimpl
from kanotify.testing import make_config, make_engine

VIP = "bind 192.0.2.100/24 dev eth0"
NOBODY = 65534
KANOTIFY = str(Path(sys.executable).with_name("kanotify"))


class Tracer:
    """Records every hook call, and what the backend looked like at that moment."""

    kanotify_name = "tracer"

    def __init__(self, backend_of) -> None:
        self.events: list[str] = []
        self.backend_of = backend_of

    def _bound(self) -> str:
        return "bound" if self.backend_of().addresses else "unbound"

    def kanotify_before_transition(self, ctx):
        self.events.append(f"before({self._bound()}, plan={len(ctx.plan)})")
        return [HookAction(plugin="tracer", description="step", run=lambda: self.events.append(f"run({self._bound()})"))]

    def kanotify_action_failed(self, ctx, action, error):
        self.events.append(f"failed({action}, errno={getattr(error, 'errno', None)})")

    def kanotify_after_transition(self, ctx, result):
        self.events.append(f"after({self._bound()}, {result.outcome})")


def tracer_env(kanotify_env, **kwargs):
    box = {}
    tracer = Tracer(lambda: box["env"].backend)
    env = kanotify_env.engine(plugins=[tracer], **kwargs)
    box["env"] = env
    return env, tracer


def test_order_before_apply_hook_actions_after(kanotify_env):
    env, tracer = tracer_env(kanotify_env)
    result = env.transition("VI_1", "master")
    assert result.outcome == "converged" and result.exit_code == 0
    plan_size = len(result.plan) - 1
    assert tracer.events == [f"before(unbound, plan={plan_size})", "run(bound)", "after(bound, converged)"]
    assert env.actions()[-1] == "[tracer] step"  # hook actions come after the built-in ones
    assert env.journal[-1]["actions"][-1] == {"action": "[tracer] step", "status": "applied"}


def test_action_failed_is_called_for_an_injected_failure(kanotify_env):
    env, tracer = tracer_env(kanotify_env)
    env.backend.fail[VIP] = errno.ENODEV
    result = env.transition("VI_1", "master")
    assert f"failed({VIP}, errno={errno.ENODEV})" in tracer.events
    assert tracer.events.index(f"failed({VIP}, errno={errno.ENODEV})") < tracer.events.index("after(unbound, failed)")
    assert result.exit_code == 1


def test_dry_run_calls_before_but_not_after_and_never_runs_hook_actions(kanotify_env):
    env, tracer = tracer_env(kanotify_env)
    result = env.transition("VI_1", "master", dry_run=True)
    assert [e.split("(")[0] for e in tracer.events] == ["before"]
    assert env.statuses(result)["[tracer] step"] == "pending"
    assert env.backend.writes == []


def test_after_transition_marked_dry_run_safe_is_called_in_a_dry_run_too(kanotify_env):
    seen: list[bool] = []

    class Observer:
        kanotify_name = "observer"

        @dry_run_safe
        def kanotify_after_transition(self, ctx):
            seen.append(ctx.dry_run)

    env = kanotify_env.engine(plugins=[Observer()])
    env.transition("VI_1", "master", dry_run=True)
    env.transition("VI_1", "master")
    assert seen == [True, False]


def test_a_raising_hook_does_not_stop_convergence_and_the_journal_says_who_and_why(kanotify_env):
    class Broken:
        kanotify_name = "broken"

        def kanotify_before_transition(self, ctx):
            raise RuntimeError("cannot parse options")

    env = kanotify_env.engine(plugins=[Broken()])
    result = env.transition("VI_1", "master")
    assert result.verify == []
    assert env.backend.addresses and env.backend.services  # VIP bound, IPVS loaded
    assert all(r.status in ("applied", "noop") for r in result.results)
    assert result.exit_code == 1 and result.outcome == "failed"
    [problem] = env.journal[-1]["hooks"]
    assert (problem["hook"], problem["call"], problem["error"], problem["required"]) == (
        "broken", "before_transition", "RuntimeError: cannot parse options", False
    )
    assert "Traceback" in problem["traceback"]


def test_a_raising_after_hook_is_journaled_and_fails_the_run(kanotify_env):
    class Broken:
        kanotify_name = "broken"

        def kanotify_after_transition(self, ctx, result):
            raise OSError(28, "No space left on device")

    env = kanotify_env.engine(plugins=[Broken()])
    result = env.transition("VI_1", "master")
    assert env.backend.addresses
    assert result.exit_code == 1
    record = env.journal[-1]
    assert record["outcome"] == "failed"
    assert record["hooks"][0]["call"] == "after_transition"
    assert "No space left on device" in record["hooks"][0]["error"]


def test_a_hook_over_its_time_bound(kanotify_env):
    release = threading.Event()

    class Slow:
        kanotify_name = "slow"

        def kanotify_before_transition(self, ctx):
            release.wait(5)

        def kanotify_after_transition(self, ctx, result):
            release.wait(5)

    env = kanotify_env.engine(plugins=[Slow()], hooks={"slow": {"timeout": 0.2}})
    try:
        result = env.transition("VI_1", "master")
    finally:
        release.set()
    assert env.backend.addresses  # converged regardless
    problems = env.journal[-1]["hooks"]
    assert [(p["call"], p["error"], p["timeout"]) for p in problems] == [
        ("before_transition", "timed out after 0.2s", True),
        ("after_transition", "timed out after 0.2s", True),
    ]
    assert result.exit_code == 1


def test_a_hook_action_over_its_time_bound(kanotify_env):
    release = threading.Event()

    class Slow:
        kanotify_name = "slow"

        def kanotify_before_transition(self, ctx):
            return [HookAction(plugin="slow", description="flush", run=lambda: release.wait(5))]

    env = kanotify_env.engine(plugins=[Slow()], hooks={"slow": {"timeout": 0.2}})
    try:
        result = env.transition("VI_1", "master")
    finally:
        release.set()
    assert env.statuses(result)["[slow] flush"] == "failed"
    assert [r.error for r in result.results if r.status == "failed"] == ["[slow] flush: timed out after 0.2s"]
    assert env.journal[-1]["hooks"][0]["timeout"] is True
    assert env.backend.addresses


def test_a_required_hook_failing_aborts_the_apply(kanotify_env):
    class Vital:
        kanotify_name = "vital"

        def kanotify_before_transition(self, ctx):
            raise RuntimeError("license server unreachable")

    env = kanotify_env.engine(plugins=[Vital()], hooks={"vital": {"required": True}})
    result = env.transition("VI_1", "master")
    assert env.backend.writes == [] and not env.backend.addresses
    assert result.outcome == "failed" and result.exit_code == 1
    assert {r.status for r in result.results} <= {"skipped", "noop"}
    skipped = [r for r in result.results if r.status == "skipped"]
    assert skipped and all("required hook failed" in r.error for r in skipped)
    record = env.journal[-1]
    assert record["hooks"][0]["required"] is True
    assert any("vital: before_transition: RuntimeError: license server unreachable" in w for w in record["warnings"])


def test_a_required_hook_that_succeeds_lets_the_run_converge(kanotify_env):
    env, tracer = tracer_env(kanotify_env, hooks={"tracer": {"required": True}})
    assert env.transition("VI_1", "master").outcome == "converged"


def test_a_hook_file_that_fails_to_import_is_reported_and_the_transition_runs(kanotify_env):
    hooks_dir = Path(kanotify_env.hooks_dir)
    hooks_dir.mkdir()
    (hooks_dir / "broken.py").write_text("import kanotify_no_such_module\n")
    env = make_engine(kanotify_env.config(), discover=True)
    result = env.transition("VI_1", "master")
    assert env.backend.addresses
    [problem] = result.record["hooks"]
    assert problem["hook"] == "broken" and problem["call"] == "load"
    assert "ModuleNotFoundError: No module named 'kanotify_no_such_module'" in problem["error"]
    assert result.exit_code == 1


MARKER_PLUGIN = """
    from kanotify.hooks import command_action

    def kanotify_before_transition(ctx, options):
        return [command_action("marker", ["touch", options["path"]])]
"""


def _hooks_config(tmp_path: Path, plugin: str = MARKER_PLUGIN) -> tuple[Path, Path]:
    """A config whose plan the host cannot change: no VIP, no service, no sysctl; one plugin."""
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    (hooks_dir / "marker.py").write_text(textwrap.dedent(plugin))
    (hooks_dir / "marker.py").chmod(0o644)
    marker = tmp_path / "marker"
    config = tmp_path / "kanotify.toml"
    config.write_text(textwrap.dedent(f"""
        [settings]
        state_dir = "{tmp_path}/state"
        journal = "{tmp_path}/journal.jsonl"
        hooks_dir = "{hooks_dir}"
        syslog = false

        [[instance]]
        name = "VI_1"

        [hooks.marker]
        path = "{marker}"
    """))
    config.chmod(0o644)
    return config, marker


def _kanotify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KANOTIFY, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KANOTIFY_NO_DETACH": "1"})


def test_a_hook_action_shows_up_in_kanotify_plan_and_is_not_run(tmp_path):
    config, marker = _hooks_config(tmp_path)
    done = _kanotify("--config", str(config), "plan", "--state", "master")
    assert done.returncode == 0, done.stderr
    assert f"+ [marker] touch {marker}" in done.stdout.splitlines()
    assert "dry-run: 1 change(s) pending, nothing changed" in done.stdout
    assert not marker.exists()
    done = _kanotify("--config", str(config), "--json", "plan", "--detailed-exitcode")
    assert done.returncode == 2  # the hook's step is a pending change
    record = json.loads(done.stdout)
    assert record["dry_run"] is True
    assert {"action": f"[marker] touch {marker}", "status": "pending"} in record["actions"]
    assert not marker.exists()


def test_a_hook_action_runs_in_a_real_notification(tmp_path):
    config, marker = _hooks_config(tmp_path)
    done = _kanotify("--config", str(config), "--dry-run", "master", "VI_1")
    assert done.returncode == 0 and not marker.exists()
    done = _kanotify("--config", str(config), "master", "VI_1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.exists()
    last = json.loads((tmp_path / "journal.jsonl").read_text().splitlines()[-1])
    assert {"action": f"[marker] touch {marker}", "status": "applied"} in last["actions"]


@pytest.mark.parametrize("how", ["group-writable dir", "file owned by nobody"])
def test_an_insecure_hooks_dir_is_refused_by_the_cli(tmp_path, how):
    config, marker = _hooks_config(tmp_path, plugin="""
        import pathlib
        pathlib.Path(__file__).with_name("imported").touch()
        def kanotify_before_transition(ctx):
            pass
    """)
    hooks_dir = tmp_path / "hooks.d"
    if how == "group-writable dir":
        hooks_dir.chmod(0o775)
        reason = f"{hooks_dir} is writable by group or others (mode 0775)"
    else:
        os.chown(hooks_dir / "marker.py", NOBODY, NOBODY)
        reason = f"{hooks_dir}/marker.py is owned by uid {NOBODY}, not root"
    done = _kanotify("--config", str(config), "--json", "plan")
    assert done.returncode == 1
    assert not (hooks_dir / "imported").exists()  # never imported
    [problem] = json.loads(done.stdout)["hooks"]
    assert problem["hook"] == "marker" and problem["call"] == "load"
    assert f"refused: {reason}" in problem["error"]
    assert reason in done.stderr  # said on stderr too, not only in the journal
    done = _kanotify("--config", str(config), "--allow-insecure", "plan")
    assert done.returncode == 0 and (hooks_dir / "imported").exists()


def test_insecure_hooks_dir_in_process(tmp_path):
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    (hooks_dir / "x.py").write_text("raise AssertionError('never imported')\n")
    hooks_dir.chmod(0o777)
    env = make_engine(make_config(base_dir=tmp_path), discover=True)
    result = env.transition("VI_1", "master")
    assert env.backend.addresses
    assert "refused" in result.record["hooks"][0]["error"] and result.exit_code == 1


def test_entry_point_style_object_with_tryfirst(kanotify_env):
    order = []

    class Late:
        kanotify_name = "late"

        def kanotify_after_transition(self):
            order.append("late")

    class Early:
        kanotify_name = "early"

        @hookimpl(tryfirst=True)
        def kanotify_after_transition(self):
            order.append("early")

    env = kanotify_env.engine(plugins=[Late(), Early()])
    env.transition("VI_1", "backup")
    assert order == ["early", "late"]

"""The hook manager on its own: specs, validation, ordering, discovery, security, bounds."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from kanotify.actions import BindVip, HookAction, Noop
from kanotify.errors import ApplyError, HookError
from kanotify.hooks import (
    HookManager,
    command_action,
    file_plugin_name,
    hookimpl,
    load_hooks,
    remaining_time,
    watched_instance,
)
from kanotify.model import Vip
from kanotify.security import insecure_path_reason
from kanotify.testing import make_config, make_context

NOBODY = 65534


def manager(tmp_path, plugins=(), hooks=None, **settings) -> HookManager:
    config = make_config(base_dir=tmp_path, hooks=hooks, **settings)
    return load_hooks(config, plugins=plugins, entry_points=False)


def write_plugin(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(body))
    path.chmod(0o644)
    return path


class Recorder:
    """A plugin that returns one action per call and remembers its calls."""

    def __init__(self, name: str, log: list[str], **impl_opts: bool) -> None:
        self.kanotify_name = name
        self.log = log

        @hookimpl(**impl_opts)
        def kanotify_before_transition(ctx):
            log.append(name)
            return [HookAction(plugin="whatever", description=f"step of {name}", run=lambda: None)]

        self.kanotify_before_transition = kanotify_before_transition


# --------------------------------------------------------------------------- specs and validation


def test_an_argument_not_in_the_spec_is_a_load_problem(tmp_path):
    class Typo:
        def kanotify_before_transition(self, ctx, opts):
            return []

    hooks = manager(tmp_path, [Typo()])
    assert hooks.names == []
    [problem] = hooks.load_problems
    assert problem.hook == "Typo" and problem.call == "load"
    assert "opts" in problem.error


def test_an_unknown_hook_name_is_a_load_problem(tmp_path):
    class Misspelled:
        def kanotify_before_transtion(self, ctx):
            return []

    hooks = manager(tmp_path, [Misspelled()])
    assert hooks.names == []
    assert "unknown hook kanotify_before_transtion" in hooks.load_problems[0].error


def test_hook_wrappers_are_refused(tmp_path):
    class Wrapper:
        @hookimpl(wrapper=True)
        def kanotify_before_transition(self, ctx):
            return (yield)

    hooks = manager(tmp_path, [Wrapper()])
    assert hooks.names == []
    assert "wrappers are not supported" in hooks.load_problems[0].error


def test_undecorated_kanotify_functions_are_hooks_other_functions_are_not(tmp_path):
    calls = []

    class Plain:
        def kanotify_after_transition(self, result):
            calls.append(result)

        def helper(self, ctx):
            raise AssertionError("not a hook")

    hooks = manager(tmp_path, [Plain()])
    run = hooks.begin(make_context())
    run.after_transition("the result")
    assert calls == ["the result"] and run.problems == []


def test_a_hook_takes_any_subset_of_the_arguments_and_gets_its_own_options(tmp_path):
    seen = {}

    class A:
        kanotify_name = "a"

        def kanotify_before_transition(self, options):
            seen["a"] = dict(options)

    class B:
        kanotify_name = "b"

        def kanotify_before_transition(self, ctx, options):
            seen["b"] = (ctx.instance, dict(options))

    hooks = manager(tmp_path, [A(), B()], hooks={"a": {"unit": "x.service", "timeout": 3}})
    run = hooks.begin(make_context())
    run.before_transition()
    assert seen == {"a": {"unit": "x.service"}, "b": ("VI_1", {})}
    assert hooks.timeout("a") == 3 and hooks.timeout("b") == 5.0  # settings.hook_timeout


# --------------------------------------------------------------------------- order


def test_call_order_is_registration_order_with_tryfirst_and_trylast(tmp_path):
    log: list[str] = []
    plugins = [
        Recorder("last", log, trylast=True),
        Recorder("one", log),
        Recorder("two", log),
        Recorder("first", log, tryfirst=True),
    ]
    hooks = manager(tmp_path, plugins)
    run = hooks.begin(make_context())
    actions = run.before_transition()
    assert log == ["first", "one", "two", "last"]
    assert [str(a) for a in actions] == [
        "[first] step of first", "[one] step of one", "[two] step of two", "[last] step of last",
    ]


def test_files_are_loaded_sorted_and_ordering_prefixes_are_not_part_of_the_name(tmp_path):
    hooks_dir = tmp_path / "hooks.d"
    body = """
        def kanotify_before_transition(ctx):
            from kanotify.actions import Noop
            return [Noop("here")]
    """
    for name in ("20-beta.py", "10-alpha.py", "gamma.py", "test_alpha.py", "_private.py", ".hidden.py",
                 "conftest.py", "notes.txt"):
        write_plugin(hooks_dir, name, body)
    hooks = manager(tmp_path)
    run = hooks.begin(make_context())
    assert hooks.names == ["alpha", "beta", "gamma"]
    assert [str(a) for a in run.before_transition()] == [
        "[alpha] here", "[beta] here", "[gamma] here",
    ]
    assert file_plugin_name("/x/10-conntrackd.py") == "conntrackd"
    assert file_plugin_name("/x/2024.py") == "2024"


def test_two_plugins_with_one_name(tmp_path):
    log: list[str] = []
    hooks = manager(tmp_path, [Recorder("x", log), Recorder("x", log)])
    assert hooks.names == ["x"]
    assert "already named 'x'" in hooks.load_problems[0].error


# --------------------------------------------------------------------------- return values


def test_actions_are_bound_to_the_plugin_that_returned_them(tmp_path):
    class P:
        kanotify_name = "mine"

        def kanotify_before_transition(self):
            return HookAction(plugin="someone-else", description="do it", run=lambda: 42)

    [action] = manager(tmp_path, [P()]).begin(make_context()).before_transition()
    assert isinstance(action, HookAction) and action.plugin == "mine"
    assert action.run() == 42


def test_noops_are_kept_with_the_plugin_name(tmp_path):
    class P:
        kanotify_name = "mine"

        def kanotify_before_transition(self):
            return [Noop("unit already active")]

    [action] = manager(tmp_path, [P()]).begin(make_context()).before_transition()
    assert action.is_noop and str(action) == "[mine] unit already active"


@pytest.mark.parametrize(
    "value",
    [
        [BindVip(Vip(__import__("ipaddress").ip_interface("192.0.2.9/32"), "lo"))],  # built-in actions: no
        "systemctl start x",
        [None],
        42,
    ],
)
def test_anything_else_is_a_problem_and_adds_nothing(tmp_path, value):
    class P:
        kanotify_name = "bad"

        def kanotify_before_transition(self):
            return value

    hooks = manager(tmp_path, [P()])
    run = hooks.begin(make_context())
    assert run.before_transition() == []
    [problem] = run.problems
    assert problem.call == "before_transition" and "expected a list of HookAction" in problem.error


# --------------------------------------------------------------------------- failures


def test_an_exception_is_a_problem_with_its_traceback_and_the_others_still_run(tmp_path):
    log: list[str] = []

    class Broken:
        def kanotify_before_transition(self):
            raise RuntimeError("boom")

    hooks = manager(tmp_path, [Broken(), Recorder("fine", log)])
    run = hooks.begin(make_context())
    actions = run.before_transition()
    assert [str(a) for a in actions] == ["[fine] step of fine"]
    [problem] = run.problems
    assert problem.to_json() == {
        "hook": "Broken", "call": "before_transition", "error": "RuntimeError: boom",
        "required": False, "timeout": False, "traceback": problem.traceback,
    }
    assert 'raise RuntimeError("boom")' in problem.traceback


def test_system_exit_in_a_plugin_is_only_a_problem(tmp_path):
    class Exits:
        def kanotify_after_transition(self):
            sys.exit(3)

    hooks = manager(tmp_path, [Exits()])
    run = hooks.begin(make_context())
    run.after_transition(None)
    assert run.problems[0].error == "SystemExit: 3"


def test_a_required_plugin_failing_raises_hook_error(tmp_path):
    class Broken:
        kanotify_name = "vital"

        def kanotify_before_transition(self):
            raise RuntimeError("cannot reach the API")

    hooks = manager(tmp_path, [Broken()], hooks={"vital": {"required": True}})
    run = hooks.begin(make_context())
    with pytest.raises(HookError, match="vital: before_transition: RuntimeError: cannot reach the API"):
        run.before_transition()
    assert run.problems[0].required is True


def test_a_required_plugin_that_is_missing_raises_hook_error(tmp_path):
    hooks = manager(tmp_path, hooks={"vital": {"required": True}, "optional": {}})
    run = hooks.begin(make_context())
    assert {p.hook for p in run.problems} == {"vital", "optional"}
    assert "no plugin named 'vital' was found" in run.problems[0].error
    with pytest.raises(HookError, match="vital"):
        run.before_transition()


def test_disabled_plugins_are_not_even_imported(tmp_path):
    write_plugin(tmp_path / "hooks.d", "broken.py", "raise ImportError('would fail')\n")
    hooks = manager(tmp_path, hooks={"broken": {"enabled": False}})
    assert hooks.names == [] and hooks.load_problems == []


def test_run_problems_are_reset_per_run_load_problems_stay(tmp_path):
    write_plugin(tmp_path / "hooks.d", "syntax.py", "def (:\n")
    calls = []

    class Flaky:
        def kanotify_before_transition(self):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("first time")

    hooks = manager(tmp_path, [Flaky()])
    first = hooks.begin(make_context())
    first.before_transition()
    assert [p.hook for p in first.problems] == ["syntax", "Flaky"]
    assert "SyntaxError" in first.problems[0].error
    second = hooks.begin(make_context())
    second.before_transition()
    assert [p.hook for p in second.problems] == ["syntax"]
    assert [p.hook for p in hooks.load_problems] == ["syntax"]


# --------------------------------------------------------------------------- time bounds


def test_a_slow_call_is_abandoned_after_its_timeout(tmp_path):
    release = threading.Event()

    class Slow:
        kanotify_name = "slow"

        def kanotify_before_transition(self):
            release.wait(5)
            return [Noop("too late")]

    hooks = manager(tmp_path, [Slow()], hooks={"slow": {"timeout": 0.2}})
    run = hooks.begin(make_context())
    try:
        assert run.before_transition() == []
    finally:
        release.set()
    [problem] = run.problems
    assert problem.error == "timed out after 0.2s" and problem.timeout is True


def test_a_slow_hook_action_fails_with_a_timeout(tmp_path):
    release = threading.Event()

    class Slow:
        kanotify_name = "slow"

        def kanotify_before_transition(self):
            return [HookAction(plugin="slow", description="wait", run=lambda: release.wait(5))]

    hooks = manager(tmp_path, [Slow()], hooks={"slow": {"timeout": 0.2}})
    run = hooks.begin(make_context())
    [action] = run.before_transition()
    try:
        with pytest.raises(ApplyError, match=r"\[slow\] wait: timed out after 0.2s"):
            action.run()
    finally:
        release.set()
    [problem] = run.problems
    assert (problem.call, problem.timeout, problem.action) == ("action", True, "[slow] wait")


def test_remaining_time_tells_a_plugin_its_budget(tmp_path):
    seen = []

    class P:
        kanotify_name = "p"

        def kanotify_before_transition(self):
            seen.append(remaining_time())

    manager(tmp_path, [P()], hooks={"p": {"timeout": 2}}).begin(make_context()).before_transition()
    assert 0 < seen[0] <= 2
    assert remaining_time(7.0) == 7.0  # outside a hook call


# --------------------------------------------------------------------------- command_action


def test_command_action_runs_argv_without_a_shell(mocker):
    import subprocess

    run = mocker.patch("subprocess.run", return_value=subprocess.CompletedProcess([], 0, "", ""))
    action = command_action("p", ["systemctl", "start", "a b; reboot"])
    assert str(action) == "[p] systemctl start a b; reboot"
    action.run()
    assert run.call_args.args[0] == ["systemctl", "start", "a b; reboot"]
    assert run.call_args.kwargs.get("shell") in (None, False)


def test_command_action_reports_exit_status_and_stderr():
    ok = command_action("p", ["true"])
    assert ok.run() == 0
    failing = command_action("p", ["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"])
    with pytest.raises(ApplyError, match=r"exit status 3: the reason$"):
        failing.run()
    with pytest.raises(ApplyError, match="No such file or directory"):
        command_action("p", ["/nonexistent/kanotify-test"]).run()


def test_command_action_kills_a_command_that_outlives_its_timeout():
    with pytest.raises(ApplyError, match=r"sleep 5: killed after 0.2s"):
        command_action("p", ["sleep", "5"], timeout=0.2).run()


# --------------------------------------------------------------------------- discovery


def test_a_missing_hooks_dir_is_fine(tmp_path):
    hooks = manager(tmp_path, hooks_dir=str(tmp_path / "nope"))
    assert hooks.names == [] and hooks.load_problems == []


def test_entry_points_are_loaded_by_name_and_a_broken_one_is_reported(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    write_plugin(pkg, "kanotify_ep_good.py", """
        def kanotify_before_transition(ctx):
            from kanotify.actions import Noop
            return [Noop("from an entry point")]
    """)
    write_plugin(pkg, "kanotify_ep_broken.py", "raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(pkg))
    eps = [
        importlib.metadata.EntryPoint("zz_broken", "kanotify_ep_broken", "kanotify.hooks"),
        importlib.metadata.EntryPoint("good", "kanotify_ep_good", "kanotify.hooks"),
        importlib.metadata.EntryPoint("off", "kanotify_ep_never_imported", "kanotify.hooks"),
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == "kanotify.hooks" else [])
    config = make_config(base_dir=tmp_path, hooks={"off": {"enabled": False}})
    hooks = load_hooks(config)
    assert hooks.names == ["good"]
    run = hooks.begin(make_context())
    assert [str(a) for a in run.before_transition()] == ["[good] from an entry point"]
    [problem] = run.problems
    assert problem.hook == "zz_broken"
    assert "cannot import: RuntimeError: half installed" in problem.error
    assert "kanotify_ep_never_imported" not in sys.modules


def test_watched_instance(tmp_path):
    one = make_config(base_dir=tmp_path)
    assert watched_instance(make_context(config=one), {}) == "VI_1"
    two = make_config('[[instance]]\nname = "A"\n[[instance]]\nname = "B"\n', base_dir=tmp_path)
    with pytest.raises(ValueError, match="option 'instance' is required"):
        watched_instance(make_context("A", config=two), {})
    assert watched_instance(make_context("A", config=two), {"instance": "B"}) is None
    with pytest.raises(ValueError, match="not an instance"):
        watched_instance(make_context("A", config=two), {"instance": "C"})


# --------------------------------------------------------------------------- security


def test_insecure_hooks_dir_refuses_every_file(tmp_path):
    hooks_dir = tmp_path / "hooks.d"
    write_plugin(hooks_dir, "a.py", "raise AssertionError('must not be imported')\n")
    write_plugin(hooks_dir, "b.py", "raise AssertionError('must not be imported')\n")
    hooks_dir.chmod(0o775)
    hooks = manager(tmp_path)
    assert hooks.names == []
    assert [p.hook for p in hooks.load_problems] == ["a", "b"]
    error = hooks.load_problems[0].error
    assert error.startswith(f"{hooks_dir}/a.py: refused: {hooks_dir} is writable by group or others (mode 0775)")
    assert "chown root and chmod go-w" in error


def test_a_file_owned_by_someone_else_is_refused_the_others_load(tmp_path):
    hooks_dir = tmp_path / "hooks.d"
    theirs = write_plugin(hooks_dir, "theirs.py", "raise AssertionError('must not be imported')\n")
    write_plugin(hooks_dir, "ours.py", "def kanotify_after_transition():\n    pass\n")
    os.chown(theirs, NOBODY, NOBODY)
    hooks = manager(tmp_path)
    assert hooks.names == ["ours"]
    assert f"owned by uid {NOBODY}, not root" in hooks.load_problems[0].error


def test_allow_insecure_loads_anyway(tmp_path):
    hooks_dir = tmp_path / "hooks.d"
    write_plugin(hooks_dir, "a.py", "def kanotify_after_transition():\n    pass\n")
    hooks_dir.chmod(0o777)
    config = make_config(base_dir=tmp_path)
    assert load_hooks(config, allow_insecure=True, entry_points=False).names == ["a"]


def test_insecure_path_reason_checks_every_component_and_follows_links(tmp_path):
    safe = tmp_path / "safe"
    safe.mkdir()
    (safe / "x.py").write_text("")
    assert insecure_path_reason(str(safe / "x.py")) is None  # /tmp is sticky: fine
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    inner = shared / "inner"
    inner.mkdir()
    (inner / "evil.py").write_text("")
    assert insecure_path_reason(str(inner / "evil.py")) == (
        f"{shared} is writable by group or others (mode 0777)"
    )
    link = safe / "link.py"
    link.symlink_to(inner / "evil.py")
    assert "writable by group or others" in insecure_path_reason(str(link))
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "f.py").write_text("")
    assert insecure_path_reason(str(sticky / "f.py")) is None
    (sticky / "f.py").chmod(0o666)
    assert "writable" in insecure_path_reason(str(sticky / "f.py"))


def test_an_unreadable_hooks_dir_is_a_problem_not_a_crash(tmp_path, mocker):
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    real_listdir = os.listdir

    def listdir(path):
        if str(path) == str(hooks_dir):
            raise PermissionError(13, "Permission denied")
        return real_listdir(path)

    mocker.patch("os.listdir", side_effect=listdir)
    hooks = manager(tmp_path)
    assert hooks.load_problems[0].error == f"hooks_dir {hooks_dir}: cannot list: Permission denied"


def test_a_new_run_forgets_the_last_runs_problems(tmp_path):
    class Broken:
        def kanotify_after_transition(self):
            raise RuntimeError("x")

    hooks = manager(tmp_path, [Broken()], hooks={"ghost": {}})
    run = hooks.begin(make_context())
    run.after_transition(None)
    assert [p.hook for p in run.problems] == ["ghost", "Broken"]
    assert [p.hook for p in hooks.begin(make_context()).problems] == ["ghost"]

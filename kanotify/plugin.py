"""Everything a hook plugin needs, in one place: ``from kanotify.plugin import ...``.

The shortest plugin, typed::

    from kanotify.plugin import HookAction, Options, RunContext, State, command_action

    def kanotify_before_transition(ctx: RunContext, options: Options) -> list[HookAction]:
        if ctx.to_state is State.MASTER:
            return [command_action("haproxy", ["systemctl", "reload", "haproxy.service"])]
        return []

and its test, without root (the ``kanotify_env`` fixture comes with kanotify)::

    def test_reload_on_master(kanotify_env: KanotifyEnv) -> None:
        env = kanotify_env.engine(plugins=[("haproxy", plugin)])
        env.transition("VI_1", "master")
        assert "[haproxy] systemctl reload haproxy.service" in env.actions()

The hooks and their arguments are documented in :mod:`kanotify.hookspecs`;
docs/hooks.md is the guide.  Names here are the stable surface: plugins should
not import kanotify's other modules.
"""

from __future__ import annotations

from .actions import Action, ActionStatus, HookAction, Noop
from .config.values import Config
from .errors import ApplyError, HookProblem
from .hooks import command_action, dry_run_safe, hookimpl, remaining_time, watched_instance
from .hookspecs import Options
from .model import Outcome, State
from .plan import Plan
from .run import ActionResult, RunContext, RunResult
from .testing import KanotifyEnv, load_plugin, make_config, make_context, make_engine

__all__ = [
    "Action",
    "ActionResult",
    "ActionStatus",
    "ApplyError",
    "Config",
    "HookAction",
    "HookProblem",
    "KanotifyEnv",
    "Noop",
    "Options",
    "Outcome",
    "Plan",
    "RunContext",
    "RunResult",
    "State",
    "command_action",
    "dry_run_safe",
    "hookimpl",
    "load_plugin",
    "make_config",
    "make_context",
    "make_engine",
    "remaining_time",
    "watched_instance",
]

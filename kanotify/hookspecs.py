"""The hooks kanotify calls, as pluggy hook specifications.

A plugin implements any subset of them, as functions (or methods) with the
same name, taking any subset of the arguments by name::

    def kanotify_before_transition(ctx, options):
        ...

Every hook gets ``options``: the plugin's own keys of its ``[hooks.NAME]``
table (a read-only mapping of TOML values, empty when there is no table).

Each call runs in its own thread, bounded by the plugin's timeout
(``[hooks.NAME] timeout``, else ``settings.hook_timeout``).  When it is
exceeded kanotify stops waiting, records the problem "timed out after Xs" and
goes on; the call itself keeps running in the background until the process
exits, so a plugin that blocks should bound its own calls
(:func:`kanotify.plugin.remaining_time`, :func:`kanotify.plugin.command_action`).

Every problem (an exception, a wrong return value, a timeout) is recorded as a
:class:`~kanotify.errors.HookProblem` in the run's journal line (``"hooks"``)
and makes the run exit 1; the transition still converges, unless the plugin
is ``required`` and failed before the apply: then nothing is applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import pluggy

if TYPE_CHECKING:
    from .actions import Action, HookAction, Noop
    from .model import ServiceSpec
    from .run import RunContext, RunResult

PROJECT = "kanotify"

#: Marks a hook spec (used only here).
hookspec = pluggy.HookspecMarker(PROJECT)

#: The type of ``options``: the plugin's ``[hooks.NAME]`` keys, as TOML values.
Options = Mapping[str, object]


class HookSpecs:
    """The hook specifications, registered with pluggy; see each one's docstring."""

    @hookspec
    def kanotify_before_transition(
        self, ctx: RunContext, options: Options
    ) -> Sequence[HookAction | Noop] | HookAction | Noop | None:
        """Contribute steps to the plan of a run.

        Called once per run (every notification, ``reconcile``, ``plan`` and
        ``--dry-run``), after planning and before anything is applied.

        :param ctx: the run: ``instances``, ``from_states``/``to_states``
            (and ``instance``/``from_state``/``to_state`` when it is about one
            instance), ``priority`` (from keepalived's generic notify, else
            ``None``), ``command``, ``dry_run``, ``config``, ``logger``, and
            ``plan`` already holding the built-in actions.
        :param options: the plugin's ``[hooks.NAME]`` options.
        :returns: a list of :class:`~kanotify.actions.HookAction` (and
            :class:`~kanotify.actions.Noop` recording why nothing is needed), one
            of them, or ``None``.  They are appended to the plan, so dry-run
            prints them and the journal records them, and run -- time-bounded,
            never in dry-run -- after the built-in steps (VIPs are bound or
            removed by then).

        It should *decide*, not *do*: reading the system here (``systemctl
        is-active``) is fine, changing it belongs in the actions it returns.
        An exception, or a return value that is not those actions, is a
        problem and the plugin contributes nothing to this run; a ``required``
        plugin's problem here means nothing at all is applied.
        """

    @hookspec
    def kanotify_action_failed(self, ctx: RunContext, action: Action, error: BaseException, options: Options) -> None:
        """React to one failed action (built-in or a plugin's), right after it failed.

        :param ctx: the run (see :func:`kanotify_before_transition`).
        :param action: the action that failed; ``str(action)`` is its journal text.
        :param error: the exception; an :class:`~kanotify.errors.ApplyError`
            carries the kernel's ``errno``.
        :param options: the plugin's ``[hooks.NAME]`` options.

        The remaining actions are applied afterwards either way.  The return
        value is ignored; an exception is a problem.
        """

    @hookspec
    def kanotify_after_transition(self, ctx: RunContext, result: RunResult, options: Options) -> None:
        """Observe the outcome of a run, after apply and verify, before its journal line is written.

        :param ctx: the run (see :func:`kanotify_before_transition`).
        :param result: ``outcome`` (``converged`` or ``failed``), per-action
            ``results`` and ``record`` (the journal line as it stands).
        :param options: the plugin's ``[hooks.NAME]`` options.

        Not called for a dry-run (``plan``, ``--dry-run``) unless the
        implementation is marked :func:`kanotify.plugin.dry_run_safe`: this hook
        is where plugins have side effects (a metrics file, an API call).  The
        return value is ignored; an exception is a problem (exit 1) and changes
        nothing else.
        """

    @hookspec
    def kanotify_quorum_down(self, ctx: RunContext, service: str, spec: ServiceSpec | None, options: Options) -> None:
        """A service lost its quorum (keepalived's ``quorum_down`` script, without a shell).

        Called by ``kanotify listen`` in the health run (command ``health``) that
        acts on the loss, after its actions were applied (the sorry server is
        in, the VIPs on the service's address are unbound when the config gives
        ``quorum``) and before ``kanotify_after_transition``.

        :param ctx: the health run (see :func:`kanotify_before_transition`).
        :param service: the service as kanotify writes it (``tcp 192.0.2.100:80``; the metrics' label).
        :param spec: its config (``spec.service.key``, ``spec.quorum``, ``spec.reals``), None if it left it.
        :param options: the plugin's ``[hooks.NAME]`` options.

        The return value is ignored; an exception (or a timeout) is a problem
        recorded in the run's journal line.  A plugin bounds what it runs
        (:func:`kanotify.plugin.remaining_time`).
        """

    @hookspec
    def kanotify_quorum_up(self, ctx: RunContext, service: str, spec: ServiceSpec | None, options: Options) -> None:
        """A service gained its quorum again (keepalived's ``quorum_up`` script); as :func:`kanotify_quorum_down`."""


#: The hook names, for messages about unknown ones.
HOOK_NAMES = tuple(sorted(name for name in vars(HookSpecs) if name.startswith("kanotify_")))

__all__ = ["HOOK_NAMES", "HookSpecs", "Options", "PROJECT", "hookspec"]

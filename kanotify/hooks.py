"""Hook plugins: the hook specs, plugin discovery, and isolated, time-bounded calls.

Operators add their own steps to a transition (start a service on the master,
hand conntrackd's state over, write a metric) as small Python plugins instead
of another shell script.  A plugin is a module or object with functions named
after the hook specs below (``kanotify_before_transition`` ...), found in

* the entry-point group ``kanotify.hooks`` of installed packages (the entry
  point's name is the plugin's name), and
* ``*.py`` files in ``settings.hooks_dir`` (default ``/etc/kanotify/hooks.d``;
  the file name without ``.py`` and without a leading ``NN-`` ordering prefix is
  the plugin's name).  Files, the directory and every directory above it must be
  owned by root and not writable by group or others -- keepalived's
  ``enable_script_security`` rule -- or the file is refused (``--allow-insecure``
  is for tests only).

``[hooks.NAME]`` in the config switches a plugin off (``enabled = false``, it is
then not even imported), makes its failure abort the apply (``required =
true``), bounds each of its calls (``timeout``, else ``settings.hook_timeout``)
and carries its own options, which the plugin receives as ``options``.

Why pluggy rather than hand-written dispatch: it is what pytest and tox use, so
plugin authors already know its shape (``@hookimpl(tryfirst=True)``); it checks
every implementation against its spec when the plugin is registered (a typo in an
argument name is a clear load error, not a ``TypeError`` mid-transition); and it
orders implementations (``tryfirst``/``trylast``) for us.  Costs ~2 ms of import.
One thing is ours: pluggy's own call loop stops at the first exception and has no
time bound, so :class:`HookManager` asks pluggy for the ordered implementations
and calls each one itself -- in a daemon thread, bounded by the plugin's timeout,
its error recorded per plugin -- so one broken or hung plugin never keeps the
others or the VIP/IPVS convergence from running.  Hook wrappers
(``hookwrapper``/``wrapper``) do not fit that model and are refused at load.

Like pytest's ``pytest_*`` functions in a ``conftest.py``, a function named
``kanotify_*`` is a hook implementation even without ``@hookimpl``; the
decorator is only needed for ``tryfirst``/``trylast``.

Every problem (a plugin that did not load, raised, returned something invalid or
was too slow) is one dict in :attr:`HookManager.problems`; the engine copies them
into the journal record (``"hooks"``) and the run exits 1.  The transition itself
still converges, unless the failing plugin is ``required``: then
:meth:`HookManager.before_transition` raises :class:`~kanotify.errors.HookError`
and the engine applies nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import pluggy

from .actions import Action, HookAction, Noop
from .errors import ApplyError, HookError

if TYPE_CHECKING:
    from .config import Config
    from .engine import RunContext, RunResult

PROJECT = "kanotify"
ENTRY_POINT_GROUP = "kanotify.hooks"

#: Marks a hook spec (used only here).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a hook implementation in a plugin: ``@hookimpl(tryfirst=True)``.
hookimpl = pluggy.HookimplMarker(PROJECT)

log = logging.getLogger("kanotify.hooks")

#: the names of the calls, as they appear in a problem's ``"call"``
BEFORE, AFTER, FAILED, ACTION, LOAD = "before_transition", "after_transition", "action_failed", "action", "load"

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_ORDER_PREFIX_RE = re.compile(r"\d+[-_](?=.)")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class HookSpecs:
    """The hooks kanotify calls.  Implement any subset; take any subset of the arguments.

    Every hook gets ``ctx`` (:class:`kanotify.engine.RunContext`: ``instances``,
    ``from_states``/``to_states`` (and ``instance``/``from_state``/``to_state``
    when the run is about one instance), ``priority`` (from the generic notify,
    else ``None``), ``plan``, ``dry_run``, ``command``, ``config`` and
    ``logger``) and ``options``: the plugin's own keys of its ``[hooks.NAME]``
    table (read-only mapping, empty when there is no table).

    Each call runs in its own thread, bounded by the plugin's timeout; when it is
    exceeded kanotify stops waiting, records a problem "timed out after Xs" and
    goes on (the call keeps running in the background until the process exits,
    so a plugin that starts a subprocess should bound it too:
    :func:`command_action` does).
    """

    @hookspec
    def kanotify_before_transition(
        self, ctx: RunContext, options: Mapping[str, Any]
    ) -> Sequence[HookAction | Noop] | HookAction | Noop | None:
        """Contribute steps to the plan; called once per run, after planning, before applying.

        Fires for every notification, ``reconcile`` and ``plan``/``--dry-run``
        (``ctx.dry_run`` is then true), with ``ctx.plan`` already holding the
        built-in actions.  It should *decide*, not *do*: return a list of
        :class:`~kanotify.actions.HookAction` (see :func:`command_action`) and
        kanotify appends them to the plan, so dry-run prints them, the journal
        records them, and they are run -- time-bounded, never in dry-run --
        after the built-in steps (VIPs are bound / removed by then).  A
        :class:`~kanotify.actions.Noop` records why nothing is needed.  Reading
        the system here (``systemctl is-active``) is fine; changing it is not.

        An exception (or a return value that is not a list of those actions) is
        recorded as a problem and the plugin contributes nothing; the run
        still converges and exits 1.  If the plugin is ``required``, the engine
        applies nothing at all (outcome ``failed``).
        """

    @hookspec
    def kanotify_after_transition(self, ctx: RunContext, result: RunResult, options: Mapping[str, Any]) -> None:
        """Observe the outcome; called once per run, after apply and verify, before the journal line.

        ``result`` is the :class:`~kanotify.engine.RunResult`: ``outcome``
        (``converged``/``failed``), per-action ``results`` and ``record`` (the
        journal line as it stands).  Also fires in dry-run: a plugin with side
        effects here (writing a file, calling an API) must check ``ctx.dry_run``
        and do nothing then.  The return value is ignored; an exception is
        recorded as a problem (exit 1) and changes nothing else.
        """

    @hookspec
    def kanotify_action_failed(
        self, ctx: RunContext, action: Action, error: BaseException, options: Mapping[str, Any]
    ) -> None:
        """React to one failed action (built-in or a hook's); called right after it failed.

        ``error`` is the exception (an :class:`~kanotify.errors.ApplyError` with
        ``errno`` for kernel failures).  The remaining actions are applied
        afterwards either way.  Return value ignored; an exception is recorded
        as a problem.
        """


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: its name, where it came from, and the registered object."""

    name: str
    source: str
    obj: object


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus pytest's convenience: ``kanotify_*`` functions need no decorator."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("kanotify_"):
            import inspect  # already imported by pluggy

            # statically, as pluggy does: never run a property or __getattr__ of a plugin
            found = inspect.getattr_static(plugin, name, None)
            if isinstance(found, (staticmethod, classmethod)) or inspect.isfunction(found) or inspect.ismethod(found):
                return {}  # type: ignore[return-value]
        return opts


class _Timeout(Exception):
    pass


_deadline = threading.local()


def remaining_time(default: float | None = None) -> float | None:
    """Seconds left of the current hook call's time bound (``default`` outside one).

    A plugin passes it as ``timeout=`` to a blocking call so the call ends (and
    kills its subprocess) before kanotify stops waiting for it.
    """
    deadline = getattr(_deadline, "value", None)
    if deadline is None:
        return default
    return max(0.01, deadline - time.monotonic() - 0.05)


def _call_bounded(fn: Callable[..., Any], args: Sequence[Any], timeout: float, name: str) -> Any:
    """``fn(*args)`` in a daemon thread; raises :class:`_Timeout` after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        _deadline.value = time.monotonic() + timeout
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a plugin is a failure too
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"kanotify-hook-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _Timeout()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _plugin_name(obj: object) -> str:
    """The name of a plugin object registered without one."""
    explicit = getattr(obj, "kanotify_name", None)
    if isinstance(explicit, str):
        return explicit
    if isinstance(obj, ModuleType):
        return obj.__name__.rsplit(".", 1)[-1].removeprefix("kanotify_hook_")
    if isinstance(obj, type):
        return obj.__name__
    return type(obj).__name__


def file_plugin_name(path: str) -> str:
    """``/etc/kanotify/hooks.d/10-conntrackd.py`` -> ``conntrackd``."""
    stem = os.path.basename(path)[: -len(".py")] if path.endswith(".py") else os.path.basename(path)
    return _ORDER_PREFIX_RE.sub("", stem, count=1)


def load_plugin_file(path: str) -> ModuleType:
    """Import a plugin file the way the hooks dir loader does (no security check)."""
    name = file_plugin_name(path)
    modname = "kanotify_hook_" + re.sub(r"\W", "_", name)
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module  # dataclasses and pickling look modules up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def _hook_files(directory: str) -> list[str]:
    """Plugin files of the hooks dir: ``*.py``, not hidden, not private, not tests."""
    names = sorted(os.listdir(directory))  # OSError: reported by the caller
    return [
        os.path.join(directory, n)
        for n in names
        if n.endswith(".py")
        and not n.startswith((".", "_", "test_"))
        and not n.endswith("_test.py")
        and n != "conftest.py"
    ]


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class HookManager:
    """The plugins of one config, and the interface the engine calls.

    ``problems`` lists what went wrong with hooks: load problems (kept for the
    whole process: a broken plugin is reported on every run) and those of the
    current run (reset when a run starts, at :meth:`before_transition`).  Each
    is ``{"hook", "call", "error", "required", "timeout"}`` (plus ``"action"``
    for a hook action, ``"traceback"`` for an unexpected exception).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pm = _PluginManager(PROJECT)
        self.pm.add_hookspecs(HookSpecs)
        self.plugins: dict[str, Plugin] = {}
        self._load_problems: list[dict[str, Any]] = []
        self._run_problems: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ settings

    @property
    def problems(self) -> list[dict[str, Any]]:
        return self._load_problems + self._run_problems

    def enabled(self, name: str) -> bool:
        settings = self.config.hooks.get(name)
        return settings is None or settings.enabled

    def required(self, name: str) -> bool:
        settings = self.config.hooks.get(name)
        return settings is not None and settings.required

    def timeout(self, name: str) -> float:
        settings = self.config.hooks.get(name)
        if settings is not None and settings.timeout is not None:
            return float(settings.timeout)
        return float(self.config.settings.hook_timeout)

    def options(self, name: str) -> Mapping[str, Any]:
        settings = self.config.hooks.get(name)
        return settings.options if settings is not None else _EMPTY

    @property
    def names(self) -> list[str]:
        """Plugin names in registration order (the call order, unless ``tryfirst``/``trylast``)."""
        return list(self.plugins)

    # ------------------------------------------------------------------ loading

    def problem(self, name: str, call: str, error: str, *, timeout: bool = False, **extra: Any) -> dict[str, Any]:
        """Record a problem of plugin ``name`` (a load problem when ``call`` is ``"load"``)."""
        item: dict[str, Any] = {
            "hook": name,
            "call": call,
            "error": error,
            "required": self.required(name),
            "timeout": timeout,
        }
        item.update(extra)
        with self._lock:
            (self._load_problems if call == LOAD else self._run_problems).append(item)
        log.warning("hook %s: %s: %s", name, call, error)
        return item

    def register_all(self, plugins: Iterable[tuple[str, str, object]]) -> None:
        """Register ``(name, source, obj)`` triples; they are called in this order."""
        for name, source, obj in plugins:
            if name in self.plugins:
                self.problem(name, LOAD, f"{source}: another plugin is already named {name!r}; not loaded")
                continue
            self._register(name, source, obj)

    def register(self, obj: object, name: str | None = None, source: str = "registered") -> None:
        """Register one plugin object; it is called after the ones registered before it."""
        self.register_all([(name or _plugin_name(obj), source, obj)])

    def _register(self, name: str, source: str, obj: object) -> None:
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy's PluginValidationError, or a bad object
            self.problem(name, LOAD, f"{source}: {exc}")
            return
        for caller in self.pm.get_hookcallers(obj) or []:
            bad = None
            if not caller.has_spec():
                known = ", ".join(sorted(n for n in dir(HookSpecs) if n.startswith("kanotify_")))
                bad = f"unknown hook {caller.name} (known: {known})"
            elif any(i.hookwrapper or i.wrapper for i in caller.get_hookimpls() if i.plugin is obj):
                bad = f"{caller.name}: hook wrappers are not supported"
            if bad:
                self.pm.unregister(obj)
                self.problem(name, LOAD, f"{source}: {bad}; not loaded")
                return
        self.plugins[name] = Plugin(name, source, obj)

    def _entry_point_plugins(self) -> list[tuple[str, str, object]]:
        from importlib.metadata import entry_points

        found: list[tuple[str, str, object]] = []
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            source = f"entry point {ep.name} = {ep.value}"
            if not self.enabled(ep.name):
                continue
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a broken plugin must not stop the transition
                self.problem(ep.name, LOAD, f"{source}: cannot import: {_error_text(exc)}",
                             traceback=_traceback(exc))
                continue
            found.append((ep.name, source, obj))
        return found

    def _file_plugins(self, directory: str, allow_insecure: bool) -> list[tuple[str, str, object]]:
        if not os.path.exists(directory):
            return []
        if not os.path.isdir(directory):
            self.problem("hooks_dir", LOAD, f"hooks_dir {directory} is not a directory")
            return []
        try:
            files = [f for f in _hook_files(directory) if self.enabled(file_plugin_name(f))]
        except OSError as exc:
            self.problem("hooks_dir", LOAD, f"hooks_dir {directory}: cannot list: {exc.strerror}")
            return []
        if not files:
            return []
        from .security import insecure_path_reason

        dir_reason = None if allow_insecure else insecure_path_reason(directory)
        found: list[tuple[str, str, object]] = []
        for path in files:
            name = file_plugin_name(path)
            if not _NAME_RE.match(name):
                self.problem(name, LOAD, f"{path}: a plugin name is letters, digits and _.-; not loaded")
                continue
            reason = dir_reason or (None if allow_insecure else insecure_path_reason(path))
            if reason:
                self.problem(name, LOAD, f"{path}: refused: {reason} "
                             "(hooks must be owned by root and not writable by group or others: "
                             "chown root and chmod go-w)")
                continue
            try:
                module = load_plugin_file(path)
            except BaseException as exc:  # noqa: BLE001 - includes SyntaxError and SystemExit
                self.problem(name, LOAD, f"{path}: cannot import: {_error_text(exc)}", traceback=_traceback(exc))
                continue
            found.append((name, path, module))
        return found

    def _check_configured(self) -> None:
        """A ``[hooks.NAME]`` table with no plugin of that name is most likely a typo."""
        failed = {p["hook"] for p in self._load_problems}
        for name, settings in self.config.hooks.items():
            if settings.enabled and name not in self.plugins and name not in failed:
                self.problem(name, LOAD, f"[hooks.{name}] is configured but no plugin named {name!r} was found "
                             f"(entry point group {ENTRY_POINT_GROUP}, or {self.config.settings.hooks_dir}/{name}.py)")

    # ------------------------------------------------------------------ calling

    def _impls(self, hook: str) -> list[tuple[str, Any]]:
        """Implementations in call order: ``tryfirst`` ones, the rest, ``trylast`` ones.

        Within each group, in registration (= discovery) order -- not pluggy's
        last-registered-first, which would run ``20-b.py`` before ``10-a.py``.
        """
        order = {name: i for i, name in enumerate(self.plugins)}
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        impls.sort(key=lambda i: (0 if i.tryfirst else 2 if i.trylast else 1, order.get(i.plugin_name, 0)))
        return [(impl.plugin_name, impl) for impl in impls]

    def _call(self, name: str, impl: Any, call: str, kwargs: Mapping[str, Any]) -> tuple[bool, Any]:
        """Call one implementation, bounded; record a problem and return ``(False, None)`` if it failed."""
        args = [kwargs[a] for a in impl.argnames]
        timeout = self.timeout(name)
        started = time.monotonic()
        try:
            value = _call_bounded(impl.function, args, timeout, name)
        except _Timeout:
            self.problem(name, call, f"timed out after {timeout:g}s", timeout=True)
            return False, None
        except BaseException as exc:  # noqa: BLE001 - isolation is the point
            self.problem(name, call, _error_text(exc), traceback=_traceback(exc))
            return False, None
        log.debug("hook %s: %s took %.1f ms", name, call, (time.monotonic() - started) * 1000)
        return True, value

    def start_run(self) -> None:
        """Forget the previous run's problems (load problems stay: the plugin is still broken).

        :meth:`before_transition` does this too; an engine that runs many
        transitions in one process (``listen``) calls it at the start of each
        run, so a run that never reaches the hooks (superseded, ignored) does
        not report the previous run's problems.
        """
        with self._lock:
            self._run_problems = []

    def before_transition(self, ctx: RunContext) -> list[Action]:
        """Collect the plugins' actions; raise :class:`HookError` if a required plugin failed."""
        self.start_run()
        actions: list[Action] = []
        for name, impl in self._impls("kanotify_before_transition"):
            ok, value = self._call(name, impl, BEFORE, {"ctx": ctx, "options": self.options(name)})
            if ok:
                contributed = self._accept(name, value)
                if contributed is not None:
                    actions.extend(contributed)
        # load problems count too: a required plugin that is not loaded has failed
        failed_required = [p for p in self.problems if p["required"]]
        if failed_required:
            detail = "; ".join(f"{p['hook']}: {p['call']}: {p['error']}" for p in failed_required)
            raise HookError(f"required hook failed, nothing applied: {detail}")
        return actions

    def _accept(self, name: str, value: Any) -> list[Action] | None:
        """Check what ``kanotify_before_transition`` returned; bind its actions to this plugin."""
        if value is None:
            return []
        items = [value] if isinstance(value, (HookAction, Noop)) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(a, (HookAction, Noop)) for a in items):
            self.problem(name, BEFORE, f"returned {type(value).__name__} {value!r:.200}: expected a list of "
                         "HookAction (or Noop) or None; its actions were not added")
            return None
        result: list[Action] = []
        for item in items:
            if isinstance(item, Noop):
                prefix = f"[{name}] "
                result.append(item if item.reason.startswith(prefix) else Noop(prefix + item.reason))
            else:
                result.append(self._bound_action(name, item))
        return result

    def _bound_action(self, name: str, action: HookAction) -> HookAction:
        """The action with this plugin's name and its ``run`` bounded by the plugin's timeout."""
        original = action.run
        timeout = self.timeout(name)

        def run() -> object:
            try:
                return _call_bounded(original, (), timeout, name)
            except _Timeout:
                message = f"timed out after {timeout:g}s"
                self.problem(name, ACTION, message, timeout=True, action=f"[{name}] {action.description}")
                raise ApplyError(f"[{name}] {action.description}: {message}") from None

        return replace(action, plugin=name, run=run)

    def after_transition(self, ctx: RunContext, result: RunResult) -> None:
        for name, impl in self._impls("kanotify_after_transition"):
            self._call(name, impl, AFTER, {"ctx": ctx, "result": result, "options": self.options(name)})

    def action_failed(self, ctx: RunContext, action: Action, error: BaseException) -> None:
        for name, impl in self._impls("kanotify_action_failed"):
            self._call(name, impl, FAILED,
                       {"ctx": ctx, "action": action, "error": error, "options": self.options(name)})


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()


def load_hooks(
    config: Config,
    allow_insecure: bool = False,
    *,
    plugins: Iterable[object | tuple[str, object]] = (),
    entry_points: bool = True,
    hooks_dir: bool = True,
) -> HookManager:
    """The :class:`HookManager` for ``config``: discovered plugins, then ``plugins`` given here.

    Never raises for a broken plugin: every load failure is a problem (the
    transition still runs; a ``required`` one aborts the apply at
    ``before_transition``).  ``entry_points``/``hooks_dir`` turn discovery off
    (the testing helpers register plugins explicitly).
    """
    manager = HookManager(config)
    found: list[tuple[str, str, object]] = []
    if entry_points:
        found.extend(manager._entry_point_plugins())
    if hooks_dir:
        found.extend(manager._file_plugins(config.settings.hooks_dir, allow_insecure))
    for item in plugins:
        if isinstance(item, tuple):
            name, obj = item
        else:
            name, obj = _plugin_name(item), item
        if manager.enabled(name):
            found.append((name, "registered", obj))
    manager.register_all(found)
    manager._check_configured()
    return manager


def command_action(
    plugin: str,
    argv: Sequence[str],
    description: str | None = None,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> HookAction:
    """A :class:`HookAction` that runs ``argv`` (no shell) and fails on a non-zero exit.

    The description defaults to the command line, so dry-run and the journal
    show exactly what runs: ``[conntrackd] /usr/sbin/conntrackd -C /etc/conntrackd/conntrackd.conf -c``.
    ``timeout`` defaults to what is left of the hook's time bound; the process is
    killed when it runs out.  Failure is an :class:`~kanotify.errors.ApplyError`
    naming the exit status and the last line of stderr.

    >>> str(command_action("unit", ["systemctl", "start", "haproxy.service"]))
    '[unit] systemctl start haproxy.service'
    """
    words = tuple(str(w) for w in argv)
    if not words:
        raise ValueError("command_action needs a command")
    shown = " ".join(words)
    text = description or shown

    def run() -> int:
        import subprocess

        limit = timeout if timeout is not None else remaining_time()
        try:
            done = subprocess.run(
                list(words), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=limit, env=dict(env) if env is not None else None, check=False,
            )
        except FileNotFoundError as exc:
            raise ApplyError(f"{shown}: {exc.strerror or 'not found'}", exc.errno) from None
        except subprocess.TimeoutExpired:
            raise ApplyError(f"{shown}: killed after {limit:g}s") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            detail = f": {lines[-1][:300]}" if lines else ""
            raise ApplyError(f"{shown}: exit status {done.returncode}{detail}")
        return done.returncode

    return HookAction(plugin=plugin, description=text, run=run)


def watched_instance(ctx: RunContext, options: Mapping[str, Any]) -> str | None:
    """The VRRP instance a host-wide plugin follows, if this run is about it, else None.

    That is ``options["instance"]``, or the config's only instance.  A plugin
    for one service on the host (conntrackd, a systemd unit) follows one
    instance; with several instances in the config the option is required
    (a :class:`ValueError`, recorded as the plugin's problem, says so).
    """
    name = options.get("instance")
    if name is None:
        names = ctx.config.instance_names
        if len(names) != 1:
            raise ValueError(
                f"option 'instance' is required: the config declares {len(names)} instances ({', '.join(names)})"
            )
        name = names[0]
    if not isinstance(name, str) or ctx.config.instance(name) is None:
        raise ValueError(f"option 'instance' = {name!r} is not an instance of the config")
    return name if name in ctx.to_states else None


__all__ = [
    "ENTRY_POINT_GROUP",
    "HookManager",
    "HookSpecs",
    "Plugin",
    "command_action",
    "file_plugin_name",
    "hookimpl",
    "hookspec",
    "load_hooks",
    "load_plugin_file",
    "remaining_time",
    "watched_instance",
]

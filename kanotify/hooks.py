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

The hook specs are in :mod:`kanotify.hookspecs`; plugin authors import what
they need from :mod:`kanotify.plugin`.

Every problem (a plugin that did not load, raised, returned something invalid or
was too slow) is a :class:`~kanotify.errors.HookProblem`.  Load problems stay on
the :class:`HookManager` for its life (a broken plugin is reported on every
run); everything else belongs to one run's :class:`HookRun`, which the engine
gets from :meth:`HookManager.begin`.  The engine copies them into the journal
record (``"hooks"``) and the run exits 1.  The transition itself still
converges, unless the failing plugin is ``required``: then
:meth:`HookRun.before_transition` raises :class:`~kanotify.errors.HookError`
and the engine applies nothing.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

import pluggy

from .actions import Action, HookAction, Noop
from .errors import ApplyError, HookError, HookProblem
from .hookspecs import HOOK_NAMES, PROJECT, HookSpecs, Options

if TYPE_CHECKING:
    from .config.values import Config
    from .model import ServiceKey
    from .run import RunContext, RunResult

ENTRY_POINT_GROUP = "kanotify.hooks"
_PREFIX = "kanotify_"

#: Marks a hook implementation in a plugin: ``@hookimpl(tryfirst=True)``.
hookimpl = pluggy.HookimplMarker(PROJECT)

F = TypeVar("F", bound=Callable[..., object])
_DRY_RUN_SAFE = "kanotify_dry_run_safe"


def dry_run_safe(function: F) -> F:
    """Mark a ``kanotify_after_transition`` that may run in a dry-run too (it has no side effects).

    Without the mark, kanotify does not call ``after_transition`` for a dry-run
    (``plan``, ``--dry-run``): that hook is where plugins write files or call APIs.
    """
    setattr(function, _DRY_RUN_SAFE, True)
    return function

log = logging.getLogger("kanotify.hooks")

#: the names of the calls, as they appear in a problem's ``"call"``
BEFORE, AFTER, FAILED, ACTION, LOAD = "before_transition", "after_transition", "action_failed", "action", "load"

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_ORDER_PREFIX_RE = re.compile(r"\d+[-_](?=.)")
_EMPTY: Options = MappingProxyType({})


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: its name, where it came from, and the registered object."""

    name: str
    source: str
    obj: object


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus pytest's convenience: ``kanotify_*`` functions need no decorator.

    Only attributes named ``kanotify_*`` are ever looked at: pluggy's own parse
    calls ``getattr`` on every attribute of a plugin, which would run a
    plugin object's properties or ``__getattr__`` at load time.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        if not name.startswith(_PREFIX):
            return None
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None:
            # statically: never run a property or __getattr__ of a plugin
            found = inspect.getattr_static(plugin, name, None)
            if isinstance(found, (staticmethod, classmethod)) or inspect.isfunction(found) or inspect.ismethod(found):
                return {}
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
    """The plugins of one config: loading, settings, and a :class:`HookRun` per run.

    Implements the engine's :class:`~kanotify.run.Hooks` protocol.  It keeps
    only what outlives a run: the registered plugins and their
    :attr:`load_problems` (a broken plugin is reported on every run).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pm = _PluginManager(PROJECT)
        self.pm.add_hookspecs(HookSpecs)
        self.plugins: dict[str, Plugin] = {}
        self.load_problems: list[HookProblem] = []

    # ------------------------------------------------------------------ settings

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

    def options(self, name: str) -> Options:
        settings = self.config.hooks.get(name)
        return settings.options if settings is not None else _EMPTY

    @property
    def names(self) -> list[str]:
        """Plugin names in registration order (the call order, unless ``tryfirst``/``trylast``)."""
        return list(self.plugins)

    def problem(
        self, name: str, call: str, error: str, *, timeout: bool = False, action: str | None = None,
        traceback: str | None = None,
    ) -> HookProblem:
        """A problem of plugin ``name``, logged; the caller keeps it where it belongs."""
        log.warning("hook %s: %s: %s", name, call, error)
        return HookProblem(name, call, error, self.required(name), timeout, action, traceback)

    # ------------------------------------------------------------------ loading

    def _load_problem(self, name: str, error: str, *, traceback: str | None = None) -> None:
        self.load_problems.append(self.problem(name, LOAD, error, traceback=traceback))

    def register_all(self, plugins: Iterable[tuple[str, str, object]]) -> None:
        """Register ``(name, source, obj)`` triples; they are called in this order."""
        for name, source, obj in plugins:
            if name in self.plugins:
                self._load_problem(name, f"{source}: another plugin is already named {name!r}; not loaded")
                continue
            self._register(name, source, obj)

    def register(self, obj: object, name: str | None = None, source: str = "registered") -> None:
        """Register one plugin object; it is called after the ones registered before it."""
        self.register_all([(name or _plugin_name(obj), source, obj)])

    def _register(self, name: str, source: str, obj: object) -> None:
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy's PluginValidationError, or a bad object
            self._load_problem(name, f"{source}: {exc}")
            return
        for caller in self.pm.get_hookcallers(obj) or []:
            bad = None
            if not caller.has_spec():
                bad = f"unknown hook {caller.name} (known: {', '.join(HOOK_NAMES)})"
            elif any(i.hookwrapper or i.wrapper for i in caller.get_hookimpls() if i.plugin is obj):
                bad = f"{caller.name}: hook wrappers are not supported"
            if bad:
                self.pm.unregister(obj)
                self._load_problem(name, f"{source}: {bad}; not loaded")
                return
        self.plugins[name] = Plugin(name, source, obj)

    def _entry_point_plugins(self) -> list[tuple[str, str, object]]:
        from importlib.metadata import entry_points  # ~20 ms: only when plugins may exist

        found: list[tuple[str, str, object]] = []
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            source = f"entry point {ep.name} = {ep.value}"
            if not self.enabled(ep.name):
                continue
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a broken plugin must not stop the transition
                self._load_problem(ep.name, f"{source}: cannot import: {_error_text(exc)}", traceback=_traceback(exc))
                continue
            found.append((ep.name, source, obj))
        return found

    def _file_plugins(self, directory: str, allow_insecure: bool) -> list[tuple[str, str, object]]:
        if not os.path.exists(directory):
            return []
        if not os.path.isdir(directory):
            self._load_problem("hooks_dir", f"hooks_dir {directory} is not a directory")
            return []
        try:
            files = [f for f in _hook_files(directory) if self.enabled(file_plugin_name(f))]
        except OSError as exc:
            self._load_problem("hooks_dir", f"hooks_dir {directory}: cannot list: {exc.strerror}")
            return []
        if not files:
            return []
        from .security import insecure_path_reason

        dir_reason = None if allow_insecure else insecure_path_reason(directory)
        found: list[tuple[str, str, object]] = []
        for path in files:
            name = file_plugin_name(path)
            if not _NAME_RE.match(name):
                self._load_problem(name, f"{path}: a plugin name is letters, digits and _.-; not loaded")
                continue
            reason = dir_reason or (None if allow_insecure else insecure_path_reason(path))
            if reason:
                self._load_problem(name, f"{path}: refused: {reason} "
                                         "(hooks must be owned by root and not writable by group or others: "
                                         "chown root and chmod go-w)")
                continue
            try:
                module = load_plugin_file(path)
            except BaseException as exc:  # noqa: BLE001 - includes SyntaxError and SystemExit
                self._load_problem(name, f"{path}: cannot import: {_error_text(exc)}", traceback=_traceback(exc))
                continue
            found.append((name, path, module))
        return found

    def _check_configured(self) -> None:
        """A ``[hooks.NAME]`` table with no plugin of that name is most likely a typo."""
        failed = {p.hook for p in self.load_problems}
        for name, settings in self.config.hooks.items():
            if settings.enabled and name not in self.plugins and name not in failed:
                self._load_problem(name, f"[hooks.{name}] is configured but no plugin named {name!r} was found "
                                         f"(entry point group {ENTRY_POINT_GROUP}, or "
                                         f"{self.config.settings.hooks_dir}/{name}.py)")

    # ------------------------------------------------------------------ calling

    def begin(self, ctx: RunContext) -> HookRun:
        """The hook calls of one run (the engine's :class:`~kanotify.run.Hooks` protocol)."""
        return HookRun(self, ctx)

    def impls(self, hook: str) -> list[tuple[str, Any]]:
        """Implementations in call order: ``tryfirst`` ones, the rest, ``trylast`` ones.

        Within each group, in registration (= discovery) order -- not pluggy's
        last-registered-first, which would run ``20-b.py`` before ``10-a.py``.
        """
        order = {name: i for i, name in enumerate(self.plugins)}
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        impls.sort(key=lambda i: (0 if i.tryfirst else 2 if i.trylast else 1, order.get(i.plugin_name, 0)))
        return [(impl.plugin_name, impl) for impl in impls]


class HookRun:
    """The hook calls of one run, and the problems they had.

    ``problems`` is the manager's load problems followed by this run's; the
    run's own are forgotten with this object, so nothing of one run leaks
    into the next.
    """

    def __init__(self, manager: HookManager, ctx: RunContext) -> None:
        self.manager = manager
        self.ctx = ctx
        self._problems: list[HookProblem] = []
        self._lock = threading.Lock()  # a timed-out action's thread may still report

    @property
    def problems(self) -> list[HookProblem]:
        with self._lock:
            return self.manager.load_problems + self._problems

    def _problem(self, name: str, call: str, error: str, **extra: Any) -> None:
        problem = self.manager.problem(name, call, error, **extra)
        with self._lock:
            self._problems.append(problem)

    def _call(self, name: str, impl: Any, call: str, kwargs: dict[str, object]) -> tuple[bool, Any]:
        """Call one implementation, bounded; record a problem and return ``(False, None)`` if it failed."""
        args = [kwargs[a] for a in impl.argnames]
        timeout = self.manager.timeout(name)
        started = time.monotonic()
        try:
            value = _call_bounded(impl.function, args, timeout, name)
        except _Timeout:
            self._problem(name, call, f"timed out after {timeout:g}s", timeout=True)
            return False, None
        except BaseException as exc:  # noqa: BLE001 - isolation is the point
            self._problem(name, call, _error_text(exc), traceback=_traceback(exc))
            return False, None
        log.debug("hook %s: %s took %.1f ms", name, call, (time.monotonic() - started) * 1000)
        return True, value

    def before_transition(self) -> list[Action]:
        """Collect the plugins' actions; raise :class:`HookError` if a required plugin failed."""
        actions: list[Action] = []
        for name, impl in self.manager.impls("kanotify_before_transition"):
            ok, value = self._call(name, impl, BEFORE, {"ctx": self.ctx, "options": self.manager.options(name)})
            if ok:
                contributed = self._accept(name, value)
                if contributed is not None:
                    actions.extend(contributed)
        # load problems count too: a required plugin that is not loaded has failed
        failed_required = [p for p in self.problems if p.required]
        if failed_required:
            detail = "; ".join(f"{p.hook}: {p.call}: {p.error}" for p in failed_required)
            raise HookError(f"required hook failed, nothing applied: {detail}")
        return actions

    def _accept(self, name: str, value: object) -> list[Action] | None:
        """Check what ``kanotify_before_transition`` returned; bind its actions to this plugin."""
        if value is None:
            return []
        items = [value] if isinstance(value, (HookAction, Noop)) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(a, (HookAction, Noop)) for a in items):
            self._problem(name, BEFORE, f"returned {type(value).__name__} {value!r:.200}: expected a list of "
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
        timeout = self.manager.timeout(name)

        def run() -> object:
            try:
                return _call_bounded(original, (), timeout, name)
            except _Timeout:
                message = f"timed out after {timeout:g}s"
                self._problem(name, ACTION, message, timeout=True, action=f"[{name}] {action.description}")
                raise ApplyError(f"[{name}] {action.description}: {message}") from None

        return replace(action, plugin=name, run=run)

    def after_transition(self, result: RunResult) -> None:
        """Tell the plugins the outcome; in a dry-run only those marked :func:`dry_run_safe`."""
        for name, impl in self.manager.impls("kanotify_after_transition"):
            if self.ctx.dry_run and getattr(impl.function, _DRY_RUN_SAFE, False) is not True:
                continue
            self._call(name, impl, AFTER, {"ctx": self.ctx, "result": result, "options": self.manager.options(name)})

    def quorum_changed(self, service: ServiceKey, up: bool) -> None:
        """``kanotify_quorum_up`` or ``kanotify_quorum_down`` of every plugin, for ``service``."""
        hook = "kanotify_quorum_up" if up else "kanotify_quorum_down"
        spec = self.ctx.config.service_spec(service) if self.ctx.config is not None else None
        for name, impl in self.manager.impls(hook):
            self._call(name, impl, hook.removeprefix("kanotify_"), {
                "ctx": self.ctx, "service": str(service), "spec": spec, "options": self.manager.options(name)})

    def action_failed(self, action: Action, error: BaseException) -> None:
        for name, impl in self.manager.impls("kanotify_action_failed"):
            self._call(name, impl, FAILED, {"ctx": self.ctx, "action": action, "error": error,
                                            "options": self.manager.options(name)})


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


def watched_instance(ctx: RunContext, options: Options) -> str | None:
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
    "HookRun",
    "Plugin",
    "command_action",
    "dry_run_safe",
    "file_plugin_name",
    "hookimpl",
    "load_hooks",
    "load_plugin_file",
    "remaining_time",
    "watched_instance",
]

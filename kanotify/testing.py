"""Test helpers for kanotify and its plugin authors (also a pytest plugin).

A hook plugin is tested without root, against the in-memory backend::

    from kanotify.testing import make_config, make_engine

    def test_my_hook(tmp_path):
        env = make_engine(make_config(base_dir=tmp_path), plugins=[my_plugin])
        result = env.transition("VI_1", "master")
        assert "[my_plugin] systemctl start haproxy.service" in env.actions()

or with the ``kanotify_env`` fixture (registered through the ``pytest11`` entry
point, so any project with kanotify installed has it)::

    def test_my_hook(kanotify_env):
        env = kanotify_env.engine(plugins=[my_plugin], hooks={"my_plugin": {"unit": "x"}})
        assert env.transition("VI_1", "master").outcome == "converged"

To call one hook function directly, :func:`make_context` builds the
``ctx`` it receives.  Importing this module is cheap: the engine is imported
only when a helper is called (it is loaded into every pytest run).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from .actions import Action
    from .backends.memory import MemoryBackend
    from .config.values import Config
    from .engine import Engine
    from .errors import HookProblem
    from .hooks import HookManager
    from .model import State
    from .run import RunContext, RunResult

# The fixture is defined only when pytest is already loaded (as it is when pytest
# loads this module through its ``pytest11`` entry point): the builders work
# without pytest, and importing them never pays for importing it.
pytest: Any = sys.modules.get("pytest")

#: A small two-node-style config: VIP on eth0 as master, on lo otherwise, one service.
DEFAULT_TOML = """
[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2

[[instance]]
name = "VI_1"

  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"

  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  states = ["backup", "fault"]

  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "wrr"

    [[instance.service.real]]
    address = "192.0.2.21"
    weight = 1
"""


def make_config(
    toml: str | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    hooks: Mapping[str, Mapping[str, object]] | None = None,
    **settings: object,
) -> Config:
    """A validated :class:`~kanotify.config.values.Config` whose files live under ``base_dir``.

    ``toml`` defaults to :data:`DEFAULT_TOML`.  ``state_dir``, ``journal`` and
    ``hooks_dir`` default to ``base_dir/state``, ``base_dir/journal.jsonl``
    and ``base_dir/hooks.d`` (``base_dir`` defaults to a new temporary
    directory); ``syslog`` defaults to false.  ``hooks`` adds ``[hooks.NAME]``
    tables; other keyword arguments are ``[settings]`` keys.  Invalid input
    raises :class:`~kanotify.errors.ConfigError` as the real loader does.

    >>> make_config(hooks={"unit": {"unit": "haproxy.service"}}).hooks["unit"].options["unit"]
    'haproxy.service'
    """
    import tomllib

    from .config.schema import build_config

    data: dict[str, Any] = tomllib.loads(DEFAULT_TOML if toml is None else toml)
    base = os.fspath(base_dir) if base_dir is not None else tempfile.mkdtemp(prefix="kanotify-test-")
    table = dict(data.get("settings", {}))
    table.setdefault("state_dir", os.path.join(base, "state"))
    table.setdefault("journal", os.path.join(base, "journal.jsonl"))
    table.setdefault("hooks_dir", os.path.join(base, "hooks.d"))
    table.setdefault("syslog", False)
    table.update(settings)
    data["settings"] = table
    if hooks:
        merged = dict(data.get("hooks", {}))
        for name, values in hooks.items():
            merged[name] = {**merged.get(name, {}), **dict(values)}
        data["hooks"] = merged
    return build_config(data, os.path.join(base, "kanotify.toml"))


def make_context(
    instance: str = "VI_1",
    to: State | str = "master",
    from_: State | str | None = None,
    *,
    dry_run: bool = False,
    config: Config | None = None,
    priority: int | None = None,
    command: str | None = None,
    plan: Sequence[Action] = (),
) -> RunContext:
    """The ``ctx`` a hook receives, for calling a hook function directly.

    >>> ctx = make_context("VI_1", "master", "backup", dry_run=True)
    >>> (ctx.instance, ctx.from_state.value, ctx.to_state.value, ctx.dry_run)
    ('VI_1', 'backup', 'master', True)
    """
    from .model import State
    from .plan import Plan
    from .run import RunContext

    to_state = State.parse(to) if isinstance(to, str) else to
    from_state = State.parse(from_) if isinstance(from_, str) else from_
    return RunContext(
        command=command or to_state.value,
        instances=(instance,),
        from_states={instance: from_state},
        to_states={instance: to_state},
        dry_run=dry_run,
        config=config if config is not None else make_config(),
        priority=priority,
        plan=Plan(tuple(plan)),
    )


def load_plugin(path: str | os.PathLike[str]) -> ModuleType:
    """Import a plugin file exactly as kanotify loads it from the hooks dir."""
    from .hooks import load_plugin_file

    return load_plugin_file(os.fspath(path))


@dataclass
class Harness:
    """An engine on the in-memory backend, with its hooks; what :func:`make_engine` returns."""

    config: Config
    backend: MemoryBackend
    hooks: HookManager
    engine: Engine
    results: list[RunResult] = field(default_factory=list)
    _lost: set[Any] = field(default_factory=set)  # the services whose quorum :meth:`quorum` lost

    def transition(
        self, instance: str = "VI_1", state: State | str = "master", *, dry_run: bool = False,
        priority: int | None = None,
    ) -> RunResult:
        """A notification: ``instance`` entered ``state`` (as ``kanotify master VI_1``)."""
        from .model import State
        from .run import RunKind

        target = State.parse(state) if isinstance(state, str) else state
        argv = ["kanotify", target.value, instance] + (["--dry-run"] if dry_run else [])
        result = self.engine.transition(
            [instance], target, argv=argv, kind=RunKind.of_state(target), dry_run=dry_run, priority=priority
        )
        self.results.append(result)
        return result

    def reconcile(self, state: State | str | None = None, *, dry_run: bool = False) -> RunResult:
        """``kanotify reconcile [--state STATE]`` (``plan`` when ``dry_run``)."""
        from .model import State
        from .run import RunKind

        target = State.parse(state) if isinstance(state, str) else state
        result = self.engine.reconcile(
            None, target, argv=["kanotify", "reconcile"], kind=RunKind.PLAN if dry_run else RunKind.RECONCILE,
            dry_run=dry_run,
        )
        self.results.append(result)
        return result

    def quorum(self, service: str, up: bool) -> RunResult:
        """The listener's health run after ``service`` (``"tcp 192.0.2.100:80"``) lost (``up`` False) or gained
        its quorum: planned with the quorum lost or held (sorry server, VIPs), then ``kanotify_quorum_down`` /
        ``kanotify_quorum_up`` called, as ``kanotify listen`` does (no checks run, no root needed)."""
        from .run import RunKind

        key = next((spec.service.key for inst in self.config.instances for spec in inst.services
                    if str(spec.service.key) == service), None)
        if key is None:
            raise ValueError(f"no service {service!r} in the config")
        if up:
            self._lost.discard(key)
        else:
            self._lost.add(key)
        result = self.engine.reconcile(argv=["kanotify", "listen", f"health: quorum of {service}"],
                                       kind=RunKind.HEALTH, services=[key], health=_Quorums(set(self._lost)),
                                       quorum=[(key, up)])
        self.results.append(result)
        return result

    def plan(self, state: State | str | None = None) -> RunResult:
        """``kanotify plan [--state STATE]``: nothing is applied."""
        return self.reconcile(state, dry_run=True)

    def actions(self, result: RunResult | None = None) -> list[str]:
        """The action lines of a run (default: the last one), as the journal has them."""
        run = result if result is not None else self.results[-1]
        return [str(r.action) for r in run.results]

    def statuses(self, result: RunResult | None = None) -> dict[str, str]:
        """Action text -> status of a run (default: the last one)."""
        run = result if result is not None else self.results[-1]
        return {str(r.action): r.status for r in run.results}

    @property
    def journal(self) -> list[dict[str, Any]]:
        """Every journal record written so far, oldest first (a changing run's ``started`` record before its final one)."""
        return list(self.engine.journal.records())

    @property
    def problems(self) -> list[HookProblem]:
        """The hook problems of the last run (before any run: the plugins' load problems)."""
        return list(self.results[-1].problems) if self.results else list(self.hooks.load_problems)


@dataclass(frozen=True)
class _Quorums:
    """The health a :meth:`Harness.quorum` run carries: no real server DOWN, these services' quorum lost."""

    lost: set[Any]

    def is_down(self, service: Any, real: Any) -> bool:
        return False

    def weight_of(self, service: Any, real: Any) -> int | None:
        return None

    def quorum_lost(self, service: Any) -> bool:
        return service in self.lost


def make_engine(
    config: Config | None = None,
    plugins: Iterable[object | tuple[str, object]] = (),
    backend: MemoryBackend | None = None,
    *,
    discover: bool = False,
    allow_insecure: bool = False,
    clock: Callable[[], float] | None = None,
) -> Harness:
    """An engine for ``config`` on ``backend`` (a fresh :class:`MemoryBackend`) with ``plugins``.

    Plugins are modules or objects with ``kanotify_*`` functions, or
    ``(name, obj)`` pairs; their name (module name, ``kanotify_name`` attribute
    or class name) selects their ``[hooks.NAME]`` table.  With ``discover``
    the config's hooks dir is loaded too (entry points never are: tests should
    not depend on what else is installed).
    """
    from .backends.memory import MemoryBackend
    from .engine import Engine
    from .hooks import load_hooks

    cfg = config if config is not None else make_config()
    fake = backend if backend is not None else MemoryBackend()
    hooks = load_hooks(cfg, allow_insecure, plugins=plugins, entry_points=False, hooks_dir=discover)
    if clock is None:
        engine = Engine(cfg, backend_factory=lambda: fake, hooks=hooks)
    else:
        engine = Engine(cfg, backend_factory=lambda: fake, hooks=hooks, clock=clock)
    return Harness(cfg, fake, hooks, engine)


@dataclass
class KanotifyEnv:
    """What the ``kanotify_env`` fixture gives: builders rooted in one temporary directory."""

    base_dir: str

    @property
    def hooks_dir(self) -> str:
        return os.path.join(self.base_dir, "hooks.d")

    @property
    def journal_path(self) -> str:
        return os.path.join(self.base_dir, "journal.jsonl")

    def config(
        self, toml: str | None = None, *, hooks: Mapping[str, Mapping[str, object]] | None = None,
        **settings: object,
    ) -> Config:
        """:func:`make_config` with files under this environment's directory."""
        return make_config(toml, base_dir=self.base_dir, hooks=hooks, **settings)

    def engine(
        self,
        plugins: Iterable[object | tuple[str, object]] = (),
        *,
        config: Config | None = None,
        backend: MemoryBackend | None = None,
        toml: str | None = None,
        hooks: Mapping[str, Mapping[str, object]] | None = None,
        discover: bool = False,
        allow_insecure: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> Harness:
        """:func:`make_engine`; the config is built from ``toml``/``hooks`` unless given."""
        cfg = config if config is not None else self.config(toml, hooks=hooks)
        return make_engine(cfg, plugins, backend, discover=discover, allow_insecure=allow_insecure, clock=clock)

    def context(
        self, instance: str = "VI_1", to: State | str = "master", from_: State | str | None = None, *,
        dry_run: bool = False, config: Config | None = None, priority: int | None = None,
        command: str | None = None, plan: Sequence[Action] = (),
    ) -> RunContext:
        """:func:`make_context` with this environment's default config."""
        return make_context(instance, to, from_, dry_run=dry_run, config=config or self.config(),
                            priority=priority, command=command, plan=plan)


if pytest is not None:

    @pytest.fixture
    def kanotify_env(tmp_path: Any) -> KanotifyEnv:
        """Builders for configs, contexts and engines whose state dir and journal are in ``tmp_path``."""
        return KanotifyEnv(str(tmp_path))


__all__ = [
    "DEFAULT_TOML",
    "Harness",
    "KanotifyEnv",
    "load_plugin",
    "make_config",
    "make_context",
    "make_engine",
]
if pytest is not None:
    __all__.append("kanotify_env")

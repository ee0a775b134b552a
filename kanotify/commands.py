"""What each command does, without any CLI framework.

:mod:`kanotify.cli` (typer) parses the command line and calls these
functions; :mod:`kanotify.__main__` calls them directly for the exact forms
keepalived uses (``master|backup|fault|stop [INSTANCE]`` and ``notify TYPE
NAME STATE PRIORITY``), so a failover does not pay for importing typer and the
pydantic it pulls in (about 150 ms natively, over a second in a slow VM).

Exit codes: 0 converged (or dry-run done), 1 an action failed, 2 usage error,
78 configuration error (nothing was changed).  Every command ends by raising
:class:`Exit`; :func:`guarded` turns errors into one clear line each.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence, TextIO

from .actions import ActionStatus
from .errors import EXIT_FAILED, EXIT_OK, ConfigError, KanotifyError, UsageError
from .journal import Journal, RecordKind, outcome_text, summary_line
from .model import Outcome, State
from .options import split

if TYPE_CHECKING:
    from .config.values import Config
    from .daemon.worker import HandedOver
    from .engine import Engine
    from .hooks import HookManager
    from .plan import HealthView
    from .run import RunResult
    from .store import Ticket

TRANSITIONS = ("master", "backup", "fault", "stop")
MAX_WORD = 256
EXIT_CHANGES_PENDING = 2  # plan --detailed-exitcode


class Exit(Exception):
    """The end of a command, with its exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Globals:
    """The global options (:data:`kanotify.options.GLOBAL_OPTIONS`), parsed."""

    config: str | None = None
    dry_run: bool = False
    json: bool = False
    verbose: int = 0
    no_daemon: bool = False
    allow_insecure: bool = False


@dataclass
class Session:
    """Who hosts a command: where it gets its config and engine, where it prints, its trigger and ticket.

    Every command handler takes one as its first argument.  An in-process run
    uses the defaults (:meth:`here`): the config file, a new engine,
    stdout/stderr, its own argv and this process's ticket.  The listener hosts
    a handed-over request with its own config and engine, the health facts of
    the moment it was queued, the client's argv and ticket, and captures the
    output for the answer; ``warnings`` go into the journal line (the fallback
    after a listener that did not answer says so there).
    """

    argv: list[str]
    stdout: TextIO | None = None
    stderr: TextIO | None = None
    ticket: Ticket | None = None
    warnings: tuple[str, ...] = ()
    config: Callable[[Globals], Config] | None = None
    engine: Callable[[Globals, Config], Engine] | None = None
    health: HealthView | None = None

    @classmethod
    def here(cls, words: Sequence[str], warnings: Sequence[str] = ()) -> Session:
        """An in-process run of ``kanotify WORDS...``."""
        return cls(["kanotify", *words], warnings=tuple(warnings))

    def out(self, text: str) -> None:
        print(text, file=self.stdout or sys.stdout, flush=True)

    def err(self, text: str) -> None:
        print(text, file=self.stderr or sys.stderr, flush=True)


#: the options of commands the typer-free path runs, which it understands too
_RECONCILE_OPTIONS = ("--state", "--instance")
_METRICS_OPTIONS = ("--textfile",)


def _option_words(words: list[str], options: tuple[str, ...]) -> list[str] | None:
    """``COMMAND [--a A] [--b B]`` as ``[COMMAND, A or "", B or ""]`` (``reconcile [--state S] [--instance I]``,
    ``metrics [--textfile PATH]``); None for anything else."""
    values = {name: "" for name in options}
    i = 1
    while i < len(words):
        name, eq, value = words[i].partition("=")
        if name not in values or values[name]:
            return None
        if not eq:
            if i + 1 >= len(words) or words[i + 1].startswith("-"):
                return None
            i += 1
            value = words[i]
        if not value:
            return None
        values[name] = value
        i += 1
    return [words[0].lower(), *(values[name] for name in options)]


def split_fast(argv: Sequence[str]) -> tuple[Globals, list[str]] | None:
    """Parse the keepalived forms, ``reconcile``, ``check`` and ``metrics`` without typer; ``None`` for anything else (typer)."""
    parsed = split(list(argv))
    if parsed is None:
        return None
    found, words = parsed
    if words and words[0].lower() in ("reconcile", "metrics"):
        parsed_words = _option_words(words, _RECONCILE_OPTIONS if words[0].lower() == "reconcile" else _METRICS_OPTIONS)
        if parsed_words is None:
            return None
        words = parsed_words
    elif any(w.startswith("-") for w in words):
        return None  # --help, unknown options: let typer explain
    g = Globals()
    for option, value, count in found:
        if option.takes_value:
            setattr(g, option.dest, value)
        elif option.count:
            setattr(g, option.dest, getattr(g, option.dest) + count)
        else:
            setattr(g, option.dest, True)
    if words:
        words[0] = words[0].lower()  # `kanotify MASTER` is `kanotify master`
    if words and words[0] in TRANSITIONS and len(words) <= 2:
        return g, words
    if words and words[0] == "notify" and len(words) == 5:
        return g, words
    if words and words[0] == "reconcile":
        return g, words
    if words == ["check"]:  # the operator's "is my file right", also without typer's start-up
        return g, words
    if words and words[0] == "metrics":  # run every minute from a timer: without typer's start-up too
        return g, words
    return None


def run_handed_over(request: HandedOver) -> int | None:
    """Run a command a listener was handed (its :class:`~kanotify.daemon.worker.Handler`): in a session
    of the listener's config, engine and health facts, with the client's argv and ticket."""
    session = Session(["kanotify", *request.argv], request.stdout, request.stderr, request.ticket,
                      config=lambda g: request.config(), engine=lambda g, config: request.engine(),
                      health=request.health)
    return run_fast(request.argv, session)


def run_fast(argv: Sequence[str], session: Session | None = None) -> int | None:
    """Run a keepalived-style invocation (or ``reconcile``, ``check``, ``metrics``) without typer; ``None`` if it is not one.

    ``session``: who hosts it (the listener, for a handed-over one); by default this process.
    """
    parsed = split_fast(argv)
    if parsed is None:
        return None
    g, words = parsed
    s = session if session is not None else Session.here(argv)
    if words[0] == "notify":
        return guarded(cmd_notify, s, g, words[1:])
    if words[0] == "reconcile":
        return guarded(cmd_reconcile, s, g, words[1] or None, words[2] or None)
    if words[0] == "check":
        return guarded(cmd_check, s, g)
    if words[0] == "metrics":
        return guarded(cmd_metrics, s, g, words[1] or None)
    return guarded(cmd_transition, s, g, State(words[0]), words[1] if len(words) > 1 else None)


def guarded(fn: Callable[..., Any], s: Session, *args: Any) -> int:
    """Run the command ``fn(s, *args)``; print errors one clear line each (to ``s``); return the exit code."""
    try:
        fn(s, *args)
    except Exit as done:
        return done.code
    except ConfigError as exc:
        for problem in exc.problems:
            s.err(f"kanotify: config error: {problem}")
        return exc.exit_code
    except KanotifyError as exc:
        s.err(f"kanotify: {exc}")
        return exc.exit_code
    return EXIT_OK


# --------------------------------------------------------------------------- helpers


def _ticket(s: Session) -> Ticket:
    from .store import notification_ticket

    return s.ticket or notification_ticket()


def _safe(word: str) -> str:
    """A command-line word fit to echo back: bounded and without control characters."""
    return repr(word if len(word) <= 64 else word[:61] + "...")


def _check_word(word: str, what: str) -> None:
    if len(word) > MAX_WORD or any(ord(c) < 32 or c == "\x7f" for c in word):
        raise UsageError(f"{what} {_safe(word)} is not valid")


def parse_state(word: str) -> State:
    try:
        return State.parse(word)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def load(s: Session, g: Globals, *, cached: bool = False) -> Config:
    """The validated config: the session's (a listener's), else the file's; see :func:`load_file`."""
    provider = s.config
    return provider(g) if provider is not None else load_file(g, cached=cached)


def load_file(g: Globals, *, cached: bool = False) -> Config:
    """The validated config (ConfigError -> exit 78), refused if others can write it.

    ``cached``: for the commands that load it to run (notifications, reconcile, plan,
    status), served from :mod:`kanotify.config.cache` when the file is unchanged.
    """
    from .config.schema import load_config
    from .config.prescan import config_path

    path = config_path(g.config)
    if not g.allow_insecure and os.path.exists(path):  # refused before it is even parsed
        from .security import check_config_file

        check_config_file(path)
    if cached:
        from .config.cache import load_config_cached

        return load_config_cached(path)
    return load_config(path)


def make_engine(s: Session, g: Globals, config: Config) -> Engine:
    """The session's engine (a listener's), else a new one with the config's hook plugins."""
    provider = s.engine
    if provider is not None:
        return provider(g, config)
    from .engine import Engine

    return Engine(config, hooks=hooks_for(config, g.allow_insecure))


def hooks_for(config: Config, allow_insecure: bool) -> HookManager | None:
    """The config's hook plugins, or None when there cannot be any (no import cost then)."""
    if not (config.hooks or _has_hook_sources(config)):
        return None
    from .hooks import load_hooks

    return load_hooks(config, allow_insecure=allow_insecure)


def _has_hook_sources(config: Config) -> bool:
    """Could there be plugins?  (files in the hooks dir, or an installed ``kanotify.hooks`` entry point)

    A cheap look before the real loading: ``importlib.metadata`` costs ~20 ms to
    import and scan on every notification, ten times that in a slow VM, and most
    hosts have no plugins at all.
    """
    try:
        if any(name.endswith(".py") for name in os.listdir(config.settings.hooks_dir)):
            return True
    except OSError:
        pass
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(entry, name, "entry_points.txt"), encoding="utf-8") as fh:
                        if "[kanotify.hooks]" in fh.read():
                            return True
                except OSError:
                    continue
    return False


def resolve_instance(config: Config, name: str | None, command: str) -> str:
    names = config.instance_names
    if name is None:
        if len(names) == 1:
            return names[0]
        raise UsageError(
            f"{command}: INSTANCE is required: the config declares {len(names)} instances ({', '.join(names)})"
        )
    _check_word(name, "instance")
    if config.instance(name) is None:
        raise UsageError(f"unknown instance {_safe(name)}: the config declares {', '.join(names)}")
    return name


#: how ``print_result`` marks each action status
_MARKS = {ActionStatus.APPLIED: "+", ActionStatus.PENDING: "+", ActionStatus.NOOP: "=", ActionStatus.FAILED: "!",
          ActionStatus.SKIPPED: "~"}


def print_result(s: Session, g: Globals, result: RunResult) -> None:
    if g.json:
        s.out(json.dumps(result.record, indent=2, default=str))
        return
    # One write for the whole report: 11,000 applied actions are 11,000 lines, and a
    # flushed write per line cost more than the netlink work in a slow VM.  The texts
    # come from the journal record, which has them already (one str() per action).
    entries = result.record.get("actions", ())
    texts = [e["action"] for e in entries] if len(entries) == len(result.results) else [
        str(r.action) for r in result.results]
    lines = []
    for item, text in zip(result.results, texts):
        if item.status is ActionStatus.NOOP and not (g.verbose or g.dry_run):
            continue
        lines.append(f"{_MARKS[item.status]} {text}")
        if item.status in (ActionStatus.FAILED, ActionStatus.SKIPPED) and item.error:
            word = "error" if item.status is ActionStatus.FAILED else "skipped"
            lines.append(f"    {word}: {item.error.splitlines()[0]}")
    lines.extend(f"! still differs after apply: {line}" for line in result.verify)
    lines.append(summary_line(result.record))
    s.out("\n".join(lines))
    for warning in result.record.get("warnings", ()):
        s.err(f"kanotify: warning: {warning}")


def _finish(s: Session, g: Globals, result: RunResult) -> NoReturn:
    print_result(s, g, result)
    raise Exit(result.exit_code)


# --------------------------------------------------------------------------- commands


def cmd_transition(s: Session, g: Globals, state: State, instance: str | None) -> NoReturn:
    """``kanotify master|backup|fault|stop [INSTANCE]``."""
    from .run import RunKind

    if instance is not None:
        _check_word(instance, "instance")
    config = load(s, g, cached=True)
    name = resolve_instance(config, instance, state.value)
    result = make_engine(s, g, config).transition(
        [name], state, argv=s.argv, kind=RunKind.of_state(state), dry_run=g.dry_run, ticket=_ticket(s),
        warnings=s.warnings, health=s.health,
    )
    _finish(s, g, result)


def cmd_notify(s: Session, g: Globals, words: Sequence[str]) -> NoReturn:
    """``kanotify notify TYPE NAME STATE PRIORITY`` (keepalived's generic notify)."""
    from .run import RunKind

    if len(words) != 4:
        raise UsageError(
            f"notify takes exactly 4 words TYPE NAME STATE PRIORITY (as keepalived appends them), got {len(words)}"
        )
    kind, name, state_word, priority_word = words
    for word, what in ((kind, "TYPE"), (name, "NAME"), (state_word, "STATE"), (priority_word, "PRIORITY")):
        _check_word(word, what)
    kind = kind.upper()
    if kind not in ("INSTANCE", "GROUP"):
        raise UsageError(f"notify: TYPE must be INSTANCE or GROUP, got {_safe(kind)}")
    state = parse_state(state_word)
    try:
        priority = int(priority_word)
        if not 0 <= priority <= 255:
            raise ValueError
    except ValueError:
        raise UsageError(f"notify: PRIORITY must be an integer 0..255, got {_safe(priority_word)}") from None
    config = load(s, g, cached=True)
    engine = make_engine(s, g, config)
    command = f"notify {kind} {state.value}"
    if kind == "INSTANCE":
        names = [name] if config.instance(name) is not None else []
    else:
        group = config.group(name)
        names = list(group.instances) if group is not None else []
    if not names:
        what = "instance" if kind == "INSTANCE" else "group"
        note = f"{what} {_safe(name)} is not managed by {config.path}; ignored"
        result = engine.ignored(argv=s.argv, kind=RunKind.NOTIFY, command=command, note=note)
        s.out(json.dumps(result.record, indent=2) if g.json else f"kanotify: {note}")
        raise Exit(EXIT_OK)
    result = engine.transition(
        names, state, argv=s.argv, kind=RunKind.NOTIFY, command=command, dry_run=g.dry_run,
        ticket=_ticket(s), priority=priority, warnings=s.warnings, health=s.health,
    )
    _finish(s, g, result)


def _scope(config: Config, instance: str | None) -> list[str] | None:
    return None if instance is None else [resolve_instance(config, instance, "reconcile")]


def cmd_reconcile(s: Session, g: Globals, state: str | None, instance: str | None) -> NoReturn:
    """``kanotify reconcile [--state S] [--instance I]``."""
    wanted = parse_state(state) if state is not None else None
    config = load(s, g, cached=True)
    # --state is recorded like a notification, with this process's ticket: one issued before it
    # (a notify script of a keepalived that died since) and run after it is superseded
    result = make_engine(s, g, config).reconcile(
        _scope(config, instance), wanted, argv=s.argv, dry_run=g.dry_run, warnings=s.warnings,
        ticket=_ticket(s) if wanted is not None else None, health=s.health,
    )
    _finish(s, g, result)


def cmd_plan(s: Session, g: Globals, state: str | None, instance: str | None, detailed_exitcode: bool) -> NoReturn:
    """``kanotify plan [--state S] [--instance I] [--detailed-exitcode]``."""
    from .run import RunKind

    g.dry_run = True
    wanted = parse_state(state) if state is not None else None
    config = load(s, g, cached=True)
    result = make_engine(s, g, config).reconcile(
        _scope(config, instance), wanted, argv=s.argv, kind=RunKind.PLAN, dry_run=True, health=s.health,
    )
    print_result(s, g, result)
    if result.exit_code != EXIT_OK:
        raise Exit(result.exit_code)
    raise Exit(EXIT_CHANGES_PENDING if detailed_exitcode and result.plan.has_changes else EXIT_OK)


def cmd_status(s: Session, g: Globals) -> NoReturn:
    """``kanotify status``."""
    config = load(s, g, cached=True)
    from .status import collect_status, format_status

    report = collect_status(config)
    s.out(json.dumps(report, indent=2, default=str) if g.json else format_status(report, verbose=g.verbose))
    raise Exit(EXIT_OK)


def cmd_history(s: Session, g: Globals, n: int) -> NoReturn:
    """``kanotify history [-n N]``: the last N runs (a started run without its final record: ``interrupted``)."""
    config = load(s, g)
    records = Journal(config.settings.journal).runs(n)
    if g.json:
        s.out(json.dumps(records, indent=2))
    elif not records:
        s.out(f"no transitions recorded in {config.settings.journal}")
    else:
        s.out(format_history(records))
    raise Exit(EXIT_OK)


def format_history(records: Sequence[dict[str, Any]]) -> str:
    """The journal as a table, newest last; failures spelled out under their row."""
    rows = [("TIME (UTC)", "INSTANCE", "TRANSITION", "OUTCOME", "APPLIED", "FAILED", "MS", "TRIGGER")]
    notes: dict[int, list[str]] = {}
    for i, rec in enumerate(records, start=1):
        actions = [a for a in rec.get("actions", ()) if isinstance(a, dict)]
        who = rec.get("instance") or ",".join(
            str(x.get("instance")) for x in rec.get("instances", ()) if isinstance(x, dict)) or "-"
        outcome = outcome_text(rec)
        rows.append((
            str(rec.get("ts", "?"))[:23].replace("T", " "),
            who,
            f"{rec.get('from') or '-'} -> {rec.get('to') or '-'}",
            outcome,
            str(sum(a.get("status") == ActionStatus.APPLIED for a in actions)),
            str(sum(a.get("status") == ActionStatus.FAILED for a in actions)),
            f"{float(rec['duration_ms']):.0f}" if "duration_ms" in rec else "-",
            " ".join(str(w) for w in rec.get("trigger", ())[1:])[:40],
        ))
        notes[i] = [f"{a.get('action')}: {a.get('error', '').splitlines()[0] if a.get('error') else ''}"
                    for a in actions if a.get("status") == ActionStatus.FAILED]
        if rec.get("note"):
            notes[i].append(str(rec["note"]))
        if rec.get("record") == RecordKind.STARTED.value:
            pending = sum(a.get("status") == ActionStatus.PENDING for a in actions)
            if outcome == Outcome.INTERRUPTED:
                notes[i].append(f"interrupted: no final record; any part of its {pending} change(s) may have been "
                                f"made (pid {rec.get('pid')}); reconcile converges to the recorded states")
            else:
                notes[i].append(f"under way: pid {rec.get('pid')}, {pending} change(s) planned")
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        lines.extend(f"    ! {text}" for text in notes.get(i, ()))
    return "\n".join(lines)


def cmd_check(s: Session, g: Globals) -> NoReturn:
    """``kanotify check``: the config, and the hook plugins it would load."""
    config = load(s, g)
    plugins: list[str] = []
    problems: list[dict[str, Any]] = []
    if config.hooks or _has_hook_sources(config):
        from .hooks import load_hooks

        manager = load_hooks(config, allow_insecure=g.allow_insecure)
        plugins, problems = manager.names, [p.to_json() for p in manager.load_problems]
    summary: dict[str, Any] = {
        "config": config.path,
        "valid": True,
        "instances": list(config.instance_names),
        "vips": sum(len(i.vips) for i in config.instances),
        "services": sum(len(i.services) for i in config.instances),
        "sysctls": len(config.sysctls),
        "plugins": plugins,
        "plugin_problems": problems,
    }
    if g.json:
        s.out(json.dumps(summary, indent=2, default=str))
    else:
        s.out(
            f"{config.path}: OK ({len(config.instances)} instance(s), {summary['vips']} VIP(s), "
            f"{summary['services']} service(s), {summary['sysctls']} sysctl(s))"
        )
        if plugins:
            s.out("hook plugins: " + ", ".join(plugins))
        for problem in problems:
            s.err(f"kanotify: hook {problem.get('hook')}: {problem.get('error')}")
    raise Exit(EXIT_FAILED if problems else EXIT_OK)


def cmd_metrics(s: Session, g: Globals, textfile: str | None) -> NoReturn:
    """``kanotify metrics [--textfile PATH]``: the metrics once, on stdout or atomically into PATH."""
    from .metrics.exposition import render
    from .metrics.facts import collect_facts

    config = load(s, g, cached=True)
    facts, warnings = collect_facts(config)
    for warning in warnings:
        s.err(f"kanotify: warning: {warning}")
    text = render(facts)
    if textfile is None:
        stream = s.stdout
        if stream is None:
            sys.stdout.buffer.write(text)
            sys.stdout.flush()
        else:
            stream.write(text.decode())
            stream.flush()
    else:
        from .atomic import replace_file

        try:
            # 0644: node_exporter runs as its own user and must read it
            replace_file(textfile, text, mode=0o644, durable=False)
        except OSError as exc:
            raise KanotifyError(f"cannot write {textfile}: {exc.strerror}") from None
    raise Exit(EXIT_OK)


def cmd_sysctl(s: Session, g: Globals, persist: bool, path: str | None) -> NoReturn:
    """``kanotify sysctl --persist [--path PATH]``."""
    from .backends.sysctld import DEFAULT_PATH, render, write_if_changed

    if not persist:
        raise UsageError("sysctl: say what to do: --persist writes the [sysctl] values to a sysctl.d file")
    config = load(s, g)
    target = path or DEFAULT_PATH
    content = render(config.sysctls, config.path)
    if content is None:
        result = {"path": target, "status": "nothing", "keys": []}
        message = f"{config.path} has no [sysctl] table: nothing to persist, {target} was not written"
    elif g.dry_run:
        try:
            with open(target, encoding="utf-8") as fh:
                same = fh.read() == content
        except (OSError, UnicodeDecodeError):
            same = False
        result = {"path": target, "status": "unchanged" if same else "pending", "content": content}
        message = content.rstrip("\n") + f"\ndry-run: {target} {'is up to date' if same else 'would be written'}"
    else:
        changed = write_if_changed(target, content)
        keys = [line.split(" = ", 1)[0] for line in content.splitlines() if line and not line.startswith("#")]
        result = {"path": target, "status": "written" if changed else "unchanged", "keys": keys}
        message = (f"wrote {target} ({len(keys)} key(s): {', '.join(keys)})" if changed
                   else f"unchanged: {target} already has these {len(keys)} key(s)")
    if g.json:
        s.out(json.dumps(result, indent=2))
    else:
        s.out(message)
    raise Exit(EXIT_OK)


def cmd_doctor(s: Session, g: Globals, keepalived_conf: str, config_id: str | None, sysctl_root: str = "/",
               peer_fingerprint: Sequence[str] = (), peer_fingerprints: Sequence[str] = ()) -> NoReturn:
    """``kanotify doctor [--keepalived-conf PATH] [--config-id ID] [--peer-fingerprint(s) ...]``: the checks' rows."""
    from dataclasses import asdict

    from .config.prescan import config_path
    from .keepalived.conf import read_config
    from .keepalived.doctor import CHECKS, FAIL, PASS, WARN, Context, Row, format_rows, run_checks
    from .keepalived.doctor_active import check_peer_fingerprints, check_sloppy_tcp, check_sync_mode, parse_peer_options
    from .keepalived.hostfacts import SystemHost

    peers = parse_peer_options(peer_fingerprint, peer_fingerprints)

    path = config_path(g.config)
    given = bool(g.config or os.environ.get("KANOTIFY_CONFIG"))
    config: Config | None = None
    problems: list[str] = []
    if given or os.path.exists(path):
        try:
            config = load(s, g)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
    kconf = read_config(keepalived_conf, config_id)
    ctx = Context(kconf, config, SystemHost(), path if (given or os.path.exists(path)) else None,
                  problems, sysctl_root, bool(g.config), config_id)
    loaded = config

    def mine() -> dict[str, str]:
        from .fingerprint import fingerprints
        from .backends.system import system_backend
        from .model import Scope

        assert loaded is not None
        keys = frozenset(spec.service.key for inst in loaded.instances for spec in inst.services)
        backend = system_backend()
        try:
            observed = backend.observe(Scope(services=keys, ipvs=True))
        finally:
            backend.close()
        if observed.services is None:
            raise KanotifyError(observed.ipvs_error or "IPVS not available")
        return {str(key): value for key, value in fingerprints(loaded, observed.services).items()}

    def check_fingerprint(c: Context) -> list[Row]:
        return check_peer_fingerprints(c, peers, mine if loaded is not None else None)

    rows = run_checks(ctx, (*CHECKS, check_sloppy_tcp, check_sync_mode, check_fingerprint))
    if g.json:
        s.out(json.dumps({
            "keepalived_conf": keepalived_conf,
            "config": ctx.config_path,
            "rows": [asdict(r) for r in rows],
            "summary": {s: sum(r.status == s for r in rows) for s in (PASS, WARN, FAIL)},
        }, indent=2))
    else:
        s.out(f"kanotify doctor: {keepalived_conf}" + (f" and {ctx.config_path}" if ctx.config_path else ""))
        s.out(format_rows(rows))
    raise Exit(EXIT_FAILED if any(r.status == FAIL for r in rows) else EXIT_OK)


def cmd_import(s: Session, g: Globals, path: str, instance: str | None, config_id: str | None) -> NoReturn:
    """``kanotify import KEEPALIVED_CONF [--instance NAME] [--config-id ID]``: the TOML, or it and its parts as JSON."""
    import tomllib

    from .config.schema import _NAME_RE
    from .keepalived.importer import import_file
    from .model import format_hostport

    if instance is not None and not _NAME_RE.match(instance):
        raise UsageError(f"--instance {instance!r}: expected a name of letters, digits and _.:@+- (at most 64)")
    result, text = import_file(path, instance, config_id)
    if g.json:
        notes = [n for n in result.notes] + [n for s in result.services for n in s.notes] + [
            n for s in result.services for r in s.reals for n in r.notes]
        s.out(json.dumps({
            "source": result.path,
            "instance": result.instance,
            "services": [str(s.service) for s in result.services],
            "checks": [{"service": str(s.service.key), "real": format_hostport(r.real.address, r.real.port),
                        "checker": r.check.checker, "where": str(r.check.where),
                        "check": tomllib.loads("\n".join(f"{k} = {v}" for k, v in r.check.table))}
                       for s in result.services for r in s.reals if r.check],
            "not_imported": [{"keyword": n.keyword, "where": str(n.where), "reason": n.reason} for n in notes],
            "sync_daemon": result.sync_daemon.table if result.sync_daemon is not None else None,
            "problems": list(result.problems),
            "toml": text,
        }, indent=2))
    else:
        s.out(text.rstrip("\n"))
    raise Exit(EXIT_OK)


def cmd_listen(s: Session, g: Globals, fifo: str | None) -> int:
    """``kanotify listen [FIFO]``: the daemon, hosting the handed-over commands through :func:`run_handed_over`."""
    from .config.prescan import config_path
    from .daemon.listener import Listener

    return Listener(config_path(g.config), fifo, handler=run_handed_over,
                    hooks_for=lambda config: hooks_for(config, g.allow_insecure),
                    allow_insecure=g.allow_insecure).run()

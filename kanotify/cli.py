"""The command line: parse, call the engine, print, exit with the documented code.

Exit codes: 0 converged (or dry-run done), 1 an action failed, 2 usage error,
78 configuration error (nothing was changed).  Global options (``--config``,
``--dry-run``, ``--json``, ``-v``) are accepted before and after the command:
:func:`hoist_global_options` moves them in front before typer sees argv.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, NoReturn, Optional, Sequence

import typer

from .errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, ConfigError, KanotifyError, UsageError
from .model import State

app = typer.Typer(
    name="kanotify",
    help="keepalived notify framework: converge VIPs, ARP sysctls and IPVS to the VRRP state.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: options that belong to the whole program, with whether they take a value
GLOBAL_OPTIONS = {"--config": True, "--dry-run": False, "--json": False, "-v": False, "--verbose": False,
                  "--allow-insecure": False}
MAX_WORD = 256


@dataclass
class Globals:
    config: Optional[str] = None
    dry_run: bool = False
    json: bool = False
    verbose: int = 0
    allow_insecure: bool = False


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """Move global options found after the command in front of it.

    ``kanotify master VI_1 --dry-run`` == ``kanotify --dry-run master VI_1``.
    Everything after ``--`` is left alone.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    words = list(argv)
    while i < len(words):
        word = words[i]
        if word == "--":
            rest.extend(words[i:])
            break
        name = word.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            front.append(word)
            if GLOBAL_OPTIONS[name] and "=" not in word and i + 1 < len(words):
                front.append(words[i + 1])
                i += 1
        else:
            rest.append(word)
        i += 1
    return front + rest


@app.callback()
def _globals(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(
        None, "--config", metavar="PATH",
        help="Config file [default: $KANOTIFY_CONFIG or /etc/kanotify/kanotify.toml].",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More detail."),
    allow_insecure: bool = typer.Option(
        False, "--allow-insecure", hidden=True,
        help="Skip the ownership/permission checks of the config file and hooks dir (tests only).",
    ),
) -> None:
    ctx.obj = Globals(config, dry_run, json_out, verbose, allow_insecure)


# --------------------------------------------------------------------------- helpers


def _g(ctx: typer.Context) -> Globals:
    return ctx.obj if isinstance(ctx.obj, Globals) else Globals()


def _argv() -> list[str]:
    return ["kanotify", *sys.argv[1:]]


def _exit(code: int) -> NoReturn:
    raise typer.Exit(code)


def _fail(error: KanotifyError) -> NoReturn:
    if isinstance(error, ConfigError):
        for problem in error.problems:
            typer.echo(f"kanotify: config error: {problem}", err=True)
    else:
        typer.echo(f"kanotify: {error}", err=True)
    _exit(error.exit_code)


def _safe(word: str) -> str:
    """A command-line word fit to echo back: bounded and without control characters."""
    shown = word if len(word) <= 64 else word[:61] + "..."
    return repr(shown)


def _load(g: Globals):  # type: ignore[no-untyped-def]
    from .config import config_path, load_config

    path = config_path(g.config)
    try:
        config = load_config(path)
        if not g.allow_insecure:
            from .security import check_config_file

            check_config_file(path)
        return config
    except KanotifyError as exc:
        _fail(exc)


def _engine(g: Globals, config):  # type: ignore[no-untyped-def]
    from .engine import Engine

    hooks = None
    try:
        from .hooks import load_hooks
    except ImportError:
        load_hooks = None  # type: ignore[assignment]
    if load_hooks is not None:
        hooks = load_hooks(config, allow_insecure=g.allow_insecure)
    return Engine(config, hooks=hooks)


def _parse_state(word: str) -> State:
    try:
        return State.parse(word)
    except ValueError as exc:
        _fail(UsageError(str(exc)))


def _check_word(word: str, what: str) -> None:
    if len(word) > MAX_WORD or any(ord(c) < 32 for c in word):
        _fail(UsageError(f"{what} {_safe(word)} is not valid"))


def _resolve_instance(config, name: Optional[str], command: str) -> str:  # type: ignore[no-untyped-def]
    names = config.instance_names
    if name is None:
        if len(names) == 1:
            return names[0]
        _fail(UsageError(
            f"{command}: INSTANCE is required: the config declares {len(names)} instances "
            f"({', '.join(names)})"
        ))
    _check_word(name, "instance")
    if config.instance(name) is None:
        _fail(UsageError(f"unknown instance {_safe(name)}: the config declares {', '.join(names)}"))
    return name


def _print_result(g: Globals, result) -> None:  # type: ignore[no-untyped-def]
    from .journal import summary_line

    if g.json:
        typer.echo(json.dumps(result.record, indent=2, default=str))
        return
    for item in result.results:
        if item.status == "noop" and not (g.verbose or g.dry_run):
            continue
        mark = {"applied": "+", "noop": "=", "failed": "!", "skipped": "~"}[item.status]
        if g.dry_run and item.status == "skipped":
            mark = "+"
        typer.echo(f"{mark} {item.action}")
        if item.status == "failed" and item.error:
            typer.echo(f"    error: {item.error.splitlines()[0]}")
    for line in result.verify:
        typer.echo(f"! still differs after apply: {line}")
    if g.dry_run:
        pending = sum(1 for r in result.results if r.status == "skipped")
        typer.echo(f"dry-run: {pending} change(s) would be made, nothing was changed")
    typer.echo(summary_line(result.record), err=not sys.stdout.isatty() and False)
    for warning in result.record.get("warnings", ()):
        typer.echo(f"kanotify: warning: {warning}", err=True)


def _finish(g: Globals, result) -> NoReturn:  # type: ignore[no-untyped-def]
    _print_result(g, result)
    _exit(result.exit_code)


# --------------------------------------------------------------------------- transitions


def _transition(ctx: typer.Context, state: State, instance: Optional[str]) -> None:
    g = _g(ctx)
    if instance is not None:
        _check_word(instance, "instance")
    config = _load(g)
    name = _resolve_instance(config, instance, state.value)
    from .state import notification_ticket

    engine = _engine(g, config)
    result = engine.transition(
        [name], state, argv=_argv(), command=state.value, dry_run=g.dry_run, ticket=notification_ticket()
    )
    _finish(g, result)


@app.command()
def master(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """INSTANCE entered MASTER: bind its VIPs, load its IPVS services."""
    _transition(ctx, State.MASTER, instance)


@app.command()
def backup(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """INSTANCE entered BACKUP: release the VIPs (or bind them on lo), drop IPVS."""
    _transition(ctx, State.BACKUP, instance)


@app.command()
def fault(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """INSTANCE entered FAULT."""
    _transition(ctx, State.FAULT, instance)


@app.command()
def stop(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """keepalived stopped INSTANCE (its STOP notification)."""
    _transition(ctx, State.STOP, instance)


@app.command()
def notify(
    ctx: typer.Context,
    words: list[str] = typer.Argument(..., metavar="TYPE NAME STATE PRIORITY"),
) -> None:
    """keepalived's generic notify: TYPE (INSTANCE|GROUP) NAME STATE PRIORITY."""
    g = _g(ctx)
    if len(words) != 4:
        _fail(UsageError(
            f"notify takes exactly 4 words TYPE NAME STATE PRIORITY (as keepalived appends them), got {len(words)}"
        ))
    kind, name, state_word, priority_word = words
    for word, what in ((kind, "TYPE"), (name, "NAME"), (state_word, "STATE"), (priority_word, "PRIORITY")):
        _check_word(word, what)
    kind = kind.upper()
    if kind not in ("INSTANCE", "GROUP"):
        _fail(UsageError(f"notify: TYPE must be INSTANCE or GROUP, got {_safe(kind)}"))
    state = _parse_state(state_word)
    try:
        priority = int(priority_word)
        if not 0 <= priority <= 255:
            raise ValueError
    except ValueError:
        _fail(UsageError(f"notify: PRIORITY must be an integer 0..255, got {_safe(priority_word)}"))
    config = _load(g)
    engine = _engine(g, config)
    argv = _argv()
    command = f"notify {kind} {state.value}"
    if kind == "INSTANCE":
        names = [name] if config.instance(name) is not None else []
    else:
        group = config.group(name)
        names = list(group.instances) if group is not None else []
    if not names:
        what = "instance" if kind == "INSTANCE" else "group"
        note = f"{what} {name!r} is not managed by {config.path}; ignored"
        result = engine.ignored(argv=argv, command=command, note=note, name=None)
        if not g.json:
            typer.echo(f"kanotify: {note}")
        else:
            typer.echo(json.dumps(result.record, indent=2))
        _exit(EXIT_OK)
    from .state import notification_ticket

    result = engine.transition(
        names, state, argv=argv, command=command, dry_run=g.dry_run,
        ticket=notification_ticket(), priority=priority,
    )
    _finish(g, result)


# --------------------------------------------------------------------------- by hand


def _instances_option(config, instance: Optional[str]) -> Optional[list[str]]:  # type: ignore[no-untyped-def]
    if instance is None:
        return None
    return [_resolve_instance(config, instance, "reconcile")]


@app.command()
def reconcile(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, "--state", help="Converge to (and record) this state instead."),
    instance: Optional[str] = typer.Option(None, "--instance", help="Only this instance."),
) -> None:
    """Converge every instance (or one) to its recorded state; unrecorded counts as BACKUP."""
    g = _g(ctx)
    wanted = _parse_state(state) if state is not None else None
    config = _load(g)
    names = _instances_option(config, instance)
    result = _engine(g, config).reconcile(names, wanted, argv=_argv(), dry_run=g.dry_run)
    _finish(g, result)


@app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, "--state", help="Plan for this state instead of the recorded one."),
    instance: Optional[str] = typer.Option(None, "--instance", help="Only this instance."),
    detailed_exitcode: bool = typer.Option(
        False, "--detailed-exitcode", help="Exit 0 when nothing is to do, 2 when changes are pending."
    ),
) -> None:
    """Show what reconcile would do (reconcile --dry-run)."""
    g = _g(ctx)
    g.dry_run = True
    wanted = _parse_state(state) if state is not None else None
    config = _load(g)
    names = _instances_option(config, instance)
    result = _engine(g, config).reconcile(names, wanted, argv=_argv(), command="plan", dry_run=True)
    _print_result(g, result)
    if result.exit_code != EXIT_OK:
        _exit(result.exit_code)
    if detailed_exitcode and result.plan.has_changes:
        _exit(2)
    _exit(EXIT_OK)


@app.command()
def status(ctx: typer.Context) -> None:
    """Recorded state per instance and what is observed: VIPs, IPVS, ARP sysctls, drift."""
    g = _g(ctx)
    config = _load(g)
    from .status import collect_status, format_status

    report = collect_status(config)
    if g.json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        typer.echo(format_status(report, verbose=g.verbose))
    _exit(EXIT_OK)


@app.command()
def history(
    ctx: typer.Context,
    n: int = typer.Option(20, "-n", "--lines", min=1, help="How many transitions to show."),
) -> None:
    """The last N runs from the journal, newest last."""
    g = _g(ctx)
    config = _load(g)
    from .journal import Journal, summary_line

    records = Journal(config.settings.journal).tail(n)
    if g.json:
        typer.echo(json.dumps(records, indent=2))
        _exit(EXIT_OK)
    if not records:
        typer.echo(f"no transitions recorded in {config.settings.journal}")
        _exit(EXIT_OK)
    for rec in records:
        typer.echo(f"{str(rec.get('ts', '?')):<25} {summary_line(rec)}")
    _exit(EXIT_OK)


@app.command()
def check(ctx: typer.Context) -> None:
    """Validate the config file only."""
    g = _g(ctx)
    config = _load(g)
    summary: dict[str, Any] = {
        "config": config.path,
        "valid": True,
        "instances": list(config.instance_names),
        "vips": sum(len(i.vips) for i in config.instances),
        "services": sum(len(i.services) for i in config.instances),
        "sysctls": len(config.sysctls),
    }
    if g.json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"{config.path}: OK ({len(config.instances)} instance(s), {summary['vips']} VIP(s), "
            f"{summary['services']} service(s), {summary['sysctls']} sysctl(s))"
        )
    _exit(EXIT_OK)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (without the program name); returns the exit code."""
    words = hoist_global_options(sys.argv[1:] if argv is None else argv)
    try:
        app(args=words, prog_name="kanotify")
    except SystemExit as exc:  # typer/click end every run with SystemExit in standalone mode
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KanotifyError as exc:
        typer.echo(f"kanotify: {exc}", err=True)
        return exc.exit_code
    except Exception:  # noqa: BLE001 - unexpected: keep the traceback, exit 1
        import traceback

        traceback.print_exc()
        return 1
    return EXIT_OK


__all__ = ["app", "run", "hoist_global_options", "EXIT_CONFIG"]

"""The command line (typer): parse, call :mod:`kanotify.commands`, exit with its code.

Global options (``--config``, ``--dry-run``, ``--json``, ``-v``, ``--no-daemon``)
are accepted before and after the command: :func:`kanotify.options.hoist` moves
them in front before typer sees argv.  Their names and help come from the one
table in :mod:`kanotify.options`.  The keepalived forms
(``master|backup|fault|stop``, ``notify``) usually never reach this module:
``kanotify.__main__`` runs them without importing typer.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn, Optional, Sequence

import typer

from . import __version__, commands
from .commands import Globals, Session
from .errors import EXIT_OK
from .model import State
from .options import GLOBAL_OPTIONS, hoist

_OPTIONS = {option.dest: option for option in GLOBAL_OPTIONS}
#: where :func:`run` leaves the command's session for the handlers (click's ``Context.meta``)
_SESSION = "kanotify.session"


def _global(dest: str, default: Any) -> Any:
    """The typer option for one entry of the global option table."""
    option = _OPTIONS[dest]
    return typer.Option(
        default, *option.names, help=option.help, metavar=option.metavar, hidden=option.hidden, count=option.count,
    )

app = typer.Typer(
    name="kanotify",
    help="keepalived notify framework: converge VIPs, ARP sysctls and IPVS to the VRRP state.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    # states are matched without regard to case: `kanotify MASTER` is `kanotify master`
    context_settings={"token_normalize_func": str.lower},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kanotify {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _globals(
    ctx: typer.Context,
    _version: bool = typer.Option(
        False, "--version", is_eager=True, expose_value=False, callback=_print_version,
        help="Print kanotify's version and exit.",
    ),
    config: Optional[str] = _global("config", None),
    dry_run: bool = _global("dry_run", False),
    json: bool = _global("json", False),
    verbose: int = _global("verbose", 0),
    no_daemon: bool = _global("no_daemon", False),
    allow_insecure: bool = _global("allow_insecure", False),
) -> None:
    if isinstance(ctx.obj, Session):  # from run(): kept for the command's handler
        ctx.meta[_SESSION] = ctx.obj
    ctx.obj = Globals(config, dry_run, json, verbose, no_daemon, allow_insecure)


def _call(ctx: typer.Context, fn: Callable[..., Any], *args: Any) -> NoReturn:
    session, g = _invocation(ctx)
    raise typer.Exit(commands.guarded(fn, session, g, *args))


def _invocation(ctx: typer.Context) -> tuple[Session, Globals]:
    """The session :func:`run` was given (the callback keeps it in ``ctx.meta``) and the global options."""
    session = ctx.meta.get(_SESSION)
    g = ctx.obj if isinstance(ctx.obj, Globals) else Globals()
    return (session if isinstance(session, Session) else Session.here(sys.argv[1:])), g


@app.command()
def master(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """INSTANCE entered MASTER: bind its VIPs, load its IPVS services."""
    _call(ctx, commands.cmd_transition, State.MASTER, instance)


@app.command()
def backup(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """INSTANCE entered BACKUP: release the VIPs (or bind them on lo), drop IPVS."""
    _call(ctx, commands.cmd_transition, State.BACKUP, instance)


@app.command()
def fault(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """INSTANCE entered FAULT."""
    _call(ctx, commands.cmd_transition, State.FAULT, instance)


@app.command()
def stop(ctx: typer.Context, instance: Optional[str] = typer.Argument(None)) -> None:
    """keepalived stopped INSTANCE (its STOP notification)."""
    _call(ctx, commands.cmd_transition, State.STOP, instance)


@app.command()
def notify(
    ctx: typer.Context,
    words: list[str] = typer.Argument(..., metavar="TYPE NAME STATE PRIORITY"),
) -> None:
    """keepalived's generic notify: TYPE (INSTANCE|GROUP) NAME STATE PRIORITY."""
    _call(ctx, commands.cmd_notify, words)


@app.command()
def reconcile(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, "--state", help="Converge to (and record) this state instead."),
    instance: Optional[str] = typer.Option(None, "--instance", help="Only this instance."),
) -> None:
    """Converge every instance (or one) to its recorded state; unrecorded counts as BACKUP."""
    _call(ctx, commands.cmd_reconcile, state, instance)


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
    _call(ctx, commands.cmd_plan, state, instance, detailed_exitcode)


@app.command()
def status(ctx: typer.Context) -> None:
    """Recorded state per instance and what is observed: VIPs, IPVS, ARP sysctls, drift."""
    _call(ctx, commands.cmd_status)


@app.command()
def history(
    ctx: typer.Context,
    n: int = typer.Option(20, "-n", "--lines", min=1, help="How many runs to show."),
) -> None:
    """The last N runs from the journal, newest last (one killed before its end: interrupted)."""
    _call(ctx, commands.cmd_history, n)


@app.command()
def check(ctx: typer.Context) -> None:
    """Validate the config file and load the hook plugins it would use; change nothing."""
    _call(ctx, commands.cmd_check)


@app.command()
def listen(
    ctx: typer.Context,
    fifo: Optional[str] = typer.Argument(
        None, metavar="[FIFO]",
        help="keepalived's notify FIFO (keepalived passes it last to vrrp_notify_fifo_script).",
    ),
) -> None:
    """The resident daemon: keepalived's FIFO in order, one-shots handed over, drift repaired."""
    session, g = _invocation(ctx)
    raise typer.Exit(commands.cmd_listen(session, g, fifo))


@app.command("metrics")
def metrics_cmd(
    ctx: typer.Context,
    textfile: Optional[str] = typer.Option(
        None, "--textfile", metavar="PATH",
        help="Write them atomically into PATH (node_exporter's textfile collector) instead of stdout.",
    ),
) -> None:
    """Print the Prometheus metrics once (text format), for node_exporter's textfile collector."""
    _call(ctx, commands.cmd_metrics, textfile)


@app.command("doctor")
def doctor_cmd(
    ctx: typer.Context,
    keepalived_conf: str = typer.Option(
        "/etc/keepalived/keepalived.conf", "--keepalived-conf", metavar="PATH", help="keepalived's config file."
    ),
    config_id: Optional[str] = typer.Option(
        None, "--config-id", metavar="ID", help="keepalived's -i: which @ID lines apply [default: short host name]."
    ),
    sysctl_root: str = typer.Option("/", "--sysctl-root", hidden=True, help="Root of the sysctl.d search (tests)."),
) -> None:
    """Check keepalived.conf and this host for LVS pitfalls; exit 1 on any fail."""
    _call(ctx, commands.cmd_doctor, keepalived_conf, config_id, sysctl_root)


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    keepalived_conf: str = typer.Argument(..., metavar="KEEPALIVED_CONF"),
    instance: Optional[str] = typer.Option(
        None, "--instance", metavar="NAME", help="[[instance]] name [default: the file's first vrrp_instance, or VI_1]."
    ),
    config_id: Optional[str] = typer.Option(
        None, "--config-id", metavar="ID", help="keepalived's -i: which @ID lines apply [default: short host name]."
    ),
) -> None:
    """Print kanotify config TOML for the virtual_server blocks of a keepalived.conf."""
    _call(ctx, commands.cmd_import, keepalived_conf, instance, config_id)


@app.command("sysctl")
def sysctl_cmd(
    ctx: typer.Context,
    persist: bool = typer.Option(False, "--persist", help="Write the [sysctl] values to a sysctl.d file."),
    path: Optional[str] = typer.Option(
        None, "--path", metavar="PATH", help="Where [default: /etc/sysctl.d/90-kanotify.conf]."
    ),
) -> None:
    """Persist the configured sysctls (and their lo twins) across reboots."""
    _call(ctx, commands.cmd_sysctl, persist, path)


def run(argv: Sequence[str] | None = None, session: Session | None = None) -> int:
    """Run the CLI with ``argv`` (without the program name) in ``session`` (default: this process's); the exit code."""
    given = list(sys.argv[1:] if argv is None else argv)
    words = hoist(given)
    try:
        app(args=words, prog_name="kanotify", obj=session or Session.here(given))
    except SystemExit as exc:  # typer/click end every run with SystemExit in standalone mode
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except Exception:  # noqa: BLE001 - unexpected: keep the traceback, exit 1
        import traceback

        traceback.print_exc()
        return 1
    return EXIT_OK


__all__ = ["app", "run"]

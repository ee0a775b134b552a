"""The global options, in one table that every parser of the command line reads.

kanotify parses its command line in three places: typer (:mod:`kanotify.cli`)
for the whole CLI; the typer-free fast path for keepalived's own forms
(:func:`kanotify.commands.split_fast`); and, before anything is imported,
``__main__``'s STOP detection, which must know which options take a value so
it does not mistake ``--config /etc/x.toml stop`` for anything but a STOP.
All three, and the hoisting of options written after the command, read
:data:`GLOBAL_OPTIONS`; a test proves typer's options are the same set.

Free of imports on purpose: ``__main__`` uses it before it forks a STOP
notification's worker.
"""

from __future__ import annotations


class GlobalOption:
    """One global option: its spellings, where its value goes, and whether it takes one."""

    __slots__ = ("names", "dest", "takes_value", "count", "hidden", "metavar", "help")

    def __init__(
        self, *names: str, dest: str, help: str, takes_value: bool = False, count: bool = False,
        hidden: bool = False, metavar: str | None = None,
    ) -> None:
        self.names = names
        self.dest = dest
        self.takes_value = takes_value
        self.count = count
        self.hidden = hidden
        self.metavar = metavar
        self.help = help

    def __repr__(self) -> str:
        return f"GlobalOption{self.names!r}"


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("--config", dest="config", takes_value=True, metavar="PATH",
                 help="Config file [default: $KANOTIFY_CONFIG or /etc/kanotify/kanotify.toml]."),
    GlobalOption("--dry-run", dest="dry_run", help="Print the plan; change nothing."),
    GlobalOption("--json", dest="json", help="Machine-readable output on stdout."),
    GlobalOption("-v", "--verbose", dest="verbose", count=True, help="More detail (repeat for more)."),
    GlobalOption("--no-daemon", dest="no_daemon",
                 help="Run in this process even when a listener (kanotify listen) is running."),
    GlobalOption("--allow-insecure", dest="allow_insecure", hidden=True,
                 help="Skip the ownership/permission checks of the config file and hooks dir (tests only)."),
)

_BY_NAME = {name: option for option in GLOBAL_OPTIONS for name in option.names}


def lookup(word: str) -> tuple[GlobalOption, str | None, int] | None:
    """The global option ``word`` spells, its inline value (``--config=PATH``) and repeat count.

    ``-vv`` is ``-v`` twice.  ``None`` for anything else, other options included.
    """
    name, eq, value = word.partition("=")
    option = _BY_NAME.get(name)
    if option is not None:
        if eq and not option.takes_value:
            return None
        return option, (value if eq else None), 1
    if len(word) > 2 and word[0] == "-" and word[1] != "-":
        letters = word[1:]
        option = _BY_NAME.get("-" + letters[0])
        if option is not None and option.count and letters == letters[0] * len(letters):
            return option, None, len(letters)
    return None


def _scan(argv: list[str]) -> tuple[list[tuple[GlobalOption, str | None, int, list[str]]], list[str]] | None:
    """(global options found, with their value, count and the words that spelled them; other words)."""
    found: list[tuple[GlobalOption, str | None, int, list[str]]] = []
    words: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            words.extend(argv[i:])
            break
        hit = lookup(word)
        if hit is None:
            words.append(word)
        else:
            option, value, count = hit
            spelled = [word]
            if option.takes_value and value is None:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
                spelled.append(value)
            found.append((option, value, count, spelled))
        i += 1
    return found, words


def split(argv: list[str]) -> tuple[list[tuple[GlobalOption, str | None, int]], list[str]] | None:
    """Global options (with their values and repeat counts) and the remaining words, wherever they stand.

    ``None`` when a value option has no value.  Everything after ``--`` is a
    word.  Other options (``--help``, a command's own) stay among the words.
    """
    scanned = _scan(argv)
    if scanned is None:
        return None
    found, words = scanned
    return [(option, value, count) for option, value, count, _ in found], words


def hoist(argv: list[str]) -> list[str]:
    """``argv`` with the global options moved in front of the command, for typer.

    ``kanotify master VI_1 --dry-run`` == ``kanotify --dry-run master VI_1``.
    A value option without a value is left where it is, for typer to explain.
    """
    scanned = _scan(argv)
    if scanned is None:
        return list(argv)
    found, words = scanned
    return [w for *_, spelled in found for w in spelled] + words


def command_words(argv: list[str]) -> list[str]:
    """The words that are not options or option values: ``[command, args...]``."""
    parsed = split(argv)
    words = parsed[1] if parsed is not None else argv
    return [w for w in words if not w.startswith("-")]


__all__ = ["GLOBAL_OPTIONS", "GlobalOption", "command_words", "hoist", "lookup", "split"]

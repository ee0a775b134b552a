"""One error hierarchy; the CLI is the one place that prints it and picks the exit code."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


class KanotifyError(Exception):
    """Base of every error kanotify raises on purpose."""

    exit_code = EXIT_FAILED


class UsageError(KanotifyError):
    """Bad command line (unknown state, unknown instance, wrong number of words)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file: where, and what was expected."""

    file: str
    path: str  # key path, e.g. "instance[0].service[1].real[0].port"; "" for the whole file
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f": {self.path}"
        return f"{where}: {self.message}"


class ConfigError(KanotifyError):
    """The config is invalid; carries *every* problem found.  Nothing was changed."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ApplyError(KanotifyError):
    """A backend could not apply one action (after retries)."""

    def __init__(self, message: str, errno: int | None = None):
        self.errno = errno
        super().__init__(message)


class LockTimeout(KanotifyError):
    """Another kanotify run held the lock for longer than ``lock_timeout``."""


class HookError(KanotifyError):
    """A hook plugin failed, or could not be loaded."""


@dataclass(frozen=True)
class HookProblem:
    """One thing that went wrong with a hook plugin: which plugin, in which call, and what.

    ``call`` is ``load``, ``before_transition``, ``action`` (one of the
    plugin's actions; ``action`` names it), ``action_failed`` or
    ``after_transition``.  ``required`` is the plugin's ``[hooks.NAME]``
    setting; ``timeout`` says the call ran past its time bound; ``traceback``
    is kept for unexpected exceptions.  :meth:`to_json` is what the journal
    record's ``"hooks"`` list holds.
    """

    hook: str
    call: str
    error: str
    required: bool = False
    timeout: bool = False
    action: str | None = None
    traceback: str | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "hook": self.hook,
            "call": self.call,
            "error": self.error,
            "required": self.required,
            "timeout": self.timeout,
        }
        if self.action is not None:
            data["action"] = self.action
        if self.traceback is not None:
            data["traceback"] = self.traceback
        return data

    def __str__(self) -> str:
        return f"hook {self.hook}: {self.call}: {self.error}"

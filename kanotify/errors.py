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

"""A small kit for validating parsed TOML: every problem collected, each at its key path.

Nothing here knows about kanotify.  A reader wraps each TOML table in a
:class:`Table`, asks it for typed values (``t.integer("port", 1, 65535)``) and
gets ``None`` back for an unusable one, while the table records the problem
under ``<table path>.<key>`` in a shared :class:`Problems`.  Checking goes on
after a mistake, so one run reports all of them; :meth:`Table.done` then
reports the keys nobody asked for, with a "did you mean" suggestion.

Messages name what was expected and what was found, in TOML's words::

    expected an integer 1..65535, got string "80"

Flat records (a dataclass whose fields are all scalars) can declare each
field's rule once, as field metadata (:func:`setting`); :func:`read_fields`
then reads such a table and :func:`field_keys` lists its keys::

    @dataclass(frozen=True)
    class Limits:
        timeout: float = setting(10.0, Number(0, 3600, lo_open=True))
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import Field, field, fields
from datetime import date, datetime, time
from typing import Any, Callable, Iterable, Mapping, TypeVar

T = TypeVar("T")

# --------------------------------------------------------------------------- how values are written back


def toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, as operators read it in the file."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime):
        return "date-time"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    return type(value).__name__


def literal(value: object) -> str:
    """A value written back the way TOML spells it (short, for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 70 else text[:66] + '..."'
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return toml_type(value)
    return str(value)


def got(value: object) -> str:
    """``got string "80"`` for a wrong type (the type is the surprise)."""
    kind = toml_type(value)
    if kind in ("array", "table"):
        return f"got {kind}"
    return f"got {kind} {literal(value)}"


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def quote_key(name: str) -> str:
    """One key-path component: bare when TOML allows it bare, else quoted."""
    if _BARE_KEY_RE.fullmatch(name):
        return name
    return json.dumps(name, ensure_ascii=False)


def join(path: str, name: str) -> str:
    """``path.name`` (``name`` quoted when TOML would need it), or ``name`` at the top."""
    return f"{path}.{quote_key(name)}" if path else quote_key(name)


def one_of(choices: Iterable[str]) -> str:
    return "one of " + ", ".join(choices)


def unknown_key(name: str, allowed: tuple[str, ...]) -> str:
    """The message for a key that is not one of ``allowed``, with the closest one as a hint."""
    import difflib  # error path only

    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key: expected one of {', '.join(allowed)}{hint}"


# --------------------------------------------------------------------------- collecting problems


class Problems:
    """Collects (key path, message) pairs; whoever reports them adds the file name."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def mark(self) -> int:
        return len(self.items)

    def since(self, mark: int) -> bool:
        """Was anything added after :meth:`mark` returned ``mark``?"""
        return len(self.items) > mark


_MISSING: Any = object()


def _integer_what(lo: int, hi: int | None) -> str:
    return f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"


def _number_what(lo: float, hi: float | None, lo_open: bool) -> str:
    return f"a number {'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")


class Table:
    """One TOML table under validation.

    Every getter records a problem under ``<this table's path>.<key>`` and
    returns ``None`` when the value is unusable, so callers go on checking the
    rest of the file; :meth:`done` reports the keys nobody asked for.  The
    words of a message are only put together when there is a problem: a large
    valid file is read without building any.
    """

    __slots__ = ("problems", "path", "data", "allowed")

    def __init__(self, problems: Problems, path: str, data: Mapping[str, Any], allowed: tuple[str, ...]):
        self.problems = problems
        self.path = path
        self.data = data
        self.allowed = allowed

    def at(self, name: str) -> str:
        return join(self.path, name)

    def problem(self, name: str | None, message: str) -> None:
        self.problems.add(self.path if name is None else self.at(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def done(self) -> None:
        allowed = self.allowed
        for name in self.data:
            if name not in allowed:
                self.problem(name, unknown_key(name, allowed))

    def _missing(self, name: str, what: str) -> None:
        self.problem(name, f"missing required key: expected {what}")

    # -- scalars

    def text(
        self,
        name: str,
        what: str = "a non-empty string",
        *,
        required: bool = False,
        default: str | None = None,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """A non-empty string; *check* returns an error message or None."""
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self._missing(name, what)
            return default
        if not isinstance(value, str) or not value:
            self.problem(name, f"expected {what}, {got(value)}")
            return None
        error = check(value) if check else None
        if error:
            self.problem(name, error)
            return None
        return value

    def choice(
        self, name: str, choices: tuple[str, ...], *, required: bool = False, default: str | None = None
    ) -> str | None:
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self._missing(name, one_of(choices))
            return default
        if isinstance(value, str) and value in choices:
            return value
        if not isinstance(value, str):
            self.problem(name, f"expected {one_of(choices)}, {got(value)}")
        else:
            self.problem(name, f"expected {one_of(choices)}, got {literal(value)}")
        return None

    def integer(
        self, name: str, lo: int, hi: int | None, *, required: bool = False, default: int | None = None
    ) -> int | None:
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self._missing(name, _integer_what(lo, hi))
            return default
        if value.__class__ is int and value >= lo and (hi is None or value <= hi):
            return value  # the common case, without building a message
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, f"expected {_integer_what(lo, hi)}, {got(value)}")
            return None
        if value < lo or (hi is not None and value > hi):
            self.problem(name, f"expected {_integer_what(lo, hi)}, got {value}")
            return None
        return value

    def number(
        self, name: str, lo: float, hi: float | None, *, lo_open: bool, default: float | None
    ) -> float | None:
        """A finite number (integers welcome) in ``lo < x`` / ``lo <= x``, ``x <= hi``."""
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(name, f"expected {_number_what(lo, hi, lo_open)}, {got(value)}")
            return None
        number = float(value)
        if (
            not math.isfinite(number)
            or (number <= lo if lo_open else number < lo)
            or (hi is not None and number > hi)
        ):
            self.problem(name, f"expected {_number_what(lo, hi, lo_open)}, got {literal(value)}")
            return None
        return number

    def boolean(self, name: str, default: bool | None) -> bool | None:
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"expected true or false, {got(value)}")
            return None
        return value

    # -- containers

    def array(self, name: str, what: str, *, required: bool = False) -> list[Any] | None:
        """A list; ``None`` when absent or not a list (the latter is a problem)."""
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self._missing(name, what)
            return None
        if not isinstance(value, list):
            self.problem(name, f"expected {what}, {got(value)}")
            return None
        return value

    def words(
        self, name: str, choices: tuple[str, ...], what: str, *, required: bool = False, nonempty: bool = False
    ) -> list[str] | None:
        """A list of distinct strings, each one of *choices*."""
        items = self.array(name, what, required=required)
        if items is None:
            return None
        if nonempty and not items:
            self.problem(name, f"expected {what}, got an empty array")
            return None
        result: list[str] = []
        ok = True
        for i, item in enumerate(items):
            if isinstance(item, str) and item in choices and item not in result:
                result.append(item)
                continue
            where = f"{self.at(name)}[{i}]"
            if not isinstance(item, str):
                self.problems.add(where, f"expected {one_of(choices)}, {got(item)}")
            elif item not in choices:
                self.problems.add(where, f"expected {one_of(choices)}, got {literal(item)}")
            else:
                self.problems.add(where, f"duplicate {literal(item)}: expected each name once")
            ok = False
        return result if ok else None

    def tables(self, name: str, header: str) -> list[tuple[str, dict[str, Any]]]:
        """An array of tables (``[[header]]``) as (path, table) pairs."""
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            self.problem(name, f"expected an array of tables ([[{header}]]), {got(value)}")
            return []
        base = self.at(name)
        result = []
        for i, item in enumerate(value):
            where = f"{base}[{i}]"
            if isinstance(item, dict):
                result.append((where, item))
            else:
                self.problems.add(where, f"expected a table ([[{header}]]), {got(item)}")
        return result

    def table(self, name: str, header: str) -> dict[str, Any] | None:
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.problem(name, f"expected a table ([{header}]), {got(value)}")
            return None
        return value


# --------------------------------------------------------------------------- records declared once

#: the field-metadata key holding a field's :class:`Rule`
RULE = "tomlcheck.rule"


class Rule:
    """How one scalar key is read from its table (see :func:`setting`).

    The rules are plain classes, not dataclasses: creating a dataclass costs
    about 0.4 ms at import, and every notification imports this module.
    """

    __slots__ = ()

    def read(self, table: Table, name: str, default: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({values})"


class Text(Rule):
    """A non-empty string; ``check`` returns an error message or None."""

    __slots__ = ("what", "check")

    def __init__(self, what: str = "a non-empty string", check: Callable[[str], str | None] | None = None):
        self.what = what
        self.check = check

    def read(self, table: Table, name: str, default: Any) -> Any:
        return table.text(name, self.what, default=default, check=self.check)


class Boolean(Rule):
    """``true`` or ``false``."""

    __slots__ = ()

    def read(self, table: Table, name: str, default: Any) -> Any:
        return table.boolean(name, default)


class Integer(Rule):
    """An integer ``lo..hi`` (``hi`` None: no upper bound)."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo: int, hi: int | None = None):
        self.lo = lo
        self.hi = hi

    def read(self, table: Table, name: str, default: Any) -> Any:
        return table.integer(name, self.lo, self.hi, default=default)


class Number(Rule):
    """A finite number, integers welcome: ``lo < x`` (``lo_open``) or ``lo <= x``, and ``x <= hi``."""

    __slots__ = ("lo", "hi", "lo_open")

    def __init__(self, lo: float, hi: float | None = None, *, lo_open: bool = False):
        self.lo = lo
        self.hi = hi
        self.lo_open = lo_open

    def read(self, table: Table, name: str, default: Any) -> Any:
        return table.number(name, self.lo, self.hi, lo_open=self.lo_open, default=default)


def setting(default: T, rule: Rule) -> T:
    """A dataclass field with its default and the :class:`Rule` that reads it from TOML."""
    return field(default=default, metadata={RULE: rule})


def _ruled(cls: type) -> list[Field[Any]]:
    return [f for f in fields(cls) if RULE in f.metadata]


def field_keys(cls: type) -> tuple[str, ...]:
    """The TOML keys of ``cls``: its fields that have a rule, in declaration order."""
    return tuple(f.name for f in _ruled(cls))


def read_fields(table: Table, cls: type) -> dict[str, Any] | None:
    """Each ruled field of ``cls`` read from ``table`` (absent: its default), or None after a problem."""
    mark = table.problems.mark()
    values = {f.name: f.metadata[RULE].read(table, f.name, f.default) for f in _ruled(cls)}
    return None if table.problems.since(mark) else values

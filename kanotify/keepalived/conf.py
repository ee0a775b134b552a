"""A reader for keepalived.conf that follows keepalived's own parser (``lib/parser.c``, v2.2.7).

It knows the *grammar* of keepalived.conf, not what kanotify does with it:
:func:`read_config` returns a tree of :class:`Statement` (a line's words and,
when it opens one, its ``{ ... }`` block), each with the file and line it came
from, plus every problem keepalived itself would complain about while reading
(:class:`Message`).  It never raises for a bad config: a missing or unreadable
main file is one message and an empty tree, so ``doctor`` can report it as a row.

What it does, in keepalived's order, for every physical line:

* strip ``!`` / ``#`` comments outside double quotes (``\\#`` and ``\\!`` are literal
  characters), leading and trailing blanks;
* while collecting a multi-line definition (a ``$NAME=...`` line ending in ``\\``),
  add the line to it;
* ``@ID line`` is kept only when ID is the config id (``keepalived -i ID``; by
  default the first part of the host name), ``@^ID line`` only when it is not;
* ``$NAME=VALUE`` defines NAME; ``$NAME`` and ``${NAME}`` elsewhere are replaced,
  again and again while the result still contains a known definition, and a
  multi-line definition standing alone on a line becomes several lines.
  Predefined: ``_PWD`` (directory of the current file), ``_INSTANCE`` (the config
  id), ``_RANDOM [MIN [MAX]]``, ``_HASH`` (``#``), ``_BANG`` (``!``);
* ``~SEQ(VAR, [START,] [STEP,] END) TEXT`` (``~SEQx`` in hex) and
  ``~LST(VAR|{VARS}, VALUES...) TEXT`` repeat TEXT with VAR set;
* ``include PATTERN`` (and ``includer|m|w|b|a``) reads the files matching the glob
  (braces too), sorted, relative to the directory of the including file --
  recognised *after* the ``@`` and ``$`` processing, as keepalived 2.2.7 does it
  (its manual says the opposite; ``keepalived -t`` shows the code is right).
  Directories and executable files are skipped, as keepalived skips them;
* ``{`` and ``}`` are words of their own even in the middle of a line (outside
  quotes): ``real_server 192.0.2.1 80 { weight 2 }`` is three lines.

Words are split as keepalived's ``alloc_strvec`` does: on blanks, and a double-quoted
string (without escapes) is one word without its quotes.  :func:`split_script`
re-splits a script string the way keepalived does for notify commands (double and
single quotes, backslash escapes).

Keyword aliases keepalived accepts (:data:`ALIASES`) are resolved by
:meth:`Statement.is_`; the grammar does not depend on them.

>>> conf = parse_text('virtual_server 192.0.2.1 80 { lb_algo rr  # comment\\n}\\n', "k.conf")
>>> vs = conf.statements[0]
>>> vs.words, str(vs.where), [(s.keyword, s.args) for s in vs.block or ()]
(('virtual_server', '192.0.2.1', '80'), 'k.conf:1', [('lb_algo', ('rr',))])
>>> vs.block[0].is_("lvs_sched")
True
"""

from __future__ import annotations

import glob
import os
import random
import re
import socket
import stat
from dataclasses import dataclass, field
from typing import Iterable, Iterator

DEFAULT_PATH = "/etc/keepalived/keepalived.conf"

#: legacy keyword -> the keyword keepalived treats it as (context-free ones only;
#: ``nb_get_retry`` means ``retry`` only inside HTTP_GET/SSL_GET, see :data:`CHECKER_ALIASES`).
ALIASES = {
    "lb_algo": "lvs_sched",
    "lb_kind": "lvs_method",
    "lvs_flush_onstop": "lvs_flush_on_stop",
}
#: inside HTTP_GET / SSL_GET only
CHECKER_ALIASES = {"nb_get_retry": "retry"}

_MAX_INCLUDE_DEPTH = 32
_MAX_EXPANSIONS = 100  # definitions expanding into themselves
_MAX_SEQ = 10000
_INCLUDE_RE = re.compile(r"include[rmwba]?[ \t]")


@dataclass(frozen=True, order=True)
class Where:
    """A place in a config file, printed as ``FILE:LINE``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Message:
    """Something keepalived would complain about while reading the file."""

    where: Where | None
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}" if self.where else self.text


@dataclass(frozen=True)
class Statement:
    """One keyword line: its words and, if it opens one, its ``{ ... }`` block.

    ``text`` is the line as keepalived's handlers see it (comments removed,
    definitions expanded), which script keywords re-split with quotes and
    escapes (:func:`split_script`).  ``block`` is ``None`` when the line opens
    no block; ``end`` is where the block's ``}`` is.
    """

    words: tuple[str, ...]
    where: Where
    text: str = ""
    block: tuple["Statement", ...] | None = None
    end: Where | None = None

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> tuple[str, ...]:
        return self.words[1:]

    def arg(self, index: int, default: str | None = None) -> str | None:
        """``args[index]`` or *default*."""
        return self.words[index + 1] if index + 1 < len(self.words) else default

    def is_(self, keyword: str) -> bool:
        """Is this *keyword*, by its own name or by a legacy alias of it?"""
        return self.keyword == keyword or ALIASES.get(self.keyword) == keyword

    def children(self, keyword: str | None = None) -> list["Statement"]:
        """The statements of the block (those that are *keyword*, or all)."""
        return [s for s in self.block or () if keyword is None or s.is_(keyword)]

    def child(self, keyword: str) -> "Statement | None":
        """The first statement of the block that is *keyword*."""
        found = self.children(keyword)
        return found[0] if found else None

    def walk(self) -> Iterator["Statement"]:
        """This statement and everything below it, in file order."""
        yield self
        for sub in self.block or ():
            yield from sub.walk()


@dataclass(frozen=True)
class KeepalivedConf:
    """A whole keepalived.conf with its includes, as a tree of statements."""

    path: str
    statements: tuple[Statement, ...] = ()
    messages: tuple[Message, ...] = ()
    files: tuple[str, ...] = ()  # every file read, the main one first
    readable: bool = True  # False: the main file could not be read at all
    config_id: str | None = None

    def top(self, keyword: str) -> list[Statement]:
        """Top-level statements that are *keyword* (``global_defs``, ``vrrp_instance`` ...)."""
        return [s for s in self.statements if s.is_(keyword)]

    def walk(self) -> Iterator[Statement]:
        for statement in self.statements:
            yield from statement.walk()

    def global_defs(self) -> list[Statement]:
        """Every statement inside the ``global_defs`` blocks (keepalived merges them)."""
        return [s for g in self.top("global_defs") for s in g.block or ()]

    def global_(self, keyword: str) -> list[Statement]:
        return [s for s in self.global_defs() if s.is_(keyword)]


# --------------------------------------------------------------------------- words


def split_words(text: str) -> tuple[list[str], str | None]:
    """keepalived's ``alloc_strvec``: blank-separated words, ``"..."`` is one word.

    Returns the words and an error (an unmatched quote: the words up to it).
    ``a"b c"`` is two words, ``a`` and ``b c``, as in keepalived.
    """
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return words, None
        if text[i] == '"':
            end = text.find('"', i + 1)
            if end == -1:
                return words, f"unmatched quote: {text!r}"
            words.append(text[i + 1 : end])
            i = end + 1
        else:
            start = i
            while i < n and text[i] not in ' \t"':
                i += 1
            words.append(text[start:i])


_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def split_script(text: str) -> list[str] | None:
    """keepalived's ``alloc_strvec_quoted_escaped``: words with ``"..."``, ``'...'`` and ``\\`` escapes.

    Used twice on a notify line, as keepalived does: on the whole line to find
    the script string (word 1) and the optional user and group (words 2, 3),
    then on the script string to get its argv.  ``None`` when a quote is not
    closed (keepalived then ignores the script).

    >>> split_script('notify_master "/usr/bin/kanotify --config \\'/etc/k a.toml\\' master" root')
    ['notify_master', "/usr/bin/kanotify --config '/etc/k a.toml' master", 'root']
    >>> split_script("/usr/bin/kanotify --config '/etc/k a.toml' master")
    ['/usr/bin/kanotify', '--config', '/etc/k a.toml', 'master']
    """
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return words
        out: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if c == "\\":
                i += 1
                if i >= n:
                    return None
                c = text[i]
                if c == "x" and i + 1 < n and text[i + 1] in "0123456789abcdefABCDEF":
                    j = i + 1
                    while j < n and text[j] in "0123456789abcdefABCDEF":
                        j += 1
                    out.append(chr(int(text[i + 1 : j], 16) & 0xFF))
                    i = j
                elif c == "c" and i + 1 < n:
                    out.append(chr(ord(text[i + 1]) & 0x1F))
                    i += 2
                elif "0" <= c <= "7":
                    j = i
                    while j < n and j < i + 3 and "0" <= text[j] <= "7":
                        j += 1
                    out.append(chr(int(text[i:j], 8) & 0xFF))
                    i = j
                else:
                    out.append(_ESCAPES.get(c, c))
                    i += 1
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    out.append(c)
                i += 1
                continue
            if c in "\"'":
                quote = c
                i += 1
                continue
            if c in " \t":
                break
            out.append(c)
            i += 1
        if quote:
            return None
        words.append("".join(out))


def script_argv(stmt: Statement) -> tuple[list[str] | None, list[str]]:
    """A script line's command as keepalived runs it, and the words after the command.

    keepalived splits the line with quotes and escapes, takes word 1 as the
    command and splits that again (``notify_script_init``,
    ``set_script_params_array``); the words after it are the user and group
    of notify scripts, and ignored by ``misc_path``.  The argv is ``None``
    when keepalived cannot parse it (an unclosed quote, no command).

    >>> script_argv(Statement(("misc_path",), Where("k", 1), 'misc_path "/bin/check -p 80" root'))
    (['/bin/check', '-p', '80'], ['root'])
    """
    words = split_script(stmt.text) or []
    argv = split_script(words[1]) if len(words) > 1 else None
    return (argv or None), words[2:]


def decomment(line: str) -> tuple[str, bool, str | None]:
    """keepalived's ``decomment``: drop comments and outer blanks.

    Returns the text, whether it ends in a continuation ``\\`` (kept at the end),
    and an error for an unterminated quote.
    """
    text = line.lstrip(" \t")
    out: list[str] = []
    quote = False
    cont = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            quote = not quote
        elif c == "\\":
            if i + 1 < n:
                if not quote and text[i + 1] in "#!":
                    out.append(text[i + 1])  # an escaped comment character is literal
                else:
                    out.append(text[i : i + 2])
                i += 2
                continue
            cont = True
            break
        elif not quote and c in "!#":
            break
        out.append(c)
        i += 1
    result = "".join(out).rstrip(" \t")
    error = f"unterminated quote: {line.strip()!r}" if quote else None
    if cont:
        result += "\\"
    return result, cont, error


def _split_braces(text: str) -> list[str]:
    """``a b { c }`` -> ``["a b", "{", "c", "}"]``: braces outside quotes are lines of their own."""
    parts: list[str] = []
    current: list[str] = []
    quote = False
    for c in text:
        if c == '"':
            quote = not quote
        if not quote and c in "{}":
            if "".join(current).strip():
                parts.append("".join(current).strip(" \t"))
            parts.append(c)
            current = []
        else:
            current.append(c)
    if "".join(current).strip():
        parts.append("".join(current).strip(" \t"))
    return parts


# --------------------------------------------------------------------------- definitions


@dataclass
class _Definition:
    value: str
    multiline: bool = False
    max_params: int = 0
    builtin: str | None = None  # _PWD, _INSTANCE, _RANDOM


_DEF_LINE_END = "\n"  # keepalived's DEF_LINE_END separates the lines of a multi-line value


class _Definitions:
    """``$NAME`` definitions, with keepalived's lookup and replacement rules."""

    def __init__(self, config_id: str | None) -> None:
        self.config_id = config_id
        self.cwd = "."
        self.defs: dict[str, _Definition] = {
            "_PWD": _Definition("", builtin="_PWD"),
            "_INSTANCE": _Definition("", builtin="_INSTANCE"),
            "_RANDOM": _Definition("", max_params=2, builtin="_RANDOM"),
            "_HASH": _Definition("#"),
            "_BANG": _Definition("!"),
        }

    def value(self, name: str, params: str | None) -> str:
        d = self.defs[name]
        if d.builtin == "_PWD":
            return self.cwd
        if d.builtin == "_INSTANCE":
            return self.config_id or ""
        if d.builtin == "_RANDOM":
            bounds = [int(p) for p in (params or "").split()]
            lo = bounds[0] if bounds else 0
            hi = bounds[1] if len(bounds) > 1 else 32767
            return str(random.randint(lo, max(lo, hi)))
        return d.value

    def define(self, line: str) -> _Definition | None:
        """A ``$NAME=VALUE`` line: store it; None when the line is not a definition."""
        m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*)\Z", line, re.S)
        if not m:
            return None
        name, value = m.group(1), m.group(2)
        multiline = value.endswith("\\")
        if multiline:
            value = value[:-1].rstrip(" \t")
            value = value + _DEF_LINE_END if value else ""
        d = _Definition(value, multiline)
        self.defs[name] = d
        return d

    def find(self, text: str, pos: int) -> tuple[str, int, str | None] | None:
        """The definition used at ``text[pos] == '$'``: (name, end offset, params) or None."""
        rest = text[pos + 1 :]
        braces = rest.startswith("{")
        if braces:
            rest = rest[1:]
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", rest)
        if not m:
            return None
        name = m.group(0)
        after = rest[len(name) :]
        params: str | None = None
        if braces:
            pm = re.match(r"([ 0-9]*)\}", after)
            if not pm:
                return None
            if pm.group(1).strip():
                if pm.group(1).endswith(" "):
                    return None
                params = pm.group(1).strip()
            consumed = 1 + 1 + len(name) + len(pm.group(0))
        else:
            if after and after[0] not in " \t,)":
                return None
            consumed = 1 + len(name)
        d = self.defs.get(name)
        if d is None:
            return None
        if params and not d.max_params:
            return None
        if d.multiline and pos + consumed != len(text):
            return None  # a multi-line definition only expands at the end of a line
        return name, pos + consumed, params

    def replace(self, text: str) -> tuple[str, bool, list[str] | None]:
        """One replacement pass: (text, whether anything was replaced, extra lines of a multi-line one)."""
        out: list[str] = []
        i = 0
        found = False
        while True:
            j = text.find("$", i)
            if j == -1 or j + 1 >= len(text):
                out.append(text[i:])
                break
            hit = self.find(text, j)
            if hit is None:
                out.append(text[i : j + 1])
                i = j + 1
                continue
            name, end, params = hit
            found = True
            d = self.defs[name]
            if d.multiline:
                lines = d.value.split(_DEF_LINE_END)
                if lines and lines[-1] == "":
                    lines.pop()
                return "".join(out) + text[i:j] + (lines[0] if lines else ""), True, lines[1:]
            out.append(text[i:j])
            out.append(self.value(name, params))
            i = end
        return "".join(out), found, None


# --------------------------------------------------------------------------- line reader


@dataclass
class _Line:
    text: str
    where: Where


class _Reader:
    """Produces keepalived's logical lines (after comments, @, $, ~SEQ, include, braces)."""

    def __init__(self, config_id: str | None) -> None:
        self.defs = _Definitions(config_id)
        self.config_id = config_id
        self.messages: list[Message] = []
        self.files: list[str] = []
        self.lines: list[_Line] = []
        self.main = ""  # the main file, as the user named it

    def message(self, where: Where | None, text: str) -> None:
        self.messages.append(Message(where, text))

    # -- files

    def read_file(self, path: str, display: str, depth: int, where: Where | None) -> bool:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            self.message(where, f"cannot read {display}: {exc.strerror}")
            return False
        self.files.append(os.path.normpath(path))
        self.read_text(raw.decode("utf-8", errors="surrogateescape"), os.path.dirname(os.path.abspath(path)),
                       display, depth)
        return True

    def read_text(self, text: str, directory: str, display: str, depth: int) -> None:
        """The lines of one file; *directory* is where its includes and ``$_PWD`` point."""
        saved_cwd = self.defs.cwd
        self.defs.cwd = directory
        collecting: _Definition | None = None
        for number, physical in enumerate(text.splitlines(), 1):
            here = Where(display, number)
            line = physical.rstrip("\r\n")
            if not line.strip():
                if collecting is not None:
                    collecting = None  # a blank line ends a multi-line definition
                continue
            cleaned, cont, error = decomment(line)
            if error:
                self.message(here, error)
            if collecting is not None:
                if cont:
                    part = cleaned[:-1].rstrip(" \t")
                    if part:
                        collecting.value += part + _DEF_LINE_END
                else:
                    if cleaned:
                        collecting.value += cleaned
                    collecting = None
                continue
            if not cleaned:
                continue
            collecting = self.process(cleaned, here, depth)
        self.defs.cwd = saved_cwd

    def include(self, pattern: str, where: Where, depth: int) -> None:
        if depth >= _MAX_INCLUDE_DEPTH:
            self.message(where, f"include nested more than {_MAX_INCLUDE_DEPTH} deep (a loop?): {pattern}")
            return
        base = self.defs.cwd
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        matches: list[str] = []
        for alternative in _expand_braces(full):
            if glob.has_magic(alternative):
                matches.extend(sorted(glob.glob(alternative)))
            elif os.path.lexists(alternative):
                matches.append(alternative)
            else:
                self.message(where, f"include {pattern}: {alternative} does not exist")
        if not matches and glob.has_magic(full):
            self.message(where, f"include {pattern}: no file matches")
        for path in matches:
            display = _display(path, self.main)
            try:
                st = os.stat(path)
            except OSError as exc:
                self.message(where, f"include {display}: {exc.strerror}")
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o111:
                # keepalived's check_glob_file: only regular, non-executable files
                self.message(where, f"include {display}: not a regular non-executable file - keepalived skips it")
                continue
            self.read_file(path, display, depth + 1, where)

    # -- one logical line

    def process(self, text: str, where: Where, depth: int, budget: int = _MAX_EXPANSIONS) -> _Definition | None:
        """Handle one decommented line; returns a multi-line definition being collected."""
        pending = [text]
        while pending:
            line = pending.pop(0)
            collecting = self._process_one(line, where, depth, pending, budget)
            if collecting is not None:
                return collecting
        return None

    def _process_one(self, text: str, where: Where, depth: int, pending: list[str], budget: int) -> _Definition | None:
        for _ in range(budget):
            if text.startswith("@"):
                reverse = text.startswith("@^")
                body = text[2:] if reverse else text[1:]
                m = re.match(r"(\S*)[ \t]+(.*)\Z", body, re.S)
                if not m:
                    return None
                matches = self.config_id is not None and m.group(1) == self.config_id
                if matches == reverse:
                    return None
                text = m.group(2)
            if text.startswith("$"):
                d = self.defs.define(text)
                if d is not None:
                    return d if d.multiline else None
            if text.startswith(("~SEQ", "~LST")):
                self._sequence(text, where, depth)
                return None
            if text.startswith("~"):
                break
            if "$" not in text:
                break
            replaced, found, extra = self.defs.replace(text)
            if not found:
                break
            if extra:
                pending[:0] = extra
            text, _, error = decomment(replaced)
            if error:
                self.message(where, error)
            if not text:
                return None
            if not (text.startswith("@") or "$" in text):
                break
        else:
            self.message(where, f"definitions expand more than {budget} times (a definition that uses itself?)")
        if _INCLUDE_RE.match(text):
            self.include(text.split(None, 1)[1].strip() if len(text.split(None, 1)) > 1 else "", where, depth)
            return None
        parts = _split_braces(text)
        if not parts:
            return None
        self.lines.append(_Line(parts[0], where))
        # the rest of the line after a brace goes through read_line again, as in keepalived
        for rest in parts[1:]:
            if rest in "{}":
                self.lines.append(_Line(rest, where))
            else:
                self.process(rest, where, depth)
        return None

    def _sequence(self, text: str, where: Where, depth: int) -> None:
        parsed = _parse_seq(text, self.defs) if text.startswith("~SEQ") else _parse_lst(text)
        if isinstance(parsed, str):
            self.message(where, parsed)
            return
        assignments, body = parsed
        for values in assignments:
            for name, value in values:
                self.defs.defs[name] = _Definition(value)
            self.process(body, where, depth)


def _parse_seq(text: str, defs: _Definitions) -> tuple[list[list[tuple[str, str]]], str] | str:
    m = re.match(r"~SEQ(x?)[ \t]*\(([^)]*)\)[ \t]*(.*)\Z", text, re.S)
    if not m:
        return f"invalid ~SEQ specification {text!r}"
    hexa = bool(m.group(1))
    parts = [p.strip() for p in m.group(2).split(",")]
    var = parts[0]
    if not var or len(parts) < 2:
        return f"invalid ~SEQ specification {text!r}"
    try:
        nums = [int(defs.replace(p)[0], 0) for p in parts[1:]]
    except ValueError:
        return f"invalid ~SEQ values {text!r}"
    if len(nums) == 1:
        end = nums[0]
        step = -1 if end < 1 else 1
        start = -1 if end < 0 else 1
    elif len(nums) == 2:
        start, end = nums
        step = 1 if start <= end else -1
    elif len(nums) == 3:
        start, step, end = nums
        if not step or (start < end and step < 0) or (start > end and step > 0):
            return f"invalid ~SEQ values {text!r}"
    else:
        return f"invalid ~SEQ specification {text!r}"
    if hexa and (start < 0 or end < 0):
        return f"~SEQx is only valid for positive numbers {text!r}"
    values = []
    n = start
    while (step > 0 and n <= end) or (step < 0 and n >= end):
        values.append([(var, format(n, "x") if hexa else str(n))])
        n += step
        if len(values) > _MAX_SEQ:
            return f"~SEQ produces more than {_MAX_SEQ} lines {text!r}"
    return values, m.group(3)


def _parse_lst(text: str) -> tuple[list[list[tuple[str, str]]], str] | str:
    m = re.match(r"~LST[ \t]*\((.*)\)[ \t]*(.*)\Z", text, re.S)
    bad = f"invalid ~LST specification {text!r}"
    if not m:
        return bad
    inner = m.group(1)
    # variables: NAME or {NAME, NAME}; then value sets: V or {V, V}, separated by commas
    items = re.findall(r"\{[^}]*\}|[^,{}]+", inner)
    items = [i.strip() for i in items if i.strip()]
    if len(items) < 2:
        return bad
    names = [n.strip() for n in items[0].strip("{}").split(",")]
    sets = []
    for item in items[1:]:
        values = [v.strip() for v in item.strip("{}").split(",")]
        if len(values) > len(names):
            return f"~LST specification has too many values {text!r}"
        values += [""] * (len(names) - len(values))
        sets.append(list(zip(names, values)))
    return sets, m.group(2)


def _expand_braces(pattern: str) -> list[str]:
    """glob's GLOB_BRACE: ``a{b,c}d`` -> ``abd``, ``acd`` (nested, in order)."""
    depth = 0
    start = -1
    for i, c in enumerate(pattern):
        if c == "\\":
            continue
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                inner = pattern[start + 1 : i]
                options: list[str] = []
                level = 0
                cur: list[str] = []
                for ch in inner:
                    if ch == "," and level == 0:
                        options.append("".join(cur))
                        cur = []
                        continue
                    level += ch == "{"
                    level -= ch == "}"
                    cur.append(ch)
                options.append("".join(cur))
                if len(options) == 1:
                    return [pattern]
                result = []
                for option in options:
                    result.extend(_expand_braces(pattern[:start] + option + pattern[i + 1 :]))
                return result
    return [pattern]


def _display(path: str, main: str) -> str:
    """How an included file is named in messages: beside the main file as the user named it."""
    path = os.path.normpath(path)
    base = os.path.dirname(os.path.abspath(main))
    rel = os.path.relpath(path, base)
    if rel.startswith(".."):
        return path
    return os.path.normpath(os.path.join(os.path.dirname(main), rel))


# --------------------------------------------------------------------------- tree


def _build(lines: Iterable[_Line], messages: list[Message]) -> tuple[Statement, ...]:
    """Logical lines -> nested statements (a ``{`` line opens the block of the line before it)."""

    @dataclass
    class _Open:
        words: tuple[str, ...]
        where: Where
        text: str
        items: list[Statement] = field(default_factory=list)

    root: list[Statement] = []
    stack: list[_Open] = []
    ignored = 0  # unexpected '{' whose '}' is ignored too
    last_open_candidate: tuple[list[Statement], int] | None = None

    def current() -> list[Statement]:
        return stack[-1].items if stack else root

    for line in lines:
        if line.text == "{":
            target = current()
            if last_open_candidate is not None and last_open_candidate[0] is target and target:
                prev = target.pop()
                stack.append(_Open(prev.words, prev.where, prev.text))
            else:
                messages.append(Message(line.where, "Unexpected '{' - ignoring"))
                ignored += 1
            last_open_candidate = None
            continue
        if line.text == "}":
            last_open_candidate = None
            if ignored:
                ignored -= 1
                continue
            if not stack:
                messages.append(Message(line.where, "Extra '}' found"))
                continue
            done = stack.pop()
            current().append(Statement(done.words, done.where, done.text, tuple(done.items), line.where))
            continue
        words, error = split_words(line.text)
        if error:
            messages.append(Message(line.where, error))
        if not words:
            continue
        target = current()
        target.append(Statement(tuple(words), line.where, line.text))
        last_open_candidate = (target, len(target))
    while stack:
        done = stack.pop()
        messages.append(Message(done.where, f"missing '}}' for the block of {done.words[0]} opened here"))
        current().append(Statement(done.words, done.where, done.text, tuple(done.items), None))
    return tuple(root)


def _sorted(messages: list[Message], files: list[str], main: str) -> list[Message]:
    """Messages in reading order: by file (as first read), then line; messages without a place first."""
    names = [main] + [_display(f, main) for f in files]
    return sorted(messages, key=lambda m: (-1, 0) if m.where is None else (
        names.index(m.where.file) if m.where.file in names else len(names), m.where.line))


def default_config_id() -> str:
    """keepalived's default config id: the first part of the node name."""
    return socket.gethostname().split(".", 1)[0]


def read_config(path: str = DEFAULT_PATH, config_id: str | None = None) -> KeepalivedConf:
    """Read keepalived.conf at *path* with its includes; never raises for a bad file.

    *config_id* is keepalived's ``-i``; ``None`` means keepalived's default (the
    first part of the host name).
    """
    cid = default_config_id() if config_id is None else config_id
    reader = _Reader(cid)
    reader.main = path
    ok = reader.read_file(path, path, 0, None)
    messages = list(reader.messages)
    statements = _build(reader.lines, messages)
    messages = _sorted(messages, reader.files, path)
    files = tuple(_display(f, path) for f in reader.files)
    return KeepalivedConf(path, statements, tuple(messages), files, ok, cid)


def parse_text(text: str, filename: str = "<text>", config_id: str | None = None) -> KeepalivedConf:
    """Like :func:`read_config` for text in memory (includes are relative to the current directory)."""
    reader = _Reader(config_id)
    reader.main = filename
    reader.read_text(text, os.getcwd(), filename, 0)
    messages = list(reader.messages)
    statements = _build(reader.lines, messages)
    messages = _sorted(messages, reader.files, filename)
    return KeepalivedConf(filename, statements, tuple(messages), (filename,), True, config_id)


__all__ = [
    "ALIASES",
    "CHECKER_ALIASES",
    "DEFAULT_PATH",
    "KeepalivedConf",
    "Message",
    "Statement",
    "Where",
    "decomment",
    "default_config_id",
    "parse_text",
    "read_config",
    "script_argv",
    "split_script",
    "split_words",
]

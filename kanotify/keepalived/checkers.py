"""keepalived's health checkers (``TCP_CHECK``, ``HTTP_GET``, ``SSL_GET``, ``MISC_CHECK``, ``DNS_CHECK``,
``UDP_CHECK``, ``PING_CHECK``, ``SMTP_CHECK``, ``FILE_CHECK``) as kanotify checks.

Each checker becomes the ``[check]`` table of one real server with keepalived's
cascade resolved (checker, real server, virtual server, keepalived 2.2.7's
defaults), every value with the line it came from, so the check behaves as
keepalived's did (:func:`checks_of`, :func:`_map_checker`); real servers with
the same check share one ``[instance.service.check]`` (:func:`table_lines`).
A checker kanotify has no equivalent for, or an option it cannot honour, is a
:class:`~kanotify.keepalived.imported.Note`.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Callable

from ..model import HASH_SCHEDULERS, RealServer
from .conf import ALIASES, CHECKER_ALIASES, Statement, Where, script_argv, split_script
from .checkers_more import checker_lines, connection_lines
from .imported import (CheckerOption, CheckLine, ImportedCheck, Note, RSBlock, VSBlock, clean, note_at, toml_str,
                       uint_in)

#: keepalived 2.2.7's checker defaults where nothing is given: alloc_vs (check_data.c) for the
#: virtual_server's, queue_checker (check_api.c) and the checkers' own handlers for the rest
DEFAULT_DELAY_LOOP = "60"  # KEEPALIVED_DEFAULT_DELAY
DEFAULT_CONNECT_TIMEOUT = "5"  # alloc_vs: connection_to = 5 * TIMER_HZ
#: checker -> its default (retry, delay_before_retry): queue_checker's 1 and 1 s, except MISC_CHECK
#: (misc_check_handler: default_retry 0) and HTTP_GET/SSL_GET (http_get_handler: 3 s)
CHECKER_DEFAULTS = {"TCP_CHECK": ("1", "1"), "HTTP_GET": ("1", "3"), "SSL_GET": ("1", "3"), "MISC_CHECK": ("0", "1"),
                    "SMTP_CHECK": ("1", "1"), "UDP_CHECK": ("1", "1"), "PING_CHECK": ("1", "1"),
                    # check_dns.c: default_retry 3, default_delay_before_retry 0 (= the delay_loop)
                    "DNS_CHECK": ("3", "delay_loop"), "FILE_CHECK": ("0", "1")}
#: options of health checkers that a virtual_server and a real_server may give for all their checkers
CASCADE = ("delay_loop", "connect_timeout", "retry", "delay_before_retry", "warmup", "alpha", "inhibit_on_failure",
           "virtualhost")
#: keepalived checker -> kanotify check type (spec.md "Health checks"); None: kanotify has no such check
CHECKERS: dict[str, str | None] = {
    "TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https", "MISC_CHECK": "command",
    "SMTP_CHECK": "smtp", "DNS_CHECK": "dns", "UDP_CHECK": "udp", "PING_CHECK": "ping", "FILE_CHECK": "file",
    "BFD_CHECK": None,
}


def canonical(keyword: str, in_http: bool = False) -> str:
    if in_http and keyword in CHECKER_ALIASES:
        return CHECKER_ALIASES[keyword]
    return ALIASES.get(keyword, keyword)


# --------------------------------------------------------------------------- health checkers

#: the keywords keepalived 2.2.7 knows in each checker block (install_checker_common_keywords + the checker's own)
_COMMON = ("retry", "delay_before_retry", "warmup", "delay_loop", "alpha", "log_all_failures")
_CONNECTION = ("connect_ip", "connect_port", "bindto", "bind_port", "bind_if", "connect_timeout", "fwmark")
_HTTP = ("nb_get_retry", "virtualhost", "http_protocol", "enable_sni", "fast_recovery", "url")
CHECKER_KEYWORDS: dict[str, tuple[str, ...]] = {
    "TCP_CHECK": _COMMON + _CONNECTION,
    "HTTP_GET": _COMMON + _CONNECTION + _HTTP,
    "SSL_GET": _COMMON + _CONNECTION + _HTTP,
    "MISC_CHECK": _COMMON + ("misc_path", "misc_timeout", "misc_dynamic", "user"),
    "SMTP_CHECK": _COMMON + _CONNECTION + ("helo_name", "host"),
    "DNS_CHECK": _COMMON + _CONNECTION + ("type", "name"),
    "UDP_CHECK": _COMMON + _CONNECTION + ("payload", "require_reply", "min_reply_length", "max_reply_length"),
    "PING_CHECK": _COMMON + _CONNECTION,
    "FILE_CHECK": ("track_file", "weight"),
}
#: the keywords of an HTTP_GET/SSL_GET ``url`` block
URL_KEYWORDS = ("path", "digest", "status_code", "virtualhost", "regex", "regex_no_match", "regex_options",
                "regex_min_offset", "regex_max_offset", "regex_stack")
_CONTENTS = "kanotify compares status codes only, not the page's contents"
#: checker options kanotify's checks have no equivalent for: what kanotify does instead
CHECKER_UNSUPPORTED = {
    "warmup": "kanotify has no warmup (keepalived delays a first check by a random time up to it; kanotify spreads "
              "the first checks over at most 5 s)",
    "log_all_failures": "kanotify journals each UP/DOWN change; kanotify status shows the last error",
    "bind_if": "kanotify's checks do not bind to an interface",
    "fwmark": "kanotify's checks do not mark their packets (SO_MARK)",
    "http_protocol": "kanotify's http checks send HTTP/1.0 requests with Connection: close",
    "enable_sni": "kanotify's https checks always send the host as the TLS server name",
    "fast_recovery": "kanotify checks a DOWN real server again every interval",
    **{name: _CONTENTS for name in URL_KEYWORDS if name.startswith("regex")},
}
#: keepalived's check_true_false()
_BOOL = {"true": "on", "on": "on", "yes": "on", "false": "off", "off": "off", "no": "off"}
#: kanotify's limits (config.py check_table), which keepalived's values may exceed
_LIMITS = {"interval": 86400, "timeout": 3600, "retry": 100, "retry_delay": 3600}
_SHELLS = ("sh", "bash", "dash", "ash", "ksh", "mksh", "zsh")
#: the PATH keepalived's scripts are searched in (notify.c: its own environment's, systemd's default)
_KEEPALIVED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: words a shell would interpret: operators, redirections, pipes, command substitution, $VAR
_SHELL_WORD = re.compile(r"\|\|?|&&?|;;?|[0-9]*(?:>>?|<<?|>&|<&)[0-9]*-?|\(|\)")
_SHELL_PART = re.compile(r"[|`]|^[<>]|^[0-9]>|;$|\$[A-Za-z_{(0-9?#@*!$-]")


@dataclass(frozen=True)
class _Mapped:
    """What one keepalived checker became."""

    checks: tuple[ImportedCheck, ...]  # (): not imported; an HTTP_GET with several urls: one each
    notes: list[Note]
    runs: bool  # keepalived runs it (it skips a HTTP_GET without url, a MISC_CHECK without misc_path)
    sources: frozenset[Where] = frozenset()  # the lines its values came from


def _seconds(word: str | None, positive: bool) -> str | None:
    """keepalived's read_timer(): seconds to the microsecond, as TOML number text."""
    if word is None or not re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", word):
        return None
    value = Decimal(word).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    if positive and value <= 0:
        return None
    return format(value.normalize(), "f")


def _option_value(name: str, s: Statement, level: str) -> tuple[str | None, str]:
    """A cascaded checker option as keepalived reads it at *level*: (value, "") or (None, why it is ignored).

    *level* is ``virtual_server``, ``real_server`` or the checker's keyword.
    """
    word = s.arg(0)
    if name in ("delay_loop", "connect_timeout"):
        return _seconds(word, positive=True), "expected a number of seconds > 0"
    if name in ("delay_before_retry", "warmup"):
        return _seconds(word, positive=False), "expected a number of seconds"
    if name == "retry":
        lo = 1 if level in ("virtual_server", "real_server") else 0  # check_parser.c: 1.. there, 0.. in a checker
        value = uint_in(word, lo, 2**32 - 1)
        return (None if value is None else str(value)), f"expected an integer {lo}..4294967295"
    if name in ("alpha", "inhibit_on_failure"):
        if level == "virtual_server" or not s.args:
            return "on", ""  # the virtual_server forms take no value (vs_alpha_handler, vs_inhibit_handler)
        return _BOOL.get(word or ""), "expected on/off, true/false or yes/no"
    if name == "virtualhost":
        return word, "the host name is missing"
    raise ValueError(f"not a cascaded checker option: {name}")


def cascade_option(options: dict[str, CheckerOption], notes: list[Note], s: Statement, level: str) -> None:
    """Keep a ``virtual_server`` or ``real_server`` checker option for the checkers below it."""
    name = canonical(s.keyword)
    if name in CHECKER_UNSUPPORTED:
        notes.append(note_at(s, CHECKER_UNSUPPORTED[name]))
        return
    value, why = _option_value(name, s, level)
    if value is None:
        notes.append(note_at(s, f"keepalived ignores it: {why}"))
        return
    if level == "virtual_server" and name in ("alpha", "inhibit_on_failure") and s.args:
        notes.append(note_at(s, f"keepalived's virtual_server {name} takes no value: it turns {name} on"))
    _keep(options, notes, name, CheckerOption(value, s.where, s.keyword))


def _keep(options: dict[str, CheckerOption], notes: list[Note], name: str, option: CheckerOption) -> None:
    earlier = options.get(name)
    if earlier is not None:  # keepalived's handlers overwrite: the last one counts
        notes.append(Note(earlier.where, f"{earlier.written} {earlier.value}",
                          f"{option.written} is given again at {option.where}: keepalived uses the last"))
    options[name] = option


def checks_of(vs: VSBlock, rs: RSBlock, real: RealServer) -> tuple[list[ImportedCheck], list[Note], list[Where],
                                                                  set[Where]]:
    """The check of one real server from its keepalived checkers.

    Returns the checks (every checker, and every url of an HTTP_GET, is one:
    the real server is UP only while all pass, in keepalived and kanotify),
    the notes, where each checker keepalived runs is, and the lines the
    values came from.
    """
    used: list[ImportedCheck] = []
    notes: list[Note] = []
    runs: list[Where] = []
    sources: set[Where] = set()
    for s in [one for checker in rs.checkers for one in _smtp_hosts(checker)]:
        mapped = _map_checker(vs, rs, s, real)
        sources |= mapped.sources
        if mapped.runs:
            runs.append(s.where)
        used.extend(mapped.checks)
        notes.extend(mapped.notes)
    return used, notes, runs, sources


#: the connection options an SMTP_CHECK ``host`` block gives its own checker
_HOST_OPTIONS = ("connect_ip", "connect_port", "bindto", "bind_port", "bind_if", "connect_timeout", "fwmark")


def _smtp_hosts(s: Statement) -> list[Statement]:
    """An SMTP_CHECK with (deprecated) ``host`` blocks as the checkers keepalived makes of it (check_smtp.c).

    Each ``host`` is a checker of its own with the block's other options and
    the host's connection options; the SMTP_CHECK's own connection is checked
    too when it sets any connection option, or has no host.
    """
    hosts = [h for h in s.children("host") if h.block is not None]
    if s.keyword != "SMTP_CHECK" or not hosts:
        return [s]
    common = tuple(o for o in s.block or () if o.keyword != "host" and o.keyword not in _HOST_OPTIONS)
    own = tuple(o for o in s.block or () if o.keyword in _HOST_OPTIONS)
    made = [Statement(s.words, s.where, s.text, common + own, s.end)] if own else []
    for h in hosts:
        made.append(Statement(s.words, s.where, s.text,
                              common + tuple(o for o in h.block or () if o.keyword in _HOST_OPTIONS), h.end))
    return made


def _map_checker(vs: VSBlock, rs: RSBlock, s: Statement, real: RealServer) -> _Mapped:
    """One keepalived checker of *rs* as the kanotify check of *real*, the real server it was imported as.

    Every value is resolved as keepalived 2.2.7 does (check_data.c
    check_check_config): the checker's own, else the real_server's, else the
    virtual_server's, else keepalived's default -- written out even where it
    equals kanotify's default, with where it came from.
    """
    kind = CHECKERS.get(s.keyword)
    if kind is None:
        return _Mapped((), [note_at(s, f"kanotify has no {s.keyword} equivalent: keepalived's BFD_CHECK follows "
                                     "the sessions of its own BFD process, which kanotify does not run")], True)
    http = kind in ("http", "https")
    known = CHECKER_KEYWORDS[s.keyword]
    own: dict[str, CheckerOption] = {}
    raw: dict[str, Statement] = {}
    notes: list[Note] = []
    urls: list[Statement] = []
    for o in s.block or ():
        name = canonical(o.keyword, http)
        if o.keyword not in known:
            notes.append(note_at(o, f"not a {s.keyword} option keepalived 2.2.7 knows (it ignores it)"))
        elif name == "url":
            urls.append(o)
        elif name in CHECKER_UNSUPPORTED:
            notes.append(note_at(o, CHECKER_UNSUPPORTED[name]))
        elif name in CASCADE:
            value, why = _option_value(name, o, s.keyword)
            if value is None:
                notes.append(note_at(o, f"keepalived ignores it: {why}"))
            else:
                _keep(own, notes, name, CheckerOption(value, o.where, o.keyword))
        elif name in ("connect_port", "misc_timeout"):
            lo, hi = (1, 65535) if name == "connect_port" else (0, (2**32 - 1) // 1000000)
            number = uint_in(o.arg(0), lo, hi)
            if number is None:
                notes.append(note_at(o, f"keepalived ignores it: expected an integer {lo}..{hi}"))
            else:
                _keep(own, notes, name, CheckerOption(str(number), o.where, o.keyword))
        else:  # connect_ip, misc_path, misc_dynamic, user: read from the statement below
            if name in raw:
                notes.append(note_at(raw[name], f"{o.keyword} is given again at {o.where}: keepalived uses the last"))
            raw[name] = o
    sources: set[Where] = set()
    blockers: list[str] = []
    comments: list[str] = []

    def pick(name: str) -> tuple[str | None, str]:
        for level, options in (("", own), ("real_server ", rs.cascade), ("virtual_server ", vs.cascade)):
            if name in options:
                option = options[name]
                sources.add(option.where)
                return option.value, f"{level}{option.written} ({option.where})"
        return None, ""

    lines = [CheckLine("type", toml_str(kind))]
    if kind not in ("command", "file"):
        lines.extend(connection_lines(kind, raw, real, notes, sources, comments))
    lines.extend(checker_lines(kind, raw, vs, notes, sources, comments, blockers))
    if kind in ("command", "file", "ping"):
        if "connect_port" in own and kind == "ping":
            notes.append(Note(own["connect_port"].where, "connect_port", "keepalived's PING_CHECK has no port: it "
                                                                          "ignores it"))
    else:
        port, port_origin = rs.port, f"the port of real_server ({rs.stmt.where})"
        if "connect_port" in own:
            port, port_origin = int(own["connect_port"].value), f"connect_port ({own['connect_port'].where})"
            sources.add(own["connect_port"].where)
        if port == 0 and real.port == 0:
            blockers.append("no port to check: a fwmark real server has none and keepalived's checker would "
                            "connect to port 0 (give connect_port)")
        elif port == 0:
            comments.append(f"no connect_port and no port on the real_server: keepalived 2.2.7 connects to port 0 "
                            f"(which fails); kanotify checks the real server's port {real.port}")
        elif port != real.port:
            lines.append(CheckLine("port", str(port), port_origin))
        elif "connect_port" in own:
            comments.append(f"{port_origin}: the real server's port, kanotify's default")
    per_url: list[list[CheckLine]] = [[]]
    if http:
        kept = _url(urls, notes)
        if not kept:
            return _Mapped((), [note_at(s, f"keepalived skips a {s.keyword} without a url with a path: it runs "
                                         "no check")] + notes, False)
        per_url = [_url_lines(kind, s, url, notes, sources, comments, blockers, pick) for url in kept]
    timeout: tuple[str | None, str]
    if kind == "command":
        if "misc_path" not in raw:
            return _Mapped((), [note_at(s, "keepalived skips a MISC_CHECK without misc_path: it runs no check")]
                           + notes, False)
        misc = raw["misc_path"]
        argv, ignored = script_argv(misc)
        if argv is None:
            return _Mapped((), [note_at(misc, "keepalived cannot parse this command (an unclosed quote?) and skips "
                                            "the MISC_CHECK")] + notes, False)
        sources.add(misc.where)
        if ignored:
            comments.append(f"misc_path ({misc.where}): keepalived runs only its first word (quote the whole "
                            f"command); {' '.join(ignored)} ignored")
        command, why = _command(argv, split_script(misc.text) or [])
        if command is None:
            blockers.append(f"misc_path ({misc.where}): {why}")
            command = argv
        elif why:
            comments.append(why)
        lines.append(CheckLine("command", f"[{', '.join(toml_str(w) for w in command)}]", f"misc_path ({misc.where})"))
        if "user" in raw:
            user = raw["user"].arg(0) or ""
            notes.append(note_at(raw["user"], "kanotify runs the command as root, as its listener runs" + (
                "" if user == "root" else f", not as {user}: make sure only root can change {argv[0]}")))
        if "misc_dynamic" in raw:
            sources.add(raw["misc_dynamic"].where)
            lines.append(CheckLine("dynamic", "true", f"misc_dynamic ({raw['misc_dynamic'].where}): exit 2-255 "
                                                      "is UP with weight exit-2"))
        mt = own.get("misc_timeout")
        if mt is not None and mt.value != "0":
            sources.add(mt.where)
            timeout = mt.value, f"misc_timeout ({mt.where})"
        else:  # check_misc.c: no misc_timeout (or 0) -> the virtual_server's own delay_loop
            vs_loop = vs.cascade.get("delay_loop")
            given_zero = f"misc_timeout 0 ({mt.where})" if mt is not None else "no misc_timeout"
            if vs_loop is not None:
                sources.add(vs_loop.where)
                timeout = vs_loop.value, f"{given_zero}: keepalived uses virtual_server delay_loop ({vs_loop.where})"
            else:
                timeout = DEFAULT_DELAY_LOOP, f"{given_zero}: keepalived uses the virtual_server's delay_loop, " \
                                              f"default {DEFAULT_DELAY_LOOP}"
            if mt is not None:
                sources.add(mt.where)
    elif kind == "file":
        timeout = "1", "a file is read at once"
    else:
        value, origin = pick("connect_timeout")
        timeout = (value, origin) if value is not None else (DEFAULT_CONNECT_TIMEOUT, "keepalived's default")
    tail = _timing(s, kind, timeout, pick, vs.scheduler)
    checks = tuple(ImportedCheck(s.keyword, s.where, tuple(lines + extra + tail), tuple(comments)) for extra in per_url)
    if blockers:
        head = note_at(s, "; ".join(blockers) + "; it would be:",
                       tuple(line for check in checks for line in table_lines("[instance.service.real.check]",
                                                                                [check])))
        return _Mapped((), [head] + notes, True, frozenset(sources))
    return _Mapped(checks, notes, True, frozenset(sources))


def _url_lines(kind: str, s: Statement, url: Statement, notes: list[Note], sources: set[Where], comments: list[str],
               blockers: list[str], pick: Callable[[str], tuple[str | None, str]]) -> list[CheckLine]:
    """One url of an HTTP_GET/SSL_GET: path, status, digest, Host (each url is a check of its own)."""
    from ..config.schema import _check_host, _check_url_path

    lines: list[CheckLine] = []
    path = [p for p in url.children("path") if p.args][-1]
    sources.add(path.where)
    if _check_url_path(path.args[0]):
        blockers.append(f"path {path.args[0]!r} ({path.where}): kanotify's checks need a path starting with /")
    lines.append(CheckLine("path", toml_str(path.args[0]), f"url path ({path.where})"))
    given = url.children("status_code")
    codes, bad = _status_codes(given)
    for stmt, word in bad:
        notes.append(note_at(stmt, f"keepalived skips the status code {word!r} (expected 100..599 or a range "
                                 "like 200-299)"))
    sources.update(stmt.where for stmt in given)
    if codes and codes != list(range(200, 300)):
        lines.append(CheckLine("status", f"[{', '.join(map(str, codes))}]",
                               f"status_code ({', '.join(str(g.where) for g in given)})"))
    elif given:
        comments.append(f"status_code 200-299 ({', '.join(str(g.where) for g in given)}): kanotify's default")
    url_host = url.children("virtualhost")
    if url_host and url_host[-1].args:
        host: str | None = url_host[-1].args[0]
        host_origin = f"url virtualhost ({url_host[-1].where})"
        sources.add(url_host[-1].where)
    else:
        host, host_origin = pick("virtualhost")
    if host is not None and _check_host(host):
        notes.append(Note(s.where, f"virtualhost {host}", "kanotify's Host header takes a host name without "
                                                           "spaces, / or @: the real server's address is sent"))
    elif host is not None:
        lines.append(CheckLine("host", toml_str(host), host_origin))
    digests = [d for d in url.children("digest") if d.args]
    if digests:
        d = digests[-1]
        if not re.fullmatch(r"[0-9A-Fa-f]{32}", d.args[0]):
            notes.append(note_at(d, "keepalived rejects it: a digest is 32 hex digits"))
        else:
            sources.add(d.where)
            lines.append(CheckLine("digest", toml_str(d.args[0].lower()), f"url digest ({d.where})"))
    if kind == "https":
        lines.append(CheckLine("verify", "false", "keepalived's SSL_GET does not verify the certificate"))
    return lines


def _timing(s: Statement, kind: str, timeout: tuple[str | None, str],
            pick: Callable[[str], tuple[str | None, str]], scheduler: str | None) -> list[CheckLine]:
    """interval, timeout, retry, retry_delay, on_failure and initial, from the cascade or keepalived's defaults."""
    lines: list[CheckLine] = []
    default_retry, default_delay = CHECKER_DEFAULTS[s.keyword]
    special = f"keepalived's {s.keyword} default"
    interval = pick("delay_loop") if kind != "file" else ("1", "keepalived watches the file (inotify): read every "
                                                               "second")
    if default_delay == "delay_loop":  # DNS_CHECK: no delay_before_retry means the delay_loop
        default_delay = interval[0] or DEFAULT_DELAY_LOOP
        special_delay = f"keepalived's {s.keyword} default: the delay_loop"
    else:
        special_delay = special if default_delay != "1" else "keepalived's default"
    for key, (value, origin), default in (
        ("interval", interval, (DEFAULT_DELAY_LOOP, "keepalived's default")),
        ("timeout", timeout, (None, "")),
        ("retry", pick("retry"), (default_retry, special if default_retry != "1" else "keepalived's default")),
        ("retry_delay", pick("delay_before_retry"), (default_delay, special_delay)),
    ):
        if value is None:
            value, origin = default
        assert value is not None
        if Decimal(value) > _LIMITS[key]:
            value, origin = str(_LIMITS[key]), f"{origin}: {value}, above kanotify's maximum {_LIMITS[key]}"
        lines.append(CheckLine(key, value, origin))
    inhibit, origin = pick("inhibit_on_failure")
    if scheduler in HASH_SCHEDULERS and inhibit != "on":
        # kanotify's config refuses "remove" there: a removal reshuffles the table of every director
        lines.append(CheckLine("on_failure", '"drain"', f"lvs_sched {scheduler}: keepalived would remove a "
                                                        "failed real server and reshuffle the others' flows"))
    elif inhibit is None:
        lines.append(CheckLine("on_failure", '"remove"', "no inhibit_on_failure: keepalived removes a failed real "
                                                         "server"))
    else:
        lines.append(CheckLine("on_failure", '"drain"' if inhibit == "on" else '"remove"', origin))
    alpha, origin = pick("alpha")
    if alpha is not None:
        lines.append(CheckLine("initial", '"down"' if alpha == "on" else '"up"', origin))
    return lines


def _url(urls: list[Statement], notes: list[Note]) -> list[Statement]:
    """The urls keepalived checks (each a check of its own); notes for what it ignores."""
    kept = []
    for url in urls:
        for o in url.block or ():
            if o.keyword not in URL_KEYWORDS:
                notes.append(note_at(o, "not a url option keepalived 2.2.7 knows (it ignores it)"))
            elif o.keyword in CHECKER_UNSUPPORTED:
                notes.append(note_at(o, CHECKER_UNSUPPORTED[o.keyword]))
        paths = [p for p in url.children("path") if p.args]
        for earlier in paths[:-1]:
            notes.append(note_at(earlier, f"path is given again at {paths[-1].where}: keepalived uses the last"))
        if not paths:
            notes.append(note_at(url, "keepalived ignores a url without a path"))
        else:
            kept.append(url)
    return kept


def _status_codes(given: list[Statement]) -> tuple[list[int], list[tuple[Statement, str]]]:
    """keepalived's status_code words (``200``, ``200-299``) as codes, and the words it skips (check_http.c)."""
    codes: set[int] = set()
    bad: list[tuple[Statement, str]] = []
    for stmt in given:
        for word in stmt.args:
            m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", word)
            lo = int(m.group(1)) if m else 0
            hi = int(m.group(2) or lo) if m else 0
            if not 100 <= lo <= hi <= 599:
                bad.append((stmt, word))
            else:
                codes.update(range(lo, hi + 1))
    return sorted(codes), bad


def _command(argv: list[str], line: list[str]) -> tuple[list[str] | None, str]:
    """keepalived's misc_path argv as a kanotify command: (command, a comment) or (None, why it cannot be one).

    keepalived execs misc_path directly, without a shell (notify.c
    system_call_script), so shell syntax in it was never interpreted; the one
    exception is a command starting ``</``, a file test keepalived hands to
    system(), i.e. ``/bin/sh -c``.
    """
    first = argv[0]
    written = line[1] if len(line) > 1 else " ".join(argv)
    if first.startswith("<") and first[1:].lstrip(" \t").startswith("/"):
        text = " ".join([first] + [f"'{word}'" for word in argv[1:]])  # cmd_str(): the others single-quoted
        return ["/bin/sh", "-c", text], "keepalived runs a misc_path starting with </ (a file test) with /bin/sh -c"
    comment = ""
    if not (os.path.basename(first) in _SHELLS and argv[1:2] == ["-c"]):
        for word in argv[1:]:
            if _SHELL_WORD.fullmatch(word) or _SHELL_PART.search(word):
                comment = (f"{word!r} looks like shell syntax, but keepalived runs misc_path without a shell: "
                           f"{first} gets it as an argument, and so it does here. If a shell was meant: "
                           f"command = [\"/bin/sh\", \"-c\", {toml_str(written)}]")
                break
    if "/" not in first:
        found = shutil.which(first, path=_KEEPALIVED_PATH)
        if found is None:
            return None, (f"{first} is not a path and is in none of {_KEEPALIVED_PATH} on this host: keepalived "
                          "searches PATH for it, kanotify runs a command by its absolute path only")
        argv = [found, *argv[1:]]
        comment = "; ".join(filter(None, [f"{first}: keepalived searches PATH; found as {found} on this host",
                                          comment]))
    elif not os.path.isabs(first):
        argv = ["/" + first.removeprefix("./"), *argv[1:]]
        comment = "; ".join(filter(None, [f"{first}: keepalived runs it from its working directory, /", comment]))
    if any(not word or "\0" in word for word in argv):
        return None, "an empty argument or a NUL byte: kanotify's command words are non-empty strings"
    return argv, comment


def table_lines(header: str, checks: list[ImportedCheck], indent: str = "") -> list[str]:
    """The TOML of a ``[check]`` table that *checks* (all with the same :attr:`~ImportedCheck.table`) share."""
    first = checks[0]
    out = [f"{indent}{header}    # {first.checker} ({', '.join(str(c.where) for c in checks)})"]
    seen: list[str] = []
    for comment in (c for check in checks for c in check.comments):
        if comment not in seen:
            seen.append(comment)
            out.append(f"{indent}# {clean(comment)}")
    for i, line in enumerate(first.lines):
        origin = _merged([check.lines[i].origin for check in checks])
        out.append(f"{indent}{line.key} = {line.value}" + (f"    # {clean(origin)}" if origin else ""))
    return out


def _merged(origins: list[str]) -> str:
    """Origins of one key across real servers: ``retry (k.conf:34)`` and ``retry (k.conf:43)`` -> one entry."""
    groups: dict[str, list[str]] = {}
    for text in origins:
        if not text:
            continue
        m = re.fullmatch(r"(.*) \(([^()]*)\)", text)
        head, place = (m.group(1), m.group(2)) if m else (text, "")
        places = groups.setdefault(head, [])
        if place and place not in places:
            places.append(place)
    return "; ".join(f"{head} ({', '.join(places)})" if places else head for head, places in groups.items())

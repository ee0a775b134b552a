"""How much of keepalived's health checking ``kanotify import`` carries over, over a corpus of keepalived.conf files.

Usage: ``python benchmarks/checker_parity.py [DIR ...]`` (default: tests/unit/keepalived_corpus).

Every checker block (``TCP_CHECK``, ``HTTP_GET``, ``SSL_GET``, ``MISC_CHECK``,
``SMTP_CHECK``, ``DNS_CHECK``, ``UDP_CHECK``, ``PING_CHECK``, ``FILE_CHECK``,
``BFD_CHECK``) inside a ``real_server`` of a ``virtual_server`` is counted once,
unless keepalived itself runs no check from it (a ``MISC_CHECK`` without
``misc_path``, an ``HTTP_GET`` without a url path ...: the import's list of the
checkers keepalived runs, :attr:`ImportedService.checkers`, does not name it):
those are counted apart, as issue 21 lets them be comments.  It **became a check** when the imported TOML has a ``[...check]`` table whose
header comment names the block's ``FILE:LINE`` (that is how ``kanotify import``
says where a check came from); otherwise it is **not imported**, and the reasons
are the ``# not imported`` notes written at lines inside the block (or, for a
virtual server that was not imported at all, its note).

It also lists every ``# not imported`` note whose keyword is one of
:data:`MUST_MAP` and whose reason starts with "kanotify" -- a note that says
kanotify lacks it (issue 21's bar: there must be none).

Prints one line per file and the totals; exit status 0.  The unit test
``tests/unit/test_keepalived_corpus.py`` asserts the bars on the same numbers.
"""

from __future__ import annotations

import collections
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kanotify.keepalived.conf import Statement, read_config
from kanotify.keepalived.importer import import_conf, render
from kanotify.keepalived.imported import Note

#: checker blocks keepalived 2.2.7 knows
CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK",
            "FILE_CHECK", "BFD_CHECK")
#: keywords issue 21 says no note may claim kanotify lacks
MUST_MAP = ("quorum", "hysteresis", "sorry_server", "sorry_server_inhibit", "sorry_server_lvs_method", "connect_ip",
            "bindto", "virtualhost", "digest")
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "unit" / "keepalived_corpus"
#: a check table's header (``[...check]``, or ``[[...check]]`` for one of several checks) naming its checker
_HEADER = re.compile(r"^\s*\[\[?instance\.service(?:\.real)?\.check\]\]?\s*#\s*\S+\s*\((.*)\)\s*$")


@dataclass
class FileCount:
    path: str
    checkers: int = 0
    imported: int = 0
    ignored: int = 0  # checker blocks keepalived itself runs no check from (not in ``checkers``)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    lacking: list[str] = field(default_factory=list)  # notes saying kanotify lacks one of MUST_MAP

    @property
    def not_imported(self) -> int:
        return self.checkers - self.imported


def _notes(result: object) -> list[Note]:
    from kanotify.keepalived.imported import ImportResult

    assert isinstance(result, ImportResult)
    found = list(result.notes)
    for svc in result.services:
        found.extend(svc.notes)
        for real in svc.reals:
            found.extend(real.notes)
    return found


def _checker_blocks(conf: object) -> list[tuple[Statement, Statement]]:
    """(virtual_server, checker) for every checker block of every real_server."""
    found = []
    for vs in conf.top("virtual_server"):  # type: ignore[attr-defined]
        for rs in vs.children("real_server"):
            for s in rs.block or ():
                if s.keyword in CHECKERS:
                    found.append((vs, s))
    return found


def count_file(path: str) -> FileCount:
    conf = read_config(path)
    result = import_conf(conf)
    text = render(result)
    named: set[str] = set()
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            named.update(place.strip() for place in m.group(1).split(","))
    notes = _notes(result)
    by_file: dict[str, list[Note]] = collections.defaultdict(list)
    for note in notes:
        by_file[note.where.file].append(note)
    runs = {str(where) for svc in result.services for where in svc.checkers}
    imported_vs = {str(svc.where) for svc in result.services}
    count = FileCount(path)
    for vs, checker in _checker_blocks(conf):
        if str(vs.where) in imported_vs and str(checker.where) not in runs:
            count.ignored += 1  # keepalived runs no check from it: not a checker kanotify could lack
            continue
        count.checkers += 1
        if str(checker.where) in named:
            count.imported += 1
            continue
        end = checker.end.line if checker.end is not None else checker.where.line
        inside = [n for n in by_file[checker.where.file] if checker.where.line <= n.where.line <= end]
        if not inside:  # the whole virtual server (or real server) was not imported
            inside = [n for n in notes if n.where in (vs.where,)] or [
                Note(checker.where, checker.keyword, "no check and no note (unexplained)")]
        for note in inside:
            count.reasons[f"{note.keyword.split()[0]}: {note.reason}"] += 1
    for note in notes:
        word = note.keyword.split()[0] if note.keyword else ""
        if word in MUST_MAP and note.reason.startswith("kanotify"):
            count.lacking.append(f"{note.where}: {note.keyword}: {note.reason}")
    return count


def corpus_files(dirs: list[str]) -> list[str]:
    files = []
    for d in dirs:
        for root, _subdirs, names in os.walk(d):
            files.extend(os.path.join(root, n) for n in names if n != "README.md")
    return sorted(files)


def measure(dirs: list[str] | None = None) -> list[FileCount]:
    return [count_file(f) for f in corpus_files(dirs or [str(DEFAULT_CORPUS)])]


def main(argv: list[str]) -> int:
    counts = measure(argv or None)
    total = sum(c.checkers for c in counts)
    imported = sum(c.imported for c in counts)
    reasons: collections.Counter[str] = collections.Counter()
    for c in counts:
        reasons.update(c.reasons)
        print(f"{c.imported:5d} / {c.checkers:<5d} {os.path.relpath(c.path)}")
    share = imported / total if total else 1.0
    ignored = sum(c.ignored for c in counts)
    print(f"\n{len(counts)} files, {total} checker blocks keepalived runs: {imported} became checks ({share:.1%}), "
          f"{total - imported} not imported; {ignored} more that keepalived itself runs no check from")
    for reason, n in reasons.most_common():
        print(f"  {n:5d}  {reason}")
    lacking = [line for c in counts for line in c.lacking]
    print(f"\nnotes saying kanotify lacks {', '.join(MUST_MAP)}: {len(lacking)}")
    for line in lacking:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

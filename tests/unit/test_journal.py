"""The journal on its own: whole lines, torn tails, garbage, summaries."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kanotify.journal import Journal, outcome_text, summary_line, well_formed


def _record(**extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "ts": "2026-01-01T00:00:00.000Z", "trigger": ["kanotify", "master", "VI_1"], "command": "master",
        "instance": "VI_1", "from": "backup", "to": "master", "instances": [], "dry_run": False,
        "actions": [{"action": "bind 192.0.2.100/24 dev eth0", "status": "applied"},
                    {"action": "sysctl x already 1", "status": "noop"}],
        "outcome": "converged", "duration_ms": 12.3,
    }
    record.update(extra)
    return record


def test_append_writes_one_whole_line_per_record_0600(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "sub" / "journal.jsonl"))
    journal.append(_record())
    journal.append(_record(outcome="failed"))
    lines = Path(journal.path).read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["outcome"] == "failed"
    assert os.stat(journal.path).st_mode & 0o777 == 0o600
    assert [r["outcome"] for r in journal.records()] == ["converged", "failed"]
    assert [r["outcome"] for r in journal.tail(1)] == ["failed"] and journal.tail(0) == []


def test_a_torn_last_line_is_skipped_by_readers_and_cut_by_the_next_writer(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "journal.jsonl"))
    journal.append(_record())
    with open(journal.path, "ab") as fh:
        fh.write(b'{"ts": "2026-01-01T00:00:01Z", "outco')  # kill -9 mid-write
    assert len(list(journal.records())) == 1
    journal.append(_record(outcome="failed"))
    lines = Path(journal.path).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert all(json.loads(line) for line in lines[:-1])


def test_a_huge_torn_line_is_ended_not_searched(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "journal.jsonl"))
    Path(journal.path).write_bytes(b"x" * 200_000)
    journal.append(_record())
    assert [r["outcome"] for r in journal.records()] == ["converged"]


def test_garbage_and_wrongly_typed_records_are_skipped(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "journal.jsonl"))
    Path(journal.path).write_text("\n".join([
        "not json", "[1, 2]", json.dumps(_record(outcome=5)), json.dumps(_record(actions=[{"status": 1}])),
        json.dumps(_record(dry_run="yes")), json.dumps(_record()), "[" * 5000 + "]" * 5000,
    ]) + "\n")
    assert len(list(journal.records())) == 1
    assert well_formed(_record()) and not well_formed(_record(instances=[{"from": 3}]))


def test_a_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    assert list(Journal(str(tmp_path / "none.jsonl")).records()) == []


def test_summary_line_says_what_happened() -> None:
    line = summary_line(_record())
    assert line == "VI_1 backup -> master: converged (1 applied, 1 noop) in 12 ms"
    failed = summary_line(_record(outcome="failed", actions=[
        {"action": "bind x", "status": "failed", "error": "bind x: No such device"}], note="n"))
    assert "FAILED bind x: bind x: No such device" in failed and failed.endswith("; n")


def test_a_dry_run_says_what_is_pending_not_converged() -> None:
    pending = _record(dry_run=True, actions=[{"action": "bind x", "status": "pending"},
                                             {"action": "y already 1", "status": "noop"}])
    assert outcome_text(pending) == "dry-run: 1 change(s) pending, nothing changed"
    assert "converged" not in summary_line(pending)
    assert outcome_text(_record(dry_run=True, actions=[])) == "dry-run: nothing to do"
    assert outcome_text(_record(dry_run=True, outcome="failed")) == "dry-run failed"
    assert outcome_text(_record()) == "converged"

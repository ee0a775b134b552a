"""The journal on its own: whole lines, torn tails, garbage, summaries."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kanotify.journal import (
    Journal, RecordKind, kind_of, new_run_id, outcome_text, pair_runs, process_alive,
    summary_line, well_formed, writer_process,
)
from kanotify.model import Outcome


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


# --------------------------------------------------------------------------- started records, pairing, interrupted


def _started(run: str, **extra: object) -> dict[str, object]:
    record = _record(record="started", run=run, process=writer_process(), pid=os.getpid(),
                     actions=[{"action": "bind 192.0.2.100/24 dev eth0", "status": "pending"},
                              {"action": "sysctl x already 1", "status": "noop"}])
    del record["outcome"], record["duration_ms"]
    record.update(extra)
    return record


def _final(run: str, **extra: object) -> dict[str, object]:
    return _record(record="final", run=run, **extra)


DEAD = ["some-other-boot", 1, 1]  # a process that cannot be running


def test_record_kinds() -> None:
    assert kind_of(_record()) is RecordKind.FINAL  # a line from before started records: a final one
    assert kind_of(_final("a")) is RecordKind.FINAL and kind_of(_started("a")) is RecordKind.STARTED
    assert kind_of(_record(record="compacted")) is None  # a kind this version does not know
    assert RecordKind("started") is RecordKind.STARTED and RecordKind.STARTED == "started"
    assert well_formed(_started("a")) and not well_formed(_record(run=7)) and not well_formed(_record(record=1))
    assert len(new_run_id()) == 16 and new_run_id() != new_run_id()


def test_a_started_record_is_left_out_when_its_final_one_follows() -> None:
    records = [_final("a", command="reconcile"), _started("b"), _final("b"), _started("c"), _final("c")]
    assert [(r["run"], r["record"]) for r in pair_runs(records)] == [("a", "final"), ("b", "final"), ("c", "final")]
    # a record written without the lock (an ignored notification) between a started record and its final one
    records = [_started("b"), _final("x", note="ignored"), _final("b")]
    assert [r["run"] for r in pair_runs(records)] == ["x", "b"]
    assert [r["run"] for r in pair_runs(records, 1)] == ["b"]


def test_a_started_record_without_its_final_one_is_interrupted_when_its_process_is_gone() -> None:
    runs = pair_runs([_final("a"), _started("b", process=DEAD)])
    assert [r.get("outcome") for r in runs] == ["converged", Outcome.INTERRUPTED]
    assert runs[1]["record"] == "started" and runs[1]["run"] == "b"  # still says what it is
    # this very process still runs: under way
    assert pair_runs([_started("b")])[0]["outcome"] == Outcome.RUNNING
    # ... unless a later run has started: runs that change anything hold the lock to their final record
    runs = pair_runs([_started("b"), _started("c"), _final("c")])
    assert [(r["run"], r["outcome"]) for r in runs] == [("b", Outcome.INTERRUPTED), ("c", "converged")]
    # the process check is the reader's to make
    assert pair_runs([_started("b", process=DEAD)], alive=lambda p: True)[0]["outcome"] == Outcome.RUNNING


def test_the_last_n_runs_count_runs_not_lines() -> None:
    records: list[dict[str, object]] = []
    for n in range(10):
        records += [_started(f"s{n}"), _final(f"s{n}")]
    records += [_started("dead", process=DEAD), _final("noop")]
    runs = pair_runs(records, 3)
    assert [(r["run"], r["outcome"]) for r in runs] == [("s9", "converged"), ("dead", Outcome.INTERRUPTED),
                                                       ("noop", "converged")]
    assert len(pair_runs(records)) == 12
    assert pair_runs([_record(record="compacted"), _final("a")]) == [_final("a")]


def test_process_alive_needs_the_same_boot_start_time_and_pid() -> None:
    me = writer_process()
    assert me[2] == os.getpid() and process_alive(me)
    assert not process_alive([me[0], int(me[1]) + 1, me[2]])  # a reused pid: another start time
    assert not process_alive(["another boot", me[1], me[2]])
    for garbage in (None, [], "x", [me[0], me[1], "1"], [me[0], me[1], True], [me[0], me[1], 0], DEAD):
        assert not process_alive(garbage)


def test_journal_runs_reads_through_torn_and_garbage_lines(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "journal.jsonl"))
    journal.append(_started("a"))
    journal.append(_final("a"))
    journal.append(_started("b", process=DEAD))
    with open(journal.path, "ab") as fh:
        fh.write(json.dumps(_final("b")).encode()[:40])  # kill -9 in the middle of the final record
    assert [(r["run"], r["outcome"]) for r in journal.runs(10)] == [("a", "converged"), ("b", Outcome.INTERRUPTED)]
    journal.append(_started("c"))  # the next run cuts the torn line first
    assert [(r["run"], r["outcome"]) for r in journal.runs(10)] == [
        ("a", "converged"), ("b", Outcome.INTERRUPTED), ("c", Outcome.RUNNING)]
    assert [r["record"] for r in journal.tail(10)] == ["started", "final", "started", "started"]
    assert [r["run"] for r in journal.last_records(1 << 20)] == ["a", "a", "b", "c"]
    assert [r["run"] for r in journal.last_records(len(json.dumps(_started("c"))) + 1)] == ["c"]


def test_an_interrupted_run_reads_as_such() -> None:
    [run] = pair_runs([_started("b", process=DEAD)])
    assert summary_line(run) == "VI_1 backup -> master: interrupted (1 pending, 1 noop)"
    assert outcome_text(run) == Outcome.INTERRUPTED

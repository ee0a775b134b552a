"""The saved states (state.json), the run lock and tickets, without root."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path

import pytest

from kanotify.errors import KanotifyError, LockTimeout
from kanotify.model import State
from kanotify.store import SavedState, SavedStates, StateStore, Ticket, current_ticket


def _store(tmp_path: Path) -> StateStore:
    store = StateStore(str(tmp_path / "state"))
    store.ensure_dir()
    return store


def test_save_then_load_round_trips_and_the_file_is_0600(tmp_path: Path) -> None:
    store = _store(tmp_path)
    saved = SavedStates()
    saved.instances["VI_1"] = SavedState(State.MASTER, Ticket("boot", 10, 20), "2026-01-01T00:00:00Z", ["kanotify"])
    saved.draining[("tcp 192.0.2.100:80", "192.0.2.21:80")] = 1234.5
    store.save(saved)
    loaded, warnings = store.load()
    assert warnings == []
    assert loaded.states() == {"VI_1": State.MASTER}
    assert loaded.instances["VI_1"].ticket == Ticket("boot", 10, 20)
    assert loaded.draining == saved.draining
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    assert os.stat(store.dir).st_mode & 0o777 == 0o700
    assert not [n for n in os.listdir(store.dir) if ".tmp-" in n]


def test_a_missing_file_is_an_empty_record_without_warnings(tmp_path: Path) -> None:
    saved, warnings = _store(tmp_path).load()
    assert saved.instances == {} and warnings == []


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"instances": [1]}', b'{"instances": {"VI_1": {"state": "up"}}}',
                                     b'{"draining": [[1, 2]]}', b"[" * 10000 + b"]" * 10000])
def test_a_corrupt_file_is_moved_aside_under_the_lock_and_left_in_place_without(tmp_path: Path, content: bytes) -> None:
    # earlier tests' garbage collected now, not inside the 10,000-deep decode, where a finalizer's error could not
    # even be reported (RecursionError in sys.unraisablehook)
    gc.collect()
    store = _store(tmp_path)
    Path(store.path).write_bytes(content)
    saved, warnings = store.load(repair=False)
    assert saved.instances == {} and "corrupt" in warnings[0] and "left in place" in warnings[0]
    assert Path(store.path).exists()
    saved, warnings = store.load(repair=True)
    assert "moved to" in warnings[0] and not Path(store.path).exists()
    assert [n for n in os.listdir(store.dir) if ".corrupt-" in n]


def test_load_keeps_no_warnings_between_calls(tmp_path: Path) -> None:
    store = _store(tmp_path)
    Path(store.path).write_bytes(b"junk")
    assert store.load()[1]
    assert store.load()[1] == []  # moved aside: the next load starts clean, nothing carried over


def test_a_symlinked_state_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(KanotifyError, match="symlink is refused"):
        StateStore(str(tmp_path / "link")).ensure_dir()


def test_the_lock_serializes_and_times_out(tmp_path: Path) -> None:
    store = _store(tmp_path)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.lock(5):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="lock_timeout"):
        with store.lock(0.2):
            pass
    assert 0.15 <= time.monotonic() - started < 2
    release.set()
    thread.join()
    with store.lock(1) as waited:
        assert waited < 0.5


def test_tickets_order_notifications_within_one_boot_only() -> None:
    early, late = Ticket("b1", 100, 10), Ticket("b1", 100, 11)
    assert late.newer_than(early) and early.older_than(late)
    assert not early.newer_than(late) and not late.older_than(early)
    assert Ticket("b2", 1, 1).newer_than(late)  # after a reboot anything is newer
    assert not Ticket("b2", 1, 1).older_than(late)
    assert early.newer_than(None) and not early.older_than(None)
    assert Ticket.from_json(early.to_json()) == early
    assert Ticket.from_json(["b", "x", 1]) is None and Ticket.from_json(None) is None
    me = current_ticket()
    assert me.pid == os.getpid() and me.start_ticks > 0


def test_the_saved_file_is_stable_json(tmp_path: Path) -> None:
    store = _store(tmp_path)
    saved = SavedStates()
    saved.instances["B"] = SavedState(State.BACKUP)
    saved.instances["A"] = SavedState(State.FAULT)
    store.save(saved)
    data = json.loads(Path(store.path).read_text())
    assert list(data["instances"]) == ["A", "B"] and data["version"] == 1

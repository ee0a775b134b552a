"""keepalived's notify FIFO: every line form, garbage, NUL bytes, partial and over-long lines, EOF, recreation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kanotify.daemon.fifo import MAX_LINE, FifoReader, LvsEvent, PriorityEvent, Unparsed, VrrpEvent, parse_line
from kanotify.model import State


@pytest.mark.parametrize("line, expected", [
    (b'INSTANCE "VI_1" MASTER 100', VrrpEvent("INSTANCE", "VI_1", State.MASTER, 100, 'INSTANCE "VI_1" MASTER 100')),
    (b'INSTANCE "VI_1" BACKUP 50', VrrpEvent("INSTANCE", "VI_1", State.BACKUP, 50, 'INSTANCE "VI_1" BACKUP 50')),
    (b'INSTANCE "VI_1" FAULT 0', VrrpEvent("INSTANCE", "VI_1", State.FAULT, 0, 'INSTANCE "VI_1" FAULT 0')),
    (b'INSTANCE "VI_1" STOP 100', VrrpEvent("INSTANCE", "VI_1", State.STOP, 100, 'INSTANCE "VI_1" STOP 100')),
    (b'INSTANCE "VI_1" DELETED 100', VrrpEvent("INSTANCE", "VI_1", State.STOP, 100, 'INSTANCE "VI_1" DELETED 100')),
    (b'GROUP "VG 1" BACKUP 0', VrrpEvent("GROUP", "VG 1", State.BACKUP, 0, 'GROUP "VG 1" BACKUP 0')),
    (b'INSTANCE "VI_1" MASTER_RX_LOWER_PRI 150',
     VrrpEvent("INSTANCE", "VI_1", State.MASTER, 150, 'INSTANCE "VI_1" MASTER_RX_LOWER_PRI 150', reassert=True)),
    (b'INSTANCE "VI_1" MASTER_PRIORITY 110',
     PriorityEvent("INSTANCE", "VI_1", "MASTER_PRIORITY", 110, 'INSTANCE "VI_1" MASTER_PRIORITY 110')),
    (b'INSTANCE "VI_1" BACKUP_PRIORITY 90',
     PriorityEvent("INSTANCE", "VI_1", "BACKUP_PRIORITY", 90, 'INSTANCE "VI_1" BACKUP_PRIORITY 90')),
    (b"VS [192.0.2.100]:tcp:80 UP", LvsEvent("VS", "[192.0.2.100]:tcp:80", True, "VS [192.0.2.100]:tcp:80 UP")),
    (b"RS [192.0.2.21]:tcp:80 [192.0.2.100]:tcp:80 DOWN",
     LvsEvent("RS", "[192.0.2.21]:tcp:80 [192.0.2.100]:tcp:80", False,
              "RS [192.0.2.21]:tcp:80 [192.0.2.100]:tcp:80 DOWN")),
    (b"VS FWM 5 UP\0", LvsEvent("VS", "FWM 5", True, "VS FWM 5 UP")),  # newer keepalived: a NUL at the end
    (b'INSTANCE "VI_1" MASTER 100\0', VrrpEvent("INSTANCE", "VI_1", State.MASTER, 100, 'INSTANCE "VI_1" MASTER 100')),
    (b'INST\0ANCE "VI_1" MASTER 100\r',
     VrrpEvent("INSTANCE", "VI_1", State.MASTER, 100, 'INSTANCE "VI_1" MASTER 100')),
])
def test_every_line_form(line: bytes, expected: object) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize("line, why", [
    (b"", "empty"),
    (b"hello", "not a keepalived"),
    (b'INSTANCE VI_1 MASTER 100', "not a keepalived"),  # the name must be quoted
    (b'INSTANCE "VI_1" MASTER', "not a keepalived"),
    (b'INSTANCE "VI_1" RUNNING 100', "unknown state"),
    (b'INSTANCE "VI_1" MASTER 300', "out of 0..255"),
    (b'INSTANCE "VI_1" MASTER 99999999999', "not a keepalived"),
    (b'instance "VI_1" master 100', "not a keepalived"),
    (b'\xff\xfe INSTANCE', "not UTF-8"),
    (b"x" * 100_000, "longer than"),
])
def test_garbage_is_unparsed_with_a_reason(line: bytes, why: str) -> None:
    event = parse_line(line)
    assert isinstance(event, Unparsed) and why in event.why
    assert len(event.line) <= MAX_LINE


def _fifo(tmp_path: Path) -> tuple[str, int]:
    path = str(tmp_path / "notify.fifo")
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR)  # as keepalived opens it: writes never block
    return path, writer


def test_partial_lines_wait_for_their_newline(tmp_path: Path) -> None:
    path, writer = _fifo(tmp_path)
    reader = FifoReader(path)
    assert reader.open()
    os.write(writer, b'INSTANCE "VI_1" MAS')
    assert reader.read().lines == []
    os.write(writer, b'TER 100\nINSTANCE "VI_2" BACKUP 50\nGROUP')
    assert reader.read().lines == [b'INSTANCE "VI_1" MASTER 100', b'INSTANCE "VI_2" BACKUP 50']
    os.write(writer, b' "G" FAULT 0\n')
    assert reader.read().lines == [b'GROUP "G" FAULT 0']
    os.close(writer)
    reader.close()


def test_an_over_long_line_is_reported_once_and_skipped_to_its_newline(tmp_path: Path) -> None:
    path, writer = _fifo(tmp_path)
    reader = FifoReader(path)
    assert reader.open()
    lines: list[bytes] = []
    os.write(writer, b"y" * 30_000)
    lines += reader.read().lines
    os.write(writer, b"y" * 30_000)
    lines += reader.read().lines
    os.write(writer, b'yyy\nINSTANCE "VI_1" MASTER 100\n')
    lines += reader.read().lines
    assert len(lines) == 2 and isinstance(parse_line(lines[0]), Unparsed)
    assert lines[1] == b'INSTANCE "VI_1" MASTER 100'
    os.close(writer)
    reader.close()


def test_eof_hands_back_the_half_line_and_the_fifo_can_be_reopened(tmp_path: Path) -> None:
    path, writer = _fifo(tmp_path)
    reader = FifoReader(path)
    assert reader.open()
    os.write(writer, b'INSTANCE "VI_1" MASTER 100\nINSTANCE "VI_1" BACK')
    os.close(writer)  # keepalived stopped
    first, second = reader.read(), reader.read()
    assert first.lines == [b'INSTANCE "VI_1" MASTER 100'] and not first.eof
    assert second.lines == [] and second.eof and second.half == b'INSTANCE "VI_1" BACK'
    reader.close()
    writer = os.open(path, os.O_RDWR)  # keepalived is back
    assert reader.open()
    os.write(writer, b'INSTANCE "VI_1" BACKUP 100\n')
    assert reader.read().lines == [b'INSTANCE "VI_1" BACKUP 100']
    os.close(writer)
    reader.close()


def test_a_recreated_fifo_is_noticed(tmp_path: Path) -> None:
    path, writer = _fifo(tmp_path)
    reader = FifoReader(path)
    assert reader.open() and not reader.replaced()
    os.unlink(path)
    assert not reader.replaced()  # gone: keep reading the old one until a new one appears
    os.mkfifo(path)
    assert reader.replaced()
    os.close(writer)
    reader.close()


def test_a_missing_path_or_a_regular_file_does_not_open(tmp_path: Path) -> None:
    assert not FifoReader(str(tmp_path / "none")).open()
    (tmp_path / "file").write_text("x")
    assert not FifoReader(str(tmp_path / "file")).open()

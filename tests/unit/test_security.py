"""Ownership rules (keepalived's enable_script_security), on files this test owns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kanotify.errors import ConfigError
from kanotify.security import check_config_file, insecure_path_reason, insecure_reason


def _private_dir(tmp_path: Path) -> Path:
    base = tmp_path / "etc"
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    return base


def test_a_file_only_its_owner_can_write_is_fine(tmp_path: Path) -> None:
    conf = _private_dir(tmp_path) / "kanotify.toml"
    conf.write_text("")
    conf.chmod(0o644)
    assert insecure_reason(str(conf)) is None
    check_config_file(str(conf))


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_file_group_or_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    conf = _private_dir(tmp_path) / "kanotify.toml"
    conf.write_text("")
    conf.chmod(mode)
    assert "writable by group or others" in (insecure_reason(str(conf)) or "")
    with pytest.raises(ConfigError, match="refused"):
        check_config_file(str(conf))


def test_a_directory_others_can_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    base = _private_dir(tmp_path)
    conf = base / "kanotify.toml"
    conf.write_text("")
    conf.chmod(0o600)
    base.chmod(0o777)
    with pytest.raises(ConfigError, match="another user could replace the config"):
        check_config_file(str(conf))
    base.chmod(0o1777)  # sticky, like /tmp: others cannot replace our entries
    assert insecure_path_reason(str(conf)) is None


def test_symlinks_are_followed_before_checking(tmp_path: Path) -> None:
    base = _private_dir(tmp_path)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    target = open_dir / "real.toml"
    target.write_text("")
    target.chmod(0o600)
    link = base / "kanotify.toml"
    link.symlink_to(target)
    assert "writable by group or others" in (insecure_path_reason(str(link)) or "")


def test_a_missing_path_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    assert "cannot stat" in (insecure_reason(str(tmp_path / "nope")) or "")
    assert "cannot stat" in (insecure_path_reason(str(tmp_path / "nope")) or "")

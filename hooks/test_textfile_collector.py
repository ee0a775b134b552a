"""Unit tests of the node_exporter textfile plugin: content, atomic write, dry-run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kanotify.testing import load_plugin

textfile = load_plugin(Path(__file__).with_name("textfile_collector.py"))

T0 = 1_700_000_000.0


@pytest.fixture
def env(kanotify_env, tmp_path, mocker):
    metrics = tmp_path / "textfile"
    metrics.mkdir()
    clock = mocker.patch.object(textfile, "_now", return_value=T0)
    harness = kanotify_env.engine(plugins=[textfile], hooks={"textfile_collector": {"directory": str(metrics)}})
    harness.metrics = metrics / "kanotify.prom"
    harness.clock = clock
    return harness


def samples(path: Path) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in path.read_text().splitlines() if not line.startswith("#"))


def test_master_writes_state_and_transition_time(env):
    env.transition("VI_1", "master")
    text = env.metrics.read_text()
    assert text.endswith("\n")
    assert "# TYPE kanotify_vrrp_state gauge" in text
    assert samples(env.metrics) == {
        'kanotify_vrrp_state{vrrp_instance="VI_1",state="master"}': "1",
        'kanotify_vrrp_state{vrrp_instance="VI_1",state="backup"}': "0",
        'kanotify_vrrp_state{vrrp_instance="VI_1",state="fault"}': "0",
        'kanotify_vrrp_state{vrrp_instance="VI_1",state="stop"}': "0",
        'kanotify_vrrp_last_transition_timestamp_seconds{vrrp_instance="VI_1"}': "1700000000.000",
        "kanotify_last_run_success": "1",
        "kanotify_last_run_timestamp_seconds": "1700000000.000",
    }
    assert os.stat(env.metrics).st_mode & 0o777 == 0o644


def test_dry_run_writes_nothing(env):
    env.transition("VI_1", "master", dry_run=True)
    env.plan("backup")
    assert not env.metrics.exists()


def test_transition_time_moves_only_when_the_state_changes(env):
    env.transition("VI_1", "master")
    env.clock.return_value = T0 + 60
    env.reconcile()  # same state: the transition time stays, the run time moves
    values = samples(env.metrics)
    assert values['kanotify_vrrp_last_transition_timestamp_seconds{vrrp_instance="VI_1"}'] == "1700000000.000"
    assert values["kanotify_last_run_timestamp_seconds"] == "1700000060.000"
    env.clock.return_value = T0 + 120
    env.transition("VI_1", "backup")
    values = samples(env.metrics)
    assert values['kanotify_vrrp_state{vrrp_instance="VI_1",state="backup"}'] == "1"
    assert values['kanotify_vrrp_state{vrrp_instance="VI_1",state="master"}'] == "0"
    assert values['kanotify_vrrp_last_transition_timestamp_seconds{vrrp_instance="VI_1"}'] == "1700000120.000"


def test_other_instances_keep_their_values(kanotify_env, tmp_path, mocker):
    mocker.patch.object(textfile, "_now", return_value=T0)
    toml = '[[instance]]\nname = "VI_1"\n[[instance]]\nname = "VI_2"\n'
    env = kanotify_env.engine(plugins=[textfile], toml=toml, hooks={"textfile_collector": {"directory": str(tmp_path)}})
    env.transition("VI_1", "master")
    env.transition("VI_2", "backup")
    values = samples(tmp_path / "kanotify.prom")
    assert values['kanotify_vrrp_state{vrrp_instance="VI_1",state="master"}'] == "1"
    assert values['kanotify_vrrp_state{vrrp_instance="VI_2",state="backup"}'] == "1"


def test_a_failed_run_is_reported(env):
    env.backend.fail["bind 192.0.2.100/24 dev eth0"] = 19
    env.transition("VI_1", "master")
    assert samples(env.metrics)["kanotify_last_run_success"] == "0"


def test_written_atomically_through_a_temporary_file_in_the_same_directory(env, mocker):
    real_replace = os.replace
    seen = []

    def replace(src, dst):
        if str(dst) == str(env.metrics):  # os.replace is global: the state store uses it too
            seen.append((src, dst, Path(src).read_text()))
        return real_replace(src, dst)

    mocker.patch.object(textfile.os, "replace", side_effect=replace)
    env.transition("VI_1", "master")
    [(src, dst, content)] = seen
    assert dst == str(env.metrics)
    assert os.path.dirname(src) == os.path.dirname(dst) and src.endswith(".tmp")  # node_exporter reads only *.prom
    assert content == env.metrics.read_text()
    assert sorted(p.name for p in env.metrics.parent.iterdir()) == ["kanotify.prom"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(env, mocker):
    env.transition("VI_1", "master")
    before = env.metrics.read_text()
    real_replace = os.replace

    def replace(src, dst):
        if str(dst) == str(env.metrics):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    mocker.patch.object(textfile.os, "replace", side_effect=replace)
    result = env.transition("VI_1", "backup")
    assert env.metrics.read_text() == before
    assert sorted(p.name for p in env.metrics.parent.iterdir()) == ["kanotify.prom"]
    [problem] = result.record["hooks"]
    assert (problem["hook"], problem["call"]) == ("textfile_collector", "after_transition")
    assert "No space left on device" in problem["error"]
    assert result.exit_code == 1
    assert env.journal[-1]["hooks"] == result.record["hooks"]


def test_bad_file_option(env, kanotify_env, tmp_path):
    env = kanotify_env.engine(plugins=[textfile], hooks={"textfile_collector": {"directory": str(tmp_path),
                                                                                "file": "../x"}})
    result = env.transition("VI_1", "master")
    assert "must be a file name ending in .prom" in result.record["hooks"][0]["error"]


def test_a_file_written_with_the_old_instance_label_still_reads() -> None:
    """The label was ``instance`` before it became ``vrrp_instance``: the plugin's memory survives the upgrade."""
    old = ('kanotify_vrrp_state{instance="VI_1",state="master"} 1\n'
           'kanotify_vrrp_last_transition_timestamp_seconds{instance="VI_1"} 1700000000.000\n')
    assert textfile.read_previous(old) == {"VI_1": ("master", 1_700_000_000.0)}

"""Every example config in examples/ is valid (the e2e renders some of them; this checks all, cheaply)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanotify.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_a_valid_config(path: Path) -> None:
    assert load_config(str(path)).instances


def test_the_director_pair_example_runs_the_sync_daemon_with_its_instance() -> None:
    config = load_config(str(next(p for p in EXAMPLES if p.name == "kanotify-director-sync.toml")))
    assert config.sync_daemon is not None and config.sync_daemon.instance == "VI_1"
    assert dict(config.sysctls)["net.ipv4.vs.expire_nodest_conn"] == "1"

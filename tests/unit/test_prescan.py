"""The import-free scan of [settings] values (used by the config cache and the listener client)."""

from __future__ import annotations

import pytest

from kanotify.config import prescan
from kanotify.config.values import Settings


def test_its_defaults_are_the_settings_defaults() -> None:
    assert prescan.DEFAULT_STATE_DIR == Settings.state_dir
    assert prescan.DEFAULT_LOCK_TIMEOUT == Settings.lock_timeout


@pytest.mark.parametrize("text, state_dir, lock_timeout", [
    (b'[settings]\nstate_dir = "/srv/k"\nlock_timeout = 2.5\n', "/srv/k", 2.5),
    (b'[settings]\nstate_dir = "/srv/k"  # here\nlock_timeout = 3 # s\n[[instance]]\nname = "x"\n', "/srv/k", 3.0),
    (b'\xef\xbb\xbf[settings]\nlock_timeout = 1_0\n', "/run/kanotify", 10.0),
    (b'[[instance]]\nstate_dir = "/not/settings"\n', "/run/kanotify", 10.0),  # not in [settings]
    (b'[settings]\nstate_dir = "rel/path"\nlock_timeout = 0\n', "/run/kanotify", 10.0),  # invalid: defaults
    (b'[settings]\nstate_dir = "/a"\nstate_dir = "/b"\n', "/run/kanotify", 10.0),  # twice: unsure
    (b"[settings]\nstate_dir = '/literal'\nlock_timeout = \"5\"\n", "/run/kanotify", 5.0),
    (b'[settings]\nstate_dir = "/esc\\\\aped"\n', "/run/kanotify", 10.0),
    (b'[settings]\n[settings]\nstate_dir = "/x"\n', "/run/kanotify", 10.0),
    (b"", "/run/kanotify", 10.0),
    (b"\xff\xfe garbage", "/run/kanotify", 10.0),
])
def test_plain_values_are_found_anything_unusual_gives_the_default(text: bytes, state_dir: str,
                                                                     lock_timeout: float) -> None:
    assert prescan.state_dir(text) == state_dir
    assert prescan.lock_timeout(text) == lock_timeout

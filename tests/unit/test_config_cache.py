"""The validated-config cache: a hit only for the very same file, bytes and ownership; anything else is a miss.

Some tests change owners (chown to another uid) and so need root, as the suite has in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
from pathlib import Path
from typing import Callable

import pytest

from kanotify.config import cache as config_cache
from kanotify.config.schema import load_config, parse_config_bytes
from kanotify.config.values import Config
from kanotify.config.cache import CACHE_FILE, declared_state_dir, load_config_cached, write_entry
from kanotify.errors import ConfigError

OTHER_UID = 54321  # nobody we know: "another user"
REAL_MIN_SIZE = config_cache.MIN_SIZE

BODY = """\
[settings]
state_dir = "{state}"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  label = "eth0:0"
  [[instance.vip]]
  address = "2001:db8::100/64"
  dev = "eth0"
  states = ["master", "backup"]
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "wrr"
  persistence = 60
  persistence_netmask = 24
    [[instance.service.real]]
    address = "192.0.2.21"
    weight = 1
    [[instance.service.real]]
    address = "192.0.2.22"
    weight = 3
    upper_threshold = 10
  [[instance.service]]
  fwmark = 7
  family = "inet6"
  flags = ["one-packet"]
    [[instance.service.real]]
    address = "2001:db8::21"
    forward = "nat"
    port = 8080

[[instance]]
name = "VI_2"

[[group]]
name = "VG_1"
instances = ["VI_1", "VI_2"]

[hooks.mail]
required = true
timeout = 2
to = "ops@example.org"
when = 1979-05-27T07:32:00+02:00
nested = {{ list = [1, 2.5, "x"], on = true }}
"""


class Counter:
    """Counts fresh validations (a hit has none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = parse_config_bytes

        def counting(raw: bytes, filename: str) -> Config:
            self.calls += 1
            return real(raw, filename)

        monkeypatch.setattr(config_cache, "parse_config_bytes", counting)


@pytest.fixture(autouse=True)
def small_files_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The configs here are small: cache them anyway (what is cached does not depend on the size)."""
    monkeypatch.setattr(config_cache, "MIN_SIZE", 0)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Counter:
    return Counter(monkeypatch)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def conf(tmp_path: Path, state: Path) -> Path:
    path = tmp_path / "kanotify.toml"
    path.write_text(BODY.format(tmp=tmp_path, state=state))
    path.chmod(0o644)
    return path


def entry(state: Path) -> Path:
    return state / CACHE_FILE


def load_twice(conf: Path) -> tuple[Config, Config]:
    return load_config_cached(str(conf)), load_config_cached(str(conf))


# --------------------------------------------------------------------------- hits


def test_second_load_is_a_hit_and_equal_to_a_fresh_parse(conf: Path, state: Path, fresh: Counter) -> None:
    first, second = load_twice(conf)
    assert fresh.calls == 1
    assert second == first == load_config(str(conf))
    assert second.hooks["mail"].options["nested"] == {"list": [1, 2.5, "x"], "on": True}
    with pytest.raises(TypeError):
        second.hooks["mail"].options["to"] = "x"  # type: ignore[index]  # still read-only
    st = os.lstat(entry(state))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()


def test_a_large_config_round_trips(
    tmp_path: Path, state: Path, fresh: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_cache, "MIN_SIZE", REAL_MIN_SIZE)
    services = "".join(
        f'[[instance.service]]\nprotocol = "tcp"\naddress = "198.51.100.1"\nport = {1000 + i}\n'
        + "".join(f'[[instance.service.real]]\naddress = "203.0.113.{j + 1}"\nweight = {j % 5}\n' for j in range(10))
        for i in range(200)
    )
    path = tmp_path / "big.toml"
    path.write_text(f'[settings]\nstate_dir = "{state}"\n[[instance]]\nname = "VI_1"\n' + services)
    assert path.stat().st_size > REAL_MIN_SIZE
    first, second = load_twice(path)
    assert fresh.calls == 1 and second == first == load_config(str(path))
    assert sum(len(s.reals) for s in second.instances[0].services) == 2000


def test_a_small_file_is_validated_without_the_cache(
    conf: Path, state: Path, fresh: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_cache, "MIN_SIZE", conf.stat().st_size + 1)
    assert load_twice(conf)[1] == load_config(str(conf))
    assert fresh.calls == 2 and not entry(state).exists()


def test_an_invalid_config_is_never_cached_and_fails_as_without_cache(tmp_path: Path, state: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[settings]\nstate_dir = "{state}"\nlock_timeout = 0\n[[instance]]\nname = "VI 1"\n')
    with pytest.raises(ConfigError) as cached:
        load_config_cached(str(path))
    with pytest.raises(ConfigError) as plain:
        load_config(str(path))
    assert [str(p) for p in cached.value.problems] == [str(p) for p in plain.value.problems]
    assert len(cached.value.problems) == 2
    assert not entry(state).exists()


def test_an_unreadable_file_fails_as_without_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_cached(str(tmp_path / "nope.toml"))
    assert "No such file" in info.value.problems[0].message


# --------------------------------------------------------------------------- stale entries


def test_one_changed_byte_is_a_miss(conf: Path, fresh: Counter) -> None:
    load_config_cached(str(conf))
    conf.write_text(conf.read_text().replace("weight = 3", "weight = 4"))  # same size
    config = load_config_cached(str(conf))
    assert fresh.calls == 2
    assert config.instances[0].services[0].reals[1].weight == 4
    assert load_config_cached(str(conf)) == config and fresh.calls == 2  # rewritten: a hit again


def test_chmod_is_a_miss(conf: Path, fresh: Counter) -> None:
    load_config_cached(str(conf))
    conf.chmod(0o640)
    load_config_cached(str(conf))
    assert fresh.calls == 2


@pytest.mark.root
def test_chown_to_another_user_is_a_miss(conf: Path, fresh: Counter) -> None:
    load_config_cached(str(conf))
    os.chown(conf, OTHER_UID, -1)
    load_config_cached(str(conf))
    os.chown(conf, os.geteuid(), OTHER_UID)  # the group counts too
    load_config_cached(str(conf))
    assert fresh.calls == 3


def test_the_same_bytes_at_another_path_is_a_miss(tmp_path: Path, conf: Path, fresh: Counter) -> None:
    load_config_cached(str(conf))
    copy = tmp_path / "copy.toml"
    copy.write_bytes(conf.read_bytes())
    copy.chmod(0o644)
    assert load_config_cached(str(copy)).path == str(copy)
    assert fresh.calls == 2


def test_another_kanotify_version_or_schema_never_reads_the_entry(
    conf: Path, fresh: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_config_cached(str(conf))
    monkeypatch.setattr(config_cache, "__version__", "99.0")
    load_config_cached(str(conf))
    assert fresh.calls == 2
    monkeypatch.setattr(config_cache, "_schema", "0" * 64)  # the same version, other code
    load_config_cached(str(conf))
    assert fresh.calls == 3


def test_state_dir_moved_in_the_file(tmp_path: Path, conf: Path, state: Path, fresh: Counter) -> None:
    load_config_cached(str(conf))
    moved = tmp_path / "moved"
    moved.mkdir(mode=0o700)
    (moved / CACHE_FILE).write_bytes(entry(state).read_bytes())  # the old entry, in the new place
    (moved / CACHE_FILE).chmod(0o600)
    conf.write_text(conf.read_text().replace(str(state), str(moved)))
    config = load_config_cached(str(conf))
    assert fresh.calls == 2 and config.settings.state_dir == str(moved)
    assert load_config_cached(str(conf)) == config and fresh.calls == 2


def test_an_entry_recorded_for_another_state_dir_is_not_used(
    tmp_path: Path, conf: Path, state: Path, fresh: Counter
) -> None:
    raw = conf.read_bytes()
    key = config_cache._key(str(conf), raw, os.stat(conf), str(tmp_path / "elsewhere"))
    assert key is not None
    assert write_entry(str(state), key, load_config(str(conf)))  # right bytes, wrong state_dir
    load_config_cached(str(conf))
    assert fresh.calls == 1


# --------------------------------------------------------------------------- entries that are not trusted


def poisoned(conf: Path, state: Path) -> Config:
    """Store, under the file's real key, a config that is NOT the file's (weight 99): served only if trusted."""
    raw = conf.read_bytes()
    key = config_cache._key(str(conf), raw, os.stat(conf), str(state))
    assert key is not None
    wrong = parse_config_bytes(raw.replace(b"weight = 3", b"weight = 99"), str(conf))
    assert write_entry(str(state), key, wrong)
    return wrong


def test_poisoned_helper_is_served_when_trusted(conf: Path, state: Path, fresh: Counter) -> None:
    """The other tests' control: the entry below is what a trusted writer could have left."""
    wrong = poisoned(conf, state)
    assert load_config_cached(str(conf)) == wrong and fresh.calls == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: b"not a cache at all\n",
        lambda data: data[: len(data) // 2],  # torn
        lambda data: data[:-3] + bytes([data[-3] ^ 1]) + data[-2:],  # one bit in the payload
        lambda data: data.replace(b'"format": 1', b'"format": 2'),
        lambda data: data.split(b"\n", 1)[0],  # header only
        lambda data: b"{}\n" + data.split(b"\n", 1)[1],
    ],
    ids=["empty", "garbage", "torn", "bit-flip", "other-format", "header-only", "no-key"],
)
def test_a_corrupt_entry_is_ignored_and_rewritten(
    conf: Path, state: Path, fresh: Counter, damage: Callable[[bytes], bytes]
) -> None:
    load_config_cached(str(conf))
    entry(state).write_bytes(damage(entry(state).read_bytes()))
    assert load_config_cached(str(conf)) == load_config(str(conf))
    assert fresh.calls == 2
    load_config_cached(str(conf))
    assert fresh.calls == 2, "rewritten after the miss"


def test_a_payload_that_is_not_a_config_is_refused(conf: Path, state: Path, fresh: Counter) -> None:
    """A pickle naming anything but a config's own classes is never resolved (here: os.system)."""
    raw = conf.read_bytes()
    key = config_cache._key(str(conf), raw, os.stat(conf), str(state))
    assert key is not None

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("touch " + str(state / "pwned"),))

    payload = pickle.dumps(Evil())
    header = json.dumps({**key, "payload": hashlib.sha256(payload).hexdigest()}, sort_keys=True)
    entry(state).write_bytes(header.encode() + b"\n" + payload)
    entry(state).chmod(0o600)
    assert load_config_cached(str(conf)) == load_config(str(conf))
    assert fresh.calls == 1 and not (state / "pwned").exists()


@pytest.mark.root
def test_a_foreign_owned_entry_is_ignored(conf: Path, state: Path, fresh: Counter) -> None:
    poisoned(conf, state)
    os.chown(entry(state), OTHER_UID, -1)
    config = load_config_cached(str(conf))
    assert config == load_config(str(conf)) and fresh.calls == 1
    assert os.lstat(entry(state)).st_uid == os.geteuid(), "replaced by our own entry"


def test_an_entry_open_to_others_is_ignored(conf: Path, state: Path, fresh: Counter) -> None:
    poisoned(conf, state)
    entry(state).chmod(0o644)
    assert load_config_cached(str(conf)) == load_config(str(conf)) and fresh.calls == 1


def test_a_symlinked_entry_is_ignored(tmp_path: Path, conf: Path, state: Path, fresh: Counter) -> None:
    poisoned(conf, state)
    target = tmp_path / "target"
    entry(state).rename(target)
    entry(state).symlink_to(target)
    assert load_config_cached(str(conf)) == load_config(str(conf)) and fresh.calls == 1
    assert not entry(state).is_symlink(), "the link itself was replaced, its target left alone"
    assert target.read_bytes() != entry(state).read_bytes()


def test_a_fifo_in_place_of_the_entry_neither_hangs_nor_crashes(conf: Path, state: Path, fresh: Counter) -> None:
    os.mkfifo(entry(state), 0o600)
    assert load_config_cached(str(conf)) == load_config(str(conf)) and fresh.calls == 1


def test_a_symlinked_state_dir_is_neither_read_nor_written(tmp_path: Path, fresh: Counter) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real_dir)
    path = tmp_path / "k.toml"
    path.write_text(BODY.format(tmp=tmp_path, state=link))
    load_twice(path)
    assert fresh.calls == 2 and list(real_dir.iterdir()) == []


def test_a_state_dir_open_to_others_is_neither_read_nor_written(conf: Path, state: Path, fresh: Counter) -> None:
    poisoned(conf, state)
    state.chmod(0o755)
    load_twice(conf)
    assert fresh.calls == 2
    state.chmod(0o700)
    assert load_config_cached(str(conf)).instances[0].services[0].reals[1].weight == 99  # untouched: not rewritten


@pytest.mark.root
def test_a_foreign_state_dir_is_neither_read_nor_written(conf: Path, state: Path, fresh: Counter) -> None:
    poisoned(conf, state)
    os.chown(state, OTHER_UID, -1)
    load_twice(conf)
    assert fresh.calls == 2


def test_a_missing_state_dir_is_not_created(tmp_path: Path, state: Path, conf: Path, fresh: Counter) -> None:
    state.rmdir()
    load_twice(conf)
    assert fresh.calls == 2 and not state.exists()


def test_writing_never_fails_a_run(conf: Path, state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(config_cache.os, "replace", refuse)
    assert load_config_cached(str(conf)) == load_config(str(conf))
    assert [p.name for p in state.iterdir()] == [], "the temp file is removed too"


def test_stale_temp_files_of_killed_writers_are_removed(conf: Path, state: Path) -> None:
    stale = state / f"{CACHE_FILE}.tmp-999999"
    young = state / f"{CACHE_FILE}.tmp-999998"
    stale.write_bytes(b"x")
    young.write_bytes(b"x")
    os.utime(stale, (1, 1))
    load_config_cached(str(conf))
    assert not stale.exists() and young.exists()


# --------------------------------------------------------------------------- where the entry is


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'[settings]\nstate_dir = "/srv/k"\n', "/srv/k"),
        (b'\xef\xbb\xbf[settings]\r\nstate_dir = "/srv/k"   # where\r\n', "/srv/k"),
        (b' [ settings ] # s\n  syslog = false\n\tstate_dir\t=\t"/srv/k"\n[sysctl]\n', "/srv/k"),
        (b'[[instance]]\nname = "x"\n[settings]\nstate_dir = "/srv/k"\n', "/srv/k"),
        (b"", "/run/kanotify"),
        (b'[settings]\nsyslog = false\n', "/run/kanotify"),
        (b'[sysctl]\nstate_dir = "/srv/k"\n', "/run/kanotify"),  # another table's key
        (b'[settings]\n[sysctl]\nstate_dir = "/srv/k"\n', "/run/kanotify"),
        (b'[settings]\nstate_dir = "/srv/\\u006b"\n', "/run/kanotify"),  # escapes
        (b"[settings]\nstate_dir = '/srv/k'\n", "/run/kanotify"),  # literal string
        (b'[settings]\nstate_dir = "relative"\n', "/run/kanotify"),
        (b'[settings]\nstate_dir = "/a"\nstate_dir = "/b"\n', "/run/kanotify"),
        (b'[settings]\nstate_dir = "/a"\n[settings]\nstate_dir = "/b"\n', "/run/kanotify"),
        (b'settings.state_dir = "/srv/k"\n', "/run/kanotify"),  # dotted key
        (b'settings = { state_dir = "/srv/k" }\n', "/run/kanotify"),  # inline table
        (b'[settings]\nstate_dir = "/srv/k" x\n', "/run/kanotify"),
        (b'[settings]\nstate_dir = "/srv/\xff"\n', "/run/kanotify"),
    ],
)
def test_declared_state_dir(text: bytes, expected: str) -> None:
    assert declared_state_dir(text) == expected


def test_a_state_dir_the_scan_cannot_see_gets_no_cache(tmp_path: Path, state: Path, fresh: Counter) -> None:
    path = tmp_path / "k.toml"
    path.write_text(f"[settings]\nstate_dir = '{state}'\n[[instance]]\nname = \"VI_1\"\n")
    assert load_twice(path)[1].settings.state_dir == str(state)
    assert fresh.calls == 2 and not entry(state).exists()


# --------------------------------------------------------------------------- which commands use it


@pytest.mark.parametrize(
    ("words", "cached"),
    [
        (["master", "VI_1"], True),
        (["notify", "INSTANCE", "VI_1", "BACKUP", "100"], True),
        (["reconcile"], True),
        (["plan"], True),
        (["status"], True),
        (["check"], False),
        (["history"], False),
    ],
    ids=lambda v: v if isinstance(v, bool) else v[0],
)
def test_which_commands_use_the_cache(
    conf: Path, state: Path, monkeypatch: pytest.MonkeyPatch, words: list[str], cached: bool
) -> None:
    """Runs use it; ``check`` (the operator's "is my file right") and ``history`` validate from scratch."""
    from kanotify.backends.memory import MemoryBackend
    from kanotify.cli import run

    backend = MemoryBackend(devices={"lo", "eth0"})
    monkeypatch.setattr("kanotify.backends.system.system_backend", lambda: backend)
    used: list[str] = []
    real = config_cache.load_config_cached

    def recording(path: str) -> Config:
        used.append(path)
        return real(path)

    monkeypatch.setattr(config_cache, "load_config_cached", recording)
    code = run(["--config", str(conf), "--allow-insecure", *words])
    assert code in (0, 1), code  # 1: check reports the [hooks.mail] table without a plugin
    assert used == ([str(conf)] if cached else [])
    assert entry(state).exists() == cached

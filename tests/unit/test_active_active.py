"""Active-active directors (docs/ipvs.md): mh/sh destination order whatever the history, never added at
weight 0, the fingerprint, sync daemon mode both, and doctor's comparison of fingerprints.

The in-memory twin inserts a new destination at the head of the list like the kernel
(ip_vs_ctl.c: list_add), keeps a dest trash and models the last non-zero weight, so these tests
see what the kernel would build an mh table from.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kanotify.actions import AddReal, DeleteReal, EditReal
from kanotify.backends.memory import MemoryBackend
from kanotify.config.schema import parse_config
from kanotify.config.values import Config
from kanotify.errors import UsageError
from kanotify.fingerprint import added_weights, fingerprint, fingerprints, metric_value
from kanotify.keepalived.doctor import FAIL, PASS, WARN
from kanotify.keepalived.doctor_active import check_peer_fingerprints, parse_peer_options
from kanotify.model import RealServer, ServiceKey, State, SyncDaemon
from kanotify.plan import PlanOptions, desired_for, plan

ip = ipaddress.ip_address
KEY = ServiceKey.inet("tcp", ip("192.0.2.10"), 80)
REALS = [f"198.51.100.{n}" for n in range(1, 9)]


def config_for(reals: list[str], scheduler: str = "mh", drained: frozenset[str] = frozenset(),
               weights: dict[str, int] | None = None) -> Config:
    text = ('[[instance]]\nname = "ANYCAST"\n[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.10"\n'
            f'port = 80\nscheduler = "{scheduler}"\n')
    for address in reals:
        text += f'[[instance.service.real]]\naddress = "{address}"\nweight = {(weights or {}).get(address, 1)}\n'
        if address in drained:
            text += "drain = true\n"
    return parse_config(text, "aa.toml")


def converge(backend: MemoryBackend, config: Config, options: PlanOptions = PlanOptions()) -> list[str]:
    """Plan and apply until nothing changes (twice at most: a drain of a removed real needs a second run)."""
    desired = desired_for(config, {"ANYCAST": State.MASTER})
    applied: list[str] = []
    for _ in range(2):
        result = plan(desired, backend.observe(desired.scope), options)
        for action in result.changes:
            backend.apply(action)
            applied.append(str(action))
    again = plan(desired, backend.observe(desired.scope), options)
    assert again.changes == (), [str(a) for a in again.changes]  # idempotent
    return applied


def kernel_list(backend: MemoryBackend) -> list[tuple[str, int, int]]:
    """(address, weight, last non-zero weight) as the kernel lists them: what mh builds its table from."""
    state = backend.services[KEY]
    return [(str(rs.address), rs.weight, state.last_weights[rs.key]) for rs, _ in state.observed().reals.values()]


def test_the_twin_inserts_at_the_head_like_the_kernel() -> None:
    backend = MemoryBackend()
    config = config_for(REALS[:3], scheduler="wlc")  # not mh: kanotify adds in the config's order
    converge(backend, config)
    assert [a for a, _, _ in kernel_list(backend)] == list(reversed(REALS[:3]))  # ipvsadm -Ln --nosort


def test_a_new_mh_service_is_added_from_the_end_of_the_list() -> None:
    backend = MemoryBackend()
    applied = converge(backend, config_for(REALS[:3]))
    assert [a for a in applied if a.startswith("add real")] == [
        f"add real server {r}:80 dr weight 1 to tcp 192.0.2.10:80" for r in reversed(REALS[:3])]
    assert [a for a, _, _ in kernel_list(backend)] == REALS[:3]


def test_a_real_server_added_in_the_middle_re_adds_the_ones_before_it() -> None:
    backend = MemoryBackend()
    converge(backend, config_for([REALS[0], REALS[1], REALS[3]]))
    backend.set_connections(KEY, (ip(REALS[0]), 80), 5)
    applied = converge(backend, config_for(REALS[:4]))
    assert applied == [
        f"add real server {REALS[2]}:80 dr weight 1 to tcp 192.0.2.10:80",
        f"delete real server {REALS[1]}:80 from tcp 192.0.2.10:80 (re-added before {REALS[2]}:80: the kernel "
        "lists the config's order (scheduler mh))",
        f"add real server {REALS[1]}:80 dr weight 1 to tcp 192.0.2.10:80",
        f"delete real server {REALS[0]}:80 from tcp 192.0.2.10:80 (re-added before {REALS[1]}:80: the kernel "
        "lists the config's order (scheduler mh))",
        f"add real server {REALS[0]}:80 dr weight 1 to tcp 192.0.2.10:80",
    ]
    assert [a for a, _, _ in kernel_list(backend)] == REALS[:4]
    # the dest trash: the connections of a deleted and re-added destination go on
    assert backend.services[KEY].reals[(ip(REALS[0]), 80)][1].active_conns == 5


def test_only_the_reals_before_the_longest_tail_in_order_move() -> None:
    backend = MemoryBackend()
    converge(backend, config_for(REALS[:5]))
    # by hand: 3 deleted and re-added (it goes to the head), 4 deleted
    state = backend.services[KEY]
    rs3 = state.reals.pop((ip(REALS[2]), 80))
    state.reals[(ip(REALS[2]), 80)] = rs3
    del state.reals[(ip(REALS[3]), 80)]
    assert [a for a, _, _ in kernel_list(backend)] == [REALS[2], REALS[0], REALS[1], REALS[4]]
    applied = converge(backend, config_for(REALS[:5]))
    moved = [a.split()[3] for a in applied if a.startswith("delete")]
    assert moved == [f"{REALS[2]}:80", f"{REALS[1]}:80", f"{REALS[0]}:80"]  # 5 stays: the tail in order
    assert [a for a, _, _ in kernel_list(backend)] == REALS[:5]


def test_long_history_equals_a_fresh_director() -> None:
    """Config edits adding a real server in the middle, drain/restore, remove/re-add, a restart, a dest by hand."""
    final = config_for(REALS[:6], weights={REALS[1]: 3})
    old = MemoryBackend()
    converge(old, config_for([REALS[0], REALS[2], REALS[5]]))
    converge(old, config_for([REALS[0], REALS[2], REALS[4], REALS[5]], weights={REALS[1]: 3}))
    converge(old, config_for([REALS[0], REALS[1], REALS[2], REALS[4], REALS[5]], weights={REALS[1]: 3}))
    converge(old, config_for(REALS[:6], weights={REALS[1]: 3}, drained=frozenset({REALS[3], REALS[1]})))
    converge(old, config_for([r for r in REALS[:6] if r != REALS[2]], weights={REALS[1]: 3}))  # removed
    converge(old, final)  # ... and added back
    restarted = MemoryBackend(services={KEY: old.services[KEY].observed()})  # kanotify restarted: only the kernel
    restarted.services[KEY].last_weights = dict(old.services[KEY].last_weights)
    restarted.apply(AddReal(KEY, RealServer(ip(REALS[7]), 80)))  # by hand: ipvsadm -a
    restarted.apply(DeleteReal(KEY, RealServer(ip(REALS[4]), 80)))
    restarted.apply(AddReal(KEY, RealServer(ip(REALS[4]), 80)))  # by hand, back at the head
    converge(restarted, final)
    fresh = MemoryBackend()
    converge(fresh, final)
    assert kernel_list(restarted) == kernel_list(fresh)
    assert [a for a, _, _ in kernel_list(fresh)] == REALS[:6]
    mine = fingerprints(final, restarted.observe(desired_for(final, {"ANYCAST": State.MASTER}).scope).services or {})
    theirs = fingerprints(final, fresh.observe(desired_for(final, {"ANYCAST": State.MASTER}).scope).services or {})
    assert mine == theirs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(REALS), unique=True, min_size=1), min_size=1, max_size=6))
def test_any_history_of_configs_ends_in_the_config_order(history: list[list[str]]) -> None:
    backend = MemoryBackend()
    for reals in history:
        converge(backend, config_for(reals), PlanOptions(drain_timeout=0))
        assert [a for a, _, _ in kernel_list(backend)] == reals


def test_drain_true_adds_at_the_weight_then_drains() -> None:
    backend = MemoryBackend()
    applied = converge(backend, config_for(REALS[:2], weights={REALS[1]: 4}, drained=frozenset({REALS[1]})))
    assert applied[1:3] == [
        f"add real server {REALS[1]}:80 dr weight 4 to tcp 192.0.2.10:80",
        f"edit real server {REALS[1]}:80 of tcp 192.0.2.10:80: weight 4 -> 0 (drain: added at weight 4 first)",
    ]
    assert kernel_list(backend)[1] == (REALS[1], 0, 4)  # the kernel remembers 4: its slots stay


def test_a_health_drained_real_is_added_at_its_weight_then_drained() -> None:
    class Down:
        def is_down(self, service: ServiceKey, real: tuple[object, int]) -> bool:
            return str(real[0]) == REALS[0]

    text = ('[[instance]]\nname = "ANYCAST"\n[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.10"\n'
            'port = 80\nscheduler = "mh"\n[instance.service.check]\ntype = "tcp"\n'
            f'[[instance.service.real]]\naddress = "{REALS[0]}"\nweight = 2\n')
    desired = desired_for(parse_config(text), {"ANYCAST": State.MASTER}, health=Down())  # type: ignore[arg-type]
    backend = MemoryBackend()
    actions = plan(desired, backend.observe(desired.scope)).changes
    assert [type(a) for a in actions[1:]] == [AddReal, EditReal]
    assert isinstance(actions[1], AddReal) and actions[1].real.weight == 2
    assert isinstance(actions[2], EditReal) and actions[2].new.weight == 0 and actions[2].new.forward == "dr"


def test_the_fingerprint_sees_order_weights_and_the_remembered_weight() -> None:
    config = config_for(REALS[:3])
    a, b = MemoryBackend(), MemoryBackend()
    converge(a, config)
    converge(b, config)
    fa = fingerprint(a.services[KEY].observed(), added_weights(config)[KEY])
    assert fa == fingerprint(b.services[KEY].observed(), added_weights(config)[KEY])
    assert len(fa) == 32 and metric_value(fa) < 2**48 and metric_value(fa) == int(fa[:12], 16)
    # by hand, another order: another fingerprint
    state = b.services[KEY]
    state.reals = dict(reversed(list(state.reals.items())))
    assert fingerprint(b.services[KEY].observed(), added_weights(config)[KEY]) != fa
    # a drained real remembers the weight it was added at
    drained = config_for(REALS[:3], drained=frozenset({REALS[0]}), weights={REALS[0]: 5})
    assert added_weights(drained)[KEY][(ip(REALS[0]), 80)] == 5


def test_status_json_has_the_fingerprint(tmp_path: Path) -> None:
    from kanotify.status import collect_status
    from kanotify.testing import make_config

    text = ('[[instance]]\nname = "ANYCAST"\n[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.10"\n'
            'port = 80\nscheduler = "mh"\nflags = ["mh-port"]\n'
            + "".join(f'[[instance.service.real]]\naddress = "{r}"\n' for r in REALS[:3]))
    config = make_config(text, base_dir=tmp_path)
    backend = MemoryBackend()
    converge(backend, config)
    report = collect_status(config, lambda: backend)
    (svc,) = report["ipvs"]["services"]
    assert svc["fingerprint"] == fingerprints(config, {KEY: backend.services[KEY].observed()})[KEY]
    assert [r["real"].split()[0] for r in svc["reals"]] == [f"{r}:80" for r in REALS[:3]]  # the kernel's order
    assert "flags mh-port" in svc["service"]


def test_the_metric_carries_48_bits(tmp_path: Path) -> None:
    from kanotify.metrics.exposition import render
    from kanotify.metrics.facts import Facts, fingerprint_rows

    config = config_for(REALS[:2])
    backend = MemoryBackend()
    converge(backend, config)
    observed = backend.observe(desired_for(config, {"ANYCAST": State.MASTER}).scope)
    rows = fingerprint_rows(config, {"ANYCAST": observed})
    hexa = fingerprints(config, observed.services or {})[KEY]
    assert rows == (("tcp 192.0.2.10:80", int(hexa[:12], 16)),)
    text = render(Facts(fingerprints=rows)).decode()
    (line,) = [x for x in text.splitlines() if x.startswith('kanotify_ipvs_fingerprint{service="tcp 192.0.2.10:80"}')]
    assert int(float(line.split()[-1])) == int(hexa[:12], 16)  # exact through the text format's float


def test_sync_daemon_mode_both_runs_master_and_backup_in_every_state() -> None:
    text = ('[[instance]]\nname = "ANYCAST"\n[[instance]]\nname = "OTHER"\n'
            '[sync_daemon]\ninterface = "eth0"\nmode = "both"\nsync_id = 7\n')
    config = parse_config(text)
    for state in (State.MASTER, State.BACKUP, State.FAULT, State.STOP):
        desired = desired_for(config, {"ANYCAST": state}, ["OTHER"])  # any notification keeps them
        assert [(d.state, d.sync_id) for d in desired.sync_daemons] == [("master", 7), ("backup", 0)]
    backend = MemoryBackend(devices={"lo", "eth0"})
    desired = desired_for(config, {"ANYCAST": State.BACKUP})
    for action in plan(desired, backend.observe(desired.scope)).changes:
        backend.apply(action)
    assert sorted(backend.daemons) == ["backup", "master"] and backend.daemons["backup"].sync_id == 0
    assert plan(desired, backend.observe(desired.scope)).changes == ()
    # a backup daemon started by hand with the master's id is restarted with 0 (it must hear every master)
    backend.daemons["backup"] = SyncDaemon("backup", "eth0", 7, 1472)
    assert [str(a) for a in plan(desired, backend.observe(desired.scope)).changes][0].startswith("stop backup")


@pytest.mark.parametrize(("text", "path", "word"), [
    ('interface = "eth0"\nmode = "both"\ninstance = "ANYCAST"\n', "sync_daemon.instance", 'mode = "both"'),
    ('interface = "eth0"\nmode = "always"\n', "sync_daemon.mode", 'one of follow, both'),
])
def test_sync_daemon_mode_mistakes(text: str, path: str, word: str) -> None:
    from kanotify.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config('[[instance]]\nname = "ANYCAST"\n[sync_daemon]\n' + text, "aa.toml")
    (problem,) = info.value.problems
    assert problem.path == path and word in problem.message and problem.file == "aa.toml"


def test_doctor_compares_fingerprints_from_the_command_line_and_status_files(tmp_path: Path) -> None:
    peer = tmp_path / "director-b.json"
    peer.write_text(json.dumps({"ipvs": {"services": [
        {"service": "tcp 192.0.2.10:80 scheduler mh", "managed": True, "fingerprint": "ab" * 16},
        {"service": "tcp 192.0.2.11:80 scheduler mh", "managed": True, "fingerprint": "cd" * 16},
    ]}}))
    peers = parse_peer_options(["tcp 192.0.2.10:80=" + "ab" * 16], [str(peer)])
    rows = check_peer_fingerprints(None, peers, lambda: {  # type: ignore[arg-type]
        "tcp 192.0.2.10:80": "ab" * 16, "tcp 192.0.2.12:80": "ef" * 16})
    got = [(r.status, r.what.split(":")[0]) for r in rows]
    assert got == [
        (PASS, "tcp 192.0.2.10"), (WARN, "tcp 192.0.2.12"),  # the command line's
        (PASS, "tcp 192.0.2.10"), (FAIL, "tcp 192.0.2.11"), (WARN, "tcp 192.0.2.12"),  # the file's
    ]
    differ = check_peer_fingerprints(None, peers[:1], lambda: {"tcp 192.0.2.10:80": "00" * 16})  # type: ignore[arg-type]
    assert differ[0].status == FAIL and "different real servers" in differ[0].what


@pytest.mark.parametrize(("pairs", "files", "word"), [
    (["tcp 192.0.2.10:80"], [], "SERVICE=HEX"),
    (["tcp 192.0.2.10:80=xyz"], [], "SERVICE=HEX"),
    ([], ["/nonexistent/peer.json"], "cannot read"),
])
def test_doctor_peer_option_mistakes(pairs: list[str], files: list[str], word: str) -> None:
    with pytest.raises(UsageError, match=word):
        parse_peer_options(pairs, files)


def test_doctor_peer_file_not_a_status(tmp_path: Path) -> None:
    bad = tmp_path / "peer.json"
    bad.write_text('{"vips": []}')
    with pytest.raises(UsageError, match="status --json"):
        parse_peer_options([], [str(bad)])


def test_the_docs_alert_fires_when_directors_disagree_and_only_then(tmp_path: Path) -> None:
    """docs/metrics.md's IpvsDirectorsDisagree rule, run by promtool on two directors' series."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup installs Debian's prometheus package"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    block = docs.split("- alert: IpvsDirectorsDisagree", 1)[1].split("- alert:", 1)[0]
    expr = block.split("expr:", 1)[1].splitlines()[0].strip()
    (tmp_path / "rules.yml").write_text(
        "groups:\n  - name: t\n    rules:\n      - alert: IpvsDirectorsDisagree\n"
        f"        expr: {expr}\n        for: 2m\n")
    series = 'kanotify_ipvs_fingerprint{{instance="{d}",service="tcp 192.0.2.10:80"}}'
    (tmp_path / "test.yml").write_text(f"""rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '{series.format(d="dir-a")}'
        values: '5 5 5 5 5 5 5 5'
      - series: '{series.format(d="dir-b")}'
        values: '5 5 5 5 7 7 7 7'
    alert_rule_test:
      - eval_time: 3m
        alertname: IpvsDirectorsDisagree
        exp_alerts: []
      - eval_time: 7m
        alertname: IpvsDirectorsDisagree
        exp_alerts:
          - exp_labels: {{service: "tcp 192.0.2.10:80"}}
""")
    done = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_fingerprint_sees_the_tunnel_and_a_drain_keeps_it() -> None:
    from dataclasses import replace

    from kanotify.model import ObservedService, RealServerStats, VirtualService

    gue = RealServer(ip(REALS[0]), 80, "tun", 1, tun_type="gue", tun_port=6080)
    ipip = replace(gue, tun_type="ipip", tun_port=0)

    def one(real: RealServer) -> str:
        return fingerprint(ObservedService(VirtualService(KEY, "mh"), {real.key: (real, RealServerStats())}))

    assert one(gue) != one(ipip) != one(replace(ipip, forward="dr"))
    text = ('[[instance]]\nname = "ANYCAST"\n[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.10"\n'
            f'port = 80\nscheduler = "mh"\n[[instance.service.real]]\naddress = "{REALS[0]}"\nforward = "tun"\n'
            'tun_type = "gue"\ntun_port = 6080\nweight = 3\ndrain = true\n')
    backend = MemoryBackend()
    applied = converge(backend, parse_config(text))
    assert applied[1:] == [
        f"add real server {REALS[0]}:80 tun gue port 6080 weight 3 to tcp 192.0.2.10:80",
        f"edit real server {REALS[0]}:80 of tcp 192.0.2.10:80: weight 3 -> 0 (drain: added at weight 3 first)",
    ]
    (drained, _), = backend.services[KEY].reals.values()
    assert (drained.forward, drained.tun_type, drained.tun_port, drained.weight) == ("tun", "gue", 6080, 0)

"""VRRP state as Prometheus metrics, through node_exporter's textfile collector.

After every run that is not a dry-run, writes ``kanotify.prom`` in the
textfile collector's directory (node_exporter ``--collector.textfile.directory``;
Debian's ``prometheus-node-exporter`` package uses ``/var/lib/prometheus/node-exporter``)::

    # HELP kanotify_vrrp_state VRRP state kanotify last recorded for the instance (1 = current).
    # TYPE kanotify_vrrp_state gauge
    kanotify_vrrp_state{vrrp_instance="VI_1",state="master"} 1
    kanotify_vrrp_state{vrrp_instance="VI_1",state="backup"} 0
    kanotify_vrrp_state{vrrp_instance="VI_1",state="fault"} 0
    kanotify_vrrp_state{vrrp_instance="VI_1",state="stop"} 0
    # HELP kanotify_vrrp_last_transition_timestamp_seconds When the instance last changed state (Unix time).
    # TYPE kanotify_vrrp_last_transition_timestamp_seconds gauge
    kanotify_vrrp_last_transition_timestamp_seconds{vrrp_instance="VI_1"} 1718000000.123
    # HELP kanotify_last_run_success 1 if the last kanotify run converged, 0 if it failed.
    ...
    kanotify_last_run_timestamp_seconds 1718000000.456

Alert on ``sum(kanotify_vrrp_state{state="master"}) != 1`` across the pair
(split brain or no master), on ``kanotify_last_run_success == 0``, and on flapping
with ``changes(kanotify_vrrp_last_transition_timestamp_seconds[1h])``.

Every state of an instance is written (0 or 1) so a query never sees a series
disappear.  The file is the plugin's memory: instances not in this run keep
the values they had (an instance appears after its first transition or
``reconcile``).  It is written atomically -- a temporary file in the same
directory, fsync, rename -- so node_exporter never reads half a file (it only
reads ``*.prom``; the temporary name ends in ``.tmp``).  Nothing is written in
dry-run (``kanotify plan``): kanotify does not call ``after_transition`` then.

Install: copy to ``/etc/kanotify/hooks.d/textfile_collector.py`` (root-owned, 0644).
Config (optional)::

    [hooks.textfile_collector]
    directory = "/var/lib/prometheus/node-exporter"
    file = "kanotify.prom"
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import Mapping

from kanotify.plugin import Options, RunContext, RunResult

NAME = "textfile_collector"
DEFAULT_DIRECTORY = "/var/lib/prometheus/node-exporter"
DEFAULT_FILE = "kanotify.prom"
STATES = ("master", "backup", "fault", "stop")

# a file written before the label was vrrp_instance (Prometheus renames `instance`) still reads
_STATE_RE = re.compile(r'^kanotify_vrrp_state\{(?:vrrp_)?instance="((?:[^"\\]|\\.)*)",state="(\w+)"\} 1$', re.M)
_SINCE_RE = re.compile(
    r'^kanotify_vrrp_last_transition_timestamp_seconds\{(?:vrrp_)?instance="((?:[^"\\]|\\.)*)"\} ([0-9.eE+-]+)$', re.M
)


def _now() -> float:
    return time.time()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def path(options: Options) -> str:
    """The ``.prom`` file this plugin writes."""
    name = str(options.get("file", DEFAULT_FILE))
    if "/" in name or not name.endswith(".prom"):
        raise ValueError(f"option 'file' must be a file name ending in .prom, got {name!r}")
    return os.path.join(str(options.get("directory", DEFAULT_DIRECTORY)), name)


def read_previous(text: str) -> dict[str, tuple[str, float]]:
    """instance -> (state, last transition time) from a file this plugin wrote."""
    states = {_unescape(m.group(1)): m.group(2) for m in _STATE_RE.finditer(text)}
    since = {_unescape(m.group(1)): float(m.group(2)) for m in _SINCE_RE.finditer(text)}
    return {name: (state, since.get(name, 0.0)) for name, state in states.items()}


def render(instances: Mapping[str, tuple[str, float]], success: bool, now: float) -> str:
    """The whole ``.prom`` text."""
    lines = [
        "# HELP kanotify_vrrp_state VRRP state kanotify last recorded for the instance (1 = current).",
        "# TYPE kanotify_vrrp_state gauge",
    ]
    for name in sorted(instances):
        state = instances[name][0]
        for candidate in STATES:
            value = 1 if candidate == state else 0
            lines.append(f'kanotify_vrrp_state{{vrrp_instance="{_escape(name)}",state="{candidate}"}} {value}')
    lines += [
        "# HELP kanotify_vrrp_last_transition_timestamp_seconds When the instance last changed state (Unix time).",
        "# TYPE kanotify_vrrp_last_transition_timestamp_seconds gauge",
    ]
    for name in sorted(instances):
        since = instances[name][1]
        lines.append(f'kanotify_vrrp_last_transition_timestamp_seconds{{vrrp_instance="{_escape(name)}"}} {since:.3f}')
    lines += [
        "# HELP kanotify_last_run_success 1 if the last kanotify run converged, 0 if it failed.",
        "# TYPE kanotify_last_run_success gauge",
        f"kanotify_last_run_success {1 if success else 0}",
        "# HELP kanotify_last_run_timestamp_seconds When kanotify last ran (Unix time).",
        "# TYPE kanotify_last_run_timestamp_seconds gauge",
        f"kanotify_last_run_timestamp_seconds {now:.3f}",
    ]
    return "\n".join(lines) + "\n"  # the collector wants a final newline


def write_atomically(target: str, text: str) -> None:
    """Write ``target`` so a reader sees the old file or the new one, never a mix."""
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)  # node_exporter usually runs as another user
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def kanotify_after_transition(ctx: RunContext, result: RunResult, options: Options) -> None:
    """Update the metrics file with this run's states (kanotify does not call it for a dry-run)."""
    target = path(options)
    try:
        with open(target, encoding="utf-8") as fh:
            instances = read_previous(fh.read())
    except FileNotFoundError:
        instances = {}
    now = _now()
    for name, state in ctx.to_states.items():
        before = ctx.from_states.get(name)
        known = instances.get(name)
        if known is None or before != state or known[0] != state.value:
            instances[name] = (state.value, now)
        else:
            instances[name] = (state.value, known[1])
    write_atomically(target, render(instances, result.outcome == "converged", now))

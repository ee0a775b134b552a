#!/usr/bin/env python3
"""Draw the scaling series of ``benchmarks/scale.py --json`` as a PNG (needs matplotlib: ``pip install -e '.[bench]'``).

    .venv/bin/python benchmarks/plot.py OUT.json docs/benchmarks-scaling.png

Time against the number of real servers, log-log, for the four contenders of
the series: ``kanotify master`` from an empty table and ``ipvsadm-restore`` of
the same rules, the no-op ``kanotify reconcile`` and ``ipvsadm -Ln``; a
dotted line of slope 1 shows what linear growth looks like.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the --json file of benchmarks/scale.py")
    parser.add_argument("png")
    parser.add_argument("--host", default="", help="the host the guest ran on, for the title (a guest sees only 'UML')")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    data = json.loads(Path(args.results).read_text())
    series = data["scaling"]
    machine = data["machine"]
    reals = [point["reals"] for point in series]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for key, label, style in (
        ("master_ms", "kanotify master (from empty)", "o-"),
        ("restore_ms", "ipvsadm-restore (same rules)", "s--"),
        ("reconcile_ms", "kanotify reconcile (nothing to do)", "^-"),
        ("ipvsadm_ln_ms", "ipvsadm -Ln", "v--"),
    ):
        ax.plot(reals, [point[key] for point in series], style, label=label)
    first, last = reals[0], reals[-1]
    base = series[-1]["master_ms"]
    ax.plot([first, last], [base * first / last, base], ":", color="grey", label="linear (slope 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("real servers (services x 10)")
    ax.set_ylabel("wall time per run, ms (median)")
    where = f"UML guest, Linux {machine['kernel']}" if machine.get("in_uml_guest") else f"Linux {machine['kernel']}"
    host = args.host or f"{machine['cpu']} x {machine['cores']}"
    ax.set_title(f"kanotify at scale: {where}, on {host}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

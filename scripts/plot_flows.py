"""Quality against network evaluations for the ODE methods (docs/benchmarks.md, Bi-DPM).

    python scripts/plot_flows.py BENCH.json [BENCH2.json ...] -o docs/figures/flows_nfe.png

Reads the rows written by ``scripts/bench_flows.py`` and draws, for each direction, SSIM
and PSNR (mean over subjects) against the number of velocity-network evaluations (one
per Euler step), one line per model; models without an ODE (CycleGAN) are a dashed
horizontal line; the noise floor is a dotted line.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    rows = [row for path in args.bench for row in json.loads(path.read_text())]
    directions = sorted({r["direction"] for r in rows})
    fig, axes = plt.subplots(2, len(directions), figsize=(4.2 * len(directions), 6.4), squeeze=False)
    for col, direction in enumerate(directions):
        mine = [r for r in rows if r["direction"] == direction]
        lines: dict[str, list[dict]] = defaultdict(list)
        for r in mine:
            lines[r["model"]].append(r)
        for row_i, metric in enumerate(("ssim", "psnr")):
            ax = axes[row_i][col]
            for model, points in sorted(lines.items()):
                if points[0]["steps"] is None:
                    ax.axhline(points[0][metric][0], ls="--", lw=1, color="grey", label=model)
                    continue
                points.sort(key=lambda r: r["steps"])
                ax.plot([p["steps"] for p in points], [p[metric][0] for p in points], marker="o", label=model)
            floor = mine[0][f"noise_floor_{metric}"]
            ax.axhline(floor, ls=":", lw=1, color="black", label="noise floor")
            ax.set_xscale("log")
            ax.set_xticks([1, 2, 5, 10, 20])
            ax.set_xticklabels(["1", "2", "5", "10", "20"])
            ax.set_xlabel("network evaluations (Euler steps)")
            ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
            ax.set_title(direction)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()

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
import re
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
    # One colour per model family across panels: drop the task from run names
    # ("bidpm1-t1-ct" and "bidpm1-t1-t2" are both "bidpm1").
    def label(model: str) -> str:
        return re.sub(r"-(t1|t2|ct)-(t1|t2|ct)(-small)?", "", model)

    families = list(dict.fromkeys(label(r["model"]) for r in rows))
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    directions = sorted({r["direction"] for r in rows})
    fig, axes = plt.subplots(2, len(directions), figsize=(4.2 * len(directions), 6.4), squeeze=False)
    for col, direction in enumerate(directions):
        mine = [r for r in rows if r["direction"] == direction]
        lines: dict[str, list[dict]] = defaultdict(list)
        for r in mine:
            lines[label(r["model"])].append(r)
        for row_i, metric in enumerate(("ssim", "psnr")):
            ax = axes[row_i][col]
            for model, points in sorted(lines.items()):
                if points[0]["steps"] is None:
                    ax.axhline(points[0][metric][0], ls="--", lw=1, color=colours[model], label=model)
                    continue
                points.sort(key=lambda r: r["steps"])
                ax.plot([p["steps"] for p in points], [p[metric][0] for p in points], marker="o",
                        color=colours[model], label=model)
            floor = mine[0][f"noise_floor_{metric}"]
            ax.axhline(floor, ls=":", lw=1, color="black", label="noise floor")
            ax.set_xscale("log")
            ax.set_xticks([1, 2, 5, 10])
            ax.set_xticklabels(["1", "2", "5", "10"])
            ax.set_xlabel("network evaluations (Euler steps)")
            ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
            ax.set_title(direction)
            ax.grid(alpha=0.3)
    seen: dict[str, object] = {}
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(name, handle)
    labels, handles = list(seen), list(seen.values())
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()

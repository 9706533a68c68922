"""Markdown tables from ``scripts/bench_flows.py`` results (docs/benchmarks.md, Bi-DPM).

    python scripts/flows_table.py BENCH.json [...] [--mask head|brain]

One table per direction: rows are models, columns step counts, cells ``SSIM / PSNR``
(mean over subjects); the best cell of each direction is in bold; the noise floor closes
each table. ``--summary``: one table, rows models, columns directions, each cell the best
SSIM over step counts with its PSNR and step count.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", nargs="+", type=Path)
    parser.add_argument("--mask", choices=["head", "brain"], default="head")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    prefix = "brain_" if args.mask == "brain" else ""
    rows = [r for path in args.bench for r in json.loads(path.read_text())]
    if args.summary:
        summary(rows, prefix)
        return
    steps = sorted({r["steps"] for r in rows if r["steps"] is not None})
    for direction in sorted({r["direction"] for r in rows}):
        mine = [r for r in rows if r["direction"] == direction]
        best = max(r[f"{prefix}ssim"][0] for r in mine)
        models = list(dict.fromkeys(r["model"] for r in mine))
        print(f"\n{direction} ({args.mask}; SSIM / PSNR dB, mean over {mine[0]['subjects']} subjects)\n")
        print("| model | " + " | ".join(f"{n} step{'s' * (n > 1)}" for n in steps) + " |")
        print("|---|" + "---|" * len(steps))
        for model in models:
            cells = []
            for n in steps:
                hit = [r for r in mine if r["model"] == model and r["steps"] in (n, None)]
                if not hit or (hit[0]["steps"] is None and n != steps[0]):
                    cells.append("" if not hit else "〃")
                    continue
                r = hit[0]
                text = f"{r[f'{prefix}ssim'][0]:.3f} / {r[f'{prefix}psnr'][0]:.2f}"
                cells.append(f"**{text}**" if r[f"{prefix}ssim"][0] == best else text)
            print(f"| {model} | " + " | ".join(cells) + " |")
        floor = mine[0]
        print(f"| noise floor | {floor[f'{prefix}noise_floor_ssim']:.3f} / "
              f"{floor[f'{prefix}noise_floor_psnr']:.2f} |" + " |" * (len(steps) - 1))


def summary(rows: list[dict], prefix: str) -> None:
    directions = sorted({r["direction"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    print("| model | " + " | ".join(directions) + " |")
    print("|---|" + "---|" * len(directions))
    for model in models:
        cells = []
        for direction in directions:
            mine = [r for r in rows if r["model"] == model and r["direction"] == direction]
            if not mine:
                cells.append("")
                continue
            r = max(mine, key=lambda r: r[f"{prefix}ssim"][0])
            at = "" if r["steps"] is None else f" ({r['steps']})"
            cells.append(f"{r[f'{prefix}ssim'][0]:.3f} / {r[f'{prefix}psnr'][0]:.2f}{at}")
        print(f"| {model} | " + " | ".join(cells) + " |")
    floors = []
    for direction in directions:
        r = next(r for r in rows if r["direction"] == direction)
        floors.append(f"{r[f'{prefix}noise_floor_ssim']:.3f} / {r[f'{prefix}noise_floor_psnr']:.2f}")
    print("| noise floor | " + " | ".join(floors) + " |")


if __name__ == "__main__":
    main()

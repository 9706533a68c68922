"""Cohort translation throughput: subjects per minute at 1 and 2 processes (and with prefetch).

Usage (from a clean clone, after ``make setup``)::

    modality-synth phantom bench24 --subjects 24 --seed 24 --preset small
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_cohort.py bench24 --out bench-out

Runs ``modality-synth translate COHORT -o OUT --method pix2pix --to pet`` once per
configuration in a fresh process and prints, per configuration: the wall time of the whole
command (start-up included), subjects per minute over that wall time, and subjects per
minute once running (from the first output written to the last, so start-up and the
processes' launch are left out). Every figure is measured here; nothing is assumed.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ((1, 0), (1, 1), (2, 0))  # (devices, num_workers)


def measure(cohort: Path, out: Path, devices: int, workers: int, checkpoint: str) -> dict:
    """One command's wall time, its outputs' write times and its summary."""
    if out.exists():
        raise SystemExit(f"{out} exists; give a new --out")
    command = [sys.executable, "-m", "synth_core.cli", "translate", str(cohort), "-o", str(out),
               "--method", "pix2pix", "--to", "pet", "--checkpoint", checkpoint,
               "--devices", str(devices), "--num-workers", str(workers)]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr.strip()}")
    with open(out / "summary.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    done = [r for r in rows if r["status"] == "done"]
    files = list(out.glob("sub-*/sub-*_pet.nii.gz"))
    if len({r["subject"] for r in done}) != len(done) or len(files) != len(done):
        raise SystemExit(f"{out}: {len(done)} done rows, {len(files)} outputs: not one each")
    written = sorted((out / r["output"]).stat().st_mtime for r in done)
    running = (len(written) - 1) / (written[-1] - written[0]) * 60 if len(written) > 1 else float("nan")
    return {"devices": devices, "workers": workers, "subjects": len(written), "wall_s": wall,
            "per_min_wall": len(written) / wall * 60, "per_min_running": running,
            "mean_subject_s": sum(float(r["seconds"]) for r in rows) / len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, help="a phantom cohort folder")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the outputs")
    parser.add_argument("--checkpoint", default="pix2pix-t1-pet-full")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    print(f"threads per process: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"CPUs: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.1f}")
    print("| processes | read-ahead workers | subjects | wall (s) | subjects/min (wall) "
          "| subjects/min (running) | mean s/subject |")
    print("|---|---|---|---|---|---|---|")
    for devices, workers in CONFIGS:
        r = measure(args.cohort, args.out / f"d{devices}-w{workers}", devices, workers,
                    args.checkpoint)
        print(f"| {r['devices']} | {r['workers']} | {r['subjects']} | {r['wall_s']:.1f} | "
              f"{r['per_min_wall']:.1f} | {r['per_min_running']:.1f} | {r['mean_subject_s']:.2f} |",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

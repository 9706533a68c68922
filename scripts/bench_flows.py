"""Score ODE checkpoints (Bi-DPM, rectified flow, CFM) and others both ways, at several
step counts, on held-out phantom subjects (docs/benchmarks.md, Bi-DPM).

    python scripts/bench_flows.py RUN_OR_CHECKPOINT [...] --cohort /work/data/phantom-eval \
        [--subjects 12] [--steps 1 2 5 10] [--json OUT.json]

For each model and each direction (the card's source -> target, then back with
``--reverse`` when the method runs both ways) and each step count (methods without an
ODE run once), every subject's acquired input is translated through
``synth_core.translate`` (the user's path) and scored against the acquired target in
the head: the union of the two scans' foregrounds (``preprocess.foreground_mask``), as
the paper scores whole slices; inside the brain a CT is nearly flat (15-50 HU), so a
brain mask would score CT on noise. The same translation is also scored in the brain
mask (``brain_*`` keys), where neuroimaging users look. Scores are
``synth_core.benchmark.normalised_scores`` (each volume normalised on its own, data range 2). Beside it, the noise floor: the phantom's noise-free target
against the acquired one (the cohort must be written with ``--clean``). Seconds per
volume are the median wall time of ``translate`` (model cached after the first call).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import synth_core as sc
from synth_core import zoo
from synth_core.benchmark import normalised_scores
from synth_core.methods import get_method_class
from synth_core.preprocess import foreground_mask


def _subjects(cohort: Path, n: int) -> list[str]:
    with open(cohort / "participants.tsv") as handle:
        ids = [row["participant_id"] for row in csv.DictReader(handle, delimiter="\t")]
    return ids[:n]


def score(model: str, cohort: Path, subjects: list[str], steps: list[int]) -> list[dict[str, Any]]:
    info = zoo.locate(model)
    caps = get_method_class(info.method).capabilities
    directions = [(info.source, info.target)]
    if caps.bidirectional:
        directions.append((info.target, info.source))
    rows = []
    for src, tgt in directions:
        for n in (steps if caps.steps else [None]):
            scores, floors, brain, brain_floors, seconds = [], [], [], [], []
            for sid in subjects:
                folder = cohort / sid
                truth = sc.load_volume(folder / f"{sid}_{tgt}.nii.gz")
                clean = sc.load_volume(folder / f"{sid}_{tgt}_clean.nii.gz")
                given = sc.load_volume(folder / f"{sid}_{src}.nii.gz")
                mask = foreground_mask(truth.data, tgt) | foreground_mask(given.data, src)
                start = time.perf_counter()
                result = sc.translate(given, info.method, tgt,
                                      source=src, checkpoint=str(info.directory), steps=n, device="cpu")
                seconds.append(time.perf_counter() - start)
                scores.append(normalised_scores(result.volume, truth, tgt, mask))
                floors.append(normalised_scores(clean, truth, tgt, mask))
                brain_mask = sc.load_volume(folder / f"{sid}_brainmask.nii.gz").data > 0
                brain.append(normalised_scores(result.volume, truth, tgt, brain_mask))
                brain_floors.append(normalised_scores(clean, truth, tgt, brain_mask))
            row = {"model": info.name, "method": info.method, "direction": f"{src}->{tgt}",
                   "steps": n, "subjects": len(subjects),
                   "seconds_per_volume": statistics.median(seconds[1:] or seconds)}
            for key in ("mae", "psnr", "ssim", "corrcoef"):
                values = [s[key] for s in scores]
                row[key] = (float(np.mean(values)), float(np.std(values)))
                row[f"brain_{key}"] = (float(np.mean([b[key] for b in brain])),
                                       float(np.std([b[key] for b in brain])))
            row["noise_floor_psnr"] = float(np.mean([f["psnr"] for f in floors]))
            row["noise_floor_ssim"] = float(np.mean([f["ssim"] for f in floors]))
            row["brain_noise_floor_psnr"] = float(np.mean([f["psnr"] for f in brain_floors]))
            row["brain_noise_floor_ssim"] = float(np.mean([f["ssim"] for f in brain_floors]))
            rows.append(row)
            print(f"{info.name:<28} {row['direction']:<8} steps {str(n):>4}  "
                  f"SSIM {row['ssim'][0]:.3f} +- {row['ssim'][1]:.3f}  "
                  f"PSNR {row['psnr'][0]:6.2f} +- {row['psnr'][1]:.2f} dB  "
                  f"r {row['corrcoef'][0]:.3f}  {row['seconds_per_volume']:.3f} s/volume  "
                  f"(floor {row['noise_floor_psnr']:.1f} dB / {row['noise_floor_ssim']:.3f}); brain: "
                  f"SSIM {row['brain_ssim'][0]:.3f} PSNR {row['brain_psnr'][0]:.2f} "
                  f"(floor {row['brain_noise_floor_psnr']:.1f} / {row['brain_noise_floor_ssim']:.3f})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="run folders, checkpoint folders or names")
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=12, help="the first N subjects of the cohort")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    subjects = _subjects(args.cohort, args.subjects)
    rows = []
    for model in args.models:
        rows += score(model, args.cohort, subjects, args.steps)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

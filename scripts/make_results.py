"""Write docs/results.md: every bundled checkpoint scored on a held-out phantom cohort.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_results.py [--cohort results-cohort] \
        [--subjects 10] [--seed 11] [--write docs/results.md]

Makes the cohort when the folder does not exist yet (as ``modality-synth phantom COHORT
--subjects N --seed S --preset small --clean`` would), and refuses a seed that a bundled
model was trained on, so every subject is one no model saw. Then, for every bundled
checkpoint, each direction it runs (both for a bidirectional model) and, for ODE methods,
1 and 2 Euler steps and the model's default: each subject's acquired source scan goes
through ``synth_core.translate`` (the path the CLI and the plugin take) and is scored
against the acquired target with ``synth_core.evaluate(..., normalise=True)``: inside the
brain mask for MR and PET, in the head (the target's foreground) for CT. DUAL-GLOW gets
each subject's own age (within the model's age range) and its default single sample (the
mode). The noise floor row scores the phantom's noise-free target the same way: no
method can beat it against a noisy target. Prints the page; ``--write`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import synth_core as sc
from synth_core import zoo
from synth_core.data import SubjectRecord, discover_subjects
from synth_core.io import atomic_write_text
from synth_core.metrics import scoring_kind
from synth_core.phantom import write_cohort

STEPS = (1, 2)
KEYS = ("mae", "psnr", "ssim", "corrcoef")
NAMES = {"t1": "T1", "t2": "T2", "pet": "PET", "ct": "CT", "flair": "FLAIR", "t1ce": "T1ce"}


def _cohort(folder: Path, subjects: int, seed: int) -> list[SubjectRecord]:
    if not folder.exists():
        write_cohort(folder, subjects, seed=seed, preset="small", clean=True)
    made = json.loads((folder / "cohort.json").read_text(encoding="utf-8"))
    if (made.get("seed"), made.get("n_subjects"), made.get("clean")) != (seed, subjects, True):
        sys.exit(f"error: {folder} holds another cohort (seed {made.get('seed')}, "
                 f"{made.get('n_subjects')} subjects); remove it or name a new --cohort")
    return discover_subjects(folder)


def _scores(pred: sc.Volume, truth: sc.Volume, record: SubjectRecord, modality: str) -> dict:
    # The brain for MR and PET; for CT the head (the target's foreground, evaluate's default):
    # inside the brain a CT is nearly flat, so only the head tells models apart.
    mask = None if scoring_kind(modality) == "ct" else sc.load_volume(record.paths["brainmask"]).data > 0
    return sc.evaluate(pred, truth, mask=mask, normalise=True)


def _row(label: str, steps: str, rows: list[dict]) -> str:
    cells = [f"{np.mean([r[k] for r in rows]):.3f} ± {np.std([r[k] for r in rows]):.3f}"
             if k != "psnr" else
             f"{np.mean([r[k] for r in rows]):.2f} ± {np.std([r[k] for r in rows]):.2f}"
             for k in KEYS]
    return f"| {label} | {steps} | " + " | ".join(cells) + " |"


def _table(info: zoo.CheckpointInfo, records: list[SubjectRecord]) -> list[str]:
    caps = info.card.get("capabilities", {})
    directions = [(info.source, info.target)]
    if caps.get("bidirectional"):
        directions.append((info.target, info.source))
    default = caps.get("default_steps")
    step_counts: list[int | None] = [None]
    if caps.get("steps"):
        lo_s, hi_s = caps["steps"]
        step_counts = sorted(s for s in set(STEPS) | {int(default or STEPS[0])} if lo_s <= s <= hi_s)
    lo, hi = info.card.get("age_range") or (None, None)
    lines = [f"### {info.card.get('title', info.method)}: {NAMES.get(info.source, info.source)} "
             f"→ {NAMES.get(info.target, info.target)} (`{info.name}`)", "",
             f"Checkpoint sha256 `{info.sha256[:16]}…`; {len(records)} subjects; mean ± SD over "
             "subjects.", "",
             "| direction | Euler steps | MAE | PSNR (dB) | SSIM | correlation |",
             "|---|---|---|---|---|---|"]
    units = set()
    for src, tgt in directions:
        arrow = f"{NAMES.get(src, src)} → {NAMES.get(tgt, tgt)}"
        for steps in step_counts:
            rows = []
            for r in records:
                age = None
                if "age" in caps.get("conditions", ()) and r.age is not None:
                    age = float(min(max(r.age, lo), hi)) if lo is not None else float(r.age)
                result = sc.translate(sc.load_volume(r.paths[src]), info.method, tgt,
                                      source=src, checkpoint=str(info.directory), age=age,
                                      steps=steps, device="cpu")
                score = _scores(result.volume, sc.load_volume(r.paths[tgt]), r, tgt)
                units.add(score["units"])
                rows.append(score)
            shown = "–" if steps is None else (f"{steps} (default)" if steps == default else str(steps))
            lines.append(_row(arrow, shown, rows))
            print(f"  {info.name} {arrow} steps={steps}: PSNR {np.mean([r['psnr'] for r in rows]):.2f}",
                  file=sys.stderr)
        floor = [_scores(sc.load_volume(str(r.paths[tgt]).replace(f"_{tgt}.nii", f"_{tgt}_clean.nii")),
                         sc.load_volume(r.paths[tgt]), r, tgt) for r in records]
        lines.append(_row(f"noise floor of {NAMES.get(tgt, tgt)}", "", floor))
    return lines + ["", "Units: " + "; ".join(sorted(units)) + ".", ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", type=Path, default=Path("results-cohort"))
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--write", type=Path, default=None, help="the page to write (docs/results.md)")
    args = parser.parse_args()
    bundled = [c for c in zoo.list_checkpoints() if c.origin == "bundled"]
    seen = {c.name: (c.card.get("training_data") or {}).get("phantom", {}).get("seed") for c in bundled}
    if args.seed in seen.values():
        sys.exit(f"error: seed {args.seed} made the training cohort of "
                 f"{', '.join(k for k, v in seen.items() if v == args.seed)}; choose another --seed")
    records = _cohort(args.cohort, args.subjects, args.seed)
    start = time.perf_counter()
    command = (f"OMP_NUM_THREADS=1 .venv/bin/python scripts/make_results.py --cohort {args.cohort} "
               f"--subjects {args.subjects} --seed {args.seed} --write docs/results.md")
    body = []
    by_method: dict[str, list[zoo.CheckpointInfo]] = {}
    for info in sorted(bundled, key=lambda c: c.name):
        by_method.setdefault(info.method, []).append(info)
    for method, infos in by_method.items():
        body += [f"## `{method}`", ""]
        for info in infos:
            body += _table(info, records)
    minutes = (time.perf_counter() - start) / 60
    page = "\n".join([
        "# Results",
        "",
        "<!-- Generated by scripts/make_results.py: rerun it rather than edit this page. -->",
        "",
        "Quality of every bundled checkpoint on phantom subjects none of them was trained on.",
        "Made from a clean clone (after `make setup`) by this command (or `make results`); it "
        f"took {minutes:.0f} minutes here, on one CPU thread of a shared two-core machine:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"It writes a held-out cohort into `{args.cohort}/` (the same as `modality-synth phantom "
        f"{args.cohort} --subjects {args.subjects} --seed {args.seed} --preset small --clean`; the "
        "bundled models were trained on cohorts of other seeds, stated in their cards), translates "
        "each subject's acquired source scan with `synth_core.translate` and scores it against the "
        "acquired target with `synth_core.evaluate(..., normalise=True)`, the one scoring "
        "normalisation every figure in these docs uses: MR volumes each mapped from their own "
        "1st-99th percentile inside the brain to [0, 1], PET each divided by its own 95th "
        "percentile inside the brain, both with data range 1; CT in Hounsfield units inside the "
        "head, PSNR and SSIM over [-1024, 3000] HU. So MAE is in those units (a fraction of the "
        "brain's intensity range for MR, of its 95th percentile for PET, HU for CT). A DUAL-GLOW "
        "checkpoint, when one is bundled, is given each subject's own age and returns its most "
        "probable PET (one sample, T = 0). "
        "The noise floor scores the phantom's noise-free target against the acquired one: no "
        "method can beat it. These are small CPU models on a synthetic phantom: the figures "
        "compare methods and settings here, not what the papers report on patient data.",
        "",
        *body,
    ])
    print(page)
    if args.write is not None:
        atomic_write_text(args.write, page, overwrite=True)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command-line handlers for many subjects and for registration.

``translate`` over a cohort folder, a manifest or several targets; ``evaluate`` over two
folders; ``register``. Kept apart from ``cli`` (which parses and dispatches) so that the
single-file paths and these stay readable on their own.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from synth_core._version import __version__
from synth_core.errors import UserError


def _targets(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _is_cohort_input(path: Path) -> bool:
    """A manifest, or a folder of sub-* subjects or holding a manifest (a DICOM series
    folder is neither, and stays a single input)."""
    if path.is_file():
        return path.suffix.lower() == ".tsv"
    if path.is_dir():
        return any(p.is_dir() for p in path.glob("sub-*")) or any(path.glob("*.tsv"))
    return False


def multi_output(args: argparse.Namespace) -> bool:
    """Does ``translate`` write the multi-output layout (a cohort, or several targets)?

    Raises UserError for cohort-only options given for one input and one target."""
    if _is_cohort_input(args.input) or len(_targets(args.to)) > 1:
        return True
    given = [flag for flag, on in (("--resume", args.resume), ("--devices", args.devices != 1),
                                   ("--num-workers", args.num_workers != 0)) if on]
    if given:
        raise UserError(f"{', '.join(given)} apply to a cohort folder, a manifest or several "
                        "targets (--to t2,ct); drop them for one scan and one target")
    return False


def translate_cohort_command(args: argparse.Namespace) -> int:
    """Every subject (and target) into OUT_DIR's layout; exit 0 all done, 1 some failed."""
    from synth_core.cohort import plan_translation, run_translation
    from synth_core.methods import get_method_class

    plan = plan_translation(
        args.input, args.output, method=args.method, targets=_targets(args.to),
        source=args.source, checkpoint=args.checkpoint, age=args.age, steps=args.steps,
        samples=args.samples, temperature=args.temperature, reverse=args.reverse, seed=args.seed,
        memory_budget_mb=args.memory_budget_mb, resume=args.resume, overwrite=args.overwrite)
    for target, info in plan.checkpoints.items():
        jobs = [j for j in plan.jobs + plan.skipped if j.target == target]
        print(f"{target}: checkpoint {info.name} ({info.origin}, sha256 {info.sha256[:12]}, "
              f"{info.card.get('steps', '?')} steps), source {jobs[0].request['source']}",
              file=sys.stderr)
    if args.age is None and "age" in get_method_class(args.method).capabilities.conditions:
        print("age: each subject's own (participants.tsv or the manifest's age column); "
              "subjects without one get the model's default age", file=sys.stderr)
    print(f"{len(plan.jobs)} outputs to make, {len(plan.skipped)} up to date, "
          f"{len(plan.failed)} without a source scan", file=sys.stderr)
    result = run_translation(plan, devices=args.devices, accelerator=args.device,
                             num_workers=args.num_workers, progress_bar=sys.stderr.isatty())
    if result.interrupted:
        print(f"interrupted: {result.count('done')} outputs written, the rest listed in "
              f"{result.summary}; continue with --resume", file=sys.stderr)
        return 130
    for row in result.failed:
        print(f"failed: {row['subject']} {row['target']}: {row['message']}", file=sys.stderr)
    print(f"wrote {result.count('done')} outputs to {plan.out_dir} ({result.count('skipped')} up to "
          f"date, {len(result.failed)} failed); summary {result.summary}")
    return 1 if result.failed else 0


def evaluate_cohort_command(args: argparse.Namespace) -> int:
    """Two folders: a per-subject TSV and the mean and SD of each metric; exit 1 if some
    prediction could not be scored."""
    from synth_core.cohort import evaluate_cohort, write_scores
    from synth_core.cohort.plan import check_out_dir

    if args.mask is not None:
        raise UserError("--mask is for two files; for folders use --mask-name (the key of each "
                        "target subject's mask file, e.g. brainmask)")
    tsv = args.tsv or args.pred / "evaluation.tsv"
    if tsv.exists() and not args.overwrite:
        raise UserError(f"{tsv} already exists; pass --overwrite or choose another --tsv")
    check_out_dir(tsv.parent, resume=True, overwrite=True)  # writable, before any scoring
    scores = evaluate_cohort(args.pred, args.target, mask_name=args.mask_name,
                             normalise=args.normalise, data_range=args.data_range)
    write_scores(tsv, scores, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"summary": scores.summary, "subjects": scores.rows, "tsv": str(tsv)},
                         indent=2, default=_json_number))
    else:
        for modality, entry in scores.summary.items():
            print(f"{modality}: {entry['n']} subjects scored, {entry['failed']} failed; units: "
                  f"{entry.get('units', '-')}")
            for key in ("mae", "psnr", "ssim", "corrcoef"):
                print(f"  {key:>9}  {entry[key]['mean']:10.4f}  SD {entry[key]['sd']:.4f}")
        print(f"per-subject scores: {tsv}")
    for row in scores.failed:
        print(f"failed: {row['subject']} {row['modality']}: {row['message']}", file=sys.stderr)
    return 1 if scores.failed else 0


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def register_command(args: argparse.Namespace) -> int:
    """MOVING resampled onto FIXED's grid after rigid (or affine) registration, with a
    sidecar holding the transform; inputs are never overwritten."""
    from synth_core.cli import _check_output
    from synth_core.io import load_volume, save_volume, sidecar_path
    from synth_core.registration import coregister

    for given in (args.moving, args.fixed):
        _check_output(given, args.output, args.overwrite)
    moving = load_volume(args.moving)
    fixed = load_volume(args.fixed)
    registered, world = coregister(moving, fixed, args.transform, seed=args.seed)
    rotation = world[:3, :3] / np.cbrt(abs(np.linalg.det(world[:3, :3])))
    angle = math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1, 1))))
    provenance = {
        "Synthetic": False,
        "Description": f"{args.moving.name} resampled (trilinear) onto the grid of "
                       f"{args.fixed.name} after {args.transform} registration (Mattes mutual "
                       "information)",
        "GeneratedBy": [{"Name": "napari-modality-synth", "Version": __version__,
                         "Command": "register"}],
        "Sources": [str(args.moving.resolve()), str(args.fixed.resolve())],
        "RegistrationTransform": args.transform,
        # W maps a world point (RAS mm) of MOVING to the matching point of FIXED.
        "MovingToFixedWorldRAS": np.round(world, 6).tolist(),
        "Seed": args.seed,
    }
    save_volume(registered, args.output, overwrite=args.overwrite, provenance=provenance)
    shift = float(np.linalg.norm(world[:3, 3]))
    print(f"wrote {args.output} (sidecar {sidecar_path(args.output)}): {args.moving.name} on the "
          f"grid of {args.fixed.name}, {args.transform} transform rotating {angle:.1f} degrees, "
          f"translation {shift:.1f} mm")
    return 0

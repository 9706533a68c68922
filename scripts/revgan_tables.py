"""RevGAN's phantom tables: super-resolution and CT kernels on held-out subjects, with baselines.

Usage (from a clean clone; figures in docs/methods/revgan.md):

    modality-synth phantom train-data --subjects 10 --seed 0 --preset full
    modality-synth phantom test-data --subjects 4 --seed 7 --preset full
    python scripts/revgan_tables.py --train train-data --test test-data \
        --checkpoint sr=RUN_DIR [--checkpoint ct=RUN_DIR ...] [--only sr] [--json OUT.json]

The CT baselines are fitted on the ``--train`` subjects (the ones the models trained on).
A ``--test`` folder written with ``--clean`` (the noise-free twin of every modality) adds
references no model can beat by training: the noise-free target (the noise floor), the
noise-free source (perfect denoising that recovers no detail) and, for the CT kernels, the
fitted filter applied to the noise-free source.

Every row is scored with ``synth_core.metrics.evaluate(..., normalise=True)``: MR in the
brain mask after each volume's 1st-99th percentiles map to [0, 1]; CT in HU inside the head
(the target's foreground), PSNR over [-1024, 3000] HU. Mean and standard deviation over
the held-out subjects.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from synth_core.baselines import fit_gaussian_blur, fit_unsharp_mask
from synth_core.inference import translate
from synth_core.io import load_volume
from synth_core.metrics import evaluate
from synth_core.preprocess import foreground_mask
from synth_core.volume import Volume

TASKS = {  # name: (source, target, mask)
    "sr": ("t1-lowres", "t1", "brain"),
    "ct-smooth->ct-sharp": ("ct-smooth", "ct-sharp", "head"),
    "ct-sharp->ct-smooth": ("ct-sharp", "ct-smooth", "head"),
}


def _subjects(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-"))


def _load(subject: Path, modality: str) -> Volume:
    return load_volume(subject / f"{subject.name}_{modality}.nii.gz")


def _mask(subject: Path, target: Volume, where: str) -> np.ndarray:
    if where == "brain":
        return _load(subject, "brainmask").data > 0
    return foreground_mask(target.data, target.modality)


def _score(rows: dict[str, list[dict[str, Any]]], name: str, pred: np.ndarray | Volume,
           target: Volume, mask: np.ndarray) -> None:
    data = pred.data if isinstance(pred, Volume) else pred
    rows.setdefault(name, []).append(
        evaluate(data, target.data, mask=mask, normalise=True, modality=target.modality))


def _references(rows: dict[str, list[dict[str, Any]]], subject: Path, source: str, target: str,
                fitted: Any, tgt: Volume, mask: np.ndarray) -> None:
    """The no-training rows of a subject written with ``--clean``: noise-free target and
    source, and the fitted filter on the noise-free source, each against the acquired target."""
    if not (subject / f"{subject.name}_{target}_clean.nii.gz").exists():
        return
    clean_src = _load(subject, f"{source}_clean").data
    _score(rows, f"reference: noise-free {target} (the noise floor)",
           _load(subject, f"{target}_clean").data, tgt, mask)
    _score(rows, f"reference: noise-free {source} (denoised, no detail recovered)", clean_src,
           tgt, mask)
    if fitted is not None:
        _score(rows, f"reference: fitted {fitted.kind} on the noise-free {source}",
               fitted.apply(clean_src), tgt, mask)


def run(train: Path, test: Path, checkpoints: dict[str, list[str]],
        only: set[str] | None = None) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for task, (source, target, where) in TASKS.items():
        key = "sr" if task == "sr" else "ct"
        if only is not None and key not in only:
            continue
        rows: dict[str, list[dict[str, Any]]] = {}
        fitted = None
        if key == "ct":
            pairs = []
            for subject in _subjects(train):
                tgt = _load(subject, target)
                pairs.append((_load(subject, source).data, tgt.data, _mask(subject, tgt, where)))
            fitted = (fit_gaussian_blur if target == "ct-smooth" else fit_unsharp_mask)(pairs)
        for subject in _subjects(test):
            src, tgt = _load(subject, source), _load(subject, target)
            mask = _mask(subject, tgt, where)
            _score(rows, "trilinear (input on the grid)" if key == "sr" else "identity", src.data,
                   tgt, mask)
            if fitted is not None:
                label = (f"fitted {fitted.kind} (sigma {fitted.sigma:.2f} vox"
                         + (f", amount {fitted.amount:.2f})" if fitted.kind == "unsharp" else ")"))
                _score(rows, label, fitted.apply(src.data), tgt, mask)
            _references(rows, subject, source, target, fitted, tgt, mask)
            for ckpt in checkpoints.get(key, []):
                res = translate(src, "revgan", target, source=source, checkpoint=ckpt, device="cpu")
                _score(rows, f"revgan {Path(ckpt).name}", res.volume, tgt, mask)
        tables[task] = {
            name: {k: [float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))]
                   for k in ("mae", "psnr", "ssim")} | {"units": rs[0]["units"], "n": len(rs)}
            for name, rs in rows.items()
        }
    return tables


def _print(tables: dict[str, Any]) -> None:
    for task, rows in tables.items():
        units = next(iter(rows.values()))["units"]
        print(f"\n{task} ({units})\n")
        print("| model | MAE | PSNR (dB) | SSIM |")
        print("|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['mae'][0]:.4g} ± {r['mae'][1]:.2g} | {r['psnr'][0]:.2f} ± "
                  f"{r['psnr'][1]:.2f} | {r['ssim'][0]:.3f} ± {r['ssim'][1]:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, required=True, help="cohort the baselines are fitted on")
    p.add_argument("--test", type=Path, required=True, help="held-out cohort (another seed)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="TASK=CHECKPOINT, TASK sr or ct (a two-way CT model runs both ways)")
    p.add_argument("--only", action="append", choices=("sr", "ct"), default=None,
                   help="score only these tasks (fitting the CT baselines takes minutes)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    checkpoints: dict[str, list[str]] = {}
    for item in args.checkpoint:
        task, _, path = item.partition("=")
        checkpoints.setdefault(task, []).append(path)
    tables = run(args.train, args.test, checkpoints,
                 None if args.only is None else set(args.only))
    _print(tables)
    if args.json is not None:
        args.json.write_text(json.dumps(tables, indent=2))


if __name__ == "__main__":
    main()

"""What limits synthesis scores at a phantom cohort's resolution: reference predictions that
need no training, scored like a checkpoint.

    python scripts/native_resolution_ceiling.py COHORT_DIR [--subject sub-001]

COHORT_DIR: a phantom cohort written with ``--clean``. For one subject it prints, in the
project's scoring (``metrics.evaluate(..., normalise=True)``; MR in the brain mask, CT in the
head):

- T2: the noise floor (the noise-free T2 against the acquired one); the noise-free T2 blurred
  by a Gaussian of 0.5 to 1.5 voxels (what output blur alone costs); and a voxel-wise lookup
  from T1 intensity to the mean noise-free T2 of that intensity (256 quantile bins), fitted on
  the scored subject itself, from its noise-free T1, its acquired T1, and its acquired T1
  smoothed by 0.7 voxels (how much of T2 one T1 voxel's intensity can say, with the scored
  subject's own contrasts known: an optimistic reference, not a method);
- CT: the noise floor's MAE; the noise-free CT blurred by one voxel and shifted by one voxel
  (what a one-voxel error at the skull's edge costs in HU); and the MAE a model would make
  if it knew everything but each subject's bone density (the phantom draws bone HU with a
  per-subject SD of ``CT_JITTER["bone_hu_sd"]``: a mean absolute error of 0.8 SD on bone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from synth_core.io import load_volume
from synth_core.metrics import evaluate
from synth_core.phantom.parameters import CT_JITTER


def _lookup(source: np.ndarray, truth: np.ndarray, mask: np.ndarray, bins: int = 256) -> np.ndarray:
    edges = np.quantile(source[mask], np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, source) - 1, 0, bins - 1)
    sums = np.bincount(index[mask], weights=truth[mask], minlength=bins)
    counts = np.bincount(index[mask], minlength=bins)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return means[index].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cohort", type=Path)
    p.add_argument("--subject", default="sub-001")
    args = p.parse_args(argv)
    sid = args.subject
    folder = args.cohort / sid

    def vol(name: str, modality: str | None = None):
        return load_volume(folder / f"{sid}_{name}.nii.gz", modality=modality).data

    brain = vol("brainmask") > 0
    head = vol("labels") > 0
    t2, t2_clean = vol("t2", "t2"), vol("t2_clean", "t2")
    t1, t1_clean = vol("t1", "t1"), vol("t1_clean", "t1")

    def t2_score(pred: np.ndarray) -> str:
        s = evaluate(pred, t2, mask=brain, normalise=True, modality="t2")
        return f"SSIM {s['ssim']:.3f}, MAE {s['mae']:.4f}, PSNR {s['psnr']:.2f} dB"

    print(f"{sid} of {args.cohort.name}: T2 in the brain (each volume's brain 1st-99th "
          "percentile -> [0, 1], data range 1)")
    print(f"  noise floor (noise-free T2):               {t2_score(t2_clean)}")
    for sigma in (0.5, 0.75, 1.0, 1.5):
        print(f"  noise-free T2 blurred, sigma {sigma:4} voxels:  "
              f"{t2_score(ndimage.gaussian_filter(t2_clean, sigma))}")
    for name, source in (("noise-free T1", t1_clean), ("acquired T1", t1),
                         ("acquired T1 smoothed 0.7 voxels", ndimage.gaussian_filter(t1, 0.7))):
        print(f"  voxel-wise lookup from the {name}: {t2_score(_lookup(source, t2_clean, brain))}")

    ct, ct_clean = vol("ct", "ct"), vol("ct_clean", "ct")

    def ct_mae(pred: np.ndarray) -> float:
        return float(np.abs(pred - ct)[head].mean())

    bone = (ct_clean > 300) & head
    jitter = 0.8 * CT_JITTER["bone_hu_sd"] * bone.sum() / head.sum()
    print(f"{sid}: CT MAE in the head (HU); bone (noise-free CT > 300 HU) is "
          f"{bone.sum() / head.sum():.1%} of the head")
    print(f"  noise floor (noise-free CT):               {ct_mae(ct_clean):.1f} HU")
    print(f"  noise-free CT blurred, sigma 1 voxel:      {ct_mae(ndimage.gaussian_filter(ct_clean, 1.0)):.1f} HU")
    print(f"  noise-free CT shifted by 1 voxel (x):      {ct_mae(np.roll(ct_clean, 1, axis=0)):.1f} HU")
    print(f"  bone density unknown, all else exact:      {jitter:.1f} HU (expected)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where age sits: ridge probes of age on the T1 itself, its scales, and each MRI latent level.

    .venv/bin/python scripts/probe_age_levels.py [CHECKPOINT] --train-cohort PHANTOM \\
        --cohort HELD_OUT_PHANTOM

Each probe is ridge regression on every voxel (standardised, penalty by leave-one-out on the
training cohort: ``dg_stats.ridge_r2``, the voxel probe of ``measure_dual_glow.py``), fitted
on the training cohort and scored (R^2) on the held-out one. Features:

* ``t1``: the normalised T1 (as ``translate`` prepares it);
* ``mean2``, ``mean4``: its means over 2^3 and 4^3 voxel blocks (the coarse scales);
* ``detail2``: the T1 minus its 2^3 block mean, the finest detail, which a multi-scale flow
  factors out at its lowest level; ``detail4``: the 2^3 block means minus the 4^3 ones;
* ``detail2 given coarse``: ``detail2`` minus its linear prediction, voxel by voxel, from the 2^3
  block mean it lies in and that block's six face neighbours (fitted on the training cohort):
  the fine detail the coarse image does not predict, what a flow with a learned conditional
  prior per split would leave in its lowest latent after normalising; ``detail4 given coarse``:
  the same one scale up (``detail4`` from the 4^3 block means around it);
* ``lower, given coarse``: the two residuals together, the T1's own counterpart of the lower
  latents of a flow that codes each scale's detail relative to the coarser ones (a linear
  ideal: what such a flow could leave in its lower levels, by this predictor);
* with a DUAL-GLOW checkpoint, each MRI latent level (1 = the lowest).

It answers whether age can be absent from the lower latents of an invertible multi-scale
flow: they must carry the fine detail, so a probe reads from them what it reads from the
detail (docs/benchmarks.md, "Disentanglement").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from dg_stats import ridge_r2  # noqa: E402
from measure_dual_glow import Model, as_input, load_cohort, volume  # noqa: E402


def features(cohort: Path, model: Model | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    ages = []
    for s in load_cohort(cohort):
        x = as_input(volume(s, "t1").data)
        mean2, mean4 = F.avg_pool3d(x, 2), F.avg_pool3d(x, 4)
        parts = {
            "t1": x, "mean2": mean2, "mean4": mean4,
            "detail2": x - F.interpolate(mean2, scale_factor=2, mode="nearest"),
            "detail4": mean2 - F.interpolate(mean4, scale_factor=2, mode="nearest"),
        }
        if model is not None:
            latents, _ = model.method.flow.encode_mri(x)
            parts |= {f"latent level {i + 1}": z for i, z in enumerate(latents)}
        for key, value in parts.items():
            out.setdefault(key, []).append(value.flatten().numpy())
        ages.append(s["age"])
    return {k: np.array(v) for k, v in out.items()}, np.array(ages)


def coarse_neighbourhood(means: np.ndarray) -> np.ndarray:
    """(N, X/2, Y/2, Z/2) block means -> (N, X*Y*Z, 8): for every voxel of the grid twice as
    fine, its block's mean, the six face-neighbour blocks' means (edges replicated) and 1."""
    padded = np.pad(means, ((0, 0), (1, 1), (1, 1), (1, 1)), mode="edge")
    _, x, y, z = means.shape
    shifts = [(0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    parts = [padded[:, 1 + a : 1 + a + x, 1 + b : 1 + b + y, 1 + c : 1 + c + z]
             for a, b, c in shifts]
    blocks = np.stack(parts + [np.ones_like(means)], axis=-1)  # (N, x, y, z, 8)
    fine = blocks.repeat(2, 1).repeat(2, 2).repeat(2, 3)  # each block to its 2^3 voxels
    return fine.reshape(len(means), -1, 8)


def residual_detail(train: dict[str, np.ndarray], test: dict[str, np.ndarray],
                    shape: tuple[int, ...], scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``detail{scale}`` minus its per-voxel least-squares prediction from the neighbourhood of
    ``mean{scale}`` (``shape`` is the grid of the detail)."""
    coarse = tuple(s // 2 for s in shape)
    x_tr = coarse_neighbourhood(train[f"mean{scale}"].reshape(-1, *coarse))
    x_te = coarse_neighbourhood(test[f"mean{scale}"].reshape(-1, *coarse))
    detail = f"detail{scale}"
    gram = np.einsum("nvi,nvj->vij", x_tr, x_tr) + 1e-3 * np.eye(8)
    weights = np.linalg.solve(gram, np.einsum("nvi,nv->vi", x_tr, train[detail])[..., None])
    predict = lambda x: np.einsum("nvi,vi->nv", x, weights[..., 0])  # noqa: E731
    return train[detail] - predict(x_tr), test[detail] - predict(x_te)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, nargs="?", help="DUAL-GLOW checkpoint folder")
    parser.add_argument("--train-cohort", type=Path, required=True)
    parser.add_argument("--cohort", type=Path, required=True, help="held-out phantom")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = Model(args.checkpoint, "dual-glow") if args.checkpoint else None
    train, y_train = features(args.train_cohort, model)
    test, y_test = features(args.cohort, model)
    shape = tuple(volume(load_cohort(args.cohort)[0], "t1").data.shape)  # as_input keeps it
    for scale, grid in ((2, shape), (4, tuple(s // 2 for s in shape))):
        key = f"detail{scale} given coarse"
        train[key], test[key] = residual_detail(train, test, grid, scale)
    for d in (train, test):
        d["lower, given coarse"] = np.concatenate(
            [d["detail2 given coarse"], d["detail4 given coarse"]], axis=1)
    print(f"{len(y_train)} training, {len(y_test)} held-out subjects")
    print("| features | count | age R^2 on held-out |\n|---|---|---|")
    for key in train:
        r2 = ridge_r2(train[key], y_train, test[key], y_test)
        print(f"| {key} | {train[key].shape[1]} | {r2:+.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Would a learned prior per split take age out of DUAL-GLOW's lower MRI latents? A post-hoc test.

    .venv/bin/python scripts/probe_split_prior.py CHECKPOINT --train-cohort PHANTOM \\
        --cohort HELD_OUT_PHANTOM [--coordinates] [--steps 1500]

Glow's code can model each factored-out latent z_i with a Gaussian whose mean and scale are
computed from the half h_i kept at that split; the normalised residual (z_i - mu(h_i)) /
sigma(h_i) is then what the level adds beyond the coarser ones. This script keeps the
checkpoint's MRI flow frozen, fits such a prior per lower level (conv 3x3x3 -> ReLU -> conv
3x3x3 with a zero start, Adam 1e-3, one training-cohort subject per step, maximum likelihood)
on the training cohort's latents, and reports the age R^2 of the voxel probe
(``dg_stats.ridge_r2``, as in ``measure_dual_glow.py``) on the raw latents and on the
residuals of the held-out subjects. ``--coordinates`` also gives the prior the voxel
positions. It tests the next step named in docs/benchmarks.md ("Disentanglement") without
retraining a model. A prior trained with the flow was tried later (fifth session, removed again):
it did no better than the MRI likelihood's weight alone (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from dg_stats import ridge_r2  # noqa: E402
from measure_dual_glow import Model, as_input, load_cohort, volume  # noqa: E402

from synth_core.nn.flows.priors import coordinates_like  # noqa: E402


class SplitPrior(nn.Module):
    """Kept half h_i (and positions) -> (mean, log-scale) of the factored-out z_i."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = nn.Conv3d(in_channels, hidden, 3, padding=1)
        self.out = nn.Conv3d(hidden, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_scale = self.out(F.relu(self.hidden(condition))).chunk(2, dim=1)
        return mean, log_scale.clamp(-5.0, 5.0)


def encode_with_kept(model: Model, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """The MRI flow's latents (as ``Glow3d.encode``) and the half kept at each split."""
    flow = model.method.flow.mri_flow
    latents, kept, h = [], [], x
    for level in range(flow.levels):
        h, _ = flow.squeeze(h)
        for step in flow._steps(level):
            h, _ = step(h)
        if level < flow.levels - 1:
            h, z = flow.split(h)
            latents.append(z)
            kept.append(h)
    return latents, kept


def encoded(model: Model, cohort: Path) -> tuple[list[tuple[list[Tensor], list[Tensor]]], np.ndarray]:
    out, ages = [], []
    with torch.no_grad():
        for s in load_cohort(cohort):
            out.append(encode_with_kept(model, as_input(volume(s, "t1").data)))
            ages.append(s["age"])
    return out, np.array(ages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--train-cohort", type=Path, required=True)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--coordinates", action="store_true")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Model(args.checkpoint, "dual-glow")
    model.method.eval()
    train, y_train = encoded(model, args.train_cohort)
    test, y_test = encoded(model, args.cohort)

    def condition(kept: Tensor) -> Tensor:
        return torch.cat([kept, coordinates_like(kept)], 1) if args.coordinates else kept

    latents0, kept0 = train[0]
    extra = 3 if args.coordinates else 0
    priors = [SplitPrior(k.shape[1] + extra, z.shape[1]) for z, k in zip(latents0, kept0, strict=True)]
    optimiser = torch.optim.Adam([p for prior in priors for p in prior.parameters()], lr=1e-3)
    for step in range(args.steps):
        latents, kept = train[rng.integers(len(train))]
        loss = torch.zeros(())
        for prior, z, k in zip(priors, latents, kept, strict=True):
            mean, log_scale = prior(condition(k))
            loss = loss + (0.5 * ((z - mean) * torch.exp(-log_scale)) ** 2 + log_scale).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step}: negative log-likelihood per element {float(loss.detach()):.3f}")

    def residuals(items: list[tuple[list[Tensor], list[Tensor]]], level: int) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for latents, kept in items:
                mean, log_scale = priors[level](condition(kept[level]))
                rows.append(((latents[level] - mean) * torch.exp(-log_scale)).flatten().numpy())
        return np.array(rows)

    print("| level | raw latent R^2 | residual R^2 |\n|---|---|---|")
    for level in range(len(priors)):
        raw_train = np.array([items[0][level].flatten().numpy() for items in train])
        raw_test = np.array([items[0][level].flatten().numpy() for items in test])
        raw = ridge_r2(raw_train, y_train, raw_test, y_test)
        res = ridge_r2(residuals(train, level), y_train, residuals(test, level), y_test)
        print(f"| {level + 1} | {raw:+.2f} | {res:+.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Linear age erasure: a penalty on the correlation between latent voxels and age.

Why this exists. DUAL-GLOW removes age from the lower MRI latents with small
discriminators behind gradient reversal (sec. 3). Measured on the phantom
(docs/benchmarks.md, "Disentanglement"), those heads never learned to read age at batch
size 1 (their error stayed at the ages' variance), so the reversal removed nothing, and a
ridge probe on every latent voxel still read age from the lower latents (R^2 0.67).
Heads that did read age were fooled instead: the flow scaled the latent until the heads
saturated on the wrong side, while the age stayed.

This penalty needs no adversary to learn. It estimates each latent voxel's correlation
with age over a reference set of recent training MRIs, and pushes every sample's latent
against it. A linear predictor of age from some features can do better than a constant
only if some feature covaries with age (zero cross-covariance is necessary and
sufficient for that: Belrose et al., "LEACE", NeurIPS 2023), so driving every
correlation to zero removes what the measured ridge probes read. A correlation is
invariant to the scale of a feature, so it cannot be fooled by scaling.

Why a reference set re-encoded with the current weights, not running averages. The
first version kept exponentially weighted running correlations over training batches. At
batch size 1 the flow learned to cancel the window (each new latent pushed against the
correlation of latents that older weights had produced): the running mean squared
correlation fell to 0.0006, below its chance level of 0.005, while the same model's
latents, encoded with one set of weights, still correlated with age as before
(docs/methods/dual-glow.md). Correlations must be those of one set of weights, so every
``every`` batches the last ``reference`` training MRIs are encoded again (no gradient)
and the correlations recomputed from them.

The gradient. For a sample with standardised feature z_j = (f_j - mean_j) / sd_j and
standardised age a, adding it to the reference changes r_j^2 by about 2 r_j z_j a / n.
The penalty is mean_j(r_j z_j a) with r_j held fixed: its gradient pushes the sample's
features against the correlations, like a linear adversary whose weights are the
correlations themselves, refitted to the current weights every ``every`` batches. The
value logged is mean_j r_j^2 at the last refresh (chance: about 1 / reference).

Written here, not taken from a library: none of the project's dependencies estimates
correlations of a network's activations during training (LEACE's package erases a fixed,
fitted subspace after training; here the flow itself must learn not to carry age).

The reference MRIs and statistics are plain tensors, not module state: neither saved in
checkpoints nor averaged by the weight EMA. A resumed run refills them (the penalty waits
until ``reference`` batches have been seen). A latent whose spatial size differs from the
first one seen (inputs of another size) is resampled to that size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


class LinearAgeErasure:
    """Correlations of latent voxels with age over recent training MRIs, and the penalty.

    Args:
        reference: how many recent training MRIs (with their ages) to keep and re-encode.
        every: batches between two re-encodings (statistics are that much out of date).
        smooth: > 1 averages the correlations used by the penalty over a smooth**3
            neighbourhood of latent voxels (same channel), 0 or 1 uses them as they are.
            Over a few dozen MRIs each voxel's correlation has sampling noise of about
            1 / sqrt(reference); pushing every voxel against its noise puts correlations
            into voxels that had none, while an ageing pattern (larger ventricles) spans
            neighbouring voxels and survives the average.
        eps: added to variances.
    """

    def __init__(self, reference: int = 64, every: int = 50, smooth: int = 0,
                 eps: float = 1e-6) -> None:
        if reference < 3 or every < 1 or (smooth > 1 and smooth % 2 == 0):
            raise ValueError(f"need reference >= 3, every >= 1 and an odd smooth, got "
                             f"{reference}, {every}, {smooth}")
        self.reference, self.every, self.smooth, self.eps = reference, every, smooth, eps
        self.shapes: list[tuple[int, ...]] | None = None
        self.channels: list[int] = []
        self.inputs: list[Tensor] = []  # (1, C, X, Y, Z) each, on the CPU
        self.ages: list[float] = []
        self.seen = 0  # batches remembered
        self.refreshed_at: int | None = None
        # From the last refresh: (F,) per feature, () for the age.
        self.mean: Tensor | None = None
        self.sd: Tensor | None = None
        self.r: Tensor | None = None
        self.push: Tensor | None = None  # r, averaged over neighbours with ``smooth``
        self.age_mean = 0.0
        self.age_sd = 1.0

    def features(self, latents: list[Tensor]) -> Tensor:
        """(B, F): the latents flattened, each resampled to the size first seen."""
        if self.shapes is None:
            self.shapes = [tuple(z.shape[2:]) for z in latents]
            self.channels = [z.shape[1] for z in latents]
        parts = []
        for z, shape in zip(latents, self.shapes, strict=True):
            if tuple(z.shape[2:]) != shape:
                z = F.interpolate(z, size=shape, mode="trilinear", align_corners=False)
            parts.append(z.flatten(1))
        return torch.cat(parts, dim=1)

    def remember(self, inputs: Tensor, ages: Tensor) -> None:
        """Keep a training batch (B, C, X, Y, Z) and its ages (B,) for the next refreshes."""
        for x, a in zip(inputs.detach(), ages.detach().reshape(-1), strict=True):
            self.inputs.append(x[None].to("cpu", copy=True))
            self.ages.append(float(a))
        del self.inputs[: -self.reference], self.ages[: -self.reference]
        self.seen += 1

    def due(self) -> bool:
        """True when the reference is full and the statistics are ``every`` batches old."""
        if len(self.inputs) < self.reference:
            return False
        return self.refreshed_at is None or self.seen - self.refreshed_at >= self.every

    @torch.no_grad()
    def refresh(self, encode: Callable[[Tensor], list[Tensor]], device: torch.device) -> None:
        """Encode the reference MRIs with the current weights; recompute the statistics.

        ``encode``: input (1, C, X, Y, Z) -> the latents to decorrelate.
        """
        rows = torch.cat([self.features(encode(x.to(device))).float() for x in self.inputs])
        ages = torch.tensor(self.ages, device=rows.device, dtype=rows.dtype)
        self.age_mean, self.age_sd = float(ages.mean()), float(ages.std(unbiased=False))
        a = (ages - self.age_mean) / (self.age_sd + self.eps)
        self.mean = rows.mean(0)
        self.sd = torch.sqrt(rows.var(0, unbiased=False) + self.eps)
        self.r = ((rows - self.mean) / self.sd * a[:, None]).mean(0)
        self.push = self._smoothed(self.r)
        self.refreshed_at = self.seen

    def _smoothed(self, r: Tensor) -> Tensor:
        if self.smooth <= 1 or self.shapes is None:
            return r
        parts, start = [], 0
        for channels, shape in zip(self.channels, self.shapes, strict=True):
            size = channels * math.prod(shape)
            block = r[start : start + size].reshape(1, channels, *shape)
            # A box average per channel that ignores positions outside the grid (avg_pool3d
            # refuses grids smaller than its kernel, as the top levels' can be).
            box = r.new_ones(channels, 1, *(self.smooth,) * 3)
            pad = self.smooth // 2
            total = F.conv3d(block, box, padding=pad, groups=channels)
            count = F.conv3d(torch.ones_like(block), box, padding=pad, groups=channels)
            parts.append((total / count)[..., : shape[0], : shape[1], : shape[2]].flatten())
            start += size
        return torch.cat(parts)

    def monitor(self) -> float:
        """Mean squared correlation at the last refresh (NaN before the first)."""
        return float("nan") if self.r is None else float((self.r**2).mean())

    def penalty(self, latents: list[Tensor], age: Tensor) -> Tensor:
        """mean_j(r_j z_j a) over the batch, with gradient through ``latents``; 0 before the
        first refresh. ``age`` (B,) in the unit the reference ages were given in."""
        features = self.features(latents)
        if self.push is None or self.mean is None or self.sd is None:
            return features.new_zeros(())
        z = (features - self.mean.to(features.dtype)) / self.sd.to(features.dtype)
        a = (age.to(features.dtype).reshape(-1) - self.age_mean) / (self.age_sd + self.eps)
        return (self.push.to(features.dtype) * z * a[:, None]).mean()

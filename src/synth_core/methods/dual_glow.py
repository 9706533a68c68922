"""DUAL-GLOW (Sun et al., ICCV 2019) as a registered method: T1 MRI -> FDG-PET with age.

The network, its loss (eq. 12 and 16) and its sampler live in
:mod:`synth_core.nn.flows`; this module adds what the engine needs around them:

* a flat, typed config (so ``train.<field>`` and field overrides work) with the
  ``paper``, ``cpu`` and ``tiny`` presets; its network settings are inherited from
  :class:`~synth_core.nn.flows.DualGlowNetworkSettings` (defined once) and handed to
  the network as a :class:`~synth_core.nn.flows.DualGlowConfig`;
* Adamax with a linear warm-up (sec. 4.1; the warm-up is ours);
* :class:`TrainingStatistics`, buffers saved with the weights: the recent training
  MRIs' bits per voxel (for the out-of-distribution warning) and the ages seen in
  training (the default age);
* ``synthesize`` (samples at a temperature, age from the request) and
  ``out_of_distribution`` (the exact bits per voxel of the input MRI under the MRI
  flow, compared with the training MRIs').

Choices where the paper is silent are listed in docs/methods/dual-glow.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from synth_core.errors import UserError
from synth_core.methods.base import (
    Capabilities,
    Method,
    SynthesisRequest,
    TrainSettings,
    register,
)
from synth_core.nn.flows import (
    DualGlow,
    DualGlowConfig,
    DualGlowNetworkSettings,
    cpu_preset,
    paper_preset,
)

# Temperature used when the request gives none. One sample: the mode (T = 0), the most
# probable PET under the learned prior, deterministic and the best point estimate
# (the highest PSNR here). Several samples: Glow's 0.7, so the spread is meaningful
# (at T = 0 every sample is the mode and the std map would be zero).
MODE_TEMPERATURE = 0.0
SAMPLING_TEMPERATURE = 0.7


@dataclass
class DualGlowSettings(DualGlowNetworkSettings):
    """DUAL-GLOW settings; defaults are the paper's (``paper`` preset).

    The network and loss settings (levels, steps_per_level, hidden_channels, ...,
    lambda_mri, age_loss_weight, age_keep_weight, n_bins, checkpointing) are inherited
    from :class:`~synth_core.nn.flows.DualGlowNetworkSettings`, where each is defined and
    documented once. The others:

    Attributes:
        beta1, beta2: Adamax moment decays (paper: 0.9 for "the moment estimates";
            beta2 = 0.999, Adamax's usual value, is not given).
        ood_window: number of recent training batches whose MRI bits per voxel set the
            reference of the out-of-distribution test.
        ood_sigmas, ood_margin_bits: an input is flagged when its MRI bits per voxel
            differ from the training mean by more than ``ood_sigmas`` standard
            deviations plus ``ood_margin_bits`` (bits per voxel; the margin covers the
            gap between training and held-out subjects, which the running statistics
            of training batches cannot see). The statistics are per batch (one volume
            at the batch size 1 of every preset).
        augment_flip, augment_shift: training augmentation of each (MRI, PET) pair: a
            random left-right flip, and a random shift of up to ``augment_shift`` voxels
            along each axis (edges replicated). Not in the paper; off in every preset
            (docs/methods/dual-glow.md).
        divergence_bits: a training batch whose objective exceeds this many bits per
            voxel is skipped, and the run stops after several in a row (0 = off). A
            uniform guess over the ``n_bins`` costs log2(n_bins) = 8 bits, a trained model
            2-7; above 64 the model is broken (the regression adversaries behind gradient
            reversal reward the flow for scaling its latents without bound).
        train: the engine's settings (paper: lr 1e-3, 90 epochs of ADNI at batch 1).
    """

    beta1: float = 0.9
    beta2: float = 0.999
    ood_window: int = 64
    ood_sigmas: float = 4.0
    ood_margin_bits: float = 0.25
    augment_flip: bool = False
    augment_shift: int = 0
    divergence_bits: float = 64.0
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(
            # 90 epochs of the paper's 726 ADNI training pairs at batch size 1 (the
            # paper gives epochs, not the batch size).
            max_steps=65_340, batch_size=1, lr=1e-3, warmup_steps=1000, val_every=2000,
            checkpoint_every=500, multiple=16,
        )
    )

    def network(self) -> DualGlowConfig:
        """The network's config; ``volume_shape`` is only a size check there, so a
        minimal valid shape is passed (the engine pads inputs to ``train.multiple``)."""
        side = 2**self.levels
        return DualGlowConfig(
            **self.network_settings(), lr=self.train.lr, betas=(self.beta1, self.beta2),
            warmup_steps=self.train.warmup_steps, volume_shape=(side, side, side),
        )


def _from_network(net: DualGlowConfig, train: TrainSettings, **extra: Any) -> DualGlowSettings:
    """Settings carrying the network settings of an nn preset (one source of those numbers)."""
    return DualGlowSettings(**net.network_settings(), beta1=net.betas[0], beta2=net.betas[1],
                            train=train, **extra)


def _paper() -> DualGlowSettings:
    net = paper_preset()
    return _from_network(net, DualGlowSettings().train)


def _cpu() -> DualGlowSettings:
    # The `small` phantom (48x64x48 at 4 mm): 3 levels of 8 steps, width 64 (the nn
    # cpu preset). 2000 steps at the 1.43 s a step measured alone on 2 CPU cores is
    # about 48 minutes (2-3.8 s a step with other runs alongside). Gradient clipping
    # guards the first steps after the warm-up, when a flow's loss can spike.
    net = cpu_preset()
    # The weight average (not in the paper): at batch size 1 and a constant learning rate the
    # top prior's age slope moves from one subject to the next, and the age response of
    # single snapshots wandered (docs/methods/dual-glow.md); an EMA over about the last
    # 1000 steps averages that out. Its warm-up keeps actnorm's pre-initialisation
    # placeholders out of the average.
    train = TrainSettings(max_steps=2000, batch_size=1, lr=1e-3, warmup_steps=net.warmup_steps,
                          val_every=250, checkpoint_every=100, grad_clip=5.0, multiple=16,
                          ema_decay=0.999, ema_warmup=True)
    # Pair augmentation (augment_flip / augment_shift) stays off: measured on the phantom it
    # lowered validation PSNR at equal steps (docs/methods/dual-glow.md).
    return _from_network(net, train)


def _tiny() -> DualGlowSettings:
    """For tests: 2 levels of 2 steps, width 8 (about 80 thousand parameters)."""
    return DualGlowSettings(
        levels=2, steps_per_level=2, hidden_channels=8, relation_hidden=4, age_head_hidden=4,
        age_effect="regional", ood_window=8,
        train=TrainSettings(max_steps=6, batch_size=1, lr=1e-3, warmup_steps=2, val_every=3,
                            checkpoint_every=3, multiple=4, ema_decay=0.9, ema_warmup=True),
    )


class TrainingStatistics(nn.Module):
    """Running statistics of the training data, saved with the weights (buffers).

    Attributes (buffers):
        mri_bits: (window,) bits per voxel of the most recent training MRIs (NaN unused).
        mri_level_bits: (window, levels) their latent bits per element at each level
            (NaN unused; all NaN in checkpoints written before it existed).
        mri_bits_next: index of the next slot to write (a ring buffer).
        age_min, age_max: youngest and oldest training age seen, years (inf/-inf before).
    """

    mri_bits: Tensor
    mri_bits_next: Tensor
    age_min: Tensor
    age_max: Tensor

    def __init__(self, window: int, levels: int = 1) -> None:
        super().__init__()
        self.register_buffer("mri_bits", torch.full((max(2, window),), math.nan))
        self.register_buffer("mri_level_bits", torch.full((max(2, window), levels), math.nan))
        self.register_buffer("mri_bits_next", torch.zeros((), dtype=torch.long))
        self.register_buffer("age_min", torch.tensor(math.inf))
        self.register_buffer("age_max", torch.tensor(-math.inf))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints from before the per-level statistics load with them unknown (NaN).
        state_dict.setdefault(prefix + "mri_level_bits", self.mri_level_bits.clone())
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def record(self, bits: Tensor, ages: Tensor | None, level_bits: Tensor | None = None) -> None:
        """Add a batch: ``bits`` (B,) bits per voxel, ``ages`` (B,) years or None,
        ``level_bits`` (B, levels) or (levels,) latent bits per level, or None."""
        rows = None if level_bits is None else level_bits.detach().float().reshape(-1, self.mri_level_bits.shape[1])
        for i, value in enumerate(bits.detach().float().reshape(-1)):
            slot = int(self.mri_bits_next) % self.mri_bits.numel()
            self.mri_bits[slot] = value
            if rows is not None:
                self.mri_level_bits[slot] = rows[min(i, len(rows) - 1)]
            self.mri_bits_next += 1
        if ages is not None and ages.numel():
            self.age_min.copy_(torch.minimum(self.age_min, ages.min().float()))
            self.age_max.copy_(torch.maximum(self.age_max, ages.max().float()))

    def bits_reference(self) -> tuple[float, float, int] | None:
        """(mean, std, count) of the recorded bits per voxel, None before training."""
        seen = self.mri_bits[torch.isfinite(self.mri_bits)]
        if seen.numel() < 2:
            return None
        return float(seen.mean()), float(seen.std()), int(seen.numel())

    def level_reference(self) -> tuple[Tensor, Tensor, int] | None:
        """(mean (L,), std (L,), count) of the recorded per-level bits, None if unknown."""
        seen = self.mri_level_bits[torch.isfinite(self.mri_level_bits).all(dim=1)]
        if len(seen) < 2:
            return None
        return seen.mean(0), seen.std(0), len(seen)

    @torch.no_grad()
    def reset_bits(self) -> None:
        """Forget the recorded bits (before :meth:`DualGlowMethod.calibrate`)."""
        self.mri_bits.fill_(math.nan)
        self.mri_level_bits.fill_(math.nan)
        self.mri_bits_next.zero_()

    def middle_age(self) -> float | None:
        """Centre of the training ages in years, None if no age was seen."""
        if not bool(torch.isfinite(self.age_min)):
            return None
        return float((self.age_min + self.age_max) / 2)


@register
class DualGlowMethod(Method):
    """T1 MRI -> PET by a conditional Glow; age conditioning; samples and an input likelihood."""

    key = "dual-glow"
    title = "DUAL-GLOW (conditional 3D Glow, MRI -> PET, age-conditioned)"
    paper = ("Sun et al., DUAL-GLOW: Conditional flow-based generative model for "
             "modality transfer, ICCV 2019")
    capabilities = Capabilities(spatial=("3d",), data=("paired",), conditions=("age",),
                                stochastic=True, sliding_window=False)
    config_class = DualGlowSettings
    presets = {"cpu": _cpu, "paper": _paper, "tiny": _tiny}
    ema_copied = ("stats.",)  # the training MRIs' bits and ages, not weights
    # Validation PSNR (T = 0, normalised units) fell from step 250 on while the age response
    # and the accuracy in SUVR space improved (docs/methods/dual-glow.md): it does not rank these
    # models, so a run exports its end.
    export_weights = "last"
    resumable = ("lambda_mri", "age_loss_weight", "age_keep_weight", "divergence_bits")

    def __init__(self, config: DualGlowSettings, source: str, target: str) -> None:
        super().__init__(config, source, target)
        if config.train.spatial != "3d":
            raise UserError("DUAL-GLOW is a 3D model; train it with spatial '3d'")
        if config.train.multiple % 2**config.levels:
            raise UserError(
                f"train.multiple {config.train.multiple} must be a multiple of 2**levels = "
                f"{2**config.levels} so every volume passes the flow; raise it"
            )
        self.flow = DualGlow(config.network())
        self.stats = TrainingStatistics(config.ood_window, config.levels)
        # Peak inference memory per input voxel, for the engine's budget check: about
        # 4 bytes times the coupling width plus 64 (measured on the cpu preset: 333 B per
        # voxel at 48x64x48, 177 at 96x128x96; samples run one after the other, so 8
        # samples peak no higher than 1).
        self.bytes_per_voxel = 4.0 * config.hidden_channels + 64.0

    def inference_modules(self) -> list[str]:
        return ["flow", "stats"]

    # -- training ---------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        c = self.config
        return [torch.optim.Adamax(self.parameters(), lr=c.train.lr, betas=(c.beta1, c.beta2))]

    def _training_ages(self, batch: dict[str, Any]) -> Tensor | None:
        if not self.config.age_conditioning:
            return None
        ages = torch.as_tensor(batch.get("age", math.nan), dtype=torch.float32).reshape(-1)
        if not torch.isfinite(ages).all():
            who = batch.get("source_id", batch.get("index"))
            raise UserError(
                f"a training subject ({who}) has no age; DUAL-GLOW conditions on age: add the "
                "age column to participants.tsv or train with age_conditioning off"
            )
        lo, hi = self.config.age_range
        if ((ages < lo) | (ages > hi)).any():
            raise UserError(
                f"training ages {ages.min():g}-{ages.max():g} years fall outside the model's "
                f"age_range {lo:g}-{hi:g}; widen age_range in the config"
            )
        return ages

    def _augment(self, mri: Tensor, pet: Tensor) -> tuple[Tensor, Tensor]:
        """The same random flip and shift for both volumes of each pair, (B, C, X, Y, Z)."""
        c = self.config
        if c.augment_flip and bool(torch.rand(()) < 0.5):
            mri, pet = mri.flip(2), pet.flip(2)  # x is left-right in the engine's RAS grid
        s = int(c.augment_shift)
        if s > 0:
            pair = torch.nn.functional.pad(torch.cat([mri, pet], 1), (s,) * 6, mode="replicate")
            ox, oy, oz = (int(v) for v in torch.randint(0, 2 * s + 1, (3,)))
            x, y, z = mri.shape[2:]
            pair = pair[:, :, ox:ox + x, oy:oy + y, oz:oz + z]
            mri, pet = pair[:, : mri.shape[1]], pair[:, mri.shape[1]:]
        return mri, pet

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Eq. 12/16 in bits per voxel plus the age losses; records the MRI's bits per voxel."""
        ages = self._training_ages(batch)
        mri, pet = self._augment(batch["source"], batch["target"])
        out = self.flow.loss(mri, pet, age=None if ages is None else ages.to(mri.device))
        level_bits = out.pop("level_bits_mri")
        usable = torch.isfinite(out["bpd_mri"]) and torch.isfinite(level_bits).all()
        if usable and self.diverged(out) is None:  # a skipped step must not set the OOD reference
            self.stats.record(out["bpd_mri"].reshape(1), ages, level_bits)
        return out

    def diverged(self, losses: dict[str, Tensor]) -> str | None:
        limit = self.config.divergence_bits
        if limit > 0 and float(losses["loss"].detach()) > limit:
            return (
                f"objectives above {limit:g} bits per voxel (a uniform guess costs "
                f"{math.log2(self.config.n_bins):g}; a raised age_loss_weight does this, its "
                "adversaries pushing the latents without bound: then start a new run with a "
                "lower one)"
            )
        return None

    @torch.no_grad()
    def calibrate(self, mris: Iterable[Tensor]) -> int:
        """Refill the bits statistics from training MRIs with the current weights.

        Training records them batch by batch with the weights of that moment (and
        dequantisation noise); the exported weights can differ (an EMA, a later step), so
        a checkpoint's reference is best computed with its own weights, exactly as an
        input is scored at inference. ``mris``: normalised (1, 1, X, Y, Z) tensors; the last
        ``ood_window`` are kept. Returns the number recorded.
        """
        self.stats.reset_bits()
        count = 0
        for mri in mris:
            bits, level_bits = self.flow.mri_likelihood(mri)
            self.stats.record(bits, None, level_bits)
            count += 1
        return count

    # -- inference --------------------------------------------------------------
    def _age(self, request: SynthesisRequest) -> float | None:
        if not self.config.age_conditioning:
            return None
        if request.age is not None:
            return float(request.age)
        middle = self.stats.middle_age()
        if middle is None:
            lo, hi = self.config.age_range
            middle = (lo + hi) / 2
        return middle

    def defaulted_conditions(self, request: SynthesisRequest) -> dict[str, tuple[Any, str]]:
        """The age (years) and temperature used when the request leaves them unset."""
        out: dict[str, tuple[Any, str]] = {}
        if self.config.age_conditioning and request.age is None:
            if self.stats.middle_age() is not None:
                why = (f"the middle of the training ages ({float(self.stats.age_min):.1f} to "
                       f"{float(self.stats.age_max):.1f} years)")
            else:
                lo, hi = self.config.age_range
                why = f"the middle of the model's age range ({lo:g} to {hi:g} years)"
            out["age"] = (round(float(self._age(request)), 2), why)
        if request.temperature is None:
            one = request.samples <= 1
            out["temperature"] = (MODE_TEMPERATURE if one else SAMPLING_TEMPERATURE,
                                  "the mode, for one sample" if one else f"for {request.samples} samples")
        return out

    @torch.no_grad()
    def synthesize(self, x: Tensor, request: SynthesisRequest) -> Tensor:
        """Normalised MRI (B, 1, X, Y, Z) -> PET samples (K, B, 1, X, Y, Z).

        ``request.age`` in years (None: the middle of the training ages);
        ``request.temperature`` (None: 0, the mode, for one sample; 0.7 for several).
        """
        temperature = request.temperature
        if temperature is None:
            temperature = MODE_TEMPERATURE if request.samples <= 1 else SAMPLING_TEMPERATURE
        return self.flow.sample(x, age=self._age(request), temperature=float(temperature),
                                n_samples=max(1, request.samples), generator=request.generator)

    @torch.no_grad()
    def out_of_distribution(self, x: Tensor) -> dict[str, Any] | None:
        """Exact bits per voxel of the input MRI against the training MRIs' (a typicality test).

        Two-sided: a flow can give *higher* likelihood to simpler images than to its
        training data (Nalisnick et al., ICLR 2019), so an input far below the training
        range is as suspect as one far above. Returns the figures for the sidecar and,
        when flagged, a ``warning``.
        """
        total, per_level = self.flow.mri_likelihood(x)
        bits, levels = float(total.mean()), per_level.mean(0)
        reference = self.stats.bits_reference()
        result: dict[str, Any] = {"bits_per_voxel": round(bits, 4),
                                  "level_bits": [round(float(v), 4) for v in levels]}
        if reference is None:
            return result
        mean, std, count = reference
        tolerance = self.config.ood_sigmas * std + self.config.ood_margin_bits
        result.update(training_mean=round(mean, 4), training_std=round(std, 4),
                      training_batches=count, tolerance=round(tolerance, 4))
        # The whole-volume bits, then each level's latent bits, against the training MRIs'.
        checks = [("bits per voxel", bits, mean, tolerance)]
        per_level = self.stats.level_reference()
        if per_level is not None:
            l_mean, l_std, _ = per_level
            l_tol = self.config.ood_sigmas * l_std + self.config.ood_margin_bits
            result.update(training_level_mean=[round(float(v), 4) for v in l_mean],
                          level_tolerance=[round(float(v), 4) for v in l_tol])
            checks += [(f"latent bits at level {i + 1}", float(v), float(m), float(t))
                       for i, (v, m, t) in enumerate(zip(levels, l_mean, l_tol, strict=True))]
        for what, value, centre, tol in checks:
            if not math.isfinite(value) or abs(value - centre) > tol:
                side = "above" if not math.isfinite(value) or value > centre else "below"
                result["warning"] = (
                    f"the input is unlike the {self.source} scans this model was trained on: "
                    f"{value:.2f} {what}, {side} the training range {centre:.2f} +/- "
                    f"{tol:.2f}; check that it is a {self.source} scan, the synthetic "
                    f"{self.target} may be meaningless"
                )
                break
        return result

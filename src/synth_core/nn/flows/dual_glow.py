"""DUAL-GLOW (Sun et al., ICCV 2019): conditional flow from T1 MRI to FDG-PET.

Two multi-scale 3D Glows map MRI and PET to latents z_m = f_m(x_m) and z_p = f_p(x_p),
one latent per level. At every level i a relation network gives the Gaussian prior of
the PET latent from the MRI latent, p(z_p,i | z_m,i) = N(mu_i(z_m,i), sigma_i(z_m,i))
(eq. 6). Training maximises eq. 12:

    log p(z_p | z_m) + log|det dz_p/dx_p| + lambda * log p(x_m),   p(z_m) = N(0, I)

and translation samples z_p,i = mu_i + T * sigma_i * eps and inverts the PET flow.

Age conditioning (sec. 3, eq. 16-17). Following eq. 17 the PET prior is conditioned
on the age c and on z'_m, the MRI latents *below* the top; the top MRI latent h_k is
left out. The top relation network therefore reads the level below's MRI latent,
squeezed to the top's grid, with the normalised age broadcast as one extra channel.
Why not feed it h_k plus age: h_k is where the MRI's age information is kept (a
regression head without reversal keeps it there), so a prior reading h_k could take
age from the MRI and ignore the age the user asks for; with eq. 17's choice the only
route for age into the PET is the given age. Regression heads behind gradient
reversal remove age from the lower MRI latents; heads without reversal keep it in
the top MRI and top PET latents.

Where age acts (``age_effect``; the paper does not say how c enters mu_theta). A
constant age channel through a convolution adds the same amount to a latent channel at
every position ("uniform"), so it can brighten or darken the whole brain but not age
one region: that is what the first trained models did. With "regional" the top
relation network also reads the voxel coordinates of the top grid (normalised to
[-1, 1], so any input size works), and a second relation network of the same shape,
reading the MRI latent and the coordinates but not the age, gives a slope per latent
voxel:

    mu_top = g([z'_m, xyz, c]) + c * a_mu([z'_m, xyz]),
    log sigma_top = h([z'_m, xyz, c]) + c * a_sigma([z'_m, xyz])

with c the age normalised to [-1, 1]. The slope starts at zero, and its gradient is a
regression of the top PET latent's residual on age, position by position.

Units. Inputs are intensities normalised to [-1, 1]. Losses are in bits per voxel
(bpv): the NLL in nats divided by (number of voxels * ln 2). For comparability with
Glow's bits per dimension, the inputs are treated as ``n_bins`` discrete levels of
width 2 / n_bins: in training mode each voxel gets uniform noise of one bin width
(centred, so the mean is unchanged) and every bpv includes the discretisation
constant log2(n_bins / 2), i.e. -log2(bin width). So bpv is the code length of an
8-bit volume: about 8 for a model that has learned nothing, lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synth_core.errors import UserError
from synth_core.nn.flows.config import DualGlowConfig
from synth_core.nn.flows.glow import Glow3d, latent_channels
from synth_core.nn.flows.priors import (
    AgeRegressor,
    RelationNet,
    coordinates_like,
    gaussian_log_prob,
)
from synth_core.nn.gradient_reversal import GradientReversal

AgeLike = float | Sequence[float] | Tensor


class DualGlow(nn.Module):
    """The DUAL-GLOW network, its loss and its sampler.

    Attributes:
        mri_flow, pet_flow: the two :class:`Glow3d` (f_m and f_p).
        relation_nets: one :class:`RelationNet` per level, bottom to top.
        age_slope: with ``age_effect="regional"``, the network giving the top prior's
            change per unit of normalised age, position by position.
        age_adversaries: heads on the lower MRI latents, behind gradient reversal.
        age_keep_mri, age_keep_pet: heads on the top MRI and top PET latents.
    """

    def __init__(self, config: DualGlowConfig | None = None) -> None:
        super().__init__()
        cfg = config or DualGlowConfig()
        self.config = cfg
        flow_args = (cfg.levels, cfg.steps_per_level, cfg.hidden_channels, cfg.checkpointing)
        self.mri_flow = Glow3d(cfg.mri_channels, *flow_args)
        self.pet_flow = Glow3d(cfg.pet_channels, *flow_args)
        mri_ch = latent_channels(cfg.mri_channels, cfg.levels)
        pet_ch = latent_channels(cfg.pet_channels, cfg.levels)
        relation_in = list(mri_ch)
        self.regional_age = cfg.age_conditioning and cfg.age_effect == "regional"
        coords = 3 if self.regional_age else 0
        if cfg.age_conditioning:
            relation_in[-1] = 8 * mri_ch[-2] + coords + 1
        self.relation_nets = nn.ModuleList(
            RelationNet(c_in, c_out, cfg.relation_hidden, cfg.learned_scale)
            for c_in, c_out in zip(relation_in, pet_ch, strict=True)
        )
        if self.regional_age:
            self.age_slope = RelationNet(
                8 * mri_ch[-2] + coords, pet_ch[-1], cfg.relation_hidden, cfg.learned_scale
            )
        if cfg.age_conditioning:
            self.reversal = GradientReversal(cfg.gradient_reversal_scale)
            self.age_adversaries = nn.ModuleList(
                AgeRegressor(c, cfg.age_head_hidden, cfg.age_head_coordinates, cfg.age_head_grid)
                for c in mri_ch[:-1]
            )
            self.age_keep_mri = AgeRegressor(mri_ch[-1], cfg.age_head_hidden,
                                             cfg.age_head_coordinates, cfg.age_head_grid)
            self.age_keep_pet = AgeRegressor(pet_ch[-1], cfg.age_head_hidden,
                                             cfg.age_head_coordinates, cfg.age_head_grid)
        # -log2 of the bin width 2 / n_bins: turns a density into a code length per voxel.
        self.bits_per_voxel_offset = math.log2(cfg.n_bins / 2.0)

    # --- age ---------------------------------------------------------------------

    def normalise_age(self, age: AgeLike, batch: int, device: torch.device | None = None) -> Tensor:
        """Age in years (one value, or one per sample) -> (B,) in [-1, 1] over ``age_range``.

        Raises UserError for an age that is not finite or lies outside ``age_range``.
        """
        lo, hi = self.config.age_range
        years = torch.as_tensor(age, dtype=torch.float32, device=device).reshape(-1)
        if years.numel() == 1:
            years = years.expand(batch)
        if years.numel() != batch:
            raise ValueError(f"got {years.numel()} ages for a batch of {batch}")
        if not torch.isfinite(years).all():
            raise UserError("age is NaN or infinite; give the subject's age in years")
        if ((years < lo) | (years > hi)).any():
            bad = years[(years < lo) | (years > hi)][0].item()
            raise UserError(
                f"age {bad:g} years is outside the range this model supports "
                f"({lo:g} to {hi:g} years); choose an age in that range"
            )
        return 2.0 * (years - lo) / (hi - lo) - 1.0

    def _age_or_none(self, age: AgeLike | None, reference: Tensor) -> Tensor | None:
        # An age given to a model trained without it is ignored: the Method wrapper
        # checks ``config.age_conditioning`` and tells the user.
        if not self.config.age_conditioning:
            return None
        if age is None:
            raise UserError("this DUAL-GLOW model is conditioned on age; give the age in years")
        return self.normalise_age(age, reference.shape[0], reference.device).to(reference.dtype)

    # --- latents and priors --------------------------------------------------------

    def encode_mri(self, mri: Tensor) -> tuple[list[Tensor], Tensor]:
        """MRI (B, C, D, H, W) in [-1, 1] -> (latents z_m,i bottom to top, logdet (B,) nats).

        The latents are what a disentanglement probe needs: age should be predictable
        from the top one and not from the others.
        """
        return self.mri_flow.encode(mri)

    def pet_prior(
        self, mri_latents: list[Tensor], age_normalised: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """(mean, log_scale) of every PET latent's Gaussian, bottom to top (eq. 6 / eq. 17).

        Args:
            mri_latents: as returned by :meth:`encode_mri`.
            age_normalised: (B,) in [-1, 1] (see :meth:`normalise_age`); required when
                the model is age-conditioned, ignored otherwise.
        """
        priors = []
        top = len(mri_latents) - 1
        for level, (z_m, net) in enumerate(zip(mri_latents, self.relation_nets, strict=True)):
            if level < top or not self.config.age_conditioning:
                priors.append(net(z_m))
                continue
            if age_normalised is None:
                raise ValueError("pet_prior needs age_normalised for an age-conditioned model")
            below, _ = self.mri_flow.squeeze(mri_latents[level - 1])
            if self.regional_age:
                below = torch.cat([below, coordinates_like(below)], dim=1)
            age = age_normalised.to(below.dtype).view(-1, 1, 1, 1, 1)
            age_channel = age.expand(-1, 1, *below.shape[2:])
            mean, log_scale = net(torch.cat([below, age_channel], dim=1))
            if self.regional_age:
                slope_mean, slope_log_scale = self.age_slope(below)
                mean = mean + age * slope_mean
                log_scale = log_scale + age * slope_log_scale
            priors.append((mean, log_scale))
        return priors

    def _dequantize(self, x: Tensor) -> Tensor:
        bin_width = 2.0 / self.config.n_bins
        return x + (torch.rand_like(x) - 0.5) * bin_width

    def _bits_per_voxel(self, nll_nats: Tensor, x: Tensor) -> Tensor:
        voxels = x[0].numel()
        return nll_nats / (voxels * math.log(2.0)) + self.bits_per_voxel_offset

    # --- training objective ---------------------------------------------------------

    def loss(
        self,
        mri: Tensor,
        pet: Tensor,
        age: AgeLike | None = None,
        dequantize: bool | None = None,
    ) -> dict[str, Tensor]:
        """The training objective (eq. 12, with eq. 16 and the age losses when conditioned).

        Args:
            mri: (B, C_m, D, H, W) in [-1, 1].
            pet: (B, C_p, D, H, W) in [-1, 1], same spatial size, paired with ``mri``.
            age: years, one value or one per sample; required when age-conditioned.
            dequantize: add one bin of uniform noise; defaults to ``self.training``.

        Returns:
            Scalars (batch means): 'loss' = bpd_pet + lambda_mri * bpd_mri
            + age_loss_weight * age_adv + age_keep_weight (default: age_loss_weight)
            * age_keep; 'bpd_pet' = -log p(x_p | x_m) in
            bits per voxel; 'bpd_mri' = -log p(x_m) in bits per voxel; 'age_adv' = sum
            of the MSEs of the heads behind reversal; 'age_keep' = sum of the MSEs of the
            top MRI and top PET heads (both 0 without age conditioning).
        """
        if mri.shape[0] != pet.shape[0] or mri.shape[2:] != pet.shape[2:]:
            raise UserError(
                f"MRI {tuple(mri.shape)} and PET {tuple(pet.shape)} batches differ in size; "
                "resample each pair onto one grid first"
            )
        age_n = self._age_or_none(age, mri)
        if self.training if dequantize is None else dequantize:
            mri, pet = self._dequantize(mri), self._dequantize(pet)
        z_m, logdet_m = self.mri_flow.encode(mri)
        z_p, logdet_p = self.pet_flow.encode(pet)
        priors = self.pet_prior(z_m, age_n)
        log_p_pet = torch.stack(
            [gaussian_log_prob(z, m, s) for z, (m, s) in zip(z_p, priors, strict=True)]
        ).sum(dim=0)
        log_p_mri = torch.stack([gaussian_log_prob(z) for z in z_m]).sum(dim=0)
        bpd_pet = self._bits_per_voxel(-(log_p_pet + logdet_p), pet).mean()
        bpd_mri = self._bits_per_voxel(-(log_p_mri + logdet_m), mri).mean()
        age_adv = age_keep = mri.new_zeros(())
        if age_n is not None:
            age_adv = torch.stack(
                [
                    F.mse_loss(head(self.reversal(z)), age_n)
                    for head, z in zip(self.age_adversaries, z_m[:-1], strict=True)
                ]
            ).sum()
            age_keep = F.mse_loss(self.age_keep_mri(z_m[-1]), age_n) + F.mse_loss(
                self.age_keep_pet(z_p[-1]), age_n
            )
        cfg = self.config
        keep_weight = cfg.age_loss_weight if cfg.age_keep_weight is None else cfg.age_keep_weight
        total = (bpd_pet + cfg.lambda_mri * bpd_mri + cfg.age_loss_weight * age_adv
                 + keep_weight * age_keep)
        return {
            "loss": total,
            "bpd_pet": bpd_pet.detach(),
            "bpd_mri": bpd_mri.detach(),
            "level_bits_mri": self.latent_bits([z.detach() for z in z_m]).mean(0),
            "age_adv": age_adv.detach(),
            "age_keep": age_keep.detach(),
        }

    # --- inference -------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        mri: Tensor,
        age: AgeLike | None = None,
        temperature: float = 0.7,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Synthesise PET from MRI: z_p,i = mean_i + T * scale_i * eps, x_p = f_p^-1(z_p).

        Args:
            mri: (B, C_m, D, H, W) in [-1, 1].
            age: years (one value or one per sample); required when age-conditioned.
            temperature: T >= 0; T = 0 gives the mode of the latent prior
                (deterministic), T = 1 samples the full learned prior, 0.7 is Glow's
                usual compromise between fidelity and diversity.
            n_samples: independent samples per input.
            generator: torch random generator on ``mri``'s device, for reproducibility.

        Returns:
            (n_samples, B, C_p, D, H, W), in the PET's normalised intensity units
            (not clipped to [-1, 1]).
        """
        if not math.isfinite(temperature) or temperature < 0:
            raise UserError(f"temperature {temperature} is invalid; give a value >= 0 (e.g. 0.7)")
        if n_samples < 1:
            raise UserError(f"number of samples {n_samples} is invalid; give 1 or more")
        was_training = self.training
        self.eval()  # never let actnorm initialise itself from an inference input
        try:
            age_n = self._age_or_none(age, mri)
            z_m, _ = self.mri_flow.encode(mri)
            priors = self.pet_prior(z_m, age_n)
            samples = []
            for _ in range(n_samples):
                if temperature == 0:
                    latents = [mean for mean, _ in priors]
                else:
                    latents = [
                        mean
                        + temperature
                        * torch.exp(log_scale)
                        * torch.randn(
                            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
                        )
                        for mean, log_scale in priors
                    ]
                samples.append(self.pet_flow.decode(latents))
            return torch.stack(samples)
        finally:
            self.train(was_training)

    @staticmethod
    def latent_bits(latents: list[Tensor]) -> Tensor:
        """(B, L): -log2 N(z_l; 0, I) per latent element at each level (no log-determinant).

        The levels separate what the total mixes: a PET given as T1 has the total bits of
        some T1s but lacks the fine detail the lowest level codes (docs/methods/dual-glow.md).
        """
        return torch.stack([-gaussian_log_prob(z) / (z[0].numel() * math.log(2.0))
                            for z in latents], dim=1)

    @torch.no_grad()
    def mri_likelihood(self, mri: Tensor) -> tuple[Tensor, Tensor]:
        """One pass of the MRI flow in eval mode: (:meth:`mri_bits_per_voxel` (B,),
        :meth:`mri_level_bits` (B, L)), for the out-of-distribution test."""
        was_training = self.training
        self.eval()
        try:
            z_m, logdet = self.mri_flow.encode(mri)
            log_p = torch.stack([gaussian_log_prob(z) for z in z_m]).sum(dim=0)
            return self._bits_per_voxel(-(log_p + logdet), mri), self.latent_bits(z_m)
        finally:
            self.train(was_training)

    def mri_level_bits(self, mri: Tensor) -> Tensor:
        """(B, L) :meth:`latent_bits` of the MRI latents, in eval mode."""
        return self.mri_likelihood(mri)[1]

    def mri_bits_per_voxel(self, mri: Tensor) -> Tensor:
        """Exact -log2 p(x_m) per voxel under the MRI flow and N(0, I) latents, shape (B,).

        No dequantisation noise, same discretisation constant as the loss. An input far
        above the training set's typical value is unlike the training MRIs (for
        out-of-distribution warnings).
        """
        return self.mri_likelihood(mri)[0]

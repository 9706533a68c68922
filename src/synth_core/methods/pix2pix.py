"""pix2pix in 3D (Isola et al., 2017): a U-Net generator and a conditional PatchGAN.

Loss (pix2pix eq. 4): G* = arg min_G max_D L_cGAN(G, D) + lambda * L1(G), lambda = 100;
the discriminator sees (source, target) pairs and its loss is halved; Adam lr 2e-4,
betas (0.5, 0.999); constant learning rate for the first half of training, then a
linear decay to zero.

Two settings beyond the paper, both off in the ``paper`` preset: ``lambda_gan`` weighs the
adversarial term (0 trains the generator on its reconstruction terms alone and skips the
discriminator, the paper's "L1 only" ablation of its table 1), and ``lambda_ssim`` adds
``1 - SSIM`` (7-voxel uniform windows, the scoring's own) to the reconstruction terms.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from synth_core.errors import UserError
from synth_core.methods._adversarial import AdversarialMethod, AdversarialSettings
from synth_core.methods.base import (
    Capabilities,
    StepContext,
    SynthesisRequest,
    TrainSettings,
    register,
)
from synth_core.nn import GANLoss, PatchDiscriminator, UNet, init_weights
from synth_core.nn.conditional_autoencoder import ResidualConditionalAutoencoder
from synth_core.nn.ssim import ssim


@dataclass
class Pix2PixConfig(AdversarialSettings):
    """pix2pix settings; defaults are the paper's (``paper`` preset). The discriminator and
    optimiser settings (``disc_features``, ``gan_mode``, betas, ``decay_start``, ``norm``)
    are the shared :class:`AdversarialSettings`.

    Attributes:
        features: generator width at full resolution (paper: 64).
        depth: U-Net levels; the input is padded to a multiple of 2**depth. The paper's
            U-Net-256 has 8 levels for 256x256 images; 3D brain volumes of 64-128
            voxels take 4 (written down in docs/methods/pix2pix.md).
        backbone: the generator, "unet" (the paper's) or "resunet" (a residual U-Net,
            ``synth_core.nn.conditional_autoencoder.ResidualConditionalAutoencoder`` without
            a code: the unified model's residual backbone, so the two compare on one network;
            ``features`` is its width, ``mults`` and ``blocks`` its levels; no dropout).
        mults, blocks: the residual U-Net's width multiplier per level and blocks a level.
        lambda_l1: weight of the L1 term (paper: 100).
        gan_mode: "vanilla" (the paper's; the shared default is CycleGAN's "lsgan").
        dropout: decoder dropout (paper: 0.5, its only source of noise).
        upsample: the decoder's upsampling, "transpose" (paper: transposed convolutions)
            or "interp" (interpolation plus a 3x3x3 convolution: no checkerboard
            artefacts, but 3.4 times the multiply-adds, and measured 2-4 times slower
            on CPU here, so the ``cpu`` preset keeps "transpose"; see docs/benchmarks.md).
            A card without this field predates it and loads with transposed convolutions.
        lambda_gan: weight of the adversarial term (paper: 1). 0 trains the generator on
            its reconstruction terms alone and never runs the discriminator (one optimiser
            step a batch instead of two).
        lambda_ssim: weight of ``1 - SSIM(fake, target)`` added to the generator's loss
            (0: the paper's L1 alone). SSIM uses the scoring's 7-voxel uniform window on the
            [-1, 1] training range.
        lambda_regional: weight of an extra L1 term between the synthetic and the true
            target averaged over blocks of ``regional_pool`` voxels a side (not in the
            paper; 0 turns it off). Regional uptake is what a reader of a synthetic PET
            compares (an AD pattern is a regional deficit of about a fifth), and the voxel L1
            gives it no more weight than the texture within a region.
        regional_pool: block size of that average, voxels (4 at 4 mm: 16 mm blocks).
    """

    features: int = 64
    depth: int = 4
    backbone: str = "unet"
    mults: tuple[int, ...] = (1, 1, 2, 2)
    blocks: int = 1
    lambda_l1: float = 100.0
    gan_mode: str = "vanilla"
    dropout: float = 0.5
    upsample: str = "transpose"
    lambda_gan: float = 1.0
    lambda_ssim: float = 0.0
    lambda_regional: float = 0.0
    regional_pool: int = 4
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(max_steps=200_000, lr=2e-4, batch_size=1)
    )


def _cpu() -> Pix2PixConfig:
    # Sized for the `small` phantom (48x64x48 at 4 mm) on 2 CPU cores: about
    # 0.1 s a step on an idle machine, 4000 steps in well under an hour; a 1.5 M
    # parameter generator (6 MB) keeps the bundled checkpoint small.
    return Pix2PixConfig(
        features=16,
        disc_features=16,
        dropout=0.0,  # with few subjects, dropout noise hurts more than it regularises
        train=TrainSettings(max_steps=4000, lr=2e-4, batch_size=1, val_every=250,
                            checkpoint_every=100, multiple=16),
    )


def _cpu_l1() -> Pix2PixConfig:
    # Native-resolution training on 2 CPU cores: the `cpu` generator on 64^3 patches, trained
    # on L1 alone, without the discriminator (the adversarial game needs far more steps than
    # a CPU budget gives before it stops costing SSIM; see docs/methods/pix2pix.md).
    # `--set lambda_ssim=W` adds the SSIM term.
    config = _cpu()
    config.lambda_gan = 0.0
    config.train = TrainSettings(max_steps=3000, lr=1e-3, batch_size=1, val_every=1000,
                                 checkpoint_every=250, multiple=16, patch_size=(64, 64, 64))
    return config


def _cpu_fine() -> Pix2PixConfig:
    # The 1 mm recipe of the bundled `pix2pix-t1-t2-fine`: `cpu-l1` with 1 - SSIM (weight 200),
    # 96^3 patches (a larger field of view for each instance-normalised window) and an
    # exponential moving average of the weights (0.999, warmed up). At a learning rate of 1e-3
    # the raw weights are noisy from step to step, and the average was what moved the 1 mm
    # T1 -> T2 model past its quality floor (docs/benchmarks.md, native resolution). The run
    # exports its best validation step; validation at 1 mm is whole volumes in 96^3 windows.
    config = _cpu_l1()
    config.lambda_ssim = 200.0
    config.train = TrainSettings(max_steps=1500, lr=1e-3, batch_size=1, val_every=250,
                                 checkpoint_every=250, multiple=16, patch_size=(96, 96, 96),
                                 ema_decay=0.999, ema_warmup=True)
    return config


def _paper() -> Pix2PixConfig:
    return Pix2PixConfig()


def _tiny() -> Pix2PixConfig:
    """For tests: a few thousand parameters."""
    return Pix2PixConfig(
        features=4, depth=2, disc_features=4, disc_layers=1, dropout=0.0,
        train=TrainSettings(max_steps=4, val_every=2, checkpoint_every=2, multiple=4),
    )


@register
class Pix2Pix(AdversarialMethod):
    key = "pix2pix"
    title = "pix2pix (3D U-Net + conditional PatchGAN)"
    paper = "Isola et al., Image-to-image translation with conditional adversarial networks, CVPR 2017"
    capabilities = Capabilities(spatial=("3d", "2d"), data=("paired",), adversarial=True)
    config_class = Pix2PixConfig
    presets = {"cpu": _cpu, "cpu-l1": _cpu_l1, "cpu-fine": _cpu_fine, "paper": _paper, "tiny": _tiny}
    # Loss weights and the learning-rate schedule: none of them changes the network, so a
    # resumed or fine-tuning run may set them (e.g. --lr 2e-4 --set decay_start=0).
    resumable = ("lambda_l1", "lambda_gan", "lambda_ssim", "lambda_regional", "regional_pool",
                 "decay_start")

    def __init__(self, config: Pix2PixConfig, source: str, target: str) -> None:
        super().__init__(config, source, target)
        dims = 3 if config.train.spatial == "3d" else 2
        if config.backbone == "resunet":
            self.generator: torch.nn.Module = ResidualConditionalAutoencoder(
                dims, 1, 1, 0, features=config.features, mults=tuple(config.mults),
                blocks=config.blocks)
        elif config.backbone == "unet":
            self.generator = UNet(dims, 1, 1, features=config.features, depth=config.depth,
                                  norm=config.norm, dropout=config.dropout,
                                  upsample=config.upsample)
        else:
            raise UserError(f"unknown pix2pix backbone {config.backbone!r}: use unet or resunet")
        self.discriminator = PatchDiscriminator(dims, 2, features=config.disc_features,
                                                n_layers=config.disc_layers, norm=config.norm)
        if config.backbone == "unet":  # the residual U-Net keeps PyTorch's default init
            init_weights(self.generator)  # (after the discriminator: the same random draws)
        init_weights(self.discriminator)
        self.gan_loss = GANLoss(config.gan_mode)
        if min(config.lambda_gan, config.lambda_ssim, config.lambda_l1,
               config.lambda_regional) < 0:
            raise UserError("pix2pix loss weights lambda_l1, lambda_gan, lambda_ssim and "
                            "lambda_regional must not be negative; set them to 0 or more")

    @classmethod
    def optimizer_steps_per_batch(cls, config: Pix2PixConfig) -> int:
        # Without the adversarial term the discriminator's optimiser never steps.
        return 2 if config.lambda_gan > 0 else 1

    def inference_modules(self) -> list[str]:
        return ["generator"]

    def generator_parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.generator.parameters()

    def discriminator_parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.discriminator.parameters()

    def reconstruction_loss(self, fake: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's non-adversarial terms: ``lambda_l1 * L1 + lambda_ssim * (1 - SSIM) +
        lambda_regional * regional L1`` under ``"rec"``, each weighted term beside it."""
        c = self.config
        loss_l1 = torch.nn.functional.l1_loss(fake, y)
        parts = {"g_l1": loss_l1, "rec": c.lambda_l1 * loss_l1}
        if c.lambda_ssim > 0:
            loss_ssim = 1.0 - ssim(fake, y, data_range=2.0)
            parts["g_ssim"] = loss_ssim
            parts["rec"] = parts["rec"] + c.lambda_ssim * loss_ssim
        if c.lambda_regional > 0:
            loss_regional = torch.nn.functional.l1_loss(self._regional(fake), self._regional(y))
            parts["g_regional"] = loss_regional
            parts["rec"] = parts["rec"] + c.lambda_regional * loss_regional
        return parts

    def _regional(self, image: torch.Tensor) -> torch.Tensor:
        """Block means of ``regional_pool`` voxels a side (partial blocks at the edge too)."""
        pool = (torch.nn.functional.avg_pool3d if image.dim() == 5
                else torch.nn.functional.avg_pool2d)
        return pool(image, self.config.regional_pool, ceil_mode=True)

    def adversarial_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch["source"], batch["target"]
        fake = self.generator(x)
        if self.config.lambda_gan == 0:  # reconstruction terms alone: no discriminator
            parts = self.reconstruction_loss(fake, y)
            ctx.optimize(0, parts["rec"])
            return {"loss": parts["rec"].detach(),
                    **{k: v.detach() for k, v in parts.items() if k != "rec"}}

        self.discriminator.requires_grad_(True)
        pred_real = self.discriminator(torch.cat([x, y], 1))
        pred_fake = self.discriminator(torch.cat([x, fake.detach()], 1))
        loss_d = 0.5 * (self.gan_loss(pred_real, True) + self.gan_loss(pred_fake, False))
        ctx.optimize(1, loss_d)

        # The generator step needs gradients through D, not into D's weights.
        self.discriminator.requires_grad_(False)
        loss_gan = self.gan_loss(self.discriminator(torch.cat([x, fake], 1)), True)
        parts = self.reconstruction_loss(fake, y)
        loss_g = self.config.lambda_gan * loss_gan + parts["rec"]
        ctx.optimize(0, loss_g)
        self.discriminator.requires_grad_(True)
        return {"loss": loss_g.detach(), "g_gan": loss_gan.detach(),
                **{k: v.detach() for k, v in parts.items() if k != "rec"}, "d": loss_d.detach()}

    @torch.no_grad()
    def synthesize(self, x: torch.Tensor, request: SynthesisRequest) -> torch.Tensor:
        return self.generator(x).unsqueeze(0)

"""Unified conditional disentanglement (Liu, Xing, El Fakhri and Woo): one encoder, one decoder
conditioned on the target modality, and one discriminator with a modality classifier, for
every direction among M co-registered MR contrasts.

Losses (the paper's eq. 1-7), for a source ``x`` of modality ``m_x`` and its co-registered
target ``x_y`` of modality ``m_y`` (one-hot codes), ``x~_y = Dec(Enc(x), m_y)`` and the cycle
``x~_x = Dec(Enc(x~_y), m_x)``:

* autoencoder (eq. 6, with eq. 5 added): ``lambda_l1 |x~_y - x_y|_1 + alpha |x~_x - x|_1 +
  beta L_adv(x~_y) + lambda1 CE(Dis_mc(x~_y), m_y) + lambda_disentangle
  |Enc(x~_y) - Enc(x)|_1``;
* discriminator (eq. 7): ``-L_adv + lambda2 CE(Dis_mc(x), m_x)``, where ``L_adv`` is the
  non-saturating GAN loss of eq. 2 (``gan_mode="vanilla"``) and the classification term is
  eq. 3's real-image sum. Eq. 3 also sums the synthesized images; training the classifier on
  them as well (``dis_classifies_fakes``) teaches it what each code's fakes look like, which
  lets the autoencoder satisfy the classifier without looking real (StarGAN's argument for
  classifying only real images in the discriminator's step): off by default, written down
  in docs/methods/unified.md.

The paper gives alpha 1, beta 0.5, lambda1 1, lambda2 1, Adam (beta1 0.5) at 1e-3 for Enc and
Dec and 1e-4 for Dis, and no weight for eq. 5: we use lambda_disentangle 1 (the paper aligns
every loss to about the same size) and measure 0 as the ablation. ``Enc(x)`` is every feature
map the encoder hands the decoder (the skips and the bottleneck); eq. 5 is their mean L1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from synth_core.errors import UserError
from synth_core.methods.base import (
    Capabilities,
    Method,
    StepContext,
    SynthesisRequest,
    TrainSettings,
    constant_then_linear_decay,
    register,
)
from synth_core.nn import GANLoss, PatchDiscriminator, init_weights
from synth_core.nn.conditional_autoencoder import (
    ConditionalAutoencoder,
    ResidualConditionalAutoencoder,
)
from synth_core.nn.ssim import ssim

BRAIN_MR = ("t1", "t1ce", "t2", "flair")


@dataclass
class UnifiedConfig:
    """Settings of the unified model; defaults are the paper's (``paper`` preset).

    Attributes:
        modalities: the M modalities, in the order of the one-hot code (paper: T1, T1ce,
            T2, FLAIR of BraTS'18).
        backbone: "unet", the pix2pix U-Net split into Enc and Dec (the paper's "Pix2Pix
            basenet"), or "resunet", a residual U-Net (``ResidualConditionalAutoencoder``:
            two 3x3 convolutions in each residual block, the design of the velocity network
            of Bi-DPM) whose decoder takes the code at every block.
        features, depth, upsample: the U-Net backbone (as pix2pix; the paper's 2D backbone
            on 256x256 slices has 8 levels). ``features`` is also the residual U-Net's width.
        mults, blocks: the residual U-Net's width multiplier per level and residual blocks
            a level.
        norm: "instance".
        film_gain: how fast the decoder's per-target scales and shifts learn
            (``synth_core.nn.conditional_autoencoder.FiLM``; not in the paper, whose decoder
            takes the code by concatenation only).
        disc_features, disc_layers: the PatchGAN (pix2pix's 64, 3).
        gan_mode: "vanilla" (eq. 2's log loss).
        lambda_l1: weight of eq. 1 (paper: 1).
        alpha: weight of the cycle reconstruction, eq. 4 (paper: 1).
        beta: weight of the adversarial loss, eq. 2 (paper: 0.5).
        lambda1: the autoencoder's modality-classification weight, eq. 3 in eq. 6 (paper: 1).
        lambda2: the discriminator's modality-classification weight, eq. 7 (paper: 1).
        lambda_brain: weight of an extra L1 between ``x~_y`` and ``x_y`` averaged inside the
            brain mask only (not in the paper; 0 turns it off). Each contrast is normalised
            over the whole head, where the scalp is brightest, so the brain's tissues span a
            tenth of the range and a whole-volume L1 is mostly about the head's outline: a
            model can get it low while ignoring the target code inside the brain.
        lambda_ssim: weight of ``1 - SSIM(x~_y, x_y)`` (not in the paper; 0 turns it off), as
            pix2pix's ``lambda_ssim``: SSIM compares local contrast, which the whole-head L1
            weighs little inside the brain.
        lambda_disentangle: weight of the feature-level disentanglement, eq. 5 (not stated in
            the paper: 1; 0 is the ablation).
        dis_classifies_fakes: the discriminator's classifier also learns the synthesized
            images' codes (eq. 3 read literally); see the module docstring.
        include_self: draw the target among all M modalities, the source's own included
            (self-reconstruction, ``m_y = m_x``), else among the other M - 1.
        lr_dis: the discriminator's learning rate (paper: 1e-4; ``train.lr`` is Enc and
            Dec's, paper 1e-3).
        beta1, beta2: Adam's (paper: momentum 0.5).
        decay_start: share of ``max_steps`` after which both learning rates fall linearly
            to 0 (1.0, constant, is the paper's: it states none).
    """

    modalities: tuple[str, ...] = BRAIN_MR
    backbone: str = "unet"
    features: int = 64
    depth: int = 8
    upsample: str = "transpose"
    mults: tuple[int, ...] = (1, 1, 2, 2)
    blocks: int = 1
    norm: str = "instance"
    film_gain: float = 10.0
    disc_features: int = 64
    disc_layers: int = 3
    gan_mode: str = "vanilla"
    lambda_l1: float = 1.0
    alpha: float = 1.0
    beta: float = 0.5
    lambda1: float = 1.0
    lambda2: float = 1.0
    lambda_brain: float = 0.0
    lambda_ssim: float = 0.0
    lambda_disentangle: float = 1.0
    dis_classifies_fakes: bool = False
    include_self: bool = True
    lr_dis: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 1.0
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        max_steps=20_000, lr=1e-3, batch_size=64, spatial="2d", multiple=256, val_every=1000,
        checkpoint_every=500))


def _paper() -> UnifiedConfig:
    return UnifiedConfig()


def _cpu() -> UnifiedConfig:
    # 2D axial slices of the `small` phantom (48 x 64 at 4 mm), as the paper works on slices:
    # a 2D step on 8 slices costs a fraction of a 3D step on a volume, so many more steps fit
    # in the same CPU time. The backbone is the residual U-Net (16 features, widths 16-16-32-32
    # over four levels, one residual block a level): on held-out subjects it passed the
    # pix2pix U-Net's score in a fifth of the steps (docs/methods/unified.md).
    # Our CPU choice (docs/methods/unified.md): a reconstruction-led objective. The paper's
    # weights (L1 1, GAN 0.5) leave the adversarial term in charge while L1 is still large in a
    # few thousand steps, and runs with the GAN and classifier terms on (even with L1 at 100)
    # ignored the target code from T2. Here L1 weighs 100 (pix2pix's), 1 - SSIM 200 (as the
    # pix2pix fine-resolution recipe), the cycle 10, eq. 5 10; the adversarial and
    # classification terms are 0, and the discriminator then does not train (a run can be
    # resumed with them on: --resume --set beta=0.5 --set lambda1=1). The learning rate decays
    # linearly over the second half, and the exported weights are a moving average (0.999).
    return UnifiedConfig(
        backbone="resunet", features=16, depth=4, mults=(1, 1, 2, 2), blocks=1,
        disc_features=16, lambda_l1=100.0, lambda_ssim=200.0, alpha=10.0, beta=0.0,
        lambda1=0.0, lambda_disentangle=10.0, film_gain=1.0, decay_start=0.5,
        train=TrainSettings(max_steps=10_000, lr=1e-3, batch_size=8, spatial="2d", multiple=16,
                            val_every=400, checkpoint_every=200, ema_decay=0.999,
                            ema_warmup=True),
    )


def _cpu_unet() -> UnifiedConfig:
    """The earlier ``cpu`` recipe: the pix2pix U-Net backbone, 2,400 steps, no average (the
    measurements of docs/methods/unified.md that name it)."""
    config = _cpu()
    config.backbone = "unet"
    config.train = TrainSettings(max_steps=2400, lr=1e-3, batch_size=8, spatial="2d", multiple=16,
                                 val_every=400, checkpoint_every=200)
    return config


def _cpu3d() -> UnifiedConfig:
    # Whole volumes on the pix2pix U-Net: the residual U-Net costs about 2 s a 3D step on one
    # thread, eight times as much.
    config = _cpu_unet()
    config.train = TrainSettings(max_steps=2000, lr=1e-3, batch_size=1, spatial="3d", multiple=16,
                                 val_every=250, checkpoint_every=100)
    return config


def _tiny() -> UnifiedConfig:
    """For tests: a few thousand parameters."""
    return UnifiedConfig(
        features=4, depth=2, disc_features=4, disc_layers=1,
        train=TrainSettings(max_steps=4, lr=1e-3, batch_size=2, spatial="2d", multiple=4,
                            val_every=2, checkpoint_every=2),
    )


def disentanglement_loss(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 5: the mean over encoder levels of the L1 distance of two encodings (0 when equal)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"two encodings of one encoder have as many levels, got {len(a)} and {len(b)}")
    return torch.stack([F.l1_loss(p, q) for p, q in zip(a, b, strict=True)]).mean()


@register
class Unified(Method):
    key = "unified"
    title = "Unified conditional disentanglement (one model, any MR contrast to any other)"
    paper = ("Liu, Xing, El Fakhri, Woo: A unified conditional disentanglement framework for "
             "multimodal brain MR image translation")
    capabilities = Capabilities(spatial=("2d", "3d"), data=("paired",), conditions=("target",),
                                any_to_any=True, adversarial=True)
    config_class = UnifiedConfig
    presets = {"cpu": _cpu, "cpu-unet": _cpu_unet, "cpu-3d": _cpu3d, "paper": _paper,
               "tiny": _tiny}
    resumable = ("lambda_l1", "alpha", "beta", "lambda1", "lambda2", "lambda_disentangle",
                 "lambda_brain", "lambda_ssim", "decay_start")

    def __init__(self, config: UnifiedConfig, source: str, target: str) -> None:
        super().__init__(config, source, target)
        self.modalities = tuple(config.modalities)
        dims = 3 if config.train.spatial == "3d" else 2
        m = len(self.modalities)
        if config.backbone == "resunet":
            self.autoencoder: torch.nn.Module = ResidualConditionalAutoencoder(
                dims, 1, 1, m, features=config.features, mults=tuple(config.mults),
                blocks=config.blocks)
        elif config.backbone == "unet":
            self.autoencoder = ConditionalAutoencoder(dims, 1, 1, m, features=config.features,
                                                      depth=config.depth, norm=config.norm,
                                                      upsample=config.upsample,
                                                      film_gain=config.film_gain)
        else:
            raise UserError(f"unknown unified backbone {config.backbone!r}: use unet or resunet")
        self.discriminator = PatchDiscriminator(dims, 1, features=config.disc_features,
                                                n_layers=config.disc_layers, norm=config.norm,
                                                n_classes=m)
        if config.backbone == "unet":  # pix2pix's N(0, 0.02); the residual U-Net keeps
            init_weights(self.autoencoder)  # PyTorch's fan-in default, as Bi-DPM's network
        init_weights(self.discriminator)
        self.gan_loss = GANLoss(config.gan_mode)

    def inference_modules(self) -> list[str]:
        return ["autoencoder"]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return [torch.optim.Adam(self.autoencoder.parameters(), lr=c.train.lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_dis, betas=betas)]

    def lr_lambda(self, step: int) -> float:
        if self.config.decay_start >= 1.0:  # the paper's constant rate, also past max_steps
            return 1.0
        return constant_then_linear_decay(step, self.config.train.max_steps, self.config.decay_start)

    def code(self, index: torch.Tensor) -> torch.Tensor:
        """One-hot codes ``(B, M)`` float32 of modality indices ``(B,)``."""
        return F.one_hot(index.long().flatten(), len(self.modalities)).float()

    def adversarial_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        c = self.config
        x, y = batch["source"], batch["target"]
        src, tgt = batch["source_code"].long().flatten(), batch["target_code"].long().flatten()
        m_x, m_y = self.code(src).to(x), self.code(tgt).to(x)
        enc_x = self.autoencoder.encoder(x)
        fake = self.autoencoder.decoder(enc_x, m_y)

        # The discriminator trains only while its terms weigh in the autoencoder's loss: with
        # beta and lambda1 both 0 (the cpu presets) it would cost a third of each step and
        # change nothing the autoencoder learns. Resumed with them on, it starts untrained.
        uses_dis = self.optimizer_steps_per_batch(c) == 2
        logs: dict[str, torch.Tensor] = {}
        loss_adv = loss_mc = fake.new_zeros(())
        if uses_dis:
            # Eq. 7: real against synthesized, and the modality of real images.
            self.discriminator.requires_grad_(True)
            real_score, real_class = self.discriminator.classify(x)
            fake_score, fake_class = self.discriminator.classify(fake.detach())
            loss_adv_d = 0.5 * (self.gan_loss(real_score, True) + self.gan_loss(fake_score, False))
            loss_mc_d = F.cross_entropy(real_class, src)
            if c.dis_classifies_fakes:
                loss_mc_d = loss_mc_d + F.cross_entropy(fake_class, tgt)
            ctx.optimize(1, loss_adv_d + c.lambda2 * loss_mc_d)
            with torch.no_grad():
                logs = {"d_adv": loss_adv_d.detach(), "d_mc": loss_mc_d.detach(),
                        "d_accuracy": (real_class.argmax(1) == src).float().mean()}

            # Eq. 6 and 5, with gradients through Dis but not into its weights.
            self.discriminator.requires_grad_(False)
            score, logits = self.discriminator.classify(fake)
            loss_adv = self.gan_loss(score, True)
            loss_mc = F.cross_entropy(logits, tgt)
        loss_l1 = F.l1_loss(fake, y)
        loss_brain = fake.new_zeros(())
        if c.lambda_brain > 0 and "mask" in batch:
            brain = batch["mask"].to(fake.dtype)
            loss_brain = ((fake - y).abs() * brain).sum() / brain.sum().clamp(min=1.0)
        loss_ssim = fake.new_zeros(())
        if c.lambda_ssim > 0:
            loss_ssim = 1.0 - ssim(fake, y, data_range=2.0)
        enc_fake = self.autoencoder.encoder(fake)
        loss_cycle = F.l1_loss(self.autoencoder.decoder(enc_fake, m_x), x)
        loss_disen = disentanglement_loss(enc_fake, enc_x)
        loss = (c.lambda_l1 * loss_l1 + c.lambda_brain * loss_brain
                + c.lambda_ssim * loss_ssim + c.alpha * loss_cycle + c.beta * loss_adv
                + c.lambda1 * loss_mc + c.lambda_disentangle * loss_disen)
        ctx.optimize(0, loss)
        self.discriminator.requires_grad_(True)
        return {"loss": loss.detach(), "l1": loss_l1.detach(), "brain_l1": loss_brain.detach(),
                "ssim_loss": loss_ssim.detach(),
                "cycle": loss_cycle.detach(),
                "g_adv": loss_adv.detach(), "g_mc": loss_mc.detach(),
                "disentangle": loss_disen.detach(), **logs}

    @classmethod
    def optimizer_steps_per_batch(cls, config: UnifiedConfig) -> int:
        """Two (autoencoder, discriminator), or one while the discriminator's terms weigh
        nothing in the autoencoder's loss (``beta`` and ``lambda1`` 0) and it sits out."""
        return 2 if config.beta > 0 or config.lambda1 > 0 else 1

    def target_index(self, request: SynthesisRequest) -> int:
        """The target's index into ``modalities`` (the request's ``target_code``)."""
        index = request.target_code
        if index is None or not 0 <= int(index) < len(self.modalities):
            raise UserError(f"the unified model needs a target among {', '.join(self.modalities)}; "
                            "give --to with one of them")
        return int(index)

    @torch.no_grad()
    def synthesize(self, x: torch.Tensor, request: SynthesisRequest) -> torch.Tensor:
        index = torch.full((x.shape[0],), self.target_index(request), device=x.device)
        return self.autoencoder(x, self.code(index).to(x)).unsqueeze(0)

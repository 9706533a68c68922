"""RevGAN in 3D (van der Ouderaa, MSc thesis 2019): one reversible network, both directions.

Per-domain encoders and decoders around one invertible core C of additive-coupling
blocks (eq. 8-10):

    F = Dec_B o C o Enc_A        (source A -> target B, eq. 9)
    G = Dec_A o C^-1 o Enc_B     (target B -> source A, eq. 10)

One set of weights runs both ways (``--reverse``, or ``--to`` the checkpoint's source).
The core's backward pass recomputes activations instead of storing them
(:mod:`synth_core.nn.reversible`), so its activation memory does not grow with depth.

Two generator variants (section 4.1): ``resnet`` (the 3D reversible ResNet: a 5^3
convolution to ``features`` channels and a stride-2 3^3 convolution as encoder, a
transposed convolution and a 5^3 convolution with tanh as decoder) and ``srcnn`` (the
reversible 3D SRCNN for super-resolution and kernel work: a 3^3 convolution to
``features`` channels with instance norm and ReLU as encoder, a 1^3 convolution as
decoder, at full resolution).

Objectives, chosen per batch from whether its items are paired (``batch["paired"]``):
paired (eq. 11, pix2pix both ways): ``lambda_l1 * (|F(a) - b|_1 + |G(b) - a|_1) +
GAN(F, D_B) + GAN(G, D_A)``; unpaired (eq. 12, CycleGAN both ways): GAN terms plus
``lambda_cycle`` times the cycle losses. Adam 2e-4, betas (0.5, 0.999), constant then
linear decay over the second half (section 4.3). Choices the paper leaves open are
listed in docs/methods/revgan.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from synth_core.methods._adversarial import (
    AdversarialMethod,
    AdversarialSettings,
    cycle_generator_loss,
    two_domain_step,
)
from synth_core.methods.base import (
    Capabilities,
    StepContext,
    SynthesisRequest,
    TrainSettings,
    register,
)
from synth_core.nn import (
    ConvBlock,
    GANLoss,
    ImagePool,
    PatchDiscriminator,
    ReversibleCore,
    check_spatial_size,
    conv_nd,
    init_weights,
)
from synth_core.nn.ssim import ssim

VARIANTS = ("resnet", "srcnn")


@dataclass
class RevGANConfig(AdversarialSettings):
    """RevGAN settings; ``paper`` preset = the thesis' 3D ResNet at width 32.

    Attributes:
        variant: "resnet" (3D reversible ResNet) or "srcnn" (reversible 3D SRCNN).
        features: encoder width, the thesis' ngf / K (32). The ResNet's stride-2
            convolution doubles it, so its core has ``2 * features`` channels.
        depth: reversible blocks in the core (thesis: 2, 4, 8 in 3D; 4 here by default).
        residual: add the input to the output, ``y = x + Dec(C(Enc(x)))`` (not in the
            thesis; our choice for the cpu SRCNN presets, where the target is the source
            plus detail).
        memory_saving: recompute the core's activations in backward (the thesis' point);
            False stores them (used only to measure the difference).
        lambda_l1: weight of the L1 terms of the paired objective (eq. 11; thesis: 100).
        lambda_cycle: weight of the cycle terms of the unpaired objective (eq. 12;
            thesis: 10).
        gan_weight: weight of the adversarial terms (1; 0 gives the thesis' "w/o L_GAN"
            rows of Table 4).
        lambda_ssim: weight of ``1 - SSIM`` of each direction added to the paired
            objective (not in the thesis; 0 there). SSIM with the scoring's 7-voxel
            uniform window on the [-1, 1] training range, as pix2pix's ``lambda_ssim``.
        pool_size: history of generated volumes shown to the discriminators (CycleGAN's
            50; our choice, the thesis is silent).
        disc_features: PatchGAN width (our choice 32, the thesis is silent).
    """

    variant: str = "resnet"
    features: int = 32
    depth: int = 4
    residual: bool = False
    memory_saving: bool = True
    lambda_l1: float = 100.0
    lambda_cycle: float = 10.0
    gan_weight: float = 1.0
    lambda_ssim: float = 0.0
    pool_size: int = 50
    disc_features: int = 32
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(max_steps=200_000, lr=2e-4, batch_size=1, multiple=2)
    )


def _paper() -> RevGANConfig:
    return RevGANConfig()


def _srcnn_paper() -> RevGANConfig:
    return RevGANConfig(variant="srcnn", train=TrainSettings(max_steps=200_000, multiple=1))


def _cpu() -> RevGANConfig:
    # The ResNet variant at width 16, 4 blocks, trained on whole volumes (the 4 mm `small`
    # phantom is 48x64x48, a few seconds a step on one CPU thread) so that training and
    # translation see the same instance-norm statistics, on the reconstruction terms alone
    # (L1 plus SSIM; no discriminators): in the few hundred steps a CPU budget gives, the
    # adversarial terms cost SSIM before they add anything (as for pix2pix's `cpu-l1`).
    config = _cpu_gan()
    config.gan_weight = 0.0
    config.lambda_ssim = 200.0
    config.train = TrainSettings(max_steps=400, lr=1e-3, batch_size=1, val_every=50,
                                 checkpoint_every=25, multiple=2, patch_size=None)
    return config


def _cpu_gan() -> RevGANConfig:
    # The thesis' objective with both GAN terms at width 16 and 4 blocks on 32^3 patches
    # (the ResNet variant halves them to 16^3 in the core), 300 steps: minutes on one CPU
    # thread; translation runs in 32^3 windows.
    return RevGANConfig(
        features=16, depth=4, disc_features=16,
        train=TrainSettings(max_steps=300, lr=2e-4, batch_size=1, val_every=100,
                            checkpoint_every=50, multiple=2, patch_size=(32, 32, 32)),
    )


def _srcnn_cpu() -> RevGANConfig:
    # Super-resolution and CT kernels: the identity is already a fair answer, so the input
    # is added to the output and the network learns the correction (VDSR's residual
    # learning). No normalisation: both tasks are close to linear filters whose output
    # scales with the input's contrast, which instance norm would divide away (it also
    # sees a different field of view in a 24^3 patch than in a whole volume). Without
    # normalisation Adam tolerates lr 1e-3. Width 8, 24^3 patches: a step takes a fraction
    # of a second on one CPU thread, and the weights are a few hundred kB.
    return RevGANConfig(
        variant="srcnn", features=8, depth=4, residual=True, disc_features=8, norm="none",
        train=TrainSettings(max_steps=800, lr=1e-3, batch_size=1, val_every=200,
                            checkpoint_every=100, multiple=1, patch_size=(24, 24, 24)),
    )


def _tiny() -> RevGANConfig:
    return RevGANConfig(
        features=4, depth=2, disc_features=4, disc_layers=1, pool_size=2,
        train=TrainSettings(max_steps=4, val_every=2, checkpoint_every=2, multiple=2),
    )


class _Encoder(nn.Sequential):
    """Enc_A / Enc_B: image ``(B, 1, *S)`` -> features ``(B, core_channels, *S')``."""

    def __init__(self, variant: str, features: int, norm: str) -> None:
        if variant == "resnet":
            super().__init__(
                ConvBlock(3, 1, features, 5, padding_mode="reflect", norm=norm),
                ConvBlock(3, features, 2 * features, 3, stride=2, padding=1, norm=norm),
            )
        else:
            super().__init__(ConvBlock(3, 1, features, 3, padding_mode="reflect", norm=norm))


class _Decoder(nn.Sequential):
    """Dec_A / Dec_B: features ``(B, core_channels, *S')`` -> image ``(B, 1, *S)``."""

    def __init__(self, variant: str, features: int, norm: str) -> None:
        if variant == "resnet":
            super().__init__(
                ConvBlock(3, 2 * features, features, 3, stride=2, padding=1, norm=norm,
                          transposed=True, output_padding=1),
                conv_nd(3)(features, 1, 5, padding=2, padding_mode="reflect"),
                nn.Tanh(),
            )
        else:
            super().__init__(conv_nd(3)(features, 1, 1))


@register
class RevGAN(AdversarialMethod):
    key = "revgan"
    title = "RevGAN (3D reversible core, both directions from one network)"
    paper = ("van der Ouderaa, Reversible GANs for memory-efficient image-to-image translation "
             "(thesis; CVPR 2019 with Worrall)")
    capabilities = Capabilities(spatial=("3d",), data=("paired", "unpaired"),
                                bidirectional=True, adversarial=True)
    config_class = RevGANConfig
    presets = {"cpu": _cpu, "cpu-gan": _cpu_gan, "paper": _paper, "srcnn-cpu": _srcnn_cpu,
               "srcnn-paper": _srcnn_paper, "tiny": _tiny}

    def __init__(self, config: RevGANConfig, source: str, target: str) -> None:
        super().__init__(config, source, target)
        if config.variant not in VARIANTS:
            raise ValueError(f"unknown RevGAN variant {config.variant!r}; choose one of {VARIANTS}")
        if config.train.spatial != "3d":
            raise ValueError("RevGAN is a 3D method; set train.spatial to '3d'")
        core_channels = config.features * (2 if config.variant == "resnet" else 1)
        self.encoder_a = _Encoder(config.variant, config.features, config.norm)
        self.encoder_b = _Encoder(config.variant, config.features, config.norm)
        self.decoder_a = _Decoder(config.variant, config.features, config.norm)
        self.decoder_b = _Decoder(config.variant, config.features, config.norm)
        self.core = ReversibleCore(3, core_channels, config.depth, hidden=core_channels // 2,
                                   norm=config.norm, memory_saving=config.memory_saving)
        self.discriminator_a = PatchDiscriminator(3, 1, features=config.disc_features,
                                                  n_layers=config.disc_layers, norm=config.norm)
        self.discriminator_b = PatchDiscriminator(3, 1, features=config.disc_features,
                                                  n_layers=config.disc_layers, norm=config.norm)
        for net in self.children():
            init_weights(net)  # N(0, 0.02) (section 4.3) ...
        self.core.zero_last()  # ... then each block starts as the identity (section 4.1)
        self.gan_loss = GANLoss(config.gan_mode)
        self.pool_a = ImagePool(config.pool_size)
        self.pool_b = ImagePool(config.pool_size)

    # -- the two directions ---------------------------------------------------------
    def _multiple(self) -> int:
        return 2 if self.config.variant == "resnet" else 1

    def _check(self, x: torch.Tensor) -> None:
        check_spatial_size(x, 3, multiple=self._multiple(), minimum=3 * self._multiple(),
                           context=f"for RevGAN's {self.config.variant} variant")

    def a_to_b(self, x: torch.Tensor) -> torch.Tensor:
        """F = Dec_B(C(Enc_A(x))) (eq. 9): ``(B, 1, *S) -> (B, 1, *S)``, normalised intensities."""
        self._check(x)
        y = self.decoder_b(self.core(self.encoder_a(x)))
        return x + y if self.config.residual else y

    def b_to_a(self, y: torch.Tensor) -> torch.Tensor:
        """G = Dec_A(C^-1(Enc_B(y))) (eq. 10): ``(B, 1, *S) -> (B, 1, *S)``."""
        self._check(y)
        x = self.decoder_a(self.core.inverse(self.encoder_b(y)))
        return y + x if self.config.residual else x

    def inference_modules(self) -> list[str]:
        return ["encoder_a", "encoder_b", "core", "decoder_a", "decoder_b"]

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain(*(getattr(self, n).parameters() for n in self.inference_modules()))

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain(self.discriminator_a.parameters(), self.discriminator_b.parameters())

    # -- training ---------------------------------------------------------------------
    def adversarial_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        c = self.config
        real_a, real_b = batch["source"], batch["target"]
        paired = bool(torch.as_tensor(batch.get("paired", True)).all())
        # A zero weight drops the adversarial terms (Table 4's "w/o L_GAN"): the
        # discriminators are then neither run nor trained (optimizer_steps_per_batch).
        gan = _Weighted(self.gan_loss, c.gan_weight)
        if c.gan_weight == 0:
            disc_a = disc_b = _no_discriminator
        else:
            disc_a, disc_b = self.discriminator_a, self.discriminator_b

        def generator_loss() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor,
                                      torch.Tensor]:
            if not paired:  # eq. 12: CycleGAN in both directions, through the one core
                return cycle_generator_loss(self.a_to_b, self.b_to_a, disc_a, disc_b, real_a,
                                            real_b, gan, c.lambda_cycle)
            # eq. 11: pix2pix in both directions
            fake_b, fake_a = self.a_to_b(real_a), self.b_to_a(real_b)
            loss_gan = gan(disc_b(fake_b), True) + gan(disc_a(fake_a), True)
            loss_l1 = F.l1_loss(fake_b, real_b) + F.l1_loss(fake_a, real_a)
            parts = {"g_gan": loss_gan.detach(), "g_l1": loss_l1.detach()}
            loss = loss_gan + c.lambda_l1 * loss_l1
            if c.lambda_ssim > 0:  # the training range [-1, 1]: data range 2
                loss_ssim = (2.0 - ssim(fake_b, real_b, data_range=2.0)
                             - ssim(fake_a, real_a, data_range=2.0))
                parts["g_ssim"] = loss_ssim.detach()
                loss = loss + c.lambda_ssim * loss_ssim
            return loss, parts, fake_a, fake_b

        if c.gan_weight == 0:
            loss, parts, _, _ = generator_loss()
            ctx.optimize(0, loss)
            return {"loss": loss.detach(), **parts}
        return two_domain_step(self, ctx, real_a, real_b, generator_loss)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        optimizers = super().configure_optimizers()
        return optimizers[:1] if self.config.gan_weight == 0 else optimizers

    @classmethod
    def optimizer_steps_per_batch(cls, config: RevGANConfig) -> int:
        """Two (generators, discriminators), or one when ``gan_weight`` is 0 and the
        discriminators sit out."""
        return 1 if config.gan_weight == 0 else 2

    # -- inference --------------------------------------------------------------------
    @torch.no_grad()
    def synthesize(self, x: torch.Tensor, request: SynthesisRequest) -> torch.Tensor:
        return (self.b_to_a(x) if request.reverse else self.a_to_b(x)).unsqueeze(0)


def _no_discriminator(x: torch.Tensor) -> torch.Tensor:
    """Stands in for a discriminator when ``gan_weight`` is 0 (its verdict is weighted by 0)."""
    return x.new_zeros(())


class _Weighted(GANLoss):
    """A GAN loss scaled by a weight, with the interface of :class:`GANLoss`."""

    def __init__(self, loss: GANLoss, weight: float) -> None:
        super().__init__(loss.mode, loss.real_label, loss.fake_label)
        self.weight = float(weight)

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if self.weight == 0:
            return torch.zeros((), device=prediction.device)
        return self.weight * super().forward(prediction, target_is_real)

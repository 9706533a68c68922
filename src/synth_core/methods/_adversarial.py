"""What pix2pix, CycleGAN and RevGAN share: adversarial settings, optimisers, the cycle losses.

* :class:`AdversarialSettings`: the discriminator, GAN loss and Adam / learning-rate
  schedule fields every GAN method's config carries (each config subclasses it, so the
  fields stay top-level in the config and in model cards written before this class).
* :class:`AdversarialMethod`: the two Adam optimisers (generators, discriminators) and
  the constant-then-linear-decay schedule of pix2pix and CycleGAN.
* :func:`cycle_generator_loss` and :func:`cycle_discriminator_loss`: CycleGAN's
  unpaired objective (eq. 3 of Zhu et al.) for any pair of translators, so CycleGAN's two
  generators and RevGAN's two directions through one core (the RevGAN thesis, eq. 12) use one
  composition; :func:`two_domain_step` runs one training step of such a pair against the
  two discriminators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from synth_core.methods.base import Method, StepContext, constant_then_linear_decay
from synth_core.nn import GANLoss, ImagePool

Translator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AdversarialSettings:
    """Discriminator and optimisation settings of the GAN methods (pix2pix / CycleGAN paper values).

    Attributes:
        disc_features, disc_layers: PatchGAN width and stride-2 layers (papers: 64, 3 =
            70-voxel patches).
        gan_mode: "lsgan" (CycleGAN) or "vanilla" (pix2pix).
        beta1, beta2: Adam betas (papers: 0.5, 0.999).
        decay_start: fraction of training after which the learning rate decays linearly
            to zero (papers: 100 + 100 epochs, i.e. 0.5).
        norm: "instance" (batch size 1 makes batch norm act as instance norm anyway).
    """

    disc_features: int = 64
    disc_layers: int = 3
    gan_mode: str = "lsgan"
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5
    norm: str = "instance"


class AdversarialMethod(Method):
    """A method with generators and discriminators trained in turn by two Adam optimisers.

    Subclasses name their networks with :meth:`generator_parameters` and
    :meth:`discriminator_parameters`; optimiser 0 steps the generators, 1 the
    discriminators (the order ``adversarial_step`` uses).
    """

    def generator_parameters(self) -> Iterable[nn.Parameter]:
        raise NotImplementedError

    def discriminator_parameters(self) -> Iterable[nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return [torch.optim.Adam(list(self.generator_parameters()), lr=c.train.lr, betas=betas),
                torch.optim.Adam(list(self.discriminator_parameters()), lr=c.train.lr, betas=betas)]

    def lr_lambda(self, step: int) -> float:
        return constant_then_linear_decay(step, self.config.train.max_steps, self.config.decay_start)


def cycle_generator_loss(
    a_to_b: Translator, b_to_a: Translator, disc_a: nn.Module, disc_b: nn.Module,
    real_a: torch.Tensor, real_b: torch.Tensor, gan_loss: GANLoss, lambda_cycle: float,
    lambda_identity: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The generators' unpaired objective (CycleGAN eq. 3; RevGAN thesis eq. 12).

    ``L = GAN(D_B, F(a)) + GAN(D_A, G(b)) + lambda_cycle * (|G(F(a)) - a|_1 + |F(G(b)) - b|_1)
    + lambda_cycle * lambda_identity * (|F(b) - b|_1 + |G(a) - a|_1)``, with F = ``a_to_b``
    and G = ``b_to_a``; the discriminators' weights should not require gradients here.

    Args:
        real_a, real_b: ``(B, C, *S)`` batches of each domain (unrelated when unpaired).

    Returns:
        (total loss, its detached parts ``g_gan``, ``cycle``, ``identity``, fake_a, fake_b).
    """
    fake_b = a_to_b(real_a)
    fake_a = b_to_a(real_b)
    loss_gan = gan_loss(disc_b(fake_b), True) + gan_loss(disc_a(fake_a), True)
    loss_cycle = F.l1_loss(b_to_a(fake_b), real_a) + F.l1_loss(a_to_b(fake_a), real_b)
    loss = loss_gan + lambda_cycle * loss_cycle
    loss_idt = torch.zeros((), device=real_a.device)
    if lambda_identity > 0:
        loss_idt = F.l1_loss(a_to_b(real_b), real_b) + F.l1_loss(b_to_a(real_a), real_a)
        loss = loss + lambda_cycle * lambda_identity * loss_idt
    parts = {"g_gan": loss_gan.detach(), "cycle": loss_cycle.detach(), "identity": loss_idt.detach()}
    return loss, parts, fake_a, fake_b


def cycle_discriminator_loss(
    disc_a: nn.Module, disc_b: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor,
    fake_a: torch.Tensor, fake_b: torch.Tensor, pool_a: ImagePool, pool_b: ImagePool,
    gan_loss: GANLoss,
) -> torch.Tensor:
    """Both discriminators' loss, halved (CycleGAN): real against a history of fakes."""
    old_b = pool_b.query(fake_b.detach())
    old_a = pool_a.query(fake_a.detach())
    return 0.5 * (gan_loss(disc_b(real_b), True) + gan_loss(disc_b(old_b), False)
                  + gan_loss(disc_a(real_a), True) + gan_loss(disc_a(old_a), False))


GeneratorLoss = Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]


def two_domain_step(method: nn.Module, ctx: StepContext, real_a: torch.Tensor,
                    real_b: torch.Tensor, generator_loss: GeneratorLoss) -> dict[str, torch.Tensor]:
    """One step of two translators against ``method.discriminator_a`` and ``_b`` (CycleGAN,
    RevGAN): ``generator_loss()`` -> (loss, logged parts, fake_a, fake_b) with the
    discriminators frozen, optimiser 0; then both discriminators on real images against the
    pooled fakes (``method.pool_a``, ``pool_b``, ``gan_loss``), optimiser 1."""
    discs = (method.discriminator_a, method.discriminator_b)
    for d in discs:
        d.requires_grad_(False)
    loss, parts, fake_a, fake_b = generator_loss()
    ctx.optimize(0, loss)
    for d in discs:
        d.requires_grad_(True)
    loss_d = cycle_discriminator_loss(method.discriminator_a, method.discriminator_b, real_a,
                                      real_b, fake_a, fake_b, method.pool_a, method.pool_b,
                                      method.gan_loss)
    ctx.optimize(1, loss_d)
    return {"loss": loss.detach(), **parts, "d": loss_d.detach()}

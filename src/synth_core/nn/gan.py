"""Adversarial training pieces shared by the GAN methods: the loss, the image history pool and
the pix2pix / CycleGAN weight initialisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES: tuple[str, ...] = ("lsgan", "vanilla")
INIT_KINDS: tuple[str, ...] = ("normal", "xavier", "kaiming", "orthogonal")


class GANLoss(nn.Module):
    """The adversarial loss against a constant target, averaged over every output voxel.

    For a discriminator output ``d`` of any shape (a PatchGAN map ``(B, 1, *S')``) and a
    target label ``y`` (``real_label`` or ``fake_label``, broadcast to ``d``'s shape):

    - ``"lsgan"`` (Mao et al., 2017; CycleGAN's choice): ``mean((d - y)**2)``.
    - ``"vanilla"`` (Goodfellow et al., 2014; pix2pix's choice): binary cross-entropy of
      ``sigmoid(d)`` against ``y``, ``mean(-y log sigmoid(d) - (1-y) log(1 - sigmoid(d)))``,
      computed from the logits for stability; the discriminator has no sigmoid.

    The generator calls it with ``target_is_real=True`` on its fakes (the non-saturating
    form of the minimax game).
    """

    def __init__(self, mode: str = "lsgan", real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN loss mode {mode!r}; choose one of {', '.join(GAN_MODES)}")
        self.mode = mode
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """Scalar loss of ``prediction`` (discriminator output, any shape) against real or fake."""
        label = self.real_label if target_is_real else self.fake_label
        target = torch.full_like(prediction, label)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al., 2017).

    The discriminator is shown a mix of the newest fakes and older ones, so it does not
    forget what earlier generators produced and the two networks oscillate less. Each
    image of a batch ``(B, C, *S)`` is handled on its own: while the pool holds fewer than
    ``size`` images it is stored and returned; after that, with probability 0.5 a random
    stored image is returned and replaced by the new one, else the new one is returned.
    Draws come from torch's global generator, so ``torch.manual_seed`` makes it repeatable.
    Stored images are detached copies. ``size=0`` disables the pool (the input is returned).
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"ImagePool size must not be negative, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch shaped like ``images`` drawn from the new images and the history."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0).clone()
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif torch.rand(()).item() < 0.5:
                index = int(torch.randint(len(self.images), ()).item())
                out.append(self.images[index])
                self.images[index] = image
            else:
                out.append(image)
        return torch.cat(out, dim=0)


def init_weights(module: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise convolution / linear weights and norm scales in place, as pix2pix does.

    Convolutions (also transposed) and linear layers: weights from ``kind`` with ``gain``
    (``"normal"``: N(0, gain**2), pix2pix and CycleGAN's 0.02; ``"xavier"``: Glorot normal
    with that gain; ``"kaiming"``: He normal for ReLU, fan-in, gain ignored;
    ``"orthogonal"``), biases 0. Norm layers with affine parameters (batch, group,
    affine instance): scale N(1, gain**2), shift 0. Call it before any deliberate zero
    initialisation (a reversible block's last layer), which it would overwrite.

    Returns:
        ``module``, for chaining.
    """
    if kind not in INIT_KINDS:
        raise ValueError(f"unknown init {kind!r}; choose one of {', '.join(INIT_KINDS)}")
    conv_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d, nn.Linear)
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)

    def init_one(m: nn.Module) -> None:
        if isinstance(m, conv_types):
            if kind == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif kind == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif kind == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norm_types) and getattr(m, "weight", None) is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    module.apply(init_one)
    return module

"""The pieces of DUAL-GLOW around its two flows: Gaussian log-density, relation networks, age heads.

* ``RelationNet`` maps an MRI latent z_m,i to the mean and log-scale of the Gaussian
  prior of the PET latent z_p,i at the same level (eq. 6 and 17, "hierarchical
  relation networks").
* ``AgeRegressor`` is the small "discriminator" of sec. 3 that reads age from a latent;
  behind a gradient-reversal layer it removes age from that latent, without one it
  keeps age there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(
    z: Tensor, mean: Tensor | None = None, log_scale: Tensor | None = None
) -> Tensor:
    """Sum over all but the batch axis of log N(z; mean, exp(log_scale)^2), in nats, shape (B,).

    ``mean`` and ``log_scale`` default to 0 (the standard normal). They broadcast against z.
    """
    if mean is None:
        mean = torch.zeros_like(z)
    if log_scale is None:
        log_scale = torch.zeros_like(z)
    log_p = -0.5 * (LOG_2PI + 2.0 * log_scale + (z - mean) ** 2 * torch.exp(-2.0 * log_scale))
    return log_p.expand_as(z).reshape(z.shape[0], -1).sum(dim=1)


def coordinates_like(like: Tensor) -> Tensor:
    """(B, 3, d, h, w): each voxel's position along the three axes, from -1 to 1."""
    axes = [torch.linspace(-1.0, 1.0, n, device=like.device, dtype=like.dtype)
            for n in like.shape[2:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return grid.unsqueeze(0).expand(like.shape[0], -1, -1, -1, -1)


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
    for p in conv.parameters():
        nn.init.zeros_(p)
    return conv


class RelationNet(nn.Module):
    """A 3D CNN: conditioning volume (B, C_in, d, h, w) -> (mean, log_scale), each (B, C_out, d, h, w).

    The last convolution starts at zero, so the prior starts as N(0, I) and training
    begins from plain Glow. With ``learned_scale=False`` the network gives only the
    mean and ``log_scale`` is exactly 0 (scale 1).

    Args:
        in_channels: channels of the conditioning input (an MRI latent, plus age).
        out_channels: channels of the PET latent it models.
        hidden_channels: 0 for a single 3x3x3 convolution (the paper's ADNI setting),
            else conv -> ReLU -> conv with this many hidden channels.
        learned_scale: learn sigma_theta of eq. 6, or fix it at 1.
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int, learned_scale: bool
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.learned_scale = learned_scale
        n_out = 2 * out_channels if learned_scale else out_channels
        if hidden_channels == 0:
            self.net: nn.Module = _zero_conv(in_channels, n_out)
        else:
            self.net = nn.Sequential(
                nn.Conv3d(in_channels, hidden_channels, kernel_size=3, padding=1),
                nn.ReLU(),
                _zero_conv(hidden_channels, n_out),
            )

    def forward(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(condition)
        if not self.learned_scale:
            return h, torch.zeros_like(h)
        return h[:, : self.out_channels], h[:, self.out_channels :]


class AgeRegressor(nn.Module):
    """Latent (B, C, d, h, w) -> predicted normalised age (B,).

    Two 3x3x3 convolutions with ReLU, global average pooling, a linear layer. The paper
    calls these discriminators (MLPs "with an adaptive number of layers"); age is
    continuous, so this is a regression trained with MSE on the age in [-1, 1]. With
    ``coordinates`` the first convolution also reads each voxel's normalised position,
    so that the pooled features can depend on where a pattern is (the size of the
    ventricles, say), not only on how much of it there is. With ``grid`` > 0 the head is
    instead linear in the latent averaged over ``grid``**3 cells: a location-aware readout
    like the ridge probes of the measurements, which generalise where the pooled
    convolutional head does not (docs/methods/dual-glow.md, "What we tried").
    """

    def __init__(self, in_channels: int, hidden_channels: int, coordinates: bool = False,
                 grid: int = 0) -> None:
        super().__init__()
        self.coordinates = coordinates
        self.grid = grid
        if grid > 0:  # a linear readout of the latent averaged over grid**3 cells
            self.readout = nn.Sequential(nn.AdaptiveAvgPool3d(grid), nn.Flatten(),
                                         nn.Linear(in_channels * grid**3, 1))
            return
        self.features = nn.Sequential(
            nn.Conv3d(in_channels + (3 if coordinates else 0), hidden_channels, kernel_size=3,
                      padding=1),
            nn.ReLU(),
            nn.Conv3d(hidden_channels, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden_channels, 1)

    def forward(self, latent: Tensor) -> Tensor:
        if self.grid > 0:
            # Bounded like the normalised age: behind gradient reversal the flow maximises
            # this head's error, and an unbounded linear output lets it do so without limit
            # by scaling the latent (measured: the age loss reached 1e29 within 100 steps).
            return torch.tanh(self.readout(latent)).squeeze(1)
        if self.coordinates:
            latent = torch.cat([latent, coordinates_like(latent)], dim=1)
        pooled = self.features(latent).mean(dim=(2, 3, 4))
        return self.head(pooled).squeeze(1)

"""Invertible 3D layers of a Glow flow: squeeze, actnorm, LU 1x1x1 conv, affine coupling, split.

Every bijective layer has ``forward(x) -> (y, logdet)`` and ``inverse(y) -> x``, where
``x`` and ``y`` are volumes of shape (B, C, D, H, W) and ``logdet`` is
``log|det dy/dx|`` per sample, shape (B,), in nats (eq. 4-5 of DUAL-GLOW, Sun et al.
ICCV 2019; the layers themselves are Glow's, Kingma & Dhariwal 2018, made 3D).
``Split3d`` is the exception: it is volume-preserving but returns two tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _per_sample(value: Tensor, batch: int) -> Tensor:
    """A logdet shared by every sample (a scalar) as one value per sample, shape (B,)."""
    return value.expand(batch)


class Squeeze3d(nn.Module):
    """Space-to-depth: every 2x2x2 block of voxels becomes 8 channels.

    (B, C, D, H, W) -> (B, 8C, D/2, H/2, W/2). A permutation, so logdet = 0.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, d, h, w = x.shape
        if d % 2 or h % 2 or w % 2:
            raise ValueError(f"Squeeze3d needs even spatial sizes, got {(d, h, w)}")
        y = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2)
        y = y.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * 8, d // 2, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c8, d, h, w = y.shape
        c = c8 // 8
        x = y.reshape(b, c, 2, 2, 2, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(b, c, d * 2, h * 2, w * 2)


class ActNorm3d(nn.Module):
    """Per-channel affine normalisation, ``y = (x + bias) * exp(log_scale)`` (Glow sec. 3.1).

    On the first forward pass in training mode, ``bias`` and ``log_scale`` are set from
    the batch so that every channel has zero mean and unit variance. ``log_scale`` is
    ``-log(std + eps)``: a channel that is constant in the first batch (an all-zero
    background, a flat channel) gets a large but finite scale instead of a division by
    zero. The ``initialized`` buffer records that this happened, so it survives
    ``state_dict`` save and load. In eval mode an uninitialised layer is the identity:
    inference never rewrites weights.

    logdet = D * H * W * sum(log_scale).
    """

    initialized: Tensor

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        # Cached so the common path needs no device-to-host sync per layer per step.
        self._known_initialized = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._known_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    def is_initialized(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized.item())
        return self._known_initialized

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and log-scale from ``x`` (B, C, D, H, W): per-channel mean and std."""
        mean = x.mean(dim=(0, 2, 3, 4), keepdim=True)
        std = x.std(dim=(0, 2, 3, 4), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._known_initialized = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.is_initialized():
            self.initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        voxels = x.shape[2] * x.shape[3] * x.shape[4]
        return y, _per_sample(voxels * self.log_scale.sum(), x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv1x1x1LU(nn.Module):
    """Invertible 1x1x1 convolution with an LU-parametrised weight (Glow sec. 3.2).

    ``W = P @ L @ (U + diag(sign_s * exp(log_s)))``: the permutation ``P`` and the signs
    ``sign_s`` are fixed buffers, ``L`` is unit lower-triangular, ``U`` strictly upper,
    and ``log_s`` is learned, so ``W`` stays invertible whatever the optimiser does and
    logdet = D * H * W * sum(log_s) costs O(C). Starts from a random rotation.
    """

    permutation: Tensor
    sign_s: Tensor
    lower_mask: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        permutation, lower, upper = torch.linalg.lu(rotation)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", permutation.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer(
            "lower_mask", torch.tril(torch.ones(channels, channels), -1), persistent=False
        )
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The (C, C) matrix W, in ``dtype`` (default: the parameters' dtype)."""
        dtype = dtype or self.log_s.dtype
        mask = self.lower_mask.to(dtype)
        eye = torch.eye(mask.shape[0], dtype=dtype, device=mask.device)
        lower = self.lower.to(dtype) * mask + eye
        diag = self.sign_s.to(dtype) * torch.exp(self.log_s.to(dtype))
        upper = self.upper.to(dtype) * mask.T + torch.diag(diag)
        return self.permutation.to(dtype) @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = x.shape[1]
        y = F.conv3d(x, self.weight(x.dtype).view(c, c, 1, 1, 1))
        voxels = x.shape[2] * x.shape[3] * x.shape[4]
        return y, _per_sample(voxels * self.log_s.sum().to(x.dtype), x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        c = y.shape[1]
        # Inverting in float64 keeps inverse(forward(x)) at float32 round-off even for
        # the 512-channel top level of the paper preset.
        w_inv = torch.linalg.inv(self.weight(torch.float64)).to(y.dtype)
        return F.conv3d(y, w_inv.view(c, c, 1, 1, 1))


class AffineCoupling3d(nn.Module):
    """Affine coupling, eq. 13-15: ``y_a = x_a``, ``y_b = x_b * scale(x_a) + shift(x_a)``.

    ``x_a`` is the first ``C // 2`` channels. ``NN`` is three 3D convolutions
    (3x3x3, 1x1x1, 3x3x3, as in the paper's appendix 6.2) giving ``shift`` and the
    raw scale ``h``; the last convolution starts at zero so every coupling starts near
    the identity. The paper writes ``scale = exp(s)``; like Glow's code we use
    ``scale = sigmoid(h + 2)``, which lies in (0, 1) and cannot overflow.
    logdet = sum over voxels and channels of log(scale).
    """

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"AffineCoupling3d needs at least 2 channels, got {channels}")
        self.n_keep = channels // 2
        self.n_change = channels - self.n_keep
        last = nn.Conv3d(hidden_channels, 2 * self.n_change, kernel_size=3, padding=1)
        for p in last.parameters():
            nn.init.zeros_(p)
        self.net = nn.Sequential(
            nn.Conv3d(self.n_keep, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv3d(hidden_channels, hidden_channels, kernel_size=1),
            nn.ReLU(),
            last,
        )

    def _shift_and_log_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x_a)
        shift, raw = h[:, : self.n_change], h[:, self.n_change :]
        return shift, F.logsigmoid(raw + 2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, : self.n_keep], x[:, self.n_keep :]
        shift, log_scale = self._shift_and_log_scale(x_a)
        y_b = x_b * torch.exp(log_scale) + shift
        return torch.cat([x_a, y_b], dim=1), log_scale.sum(dim=(1, 2, 3, 4))

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y[:, : self.n_keep], y[:, self.n_keep :]
        shift, log_scale = self._shift_and_log_scale(y_a)
        x_b = (y_b - shift) * torch.exp(-log_scale)
        return torch.cat([y_a, x_b], dim=1)


class FlowStep(nn.Module):
    """One step of flow: ActNorm3d -> InvConv1x1x1LU -> AffineCoupling3d (Glow fig. 2a)."""

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.actnorm = ActNorm3d(channels)
        self.invconv = InvConv1x1x1LU(channels)
        self.coupling = AffineCoupling3d(channels, hidden_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = self.actnorm(x)
        x, ld = self.invconv(x)
        logdet = logdet + ld
        x, ld = self.coupling(x)
        return x, logdet + ld

    def inverse(self, y: Tensor) -> Tensor:
        return self.actnorm.inverse(self.invconv.inverse(self.coupling.inverse(y)))


class Split3d(nn.Module):
    """The multi-scale split (DUAL-GLOW fig. 3, Dinh et al. 2017): factor out half the channels.

    ``forward(h)`` returns ``(h_keep, z)``: the first ``C // 2`` channels continue through
    the flow, the remaining ones leave it as this level's latent ``z``. The prior of
    ``z`` is not this layer's business (DUAL-GLOW puts it in the relation networks).
    A coordinate split, so its logdet is 0 and it has none to return.
    """

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        keep = h.shape[1] // 2
        return h[:, :keep], h[:, keep:]

    def inverse(self, h_keep: Tensor, z: Tensor) -> Tensor:
        return torch.cat([h_keep, z], dim=1)

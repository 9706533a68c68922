"""The U-Net's stride-2 transposed convolution computed as one ordinary convolution.

A transposed convolution with kernel 4, stride 2 and padding 1 (pix2pix's upsampling) gives
every output voxel from a 2 x 2 (x 2) block of input voxels, and which kernel taps it uses
depends only on the output voxel's parity along each axis (its "phase"). In one dimension,
with ``y[o] = sum_i x[i] w[o + 1 - 2 i]``:

    y[2m]     = w[3] x[m - 1] + w[1] x[m]
    y[2m + 1] = w[2] x[m]     + w[0] x[m + 1]

so tap ``t`` (0 or 1) of phase ``a`` is ``w[3 - a - 2 t]`` applied to ``x[m - 1 + a + t]``.
One ordinary convolution with a 2 x 2 (x 2) kernel, padding 1 and ``2**dims`` times the output
channels (one group per phase) computes every phase on an (n + 1)-voxel grid; phase ``a`` is
that grid shifted by ``a``, and interleaving the phases (a pixel shuffle) gives the
transposed convolution's output. The multiply-adds are the transposed convolution's own
(8 taps per output voxel in 3D), but they run through the CPU's fast convolution kernels:
PyTorch's CPU transposed convolution in 3D takes a slow path that was 6 times slower per
layer than an ordinary convolution of the same work here (docs/benchmarks.md). The result is
the same function of the same weights (tested to 1e-5, values and gradients), so the layer
keeps ``ConvTranspose``'s parameters and state-dict names and every checkpoint loads as before.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F


def phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """A k=4, s=2, p=1 transposed convolution's weight ``(C_in, C_out, 4, ...)`` as the
    weight ``(C_out * 2**d, C_in, 2, ...)`` of the phase convolution; output channel
    ``c * 2**d + p`` is channel ``c`` of phase ``p`` (phases in ``itertools.product`` order)."""
    dims = weight.dim() - 2
    # index[a][t] = kernel tap of phase a, tap t (see the module docstring)
    index = torch.tensor([[3, 1], [2, 0]], device=weight.device)
    w = weight.transpose(0, 1)  # (C_out, C_in, 4, ...)
    phases = []
    for phase in itertools.product((0, 1), repeat=dims):
        taps = w
        for axis, a in enumerate(phase):
            taps = taps.index_select(2 + axis, index[a])
        phases.append(taps)
    return torch.stack(phases, dim=1).flatten(0, 1)  # (C_out, 2**d, C_in, 2, ...) -> flat


def subpixel_conv_transpose(x: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None) -> torch.Tensor:
    """``conv_transpose{2,3}d(x, weight, bias, stride=2, padding=1)`` (kernel 4) as one
    convolution plus an interleave: ``(B, C_in, *S) -> (B, C_out, *2S)``."""
    dims = x.dim() - 2
    conv = F.conv3d if dims == 3 else F.conv2d
    c_out = weight.shape[1]
    phased = conv(x, phase_weight(weight), None, padding=1)  # (B, C_out * 2**d, *(S + 1))
    size = x.shape[2:]
    batch = x.shape[0]
    phased = phased.view(batch, c_out, 2**dims, *phased.shape[2:])
    out = x.new_empty(batch, c_out, *(2 * s for s in size))
    for p, phase in enumerate(itertools.product((0, 1), repeat=dims)):
        src = phased[(slice(None), slice(None), p)
                     + tuple(slice(a, a + s) for a, s in zip(phase, size, strict=True))]
        out[(slice(None), slice(None)) + tuple(slice(a, None, 2) for a in phase)] = src
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * dims))
    return out


class _SubpixelMixin:
    """Forward of a k=4, s=2, p=1 ``ConvTranspose`` through :func:`subpixel_conv_transpose`."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return subpixel_conv_transpose(x, self.weight, self.bias)


class SubpixelConvTranspose3d(_SubpixelMixin, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d(c_in, c_out, 4, stride=2, padding=1)`` computed as a convolution
    and a 3D pixel shuffle: same parameters, same state dict, same numbers, faster on CPU."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 4, stride=2, padding=1, bias=bias)


class SubpixelConvTranspose2d(_SubpixelMixin, nn.ConvTranspose2d):
    """The 2D counterpart of :class:`SubpixelConvTranspose3d`."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 4, stride=2, padding=1, bias=bias)


def subpixel_conv_transpose_nd(dims: int) -> type[nn.Module]:
    return SubpixelConvTranspose3d if dims == 3 else SubpixelConvTranspose2d

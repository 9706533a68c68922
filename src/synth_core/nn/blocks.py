"""Dimension-agnostic convolution building blocks.

Every factory and block takes ``spatial_dims`` (2 or 3), as MONAI's networks do, so one
definition serves 2D slices (tensors ``(B, C, X, Y)``) and 3D volumes (``(B, C, X, Y, Z)``).

Normalisation default: the pix2pix paper used batch norm and CycleGAN instance norm,
but both were trained with batch size 1, where batch norm's training statistics are
those of the single image (so it acts as instance norm) while its running statistics,
used at evaluation, are an average over images and shift the output. 3D volumes force
batch size 1 here too, so "instance" is the default everywhere: the same statistics in
training and inference. It has no affine parameters, as in CycleGAN's code.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from synth_core.errors import UserError

NORM_KINDS: tuple[str, ...] = ("instance", "batch", "group", "none")
ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "tanh", "sigmoid", "none")
PaddingMode = Literal["zeros", "reflect", "replicate"]
PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)
LEAKY_SLOPE = 0.2  # pix2pix / CycleGAN negative slope for LeakyReLU
MAX_GROUPS = 32  # Wu & He (2018) group norm default


class InputShapeError(UserError, ValueError):
    """An input tensor whose spatial size a network cannot take (fix: pad or crop it)."""


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def conv_nd(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` or ``nn.Conv3d`` for ``spatial_dims`` 2 or 3."""
    _check_dims(spatial_dims)
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def conv_transpose_nd(spatial_dims: int) -> type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` for ``spatial_dims`` 2 or 3."""
    _check_dims(spatial_dims)
    return nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d


def norm_nd(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` feature maps.

    Args:
        kind: "instance" (per image and channel, no affine, no running statistics),
            "batch", "group" (``gcd(32, channels)`` groups, so any width works) or
            "none" (identity).
        spatial_dims: 2 or 3.
        channels: number of channels C of the ``(B, C, *spatial)`` input.
    """
    _check_dims(spatial_dims)
    if kind == "instance":
        cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(MAX_GROUPS, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORM_KINDS)}")


def conv_bias(norm: str) -> bool:
    """Whether a convolution followed by ``norm`` needs its own bias.

    Instance and batch norm subtract a per-channel mean, which removes any constant
    per-channel bias the convolution adds; group norm subtracts a per-group mean only, so
    differences between channels' biases survive it.
    """
    if norm not in NORM_KINDS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORM_KINDS)}")
    return norm in ("group", "none")


def make_activation(kind: str | None) -> nn.Module:
    """An activation by name: relu, leaky_relu (slope 0.2), tanh, sigmoid, or none / None."""
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if kind == "tanh":
        return nn.Tanh()
    if kind == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS)}")


UPSAMPLE_KINDS: tuple[str, ...] = ("transpose", "interp")


class InterpConv(nn.Sequential):
    """Upsampling by 2: linear interpolation then a 3x3(x3) convolution,
    ``(B, C_in, *S) -> (B, C_out, *2S)``.

    The alternative to a stride-2 transposed convolution (``upsample="interp"`` in the
    networks that offer it): interpolation spreads every input voxel evenly, so it makes
    no checkerboard artefacts (Odena et al., Distill 2016). It costs 27 multiply-adds
    per output voxel and channel pair against the 4x4x4 transposed convolution's 8; on
    CPU that made a 16-feature 3D U-Net 2-4 times slower here (``modality-synth
    benchmark`` prints both), so it is an option, not the ``cpu`` presets' default.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 bias: bool = True) -> None:
        super().__init__(
            linear_upsample(spatial_dims),
            conv_nd(spatial_dims)(in_channels, out_channels, 3, padding=1, bias=bias),
        )


def linear_upsample(spatial_dims: int) -> nn.Upsample:
    """Bilinear (2D) or trilinear (3D) upsampling by 2, voxel centres kept (no corner alignment)."""
    _check_dims(spatial_dims)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    return nn.Upsample(scale_factor=2.0, mode=mode, align_corners=False)


def check_upsample(kind: str) -> str:
    if kind not in UPSAMPLE_KINDS:
        raise UserError(f"unknown upsample {kind!r}; choose one of {', '.join(UPSAMPLE_KINDS)}")
    return kind


class ConvBlock(nn.Sequential):
    """Convolution, normalisation, activation: ``(B, C_in, *S) -> (B, C_out, *S')``.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: C_in and C_out.
        kernel_size: cubic (square) kernel edge in voxels.
        stride: stride along every axis.
        padding: voxels padded on each side; None pads ``kernel_size // 2`` ("same" size
            for odd kernels at stride 1).
        padding_mode: "zeros", "reflect" or "replicate" (transposed convolutions only
            support "zeros").
        norm: one of ``NORM_KINDS``.
        act: one of ``ACTIVATIONS``.
        transposed: a fractionally-strided (transposed) convolution, for upsampling.
        output_padding: extra voxels on one side of a transposed convolution's output
            (1 with kernel 3, stride 2, padding 1 doubles the size exactly).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        padding_mode: PaddingMode = "zeros",
        norm: str = "instance",
        act: str | None = "relu",
        transposed: bool = False,
        output_padding: int = 0,
    ) -> None:
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"unknown padding_mode {padding_mode!r}; choose one of {', '.join(PADDING_MODES)}"
            )
        pad = kernel_size // 2 if padding is None else padding
        conv: nn.Module
        if transposed:
            if padding_mode != "zeros":
                raise ValueError("transposed convolutions only support padding_mode 'zeros'")
            conv = conv_transpose_nd(spatial_dims)(
                in_channels, out_channels, kernel_size, stride=stride, padding=pad,
                output_padding=output_padding, bias=conv_bias(norm),
            )
        else:
            conv = conv_nd(spatial_dims)(
                in_channels, out_channels, kernel_size, stride=stride, padding=pad,
                padding_mode=padding_mode, bias=conv_bias(norm),
            )
        super().__init__(conv, norm_nd(norm, spatial_dims, out_channels), make_activation(act))


class ResidualBlock(nn.Module):
    """CycleGAN's residual block: ``x + norm(conv(drop(relu(norm(conv(x))))))``.

    Both convolutions are 3x3 (3x3x3) with 1 voxel of reflection (or replicate) padding,
    which avoids the dark border zero padding leaves in generated images. Shape is kept:
    ``(B, C, *S) -> (B, C, *S)``; every spatial size must be at least 2 for reflection.

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        norm: one of ``NORM_KINDS``.
        padding_mode: "reflect" (CycleGAN), "replicate" or "zeros".
        dropout: probability of the dropout between the convolutions (CycleGAN's
            ``use_dropout`` option; 0 disables it, the default).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        norm: str = "instance",
        padding_mode: PaddingMode = "reflect",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvBlock(spatial_dims, channels, channels, 3, padding_mode=padding_mode, norm=norm)
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(
            ConvBlock(spatial_dims, channels, channels, 3, padding_mode=padding_mode, norm=norm,
                      act="none")
        )
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def check_spatial_size(
    x: torch.Tensor,
    spatial_dims: int,
    multiple: int = 1,
    minimum: int = 1,
    context: str = "",
) -> tuple[int, ...]:
    """Check that ``x`` is ``(B, C, *S)`` with ``len(S) == spatial_dims`` and every size in S
    a multiple of ``multiple`` and at least ``minimum``; return S.

    Raises:
        InputShapeError (a ValueError and a UserError) naming the size, the rule and the fix.
    """
    if x.dim() != spatial_dims + 2:
        axes = "X, Y" if spatial_dims == 2 else "X, Y, Z"
        raise InputShapeError(
            f"expected an input of shape (batch, channels, {axes}) for spatial_dims={spatial_dims}, "
            f"got {tuple(x.shape)}"
        )
    size = tuple(int(s) for s in x.shape[2:])
    suffix = f" {context}" if context else ""
    fix = "; pad with synth_core.preprocess.pad_to_multiple"
    if any(s % multiple for s in size):
        raise InputShapeError(
            f"input spatial size {size} must be divisible by {multiple}{suffix}{fix}"
        )
    if any(s < minimum for s in size):
        raise InputShapeError(f"input spatial size {size} must be at least {minimum}{suffix}{fix}")
    return size


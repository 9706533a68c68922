"""Network building blocks shared by the methods, for 2D slices and 3D volumes alike.

Pure PyTorch: every block takes ``spatial_dims`` (2 or 3). Normalising flows live in
``synth_core.nn.flows``.
"""

from synth_core.nn.blocks import (
    NORM_KINDS,
    ConvBlock,
    InputShapeError,
    ResidualBlock,
    check_spatial_size,
    conv_nd,
    conv_transpose_nd,
    make_activation,
    norm_nd,
)
from synth_core.nn.ema import EMA
from synth_core.nn.gan import GANLoss, ImagePool, init_weights
from synth_core.nn.patchgan import PatchDiscriminator, receptive_field
from synth_core.nn.resnet_generator import ResnetGenerator
from synth_core.nn.reversible import AdditiveCoupling, CouplingNet, ReversibleCore
from synth_core.nn.unet import UNet

__all__ = [
    "EMA",
    "AdditiveCoupling",
    "NORM_KINDS",
    "ConvBlock",
    "CouplingNet",
    "GANLoss",
    "ImagePool",
    "InputShapeError",
    "PatchDiscriminator",
    "ResidualBlock",
    "ResnetGenerator",
    "ReversibleCore",
    "UNet",
    "check_spatial_size",
    "conv_nd",
    "conv_transpose_nd",
    "init_weights",
    "make_activation",
    "norm_nd",
    "receptive_field",
]

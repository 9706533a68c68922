"""The fast paths of the native-resolution work compute what they replace: the transposed
convolution as a convolution plus a pixel shuffle, and the separable training SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn
from torch.nn import functional as F

from synth_core.nn import UNet
from synth_core.nn.ssim import ssim
from synth_core.nn.subpixel import SubpixelConvTranspose3d, subpixel_conv_transpose


@pytest.mark.parametrize("shape", [(2, 5, 6, 7, 5), (1, 3, 9, 4), (1, 2, 1, 3, 2)])
def test_subpixel_equals_the_transposed_convolution_values_and_gradients(shape):
    dims = len(shape) - 2
    g = torch.Generator().manual_seed(len(shape))
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[1], 4, *([4] * dims), generator=g, dtype=torch.float64,
                    requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    transpose = F.conv_transpose3d if dims == 3 else F.conv_transpose2d
    ref = transpose(x, w, b, stride=2, padding=1)
    out = subpixel_conv_transpose(x, w, b)
    assert out.shape == ref.shape == (shape[0], 4, *(2 * s for s in shape[2:]))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    weights = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    grads_ref = torch.autograd.grad((ref * weights).sum(), (x, w, b))
    grads = torch.autograd.grad((out * weights).sum(), (x, w, b))
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_subpixel_layer_keeps_the_transposed_layers_weights_and_state_dict():
    torch.manual_seed(0)
    plain = nn.ConvTranspose3d(6, 1, 4, stride=2, padding=1)
    fast = SubpixelConvTranspose3d(6, 1)
    fast.load_state_dict(plain.state_dict())  # same names and shapes
    assert isinstance(fast, nn.ConvTranspose3d)
    x = torch.randn(1, 6, 8, 6, 4)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=0)


def test_a_unet_with_the_fast_output_layer_loads_weights_of_the_plain_one():
    torch.manual_seed(1)
    net = UNet(3, 1, 1, features=8, depth=3, dropout=0.0).eval()
    assert any(isinstance(m, SubpixelConvTranspose3d) for m in net.modules())
    # the same network built from plain transposed convolutions: same keys, same output
    plain = UNet(3, 1, 1, features=8, depth=3, dropout=0.0).eval()
    for level in plain.up:
        for i, layer in enumerate(level):
            if isinstance(layer, SubpixelConvTranspose3d):
                level[i] = nn.ConvTranspose3d(layer.in_channels, layer.out_channels, 4, stride=2,
                                              padding=1, bias=layer.bias is not None)
    assert not any(isinstance(m, SubpixelConvTranspose3d) for m in plain.modules())
    plain.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 24, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x), atol=1e-5, rtol=0)


def test_training_ssim_equals_skimage_on_full_windows():
    rng = np.random.default_rng(0)
    a = rng.random((20, 22, 18)).astype(np.float32)
    b = (a + 0.3 * rng.random(a.shape)).astype(np.float32)
    expected = structural_similarity(a, b, data_range=1.0, full=True)[1][3:-3, 3:-3, 3:-3].mean()
    got = ssim(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], data_range=1.0)
    assert float(got) == pytest.approx(float(expected), abs=1e-5)
    same = torch.from_numpy(a)[None, None]
    assert float(ssim(same, same, data_range=1.0)) == pytest.approx(1.0, abs=1e-6)

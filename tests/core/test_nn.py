"""Tests of synth_core.nn's building blocks: shapes, geometry, losses, pool, EMA, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from synth_core.errors import UserError
from synth_core.nn import (
    EMA,
    ConvBlock,
    GANLoss,
    ImagePool,
    PatchDiscriminator,
    ResidualBlock,
    ResnetGenerator,
    UNet,
    init_weights,
    norm_nd,
    receptive_field,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _input(spatial_dims: int, channels: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn((1, channels) + (size,) * spatial_dims)


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_generators_keep_spatial_size_and_set_channels(spatial_dims: int) -> None:
    x = _input(spatial_dims)
    unet = UNet(spatial_dims, 2, 3, features=4, depth=4)
    resnet = ResnetGenerator(spatial_dims, 2, 3, features=4, n_blocks=2)
    expected = (1, 3) + (16,) * spatial_dims
    assert unet(x).shape == expected
    assert resnet(x).shape == expected


def test_resnet_generator_revgan_3d_variant_shape_and_depth() -> None:
    net = ResnetGenerator(3, 1, 1, features=4, n_downsampling=1, n_blocks=0, outer_kernel=5)
    assert net(_input(3, 1, 8)).shape == (1, 1, 8, 8, 8)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 5]


@pytest.mark.parametrize(("spatial_dims", "size", "n_layers"), [(2, 32, 3), (3, 16, 2), (3, 32, 3)])
def test_patch_discriminator_output_map_shape(spatial_dims: int, size: int, n_layers: int) -> None:
    disc = PatchDiscriminator(spatial_dims, 2, features=4, n_layers=n_layers)
    out = disc(_input(spatial_dims, 2, size))
    # Each stride-2 layer halves the size, each of the two stride-1 4-wide layers removes 1.
    side = size // 2**n_layers - 2
    assert out.shape == (1, 1) + (side,) * spatial_dims
    assert disc.output_size(size) == side


def test_unet_rejects_indivisible_size_with_the_fix() -> None:
    net = UNet(3, 1, 1, features=4, depth=4)
    with pytest.raises(ValueError) as info:
        net(torch.zeros(1, 1, 45, 64, 48))
    assert str(info.value) == (
        "input spatial size (45, 64, 48) must be divisible by 16 for depth 4; "
        "pad with synth_core.preprocess.pad_to_multiple"
    )
    assert isinstance(info.value, UserError)


def test_wrong_number_of_axes_is_named() -> None:
    with pytest.raises(ValueError, match=r"\(batch, channels, X, Y, Z\)"):
        UNet(3, 1, 1, features=4, depth=2)(torch.zeros(1, 1, 16, 16))


def test_resnet_generator_rejects_odd_and_too_small_inputs() -> None:
    net = ResnetGenerator(2, 1, 1, features=4, n_blocks=1)
    with pytest.raises(ValueError, match="divisible by 4 for n_downsampling 2"):
        net(torch.zeros(1, 1, 18, 17))
    with pytest.raises(ValueError, match="at least 8"):
        net(torch.zeros(1, 1, 4, 4))


# --- blocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_instance_norm_standardises_each_channel(spatial_dims: int) -> None:
    x = 5.0 + 3.0 * _input(spatial_dims, 4, 8)
    y = norm_nd("instance", spatial_dims, 4)(x)
    flat = y.flatten(2)
    torch.testing.assert_close(flat.mean(-1), torch.zeros(1, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(-1, unbiased=False), torch.ones(1, 4), atol=1e-3, rtol=0)


def test_norm_kinds_and_conv_bias() -> None:
    assert isinstance(norm_nd("batch", 3, 8), nn.BatchNorm3d)
    assert norm_nd("group", 2, 48).num_groups == 16  # gcd(32, 48)
    assert isinstance(norm_nd("none", 2, 8), nn.Identity)
    with pytest.raises(ValueError, match="instance, batch, group, none"):
        norm_nd("layer", 2, 8)
    # A per-channel bias before instance / batch norm would be cancelled, so there is none.
    assert ConvBlock(2, 1, 4, norm="instance")[0].bias is None
    assert ConvBlock(2, 1, 4, norm="none")[0].bias is not None


def test_residual_block_is_identity_when_its_last_conv_is_zero() -> None:
    block = ResidualBlock(3, 4)
    last_conv = block.body[-1][0]
    nn.init.zeros_(last_conv.weight)
    x = _input(3, 4, 6)
    torch.testing.assert_close(block(x), x)
    nn.init.normal_(last_conv.weight)
    assert not torch.allclose(block(x), x)


def test_residual_block_reflect_padding_has_no_zero_border() -> None:
    # With reflection padding a constant input stays constant up to the (zero-mean) norm,
    # while zero padding makes the border differ from the interior.
    x = torch.ones(1, 2, 8, 8)
    reflect = ResidualBlock(2, 2, norm="none", padding_mode="reflect")
    zeros = ResidualBlock(2, 2, norm="none", padding_mode="zeros")
    zeros.load_state_dict(reflect.state_dict())
    out_reflect, out_zeros = reflect(x), zeros(x)
    assert torch.allclose(out_reflect, out_reflect[..., :1, :1].expand_as(out_reflect), atol=1e-6)
    assert not torch.allclose(out_zeros, out_zeros[..., 4:5, 4:5].expand_as(out_zeros), atol=1e-6)


# --- U-Net specifics ------------------------------------------------------------------------


def test_unet_gradients_reach_first_layer_and_skips_carry_information() -> None:
    net = UNet(2, 1, 1, features=4, depth=3)
    x = _input(2, 1, 16).requires_grad_(True)
    net(x).square().sum().backward()
    first = net.down[0][0].weight.grad
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0

    # Cut the bottleneck: the output must still depend on the input, through the skips only.
    x.grad = None
    handle = net.down[-1].register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    out = net(x)
    handle.remove()
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().max() > 1e-6


def test_unet_tanh_bounds_output_and_none_does_not() -> None:
    x = 50.0 * _input(2, 1, 16)
    bounded = init_weights(UNet(2, 1, 1, features=4, depth=2, norm="none"), gain=1.0)
    unbounded = UNet(2, 1, 1, features=4, depth=2, norm="none", final_activation="none")
    unbounded.load_state_dict(bounded.state_dict())
    assert bounded(x).abs().max() <= 1.0
    assert unbounded(x).abs().max() > 1.0


def test_unet_dropout_in_innermost_decoder_levels_only() -> None:
    net = UNet(2, 1, 1, features=4, depth=4, dropout=0.5, dropout_levels=3)
    levels = [i for i, up in enumerate(net.up) if any(isinstance(m, nn.Dropout) for m in up)]
    assert levels == [1, 2, 3]  # never the output level 0
    x = _input(2, 1, 16)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


# --- PatchGAN receptive field ---------------------------------------------------------------


def test_receptive_field_formula_gives_pix2pix_numbers() -> None:
    assert PatchDiscriminator(2, 1, features=4, n_layers=3).receptive_field == 70
    assert receptive_field([4] * 4, [2, 2, 1, 1]) == 34
    assert receptive_field([4] * 3, [2, 1, 1]) == 16


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_patch_discriminator_outputs_change_only_within_receptive_field(n_layers: int) -> None:
    disc = PatchDiscriminator(2, 1, features=4, n_layers=n_layers, norm="none").double()
    strides = [2] * n_layers + [1, 1]
    rf = disc.receptive_field
    # Output p sees inputs [p * jump - offset, p * jump - offset + rf - 1] along each axis,
    # with jump the product of strides and offset the padding (1 per layer) in input voxels.
    jump = math.prod(strides)
    offset = sum(math.prod(strides[:layer]) for layer in range(len(strides)))
    size = 128
    x = torch.randn(1, 1, size, size, dtype=torch.float64)
    u, v = 10, 100
    x2 = x.clone()
    x2[0, 0, u, v] += 5.0
    with torch.no_grad():
        changed = (disc(x2) - disc(x)).abs()[0, 0] > 1e-10
    n_out = disc.output_size(size)

    def expected(pixel: int) -> list[int]:
        return [p for p in range(n_out) if p * jump - offset <= pixel <= p * jump - offset + rf - 1]

    rows = torch.nonzero(changed.any(dim=1)).flatten().tolist()
    cols = torch.nonzero(changed.any(dim=0)).flatten().tolist()
    assert rows == expected(u)
    assert cols == expected(v)
    assert int(changed.sum()) == len(rows) * len(cols)  # a full rectangle, nothing outside
    assert len(expected(v)) < n_out  # the check is not vacuous: some outputs are out of reach


# --- GAN loss and image pool ----------------------------------------------------------------


def test_gan_loss_matches_hand_computation() -> None:
    d = torch.tensor([[0.5, -1.0], [3.0, 0.0]])
    lsgan, vanilla = GANLoss("lsgan"), GANLoss("vanilla")
    assert lsgan(d, True).item() == pytest.approx((0.25 + 4.0 + 4.0 + 1.0) / 4)
    assert lsgan(d, False).item() == pytest.approx((0.25 + 1.0 + 9.0 + 0.0) / 4)
    values = [0.5, -1.0, 3.0, 0.0]
    # BCE with logits: -log sigmoid(d) = log(1 + e^-d) for real, log(1 + e^d) for fake.
    real = sum(math.log1p(math.exp(-v)) for v in values) / 4
    fake = sum(math.log1p(math.exp(v)) for v in values) / 4
    assert vanilla(d, True).item() == pytest.approx(real)
    assert vanilla(d, False).item() == pytest.approx(fake)
    with pytest.raises(ValueError, match="lsgan, vanilla"):
        GANLoss("wgan")


def test_image_pool_returns_only_given_images_and_holds_at_most_size() -> None:
    pool = ImagePool(size=5)
    given: list[torch.Tensor] = []
    n_old = 0
    for step in range(60):
        batch = torch.full((2, 1, 4, 4), float(step)) + torch.arange(2.0).view(2, 1, 1, 1) / 10
        given.extend(batch)
        out = pool.query(batch)
        assert out.shape == batch.shape
        assert len(pool) <= 5
        for image, new in zip(out, batch, strict=True):
            assert any(torch.equal(image, g) for g in given)
            n_old += not torch.equal(image, new)
        if step < 2:  # still filling: every image comes back as given
            assert torch.equal(out, batch)
    assert len(pool) == 5
    # After filling, about half of the 116 later images are swapped for old ones.
    assert 0.35 < n_old / 116 < 0.65


def test_image_pool_is_repeatable_and_size_zero_passes_through() -> None:
    batches = [torch.randn(1, 1, 4, 4) for _ in range(20)]

    def run() -> list[torch.Tensor]:
        torch.manual_seed(3)
        pool = ImagePool(size=3)
        return [pool.query(b) for b in batches]

    assert all(torch.equal(a, b) for a, b in zip(run(), run(), strict=True))
    x = torch.randn(2, 1, 4, 4)
    assert ImagePool(size=0).query(x) is x


# --- EMA and init ---------------------------------------------------------------------------


def test_ema_matches_closed_form_average() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    decay = 0.9
    start = model[0].weight.detach().clone()
    ema = EMA(model, decay)
    values = [torch.randn(2, 3) for _ in range(7)]
    for value in values:
        with torch.no_grad():
            model[0].weight.copy_(value)
        model[1].num_batches_tracked += 1
        ema.update()
    n = len(values)
    expected = decay**n * start + sum(
        (1 - decay) * decay ** (n - k) * v for k, v in enumerate(values, start=1)
    )
    torch.testing.assert_close(ema.shadow["0.weight"], expected)
    assert int(ema.shadow["1.num_batches_tracked"]) == n  # integer buffers are copied

    copy = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema.copy_to(copy)
    torch.testing.assert_close(copy[0].weight, expected)

    restored = EMA(copy, 0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == decay and restored.num_updates == n
    torch.testing.assert_close(restored.shadow["0.weight"], expected)
    with pytest.raises(ValueError, match="differing names"):
        ema.copy_to(nn.Linear(3, 2))


def test_ema_warmup_forgets_the_start_and_copied_state_is_not_averaged() -> None:
    model = nn.Linear(2, 1)
    model.register_buffer("stats_ring", torch.full((3,), float("nan")))
    with torch.no_grad():
        model.weight.fill_(0.0)  # a placeholder, like actnorm before its first batch
    ema = EMA(model, 0.999, warmup=True, copied=("stats_",))
    expected = torch.zeros(1, 2)
    for n in range(30):
        with torch.no_grad():
            model.weight.fill_(1.0)
            model.stats_ring[n % 3] = float(n)
        ema.update()
        decay = min(0.999, (1.0 + n) / (10.0 + n))
        expected = decay * expected + (1 - decay) * 1.0
        torch.testing.assert_close(ema.shadow["stats_ring"], model.stats_ring, equal_nan=True)
    torch.testing.assert_close(ema.shadow["weight"], expected)
    # Without the warm-up 0.999**30 = 97 % of the placeholder would remain; with it, little.
    assert (1.0 - ema.shadow["weight"]).abs().max() < 0.3
    # A state saved before a copied tensor existed still loads (the tensor keeps its value).
    saved = ema.state_dict()
    del saved["shadow"]["stats_ring"]
    again = EMA(model, 0.999, warmup=True, copied=("stats_",))
    again.load_state_dict(saved)
    torch.testing.assert_close(again.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="differing names"):
        del saved["shadow"]["weight"]
        again.load_state_dict(saved)
    plain = EMA(nn.Linear(2, 1), 0.999)
    assert plain.warmup is False and plain.copied == ()


def test_init_weights_normal_std() -> None:
    net = nn.Sequential(nn.Conv3d(8, 16, 4), nn.BatchNorm3d(256), nn.ConvTranspose2d(16, 32, 4))
    init_weights(net, "normal", 0.02)
    conv_w, bn, convt_w = net[0].weight, net[1], net[2].weight
    assert conv_w.std().item() == pytest.approx(0.02, rel=0.05)
    assert abs(conv_w.mean().item()) < 0.002
    assert convt_w.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(net[0].bias, torch.zeros(16))
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.006)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.2)

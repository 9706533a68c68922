"""Flows: invertibility, log-determinants against brute-force Jacobians, DUAL-GLOW's loss and sampler."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synth_core.errors import UserError
from synth_core.nn.flows import (
    ActNorm3d,
    AffineCoupling3d,
    DualGlow,
    DualGlowConfig,
    FlowStep,
    Glow3d,
    InvConv1x1x1LU,
    Split3d,
    Squeeze3d,
    cpu_preset,
    paper_preset,
)
from synth_core.nn.flows.priors import AgeRegressor, coordinates_like
from synth_core.nn.gradient_reversal import GradientReversal

SEEDS = [0, 1, 2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: thread start-up costs more than it saves on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Give every parameter non-trivial values (the zero-initialised last layers included)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    for m in module.modules():
        if isinstance(m, ActNorm3d):
            m.initialized.fill_(True)
    return module


def volume(kind: str, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Test inputs: random, half exactly zero (a background), or with one constant channel."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    if kind == "background":
        x[..., : shape[-1] // 2] = 0.0
    elif kind == "constant_channel":
        x[:, 0] = 0.7
    return x


def tiny_config(**changes) -> DualGlowConfig:
    base = dict(
        levels=2,
        steps_per_level=2,
        hidden_channels=8,
        relation_hidden=4,
        age_head_hidden=4,
        age_range=(50.0, 100.0),
        volume_shape=(8, 8, 8),
    )
    base.update(changes)
    return DualGlowConfig(**base)


# --- invertibility ---------------------------------------------------------------


def make_layer(name: str, channels: int) -> nn.Module:
    return {
        "squeeze": Squeeze3d,
        "actnorm": lambda: ActNorm3d(channels),
        "invconv": lambda: InvConv1x1x1LU(channels),
        "coupling": lambda: AffineCoupling3d(channels, 8),
        "flowstep": lambda: FlowStep(channels, 8),
    }[name]()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["random", "background", "constant_channel"])
@pytest.mark.parametrize("name", ["squeeze", "actnorm", "invconv", "coupling", "flowstep"])
def test_layer_inverse_recovers_input(name: str, kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    x = volume(kind, seed, (2, 8, 4, 4, 4))
    layer = make_layer(name, 8)
    layer(x)  # data-dependent actnorm initialisation on this batch
    for m in layer.modules():
        if isinstance(m, AffineCoupling3d):
            perturb(m.net[-1], seed)
    y, logdet = layer(x)
    assert logdet.shape == (2,)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    torch.testing.assert_close(layer.inverse(y), x, atol=1e-4, rtol=0)


def test_actnorm_initialises_to_zero_mean_unit_std_and_guards_constant_channel() -> None:
    x = volume("constant_channel", 0, (2, 3, 4, 4, 4))
    layer = ActNorm3d(3)
    y, logdet = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y[:, 1:].mean(dim=(0, 2, 3, 4)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y[:, 1:].std(dim=(0, 2, 3, 4), unbiased=False), torch.ones(2), atol=1e-4, rtol=0
    )
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(layer.log_scale[0, 0].flatten(), torch.tensor([-math.log(1e-6)]))


def test_actnorm_initialisation_survives_state_dict() -> None:
    x = volume("random", 0, (2, 4, 4, 4, 4))
    first = ActNorm3d(4)
    first(x)
    second = ActNorm3d(4)
    second.load_state_dict(first.state_dict())
    other = 3.0 * volume("random", 1, (2, 4, 4, 4, 4)) + 5.0
    # a re-initialisation would normalise ``other`` and change the output
    torch.testing.assert_close(second(other)[0], first(other)[0])
    assert bool(second.initialized)


def test_split_inverse_and_halves() -> None:
    h = volume("random", 0, (2, 8, 2, 2, 2))
    keep, z = Split3d()(h)
    assert keep.shape == z.shape == (2, 4, 2, 2, 2)
    torch.testing.assert_close(Split3d().inverse(keep, z), h, atol=0, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["random", "background", "constant_channel"])
def test_glow_decode_inverts_encode(kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    channels = 2 if kind == "constant_channel" else 1
    x = volume(kind, seed, (2, channels, 16, 16, 16))
    flow = Glow3d(channels, levels=3, steps_per_level=2, hidden_channels=8)
    flow.encode(x)  # actnorm initialisation
    for m in flow.modules():
        if isinstance(m, AffineCoupling3d):
            perturb(m.net[-1], seed)
    latents, logdet = flow.encode(x)
    c = channels
    assert [tuple(z.shape[1:]) for z in latents] == [
        (4 * c, 8, 8, 8),
        (16 * c, 4, 4, 4),
        (128 * c, 2, 2, 2),
    ]
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(flow.decode(latents), x, atol=1e-4, rtol=0)


def test_glow_refuses_a_volume_that_does_not_fit_its_levels() -> None:
    flow = Glow3d(1, levels=2, steps_per_level=1, hidden_channels=4)
    with pytest.raises(UserError, match="multiple of 4"):
        flow.encode(torch.zeros(1, 1, 8, 8, 6))


# --- log-determinants against brute force ------------------------------------------


def brute_force_logdet(fn, x: torch.Tensor) -> float:
    """log|det J| of the map x -> fn(x) (flattened), J by autograd, float64."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).reshape(-1), x.reshape(-1))
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabsdet.item()


@pytest.mark.parametrize("name", ["squeeze", "actnorm", "invconv", "coupling", "flowstep"])
def test_layer_logdet_equals_brute_force_jacobian(name: str) -> None:
    torch.manual_seed(0)
    shape = (1, 1, 4, 4, 4) if name == "squeeze" else (1, 8, 2, 2, 2)
    layer = perturb(make_layer(name, shape[1]), seed=3, std=0.3).double()
    x = volume("random", 0, shape).double()
    _, logdet = layer(x)
    expected = brute_force_logdet(lambda v: layer(v)[0], x)
    assert logdet.item() == pytest.approx(expected, abs=1e-8)
    if name != "squeeze":  # the check would pass vacuously on a volume-preserving map
        assert abs(expected) > 1e-2


def test_glow_logdet_equals_brute_force_jacobian() -> None:
    torch.manual_seed(0)
    flow = perturb(
        Glow3d(1, levels=2, steps_per_level=2, hidden_channels=4), seed=5, std=0.3
    ).double()
    x = volume("random", 0, (1, 1, 4, 4, 4)).double()
    _, logdet = flow.encode(x)

    def all_latents(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.reshape(-1) for z in flow.encode(v)[0]])

    expected = brute_force_logdet(all_latents, x)
    assert logdet.item() == pytest.approx(expected, abs=1e-7)
    assert abs(expected) > 1e-1


def test_lu_conv_stays_invertible_after_optimiser_steps() -> None:
    torch.manual_seed(0)
    conv = InvConv1x1x1LU(8)
    before = conv.weight().detach().clone()
    opt = torch.optim.Adam(conv.parameters(), lr=0.05)
    x, target = torch.randn(2, 8, 2, 2, 2), torch.randn(2, 8, 2, 2, 2)
    for _ in range(20):
        y, logdet = conv(x)
        loss = ((y - 3.0 * target) ** 2).mean() - 0.01 * logdet.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = conv.weight().detach()
    assert (w - before).abs().max() > 0.1  # it did train
    w_inv = torch.linalg.inv(w.double()).float()
    torch.testing.assert_close(w @ w_inv, torch.eye(8), atol=1e-5, rtol=0)
    sign, logabsdet = torch.linalg.slogdet(w.double())
    assert sign != 0
    assert logabsdet.item() == pytest.approx(conv.log_s.sum().item(), abs=1e-5)
    torch.testing.assert_close(conv.inverse(conv(x)[0]), x, atol=1e-4, rtol=0)


# --- gradient reversal -------------------------------------------------------------


def test_gradient_reversal_is_identity_forward_and_negates_scaled_gradient() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = GradientReversal(scale=0.5)(x)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([2.0, 4.0, -8.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.0, -2.0, 4.0]))


# --- DUAL-GLOW ---------------------------------------------------------------------


def pair(seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mri = torch.rand(batch, 1, 8, 8, 8, generator=gen) * 2 - 1
    pet = (0.5 * mri + 0.3 * torch.rand(batch, 1, 8, 8, 8, generator=gen)).clamp(-1, 1)
    return mri, pet


def trained_once(config: DualGlowConfig, seed: int = 0) -> DualGlow:
    """A DualGlow whose actnorms are initialised and whose zero layers are non-zero."""
    torch.manual_seed(seed)
    model = DualGlow(config)
    mri, pet = pair(seed)
    model.loss(mri, pet, age=[60.0, 80.0])
    return perturb(model, seed, std=0.02)


def test_dual_glow_loss_is_finite_and_matches_an_independent_computation() -> None:
    model = trained_once(tiny_config())
    mri, pet = pair(1)
    out = model.loss(mri, pet, age=[60.0, 80.0], dequantize=False)
    assert set(out) == {"loss", "bpd_pet", "bpd_mri", "age_adv", "age_keep", "level_bits_mri"}
    assert all(torch.isfinite(v).all() for v in out.values())
    # bpd_pet recomputed with torch.distributions and the discretisation constant log2(128)
    z_m, _ = model.mri_flow.encode(mri)
    z_p, logdet_p = model.pet_flow.encode(pet)
    age_n = torch.tensor([-0.6, 0.2])  # 60 and 80 years over (50, 100)
    log_p = sum(
        torch.distributions.Normal(m, s.exp()).log_prob(z).sum(dim=(1, 2, 3, 4))
        for z, (m, s) in zip(z_p, model.pet_prior(z_m, age_n), strict=True)
    )
    expected = (-(log_p + logdet_p) / (512 * math.log(2)) + 7.0).mean()
    assert out["bpd_pet"].item() == pytest.approx(expected.item(), abs=1e-4)
    cfg = model.config
    total = (
        out["bpd_pet"]
        + cfg.lambda_mri * out["bpd_mri"]
        + cfg.age_loss_weight * (out["age_adv"] + out["age_keep"])
    )
    assert out["loss"].item() == pytest.approx(total.item(), abs=1e-5)
    model.config = dataclasses.replace(cfg, age_keep_weight=0.5)  # keep heads on their own
    again = model.loss(mri, pet, age=[60.0, 80.0], dequantize=False)
    assert again["loss"].item() == pytest.approx(
        (total + (0.5 - cfg.age_loss_weight) * out["age_keep"]).item(), abs=1e-5)
    # per-level latent bits of the MRI: -log2 N(z; 0, 1) averaged over each level's elements
    normal = torch.distributions.Normal(0.0, 1.0)
    levels = torch.stack([-normal.log_prob(z).mean() / math.log(2) for z in z_m])
    torch.testing.assert_close(out["level_bits_mri"], levels)
    torch.testing.assert_close(model.mri_level_bits(mri).mean(0), levels)


def test_mri_bits_per_voxel_equals_the_loss_term() -> None:
    model = trained_once(tiny_config())
    mri, pet = pair(2)
    bpv = model.mri_bits_per_voxel(mri)
    assert bpv.shape == (2,)
    expected = model.loss(mri, pet, age=70.0, dequantize=False)["bpd_mri"]
    assert bpv.mean().item() == pytest.approx(expected.item(), abs=1e-5)


def test_pet_flow_inverse_via_dual_glow() -> None:
    model = trained_once(tiny_config(), seed=4)
    _, pet = pair(4)
    latents, _ = model.pet_flow.encode(pet)
    torch.testing.assert_close(model.pet_flow.decode(latents), pet, atol=1e-4, rtol=0)


@pytest.mark.smoke
def test_smoke_dual_glow_loss_decreases_on_a_fixed_pair() -> None:
    torch.manual_seed(0)
    model = DualGlow(tiny_config())
    mri, pet = pair(0)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = model.loss(mri, pet, age=[60.0, 80.0], dequantize=False)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0] - 0.1


def test_sample_is_deterministic_at_zero_temperature_and_varies_above() -> None:
    model = trained_once(tiny_config())
    mri, _ = pair(3)
    a = model.sample(mri, age=70.0, temperature=0.0)
    b = model.sample(mri, age=70.0, temperature=0.0, generator=torch.Generator().manual_seed(9))
    assert a.shape == (1, 2, 1, 8, 8, 8)
    assert torch.equal(a, b)
    many = model.sample(
        mri, age=70.0, temperature=0.7, n_samples=3, generator=torch.Generator().manual_seed(1)
    )
    assert many.shape == (3, 2, 1, 8, 8, 8)
    assert (many[0] - many[1]).abs().max() > 1e-3
    again = model.sample(
        mri, age=70.0, temperature=0.7, n_samples=3, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(many, again)
    # the mode decodes the prior means
    z_m, _ = model.mri_flow.encode(mri)
    means = [m for m, _ in model.pet_prior(z_m, model.normalise_age(70.0, 2))]
    torch.testing.assert_close(a[0], model.pet_flow.decode(means))


def test_age_changes_the_sample_and_is_checked() -> None:
    model = trained_once(tiny_config())
    mri, _ = pair(3)
    young = model.sample(mri, age=55.0, temperature=0.0)
    old = model.sample(mri, age=95.0, temperature=0.0)
    assert (young - old).abs().max() > 1e-4
    with pytest.raises(UserError, match="conditioned on age"):
        model.sample(mri)
    with pytest.raises(UserError, match="outside the range"):
        model.sample(mri, age=30.0)


def test_fixed_scale_is_exactly_one() -> None:
    model = trained_once(tiny_config(learned_scale=False))
    mri, _ = pair(5)
    z_m, _ = model.mri_flow.encode(mri)
    for mean, log_scale in model.pet_prior(z_m, model.normalise_age(70.0, 2)):
        assert mean.abs().max() > 0
        assert torch.equal(log_scale, torch.zeros_like(mean))


def test_unconditioned_model_needs_no_age() -> None:
    torch.manual_seed(0)
    model = DualGlow(tiny_config(age_conditioning=False))
    mri, pet = pair(0)
    out = model.loss(mri, pet)
    assert out["age_adv"].item() == 0.0 and out["age_keep"].item() == 0.0
    assert model.sample(mri, temperature=0.0).shape == (1, 2, 1, 8, 8, 8)


def test_checkpointing_gives_the_same_gradients() -> None:
    plain = trained_once(tiny_config())
    ckpt = DualGlow(tiny_config(checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    mri, pet = pair(6)
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(7)  # same dequantisation noise
        model.zero_grad()
        model.loss(mri, pet, age=[60.0, 80.0])["loss"].backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_presets_follow_the_paper_and_the_phantom() -> None:
    paper = paper_preset()
    assert (paper.levels, paper.steps_per_level, paper.hidden_channels) == (4, 16, 512)
    assert (paper.optimizer, paper.lr, paper.betas[0], paper.epochs) == ("adamax", 1e-3, 0.9, 90)
    assert (paper.lambda_mri, paper.age_loss_weight) == (0.001, 0.01)
    assert paper.volume_shape == (64, 96, 64) and paper.voxel_size_mm == 1.5
    cpu = cpu_preset()
    assert (cpu.levels, cpu.steps_per_level, cpu.hidden_channels, cpu.relation_hidden) == (
        3,
        8,
        64,
        32,
    )
    assert Glow3d(1, cpu.levels, 1, 4).latent_shapes(cpu.volume_shape)[-1] == (128, 6, 8, 6)
    assert DualGlowConfig.from_dict(cpu.to_dict()) == cpu


def _train_on_a_half_that_ages(age_effect: str, steps: int = 80) -> Tensor:
    """Synthesis at 95 minus at 55 years for a toy whose PET loses 0.8 in one half only.

    The MRI does not change with age, so only the age input can explain the PET's change.
    """
    torch.manual_seed(0)
    config = tiny_config(age_effect=age_effect, relation_hidden=8, volume_shape=(16, 16, 16))
    model = DualGlow(config)
    gen = torch.Generator().manual_seed(0)
    base = F.avg_pool3d(torch.randn(1, 1, 16, 16, 16, generator=gen), 3, 1, 1) * 2
    ageing = torch.zeros(1, 1, 16, 16, 16)
    ageing[..., :8] = 1.0
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2)
    for _ in range(steps):
        ages = 55.0 + 40.0 * torch.rand(4, generator=gen)
        centred = ((ages - 75.0) / 20.0).view(-1, 1, 1, 1, 1)
        noise = lambda: 0.05 * torch.randn(4, 1, 16, 16, 16, generator=gen)  # noqa: E731
        mri = (base + noise()).clamp(-1, 1)
        pet = (0.5 * base - 0.4 * centred * ageing + noise()).clamp(-1, 1)
        opt.zero_grad()
        model.loss(mri, pet, age=ages)["loss"].backward()
        opt.step()
    mri = base.clamp(-1, 1)
    old = model.sample(mri, age=95.0, temperature=0.0)
    young = model.sample(mri, age=55.0, temperature=0.0)
    return (old - young)[0, 0, 0]


def test_regional_age_effect_learns_an_effect_confined_to_one_region() -> None:
    # The phantom's ageing is regional (frontal, cingulate). A constant age channel shifts a
    # latent channel alike everywhere; the regional slope can age one half and not the other.
    regional = _train_on_a_half_that_ages("regional")
    aged, other = regional[..., :8].mean().item(), regional[..., 8:].mean().item()
    assert abs(aged - (-0.8)) < 0.25, aged
    assert abs(other) < 0.1, other
    uniform = _train_on_a_half_that_ages("uniform")
    assert abs(uniform[..., :8].mean().item() - (-0.8)) > abs(aged - (-0.8)) + 0.2


def test_regional_age_slope_starts_at_zero_and_old_configs_stay_uniform() -> None:
    model = DualGlow(tiny_config(age_effect="regional"))
    mri, _ = pair(2)
    z_m, _ = model.mri_flow.encode(mri)
    # Zero-initialised slope: before training both kinds of model have the same prior.
    uniform = DualGlow(tiny_config(age_effect="uniform"))
    assert not hasattr(uniform, "age_slope")
    mean, log_scale = model.pet_prior(z_m, model.normalise_age(90.0, 2))[-1]
    slope_mean, slope_log_scale = model.age_slope(
        torch.cat([model.mri_flow.squeeze(z_m[0])[0], coordinates_like(mean)], 1)
    )
    assert slope_mean.abs().max() == 0 and slope_log_scale.abs().max() == 0
    # A card written before age_effect existed loads as the model it was.
    values = tiny_config().to_dict()
    del values["age_effect"]
    assert DualGlowConfig.from_dict(values).age_effect == "uniform"
    with pytest.raises(UserError, match="age_effect"):
        tiny_config(age_effect="local")


def test_grid_age_head_is_linear_in_the_cell_means() -> None:
    head = AgeRegressor(3, 4, grid=2)
    x = torch.randn(2, 3, 4, 6, 4)
    cells = F.adaptive_avg_pool3d(x, 2).flatten(1)
    linear = head.readout[-1]
    torch.testing.assert_close(head(x), torch.tanh(cells @ linear.weight.T + linear.bias).squeeze(1))
    assert head(1e6 * x).abs().max() <= 1.0  # bounded, whatever the latent's scale
    model = DualGlow(tiny_config(age_head_grid=2))
    out = model.loss(*pair(0), age=[60.0, 80.0])
    assert torch.isfinite(out["age_adv"]) and torch.isfinite(out["age_keep"])

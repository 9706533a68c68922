"""Bi-DPM and the flow-matching baselines: the ODE integrator, the losses, the paths,
the MMD, the velocity network, LPIPS, and the paper's 8-Gaussians toy (Figure 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from synth_core.nn.flow_matching import (
    IndependentCFMPath,
    OptimalTransportCFMPath,
    RectifiedPath,
    VariancePreservingCFMPath,
    bidpm_states,
    bidpm_weights,
    euler,
    make_path,
    mmd,
    uniform_times,
)
from synth_core.nn.perceptual import LPIPS, FeatureTaps, l1_ssim, load_lpips, vgg16_features
from synth_core.nn.velocity import VelocityUNet

# ------------------------------------------------------------------ Euler


def test_euler_forward_then_backward_is_exact_for_a_constant_field():
    c = torch.tensor([0.3, -1.2, 2.0])
    x = torch.randn(5, 3)
    for steps in (1, 2, 7):
        times = uniform_times(steps)
        y = euler(lambda s, t: c.expand_as(s), x, times)
        torch.testing.assert_close(y, x + c, rtol=0, atol=1e-6)
        torch.testing.assert_close(euler(lambda s, t: c.expand_as(s), y, times, reverse=True), x,
                                   rtol=0, atol=1e-6)


def test_euler_round_trip_error_shrinks_like_the_step():
    """dx/dt = -x: the round trip's error is O(dt) (first-order method), and the forward
    map approaches exp(-1) x."""
    x = torch.randn(100, 2)
    errors = []
    for steps in (4, 16, 64):
        times = uniform_times(steps)
        y = euler(lambda s, t: -s, x, times)
        back = euler(lambda s, t: -s, y, times, reverse=True)
        errors.append(float((back - x).abs().max()))
        assert float((y - math.exp(-1) * x).abs().max()) < 1.5 / steps
    assert errors[0] > 3 * errors[1] > 9 * errors[2] > 0


def test_euler_evaluates_each_direction_at_its_starting_time():
    seen: list[float] = []
    euler(lambda s, t: seen.append(t) or s * 0, torch.zeros(1), uniform_times(4))
    assert seen == [0.0, 0.25, 0.5, 0.75]
    seen.clear()
    euler(lambda s, t: seen.append(t) or s * 0, torch.zeros(1), uniform_times(4), reverse=True)
    assert seen == [1.0, 0.75, 0.5, 0.25]


def test_uniform_times_rejects_zero_steps():
    with pytest.raises(ValueError, match="at least 1"):
        uniform_times(0)


# ------------------------------------------------------------------ Bi-DPM loss


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_bidpm_states_match_exactly_for_the_straight_velocity_of_a_linear_toy(steps):
    """z = x + c: the straight-line velocity c makes both processes meet at every t_n."""
    x = torch.randn(6, 2)
    c = torch.tensor([1.5, -0.5])
    z = x + c
    forward, backward = bidpm_states(lambda s, t: c.expand_as(s), x, z, uniform_times(steps))
    assert len(forward) == len(backward) == steps + 1
    for n, (f, b) in enumerate(zip(forward, backward, strict=True)):
        torch.testing.assert_close(f, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(f, x + c * n / steps, rtol=0, atol=1e-6)
    # ... and a wrong velocity does not.
    forward, backward = bidpm_states(lambda s, t: 0.5 * c.expand_as(s), x, z, uniform_times(steps))
    assert all(float((f - b).abs().max()) > 0.1 for f, b in zip(forward, backward, strict=True))


def test_bidpm_weights_are_one_at_the_ends_and_half_between():
    assert bidpm_weights(1) == [1.0, 1.0]
    assert bidpm_weights(3) == [1.0, 0.5, 0.5, 1.0]


# ------------------------------------------------------------------ MMD


def test_mmd_is_zero_for_a_set_with_itself_and_grows_with_a_mean_shift():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 10, generator=gen)
    assert float(mmd(a, a)) == pytest.approx(0.0, abs=1e-6)
    b = torch.randn(64, 10, generator=gen)
    values = [float(mmd(a, b + shift)) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values[0] < 0.1 * values[2]
    assert values == sorted(values)


def test_mmd_has_a_gradient():
    a = torch.randn(8, 3, requires_grad=True)
    mmd(a, torch.randn(8, 3) + 1).backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0


# ------------------------------------------------------------------ paths


def test_paths_match_their_closed_forms():
    gen = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(4, 1, 3, 3, generator=gen), torch.randn(4, 1, 3, 3, generator=gen)
    t = torch.tensor([0.0, 0.25, 0.6, 1.0])
    tb = t.view(-1, 1, 1, 1)
    noise = torch.randn(4, 1, 3, 3, generator=gen)

    rf = RectifiedPath()
    torch.testing.assert_close(rf.sample(x0, x1, t), (1 - tb) * x0 + tb * x1)
    torch.testing.assert_close(rf.target(x0, x1, t), x1 - x0)

    icfm = IndependentCFMPath(sigma=0.1)
    torch.testing.assert_close(icfm.sample(x0, x1, t, noise), (1 - tb) * x0 + tb * x1 + 0.1 * noise)
    torch.testing.assert_close(icfm.target(x0, x1, t), x1 - x0)

    vp = VariancePreservingCFMPath(sigma=0.05)
    a = math.pi / 2 * tb
    torch.testing.assert_close(vp.sample(x0, x1, t, noise),
                               torch.cos(a) * x0 + torch.sin(a) * x1 + 0.05 * noise)
    torch.testing.assert_close(vp.target(x0, x1, t),
                               math.pi / 2 * (torch.cos(a) * x1 - torch.sin(a) * x0))
    # The VP target is the time derivative of its mean.
    h = 1e-3
    numeric = (vp.mean(x0, x1, t.clamp(max=1 - h) + h) - vp.mean(x0, x1, t.clamp(max=1 - h))) / h
    torch.testing.assert_close(numeric, vp.target(x0, x1, t.clamp(max=1 - h)), atol=1e-2, rtol=1e-2)
    assert {make_path(v).name for v in ("rectified", "i", "ot", "vp")} == {"rectified", "i", "ot", "vp"}
    with pytest.raises(ValueError, match="variant"):
        make_path("sb")


def test_ot_cfm_recovers_the_optimal_pairing_and_discards_the_given_one():
    x0 = torch.tensor([[0.0], [10.0], [20.0], [30.0]])
    x1 = x0[[2, 0, 3, 1]] + 0.1  # given pairs are shuffled
    a, b = OptimalTransportCFMPath().couple(x0, x1)
    torch.testing.assert_close(a, x0)
    torch.testing.assert_close(b, x0 + 0.1)
    # The other variants keep the given pairs.
    assert torch.equal(IndependentCFMPath().couple(x0, x1)[1], x1)


# ------------------------------------------------------------------ network


@pytest.mark.parametrize("dims", [2, 3])
def test_velocity_unet_shapes_zero_start_and_time_dependence(dims):
    net = VelocityUNet(dims, 1, 1, features=8, mults=(1, 2), blocks=1)
    x = torch.randn(2, 1, *([8] * dims))
    assert net(x, 0.3).shape == x.shape
    with torch.no_grad():
        assert float(net(x, 0.3).abs().max()) == 0.0  # zero velocity at initialisation
    nn.init.normal_(net.out.weight)
    with torch.no_grad():
        a, b = net(x, 0.0), net(x, 1.0)
    assert float((a - b).abs().max()) > 1e-4
    torch.testing.assert_close(net(x, torch.tensor([0.0, 1.0]))[1], b[1])
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, 1, *([7] * dims)), 0.0)


# ------------------------------------------------------------------ distances


def test_l1_ssim_is_zero_for_equal_images_and_positive_otherwise():
    a = torch.rand(2, 1, 24, 24) * 2 - 1
    assert float(l1_ssim(a, a)) == pytest.approx(0.0, abs=1e-5)
    assert float(l1_ssim(a, a + 0.3)) > 0.1
    v = torch.rand(1, 1, 12, 12, 12)
    assert float(l1_ssim(v, v.flip(2))) > 0.01


def _tiny_features() -> FeatureTaps:
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
    return FeatureTaps(layers, (1, 4))


def test_lpips_with_a_tiny_stand_in_network():
    lpips = LPIPS(_tiny_features(), channel_weights=[torch.ones(4), torch.full((6,), 2.0)])
    a = torch.rand(2, 1, 16, 16) * 2 - 1
    b = torch.rand(2, 1, 16, 16) * 2 - 1
    assert float(lpips(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(lpips(a, b)) > 0
    assert float(lpips(a, b)) == pytest.approx(float(lpips(b, a)), rel=1e-5)
    # Volumes are compared slice by slice; the gradient reaches the input, not the network.
    v = torch.rand(1, 1, 8, 8, 4, requires_grad=True)
    lpips(v, torch.zeros(1, 1, 8, 8, 4)).backward()
    assert v.grad is not None and float(v.grad.abs().sum()) > 0
    assert all(p.grad is None for p in lpips.parameters())
    lpips.train()
    assert not lpips.features.training


def test_load_lpips_reads_vgg16_weights_safely(tmp_path):
    from safetensors.torch import save_file

    state = {f"features.{k}": v for k, v in vgg16_features().layers.state_dict().items()}
    path = tmp_path / "vgg16.safetensors"
    save_file(state, str(path))
    lpips = load_lpips(path)
    x = torch.rand(1, 1, 32, 32)
    assert float(lpips(x, x.flip(-1))) > 0
    # A pickle that would run code is refused.
    import pickle

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (exec, ("raise SystemExit('payload ran')",))

    bad = tmp_path / "vgg16.pth"
    bad.write_bytes(pickle.dumps(Payload()))
    from synth_core.errors import UserError

    with pytest.raises(UserError, match="safely"):
        load_lpips(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_lpips(tmp_path / "missing.pth")
    small = tmp_path / "small.safetensors"
    save_file({"features.0.weight": torch.zeros(1)}, str(small))  # wrong shape
    with pytest.raises(UserError, match="VGG16"):
        load_lpips(small)


# ------------------------------------------------------------------ the 8-Gaussians toy


class _MLPVelocity(nn.Module):
    def __init__(self, width: int = 96) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(len(x), 1)
        return self.net(torch.cat([x, t], dim=1))


def _eight_gaussian_means() -> tuple[np.ndarray, np.ndarray]:
    """Source: 8 Gaussians on a circle of radius 4; target: 8 on a square of half-side 4.
    Pairing: source cluster i belongs with target cluster (i + 3) mod 8, a rotation the
    straight (nearest) transport would not choose."""
    angles = np.arange(8) * np.pi / 4
    src_means = 4 * np.stack([np.cos(angles), np.sin(angles)], 1)
    square = np.array([[4, 0], [4, 4], [0, 4], [-4, 4], [-4, 0], [-4, -4], [0, -4], [4, -4]], float)
    return src_means, square[(np.arange(8) + 3) % 8]


def _toy(method: str, steps: int = 10, iters: int = 400) -> float:
    """Train on 8 given pairs (the cluster means) plus unpaired samples; return the mean
    distance from each mapped paired source to its partner (radius-4 geometry)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    src_means, tgt_means = _eight_gaussian_means()
    xp, zp = torch.tensor(src_means, dtype=torch.float32), torch.tensor(tgt_means, dtype=torch.float32)
    u = _MLPVelocity()
    opt = torch.optim.Adam(u.parameters(), lr=3e-3)
    times = uniform_times(steps)
    path = RectifiedPath()
    for _ in range(iters):
        ku, kv = rng.integers(0, 8, 56), rng.integers(0, 8, 56)
        xu = torch.tensor(src_means[ku] + 0.3 * rng.normal(size=(56, 2)), dtype=torch.float32)
        zu = torch.tensor(tgt_means[kv] + 0.3 * rng.normal(size=(56, 2)), dtype=torch.float32)
        if method == "bi-dpm":
            x, z = torch.cat([xp, xu]), torch.cat([zp, zu])
            paired = torch.arange(len(x)) < 8
            forward, backward = bidpm_states(u, x, z, times)
            loss = sum(w * (f[paired] - b[paired]).pow(2).sum(1).mean()
                       for w, f, b in zip(bidpm_weights(steps), forward, backward, strict=True))
            loss = loss + 0.25 * sum(mmd(f[~paired], b) + mmd(f, b[~paired])
                                     for f, b in zip(forward, backward, strict=True))
        else:  # rectified flow: paired items keep their partner, unpaired ones are random couplings
            x0, x1 = torch.cat([xp, xu]), torch.cat([zp, zu])
            t = torch.rand(len(x0))
            loss = (u(path.sample(x0, x1, t), t) - path.target(x0, x1, t)).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    with torch.no_grad():
        mapped = euler(u, xp, times)
    return float((mapped - zp).norm(dim=1).mean())


def test_eight_gaussians_bidpm_keeps_the_given_pairs_and_rectified_flow_does_not():
    bidpm, rf = _toy("bi-dpm"), _toy("rectified-flow")
    assert bidpm < 0.8, bidpm
    assert rf > 2.5, rf

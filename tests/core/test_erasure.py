"""Linear age erasure: running correlations, scale invariance, and that the penalty removes age."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from synth_core.methods import build_config, get_method_class
from synth_core.nn.flows.erasure import LinearAgeErasure


def as_latent(features: torch.Tensor) -> list[torch.Tensor]:
    """(B, F) -> one latent (B, F, 1, 1, 1), the shape the erasure reads."""
    return [features[:, :, None, None, None]]


def fill(erasure: LinearAgeErasure, features: torch.Tensor, ages: torch.Tensor) -> None:
    """Remember each row as an input and refresh with the identity as the encoder."""
    for f, a in zip(features, ages, strict=True):
        erasure.remember(f[None], a[None])
    erasure.refresh(lambda x: as_latent(x), torch.device("cpu"))


def test_refresh_gives_the_sample_correlations_of_the_reference_set() -> None:
    gen = torch.Generator().manual_seed(0)
    age = torch.rand(50, generator=gen) * 40 + 55
    features = torch.randn(50, 3, generator=gen)
    features[:, 0] += 0.05 * age  # correlated with age
    erasure = LinearAgeErasure(reference=40)
    fill(erasure, features, age)  # keeps the last 40
    x, a = features[10:].double().numpy(), age[10:].double().numpy()
    np.testing.assert_allclose(erasure.mean.numpy(), x.mean(0), rtol=1e-5)
    expected = [np.corrcoef(x[:, j], a)[0, 1] for j in range(3)]
    np.testing.assert_allclose(erasure.r.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert expected[0] > 0.5 and abs(expected[1]) < 0.4
    assert erasure.monitor() == pytest.approx(np.mean(np.square(expected)), rel=1e-4)


def test_correlation_and_penalty_do_not_change_with_the_scale_of_the_latent() -> None:
    gen = torch.Generator().manual_seed(1)
    age = torch.rand(40, generator=gen)
    features = torch.randn(40, 4, generator=gen) + age[:, None]
    small, large = LinearAgeErasure(reference=40), LinearAgeErasure(reference=40)
    fill(small, features, age)
    fill(large, 1000.0 * features, age)
    torch.testing.assert_close(small.r, large.r, rtol=1e-4, atol=1e-6)
    new, new_age = torch.randn(1, 4, generator=gen), torch.rand(1, generator=gen)
    torch.testing.assert_close(small.penalty(as_latent(new), new_age),
                               large.penalty(as_latent(1000.0 * new), new_age), rtol=1e-3, atol=1e-6)


def test_refresh_is_due_once_the_reference_is_full_then_every_n_batches() -> None:
    erasure = LinearAgeErasure(reference=4, every=3)
    due = []
    for i in range(12):
        erasure.remember(torch.full((1, 1), float(i)), torch.tensor([float(i)]))
        due.append(erasure.due())
        if due[-1]:
            erasure.refresh(lambda x: as_latent(x), torch.device("cpu"))
    assert due == [False, False, False, True, False, False, True, False, False, True, False, False]
    assert len(erasure.inputs) == 4


def test_penalty_is_zero_before_a_refresh_and_then_pushes_against_the_correlation() -> None:
    erasure = LinearAgeErasure(reference=20)
    gen = torch.Generator().manual_seed(2)
    assert erasure.penalty(as_latent(torch.ones(1, 1)), torch.ones(1)).item() == 0.0
    assert math.isnan(erasure.monitor())
    age = torch.rand(20, generator=gen)
    fill(erasure, age[:, None] + 0.1 * torch.randn(20, 1, generator=gen), age)
    # An older-than-average subject with a feature correlated positively with age: the
    # gradient asks for a lower value, which lowers the correlation.
    feature = torch.tensor([[1.0]], requires_grad=True)
    erasure.penalty(as_latent(feature), torch.tensor([1.0])).backward()
    assert feature.grad.item() > 0 and erasure.monitor() > 0.5


def test_penalty_removes_a_linear_age_signal_from_an_encoder() -> None:
    torch.manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        age = torch.rand(n) * 2 - 1
        return torch.cat([torch.randn(n, 5), age[:, None]], 1), age

    def strongest_correlation(encoder: nn.Module) -> float:  # on fresh data
        x, y = batch(4000)
        with torch.no_grad():
            f = encoder(x)
        return float(torch.corrcoef(torch.cat([f, y[:, None]], 1).T)[-1, :-1].abs().max())

    encoder = nn.Linear(6, 8)
    before = strongest_correlation(encoder)
    # DUAL-GLOW's optimiser and learning rate, batch size 1, the defaults of the erasure.
    erasure = LinearAgeErasure()
    optimiser = torch.optim.Adamax(encoder.parameters(), lr=1e-3)
    for _ in range(3000):
        x, age = batch(1)
        erasure.remember(x, age)
        if erasure.due():
            erasure.refresh(lambda v: as_latent(encoder(v)), torch.device("cpu"))
        penalty = erasure.penalty(as_latent(encoder(x)), age)
        if not penalty.requires_grad:  # before the first refresh
            continue
        optimiser.zero_grad()
        penalty.backward()
        optimiser.step()
    after = strongest_correlation(encoder)
    assert before > 0.3, before
    # the correlations' sampling noise over 64 reference inputs (about 0.12) sets the floor
    assert after < 0.15, after
    # the other inputs still pass (erasure removes age, not the encoder)
    assert encoder.weight[:, :5].abs().sum() > 1.0


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_dual_glow_method_reports_the_correlation_and_keeps_the_statistics_out_of_its_state(
    weight: float,
) -> None:
    cfg = build_config("dual-glow", "tiny", {"age_erasure": weight, "age_erasure_reference": 3,
                                             "age_erasure_every": 2})
    method = get_method_class("dual-glow")(cfg, "t1", "pet")
    gen = torch.Generator().manual_seed(0)
    monitors = []
    for age in (60.0, 70.0, 80.0, 90.0):
        batch = {"source": torch.rand(1, 1, 8, 8, 8, generator=gen) * 2 - 1,
                 "target": torch.rand(1, 1, 8, 8, 8, generator=gen) * 2 - 1,
                 "age": torch.tensor([age])}
        out = method.losses(batch)
        assert torch.isfinite(out["loss"])
        monitors.append(float(out.get("age_corr", math.nan)))
    assert ("age_corr" in out) == (weight > 0)
    if weight > 0:  # the reference (3 MRIs) is full at the third batch
        assert math.isnan(monitors[1]) and all(math.isfinite(m) for m in monitors[2:])
    assert not any("erasure" in key for key in method.state_dict())


def test_smoothing_averages_each_channels_correlations_over_neighbouring_voxels() -> None:
    gen = torch.Generator().manual_seed(3)
    latents = [torch.randn(6, 2, 4, 5, 4, generator=gen), torch.randn(6, 3, 2, 2, 2, generator=gen)]
    erasure = LinearAgeErasure(reference=6, smooth=3)
    for i in range(6):
        erasure.remember(torch.tensor([[float(i)]]), torch.tensor([float(i)]))
    erasure.refresh(lambda x: [z[int(x.item()) : int(x.item()) + 1] for z in latents],
                    torch.device("cpu"))
    first = 2 * 4 * 5 * 4
    r, push = erasure.r[:first].reshape(2, 4, 5, 4), erasure.push[:first].reshape(2, 4, 5, 4)
    assert push[1, 1, 2, 1] == pytest.approx(float(r[1, 0:3, 1:4, 0:3].mean()), abs=1e-6)
    assert push[0, 0, 0, 0] == pytest.approx(float(r[0, 0:2, 0:2, 0:2].mean()), abs=1e-6)
    # a grid smaller than the neighbourhood: every voxel gets its channel's mean
    top_r, top_push = erasure.r[first:].reshape(3, 8), erasure.push[first:].reshape(3, 8)
    torch.testing.assert_close(top_push, top_r.mean(1, keepdim=True).expand(3, 8))
    with pytest.raises(ValueError, match="odd"):
        LinearAgeErasure(smooth=2)

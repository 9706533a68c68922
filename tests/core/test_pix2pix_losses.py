"""pix2pix's loss weights: the adversarial term can be switched off (the discriminator is then
never run or stepped, and the engine counts one optimiser step a batch), and an SSIM term can
be added; the ``cpu-l1`` preset is the native-resolution one."""

from __future__ import annotations

import pytest
import torch

from synth_core.errors import UserError
from synth_core.methods import build_config, get_method_class


class _Ctx:
    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.global_step = 0
        self.stepped: list[int] = []

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        self.optimizers[index].zero_grad()
        loss.backward()
        self.optimizers[index].step()
        self.stepped.append(index)
        return True


def _method(**overrides):
    cls = get_method_class("pix2pix")
    torch.manual_seed(0)
    return cls(build_config("pix2pix", "tiny", overrides), "t1", "t2")


def _batch():
    g = torch.Generator().manual_seed(3)
    return {"source": torch.randn(1, 1, 16, 16, 16, generator=g),
            "target": torch.randn(1, 1, 16, 16, 16, generator=g)}


def test_without_the_gan_term_the_discriminator_is_never_run_or_stepped():
    method = _method(lambda_gan=0.0)
    assert get_method_class("pix2pix").optimizer_steps_per_batch(method.config) == 1
    calls = []
    method.discriminator.register_forward_hook(lambda *a: calls.append(1))
    before = [p.detach().clone() for p in method.discriminator.parameters()]
    gen_before = [p.detach().clone() for p in method.generator.parameters()]
    ctx = _Ctx(method.configure_optimizers())
    losses = method.adversarial_step(_batch(), ctx)
    assert ctx.stepped == [0] and not calls
    assert set(losses) == {"loss", "g_l1"}
    assert float(losses["loss"]) == pytest.approx(100.0 * float(losses["g_l1"]), rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, method.discriminator.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(gen_before, method.generator.parameters(), strict=True))


def test_with_the_gan_term_both_optimisers_step_as_in_the_paper():
    method = _method()
    assert get_method_class("pix2pix").optimizer_steps_per_batch(method.config) == 2
    ctx = _Ctx(method.configure_optimizers())
    losses = method.adversarial_step(_batch(), ctx)
    assert ctx.stepped == [1, 0]
    assert {"g_gan", "g_l1", "d"} <= set(losses)


def test_ssim_term_is_added_with_its_weight():
    method = _method(lambda_gan=0.0, lambda_ssim=3.0)
    ctx = _Ctx(method.configure_optimizers())
    losses = method.adversarial_step(_batch(), ctx)
    assert 0.0 < float(losses["g_ssim"]) <= 2.0  # 1 - SSIM
    expected = 100.0 * float(losses["g_l1"]) + 3.0 * float(losses["g_ssim"])
    assert float(losses["loss"]) == pytest.approx(expected, rel=1e-6)


def test_negative_loss_weights_are_refused():
    with pytest.raises(UserError, match="must not be negative"):
        _method(lambda_gan=-1.0)


def test_cpu_l1_preset_is_l1_only_on_64_cubed_patches():
    config = build_config("pix2pix", "cpu-l1")
    assert config.lambda_gan == 0.0 and config.lambda_ssim == 0.0
    assert tuple(config.train.patch_size) == (64, 64, 64) and config.train.lr == 1e-3
    assert config.features == 16 and config.upsample == "transpose"


def test_cpu_fine_preset_is_the_recipe_of_the_bundled_1mm_t1_t2_model():
    # The preset names the settings the bundled 1 mm T1 -> T2 checkpoint was trained with
    # (cpu-l1 + SSIM 200 + EMA + 96^3 patches): a change to either shows here.
    import dataclasses
    import json
    from importlib.resources import files

    config = build_config("pix2pix", "cpu-fine")
    card = json.loads(files("synth_core").joinpath(
        "checkpoints/pix2pix-t1-t2-fine/model.json").read_text())
    recorded = card["config"]
    preset = json.loads(json.dumps(dataclasses.asdict(config)))
    # Fields newer than the card load at their defaults, the network the card was trained with.
    newer = {k: preset[k] for k in preset.keys() - recorded.keys()}
    assert newer == {"backbone": "unet", "mults": [1, 1, 2, 2], "blocks": 1}
    assert {k: preset[k] for k in recorded} == recorded
    assert config.lambda_gan == 0.0 and config.lambda_ssim == 200.0
    assert tuple(config.train.patch_size) == (96, 96, 96) and config.train.ema_decay == 0.999


def test_the_residual_backbone_learns_a_toy_contrast_inversion():
    """``backbone=resunet`` (the unified model's residual U-Net without a code): the target is
    the source inverted; 80 steps bring the L1 well below the identity map's."""
    method = _method(backbone="resunet", mults=[1, 2], blocks=1, features=8, lambda_gan=0.0)
    from synth_core.nn.conditional_autoencoder import ResidualConditionalAutoencoder
    assert isinstance(method.generator, ResidualConditionalAutoencoder)
    ctx = _Ctx(method.configure_optimizers())
    g = torch.Generator().manual_seed(5)
    low = torch.rand(8, 1, 4, 4, 4, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(low, size=(16, 16, 16), mode="trilinear")
    for step in range(80):
        batch = x[step % 8:step % 8 + 1]
        method.adversarial_step({"source": batch, "target": -batch}, ctx)
    with torch.no_grad():
        error = float((method.generator(x) + x).abs().mean())
    assert error < 0.25 * float((2 * x).abs().mean()), error


def test_an_unknown_backbone_is_a_user_error():
    with pytest.raises(UserError, match="unet or resunet"):
        _method(backbone="vit")

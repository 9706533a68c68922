"""The shared adversarial pieces (settings, optimisers, cycle losses) changed nothing:
bundled pix2pix and CycleGAN checkpoints translate as before, and a training step of each
gives the losses it gave before the pieces were shared (figures recorded from the code
as it was, with the same seeds)."""

from __future__ import annotations

import pytest
import torch

from synth_core import zoo
from synth_core.methods import build_config, get_method_class

# (checkpoint, source, target): mean, sd, and two voxels of the output, from the code before.
# Only checkpoints whose weights are still those of that time count: none of these is bundled
# any more (retired below the floor, or, for T1 to PET, retrained and then replaced by a 2 mm
# model), so the cases skip.
BEFORE = {
    ("pix2pix-t1-t2-small", "t1", "t2"): (423.51097189283206, 366.82160684414475,
                                          580.8948364257812, 671.34619140625),
    ("cyclegan-t1-t2-small", "t1", "t2"): (424.2130616830869, 351.1369647484817,
                                           614.5059814453125, 535.3671875),
    ("cyclegan-t1-t2-small", "t2", "t1"): (439.97570900857033, 536.8119576740397,
                                           651.4846801757812, 1009.9159545898438),
}
BUNDLED = {c.name for c in zoo._scan(zoo.bundled_dir(), "bundled")}


@pytest.mark.parametrize("case", [c for c in BEFORE if c[0] in BUNDLED], ids=lambda c: f"{c[0]}:{c[1]}->{c[2]}")
def test_bundled_gan_checkpoints_translate_as_before(case: tuple[str, str, str]) -> None:
    from synth_core.inference import translate
    from synth_core.phantom import generate_subject

    name, source, target = case
    subject = generate_subject(3, seed=99, preset="small")
    info = zoo.locate(name)
    out = translate(subject.volumes[source], info.method, target, source=source,
                    checkpoint=str(info.directory), device="cpu").volume.data.astype("float64")
    mean, sd, v1, v2 = BEFORE[case]
    got = (out.mean(), out.std(), out[20, 30, 20], out[30, 25, 28])
    assert got == pytest.approx((mean, sd, v1, v2), rel=1e-4, abs=1e-3)


class _Ctx:
    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.global_step = 0

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        self.optimizers[index].zero_grad()
        loss.backward()
        self.optimizers[index].step()
        return True


STEPS_BEFORE = {
    "pix2pix": [{"loss": 80.956894, "g_gan": 0.67613, "g_l1": 0.802808, "d": 0.70777},
                {"loss": 80.926735, "g_gan": 0.681264, "g_l1": 0.802455, "d": 0.705951},
                {"loss": 81.292816, "g_gan": 0.698482, "g_l1": 0.805943, "d": 0.703699}],
    "cyclegan": [{"loss": 28.175117, "g_gan": 2.177559, "cycle": 1.732603, "identity": 1.734306,
                  "d": 1.23105},
                 {"loss": 28.109253, "g_gan": 2.060116, "cycle": 1.73552, "identity": 1.738787,
                  "d": 1.190367},
                 {"loss": 27.794476, "g_gan": 1.952178, "cycle": 1.723304, "identity": 1.721851,
                  "d": 1.121872}],
}


@pytest.mark.parametrize("key", ["pix2pix", "cyclegan"])
def test_training_steps_give_the_losses_they_gave_before(key: str) -> None:
    torch.manual_seed(0)
    method = get_method_class(key)(build_config(key, "tiny"), "t1", "t2")
    ctx = _Ctx(method.configure_optimizers())
    g = torch.Generator().manual_seed(5)
    for expected in STEPS_BEFORE[key]:
        batch = {"source": torch.randn(1, 1, 24, 24, 24, generator=g),
                 "target": torch.randn(1, 1, 24, 24, 24, generator=g)}
        losses = method.adversarial_step(batch, ctx)
        assert {k: float(v) for k, v in losses.items()} == pytest.approx(expected, abs=2e-5)


def test_the_adversarial_settings_are_one_class() -> None:
    from synth_core.methods._adversarial import AdversarialSettings

    for key in ("pix2pix", "cyclegan"):
        assert issubclass(get_method_class(key).config_class, AdversarialSettings)
    assert build_config("pix2pix", "paper").gan_mode == "vanilla"
    assert build_config("cyclegan", "paper").gan_mode == "lsgan"

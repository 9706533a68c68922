"""RevGAN: one network both ways, its objectives, and the command line around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synth_core.cli import main
from synth_core.methods import SynthesisRequest, build_config, get_method_class


def _model(preset: str = "tiny", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_method_class("revgan")(build_config("revgan", preset, overrides), "t1", "t2")


class _Ctx:
    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers, self.global_step = optimizers, 0

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        self.optimizers[index].zero_grad()
        loss.backward()
        self.optimizers[index].step()
        return True


@pytest.mark.parametrize("variant", ["resnet", "srcnn"])
def test_both_directions_share_one_core_and_are_inverse_through_it(variant: str) -> None:
    m = _model(variant=variant, depth=3)
    for p in m.core.parameters():  # past the identity initialisation
        torch.nn.init.normal_(p, 0.0, 0.2)
    h = torch.randn(1, m.core.blocks[0].nn1.body[0].in_channels * 2, 6, 6, 6)
    with torch.no_grad():
        assert ((m.core.inverse(m.core(h)) - h).norm() / h.norm()) < 1e-5
    x = torch.randn(1, 1, 8, 8, 8)
    fwd = m.synthesize(x, SynthesisRequest())
    back = m.synthesize(x, SynthesisRequest(reverse=True))
    assert fwd.shape == back.shape == (1, 1, 1, 8, 8, 8)
    assert not torch.allclose(fwd, back)
    names = {n.split(".")[0] for n, _ in m.named_parameters()}
    assert {"encoder_a", "encoder_b", "decoder_a", "decoder_b", "core"} <= names


def test_paired_step_is_equation_11_and_unpaired_step_equation_12() -> None:
    m = _model()
    ctx = _Ctx(m.configure_optimizers())
    a, b = torch.randn(1, 1, 24, 24, 24), torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        expected_l1 = (torch.nn.functional.l1_loss(m.a_to_b(a), b)
                       + torch.nn.functional.l1_loss(m.b_to_a(b), a))
        expected_cycle = (torch.nn.functional.l1_loss(m.b_to_a(m.a_to_b(a)), a)
                          + torch.nn.functional.l1_loss(m.a_to_b(m.b_to_a(b)), b))
    paired = m.adversarial_step({"source": a, "target": b, "paired": torch.tensor([True])}, ctx)
    assert float(paired["g_l1"]) == pytest.approx(float(expected_l1), rel=1e-5)
    assert float(paired["loss"]) == pytest.approx(float(paired["g_gan"]) + 100 * float(expected_l1),
                                                  rel=1e-5)
    m = _model()
    ctx = _Ctx(m.configure_optimizers())
    unpaired = m.adversarial_step({"source": a, "target": b, "paired": torch.tensor([False])}, ctx)
    assert float(unpaired["cycle"]) == pytest.approx(float(expected_cycle), rel=1e-5)
    assert float(unpaired["loss"]) == pytest.approx(
        float(unpaired["g_gan"]) + 10 * float(expected_cycle), rel=1e-5)


def test_gan_weight_zero_leaves_only_the_l1_terms() -> None:
    m = _model(gan_weight=0.0)
    ctx = _Ctx(m.configure_optimizers())
    a, b = torch.randn(1, 1, 24, 24, 24), torch.randn(1, 1, 24, 24, 24)
    out = m.adversarial_step({"source": a, "target": b, "paired": torch.tensor([True])}, ctx)
    assert float(out["g_gan"]) == 0.0
    assert float(out["loss"]) == pytest.approx(100 * float(out["g_l1"]), rel=1e-6)


def test_ssim_term_adds_one_minus_ssim_of_each_direction() -> None:
    from synth_core.metrics import ssim as scoring_ssim

    m = _model(gan_weight=0.0, lambda_ssim=3.0)
    ctx = _Ctx(m.configure_optimizers())
    a, b = torch.rand(1, 1, 24, 24, 24) * 2 - 1, torch.rand(1, 1, 24, 24, 24) * 2 - 1
    with torch.no_grad():  # the scoring's SSIM (scikit-image's, data range 2 here)
        fake_b, fake_a = m.a_to_b(a), m.b_to_a(b)
        expected = sum(1.0 - scoring_ssim(f[0, 0].numpy(), t[0, 0].numpy(), 2.0)
                       for f, t in ((fake_b, b), (fake_a, a)))
    out = m.adversarial_step({"source": a, "target": b, "paired": torch.tensor([True])}, ctx)
    assert float(out["g_ssim"]) == pytest.approx(expected, rel=1e-4)
    assert float(out["loss"]) == pytest.approx(100 * float(out["g_l1"]) + 3 * expected, rel=1e-4)
    plain = _model(gan_weight=0.0)
    out = plain.adversarial_step({"source": a, "target": b, "paired": torch.tensor([True])},
                                 _Ctx(plain.configure_optimizers()))
    assert "g_ssim" not in out


def test_gan_weight_zero_runs_and_trains_no_discriminator() -> None:
    m = _model(gan_weight=0.0)
    ctx = _Ctx(m.configure_optimizers())
    calls = []
    for d in (m.discriminator_a, m.discriminator_b):
        d.register_forward_hook(lambda *args: calls.append(1))
    before = [p.clone() for p in m.discriminator_parameters()]
    a, b = torch.randn(1, 1, 24, 24, 24), torch.randn(1, 1, 24, 24, 24)
    for paired in (True, False):
        out = m.adversarial_step({"source": a, "target": b, "paired": torch.tensor([paired])}, ctx)
        assert "d" not in out and float(out["g_gan"]) == 0.0
    assert calls == []
    assert all(torch.equal(p, q) for p, q in zip(m.discriminator_parameters(), before, strict=True))
    assert all(p.grad is None for p in m.discriminator_parameters())
    assert get_method_class("revgan").optimizer_steps_per_batch(build_config("revgan", "tiny")) == 2
    assert get_method_class("revgan").optimizer_steps_per_batch(m.config) == 1


@pytest.mark.parametrize("gan_weight", [0.0, 1.0])
def test_training_runs_exactly_max_steps_with_or_without_discriminators(
        gan_weight: float, tiny_cohort: Path, tmp_path: Path) -> None:
    from synth_core.training import TrainRequest, train

    result = train(TrainRequest(method="revgan", data=tiny_cohort, source="t1", target="t2",
                                out=tmp_path / "run", preset="tiny",
                                overrides={"gan_weight": gan_weight, "max_steps": 3,
                                           "val_every": 3, "checkpoint_every": 3}))
    assert result.steps == 3
    assert result.model.card["steps"] == 3


def test_presets() -> None:
    paper = build_config("revgan", "paper")
    assert (paper.variant, paper.features, paper.lambda_l1, paper.lambda_cycle) == ("resnet", 32, 100.0, 10.0)
    assert (paper.train.lr, paper.beta1, paper.gan_mode) == (2e-4, 0.5, "lsgan")
    assert build_config("revgan", "srcnn-paper").variant == "srcnn"
    sr = build_config("revgan", "srcnn-cpu")
    assert (sr.variant, sr.norm, sr.residual, sr.train.lr) == ("srcnn", "none", True, 1e-3)
    assert (sr.train.patch_size, sr.train.max_steps) == ((24, 24, 24), 800)
    cpu = build_config("revgan", "cpu")
    assert (cpu.variant, cpu.gan_weight, cpu.lambda_ssim) == ("resnet", 0.0, 200.0)
    assert (cpu.train.patch_size, cpu.train.lr) == (None, 1e-3)  # whole volumes
    gan = build_config("revgan", "cpu-gan")
    assert (gan.train.patch_size, gan.train.max_steps, gan.gan_weight) == ((32, 32, 32), 300, 1.0)


@pytest.fixture(scope="module")
def revgan_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synth_core.training import TrainRequest, train

    out = tmp_path_factory.mktemp("runs") / "revgan"
    train(TrainRequest(method="revgan", data=tiny_cohort, source="t1", target="t2", out=out,
                       preset="tiny", name="tiny-revgan-t1-t2"))
    return out


def test_one_checkpoint_translates_both_ways_through_the_cli(revgan_run: Path, tiny_cohort: Path,
                                                             tmp_path: Path, capsys) -> None:
    import nibabel as nib

    t1 = tiny_cohort / "sub-006" / "sub-006_t1.nii.gz"
    t2 = tiny_cohort / "sub-006" / "sub-006_t2.nii.gz"
    common = ["--method", "revgan", "--checkpoint", str(revgan_run)]
    assert main(["translate", str(t1), "-o", str(tmp_path / "t2.nii.gz"), "--to", "t2", *common]) == 0
    assert main(["translate", str(t2), "-o", str(tmp_path / "t1.nii.gz"), "--to", "t1", *common]) == 0
    assert main(["translate", str(t2), "-o", str(tmp_path / "t1r.nii.gz"), "--to", "t1", "--reverse",
                 *common]) == 0
    capsys.readouterr()
    a = nib.load(tmp_path / "t1.nii.gz").get_fdata()
    b = nib.load(tmp_path / "t1r.nii.gz").get_fdata()
    assert (a == b).all()  # --to the source and --reverse are the same direction
    assert a.shape == nib.load(t2).shape
    side = json.loads((tmp_path / "t1.json").read_text(encoding="utf-8"))
    assert side["Synthetic"] is True


@pytest.mark.parametrize("extra, message", [
    (["--method", "revgan", "--to", "pet"], "not to 'pet'"),
    (["--method", "pix2pix", "--to", "pet", "--reverse"], "one way only"),
])
def test_wrong_task_or_reverse_on_a_one_way_method_exit_2(extra, message, revgan_run: Path,
                                                          trained, tiny_cohort: Path,
                                                          tmp_path: Path, capsys) -> None:
    t1 = tiny_cohort / "sub-006" / "sub-006_t1.nii.gz"
    checkpoint = revgan_run if "revgan" in extra else trained["pix2pix"].run_dir
    code = main(["translate", str(t1), "-o", str(tmp_path / "out.nii.gz"), *extra,
                 "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out.nii.gz").exists()


def test_unknown_benchmark_name_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    code = main(["benchmark", "--out", str(tmp_path / "bench"), "--only", "revgan-memry"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "revgan-memory" in err
    assert not (tmp_path / "bench").exists()

"""The unified any-to-any model (Liu et al.) and the engine's any-to-any path: data,
training, card, zoo, translate with a target code, "complete the study", and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import write_tiny_cohort
from synth_core import errors as synth_core_errors
from synth_core import zoo
from synth_core.cli import main
from synth_core.methods import SynthesisRequest, build_config, get_method_class
from synth_core.methods.unified import disentanglement_loss
from synth_core.nn import PatchDiscriminator

MODS = ("t1", "t1ce", "t2", "flair")


def write_multicontrast_cohort(out: Path, n: int = 6) -> Path:
    """The tiny cohort with T1ce (T1 with a bright rim) and FLAIR (T2 with dark CSF) added."""
    write_tiny_cohort(out, n=n)
    for sub in sorted(out.glob("sub-*")):
        t1 = nib.load(sub / f"{sub.name}_t1.nii.gz")
        t2 = nib.load(sub / f"{sub.name}_t2.nii.gz").get_fdata()
        data = t1.get_fdata()
        rim = np.zeros_like(data)
        rim[5:8, 5:8, 5:8] = 80.0
        flair = np.abs(400.0 - t2) * (data > 20)
        for mod, image in (("t1ce", data + rim), ("flair", flair + 5)):
            nib.save(nib.Nifti1Image(image.astype(np.float32), t1.affine),
                     sub / f"{sub.name}_{mod}.nii.gz")
    return out


class _Ctx:
    """A StepContext without Lightning: plain backward and step."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.global_step = 0

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        self.optimizers[index].zero_grad()
        loss.backward()
        self.optimizers[index].step()
        return True


def _toy_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random 2D images in [-1, 1], (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, size // 4, size // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear",
                                           align_corners=False)


@pytest.fixture(scope="module")
def mc_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_multicontrast_cohort(tmp_path_factory.mktemp("multicontrast"))


@pytest.fixture(scope="module")
def unified_run(mc_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    from synth_core.training import TrainRequest, train

    out = tmp_path_factory.mktemp("runs") / "unified"
    return train(TrainRequest(method="unified", data=mc_cohort, source="", target="", out=out,
                              preset="tiny", modalities=MODS, name="tiny-unified"))


# ---------------------------------------------------------------- the losses and networks

def test_disentanglement_loss_is_zero_for_identical_features_and_the_mean_l1_otherwise():
    a = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    assert float(disentanglement_loss(a, [t.clone() for t in a])) == 0.0
    b = [t + 0.5 for t in a]
    assert float(disentanglement_loss(a, b)) == pytest.approx(0.5, abs=1e-6)
    c = [a[0], a[1] + 2.0]  # one level off by 2: the mean over the two levels is 1
    assert float(disentanglement_loss(a, c)) == pytest.approx(1.0, abs=1e-6)


def test_classifier_head_loss_falls_on_a_toy_problem():
    """Three classes told apart by their texture's frequency: the auxiliary classifier's
    cross-entropy falls well below chance (ln 3) within 60 steps."""
    torch.manual_seed(0)
    disc = PatchDiscriminator(2, 1, features=8, n_layers=2, n_classes=3)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    xx = torch.arange(32).float()
    labels = torch.arange(3).repeat(8)
    grating = torch.stack([torch.sin(xx * (0.3 + 0.9 * k)) for k in labels.tolist()])
    images = (grating[:, None, :, None] * torch.ones(1, 1, 1, 32)) \
        + 0.1 * torch.randn(len(labels), 1, 32, 32)
    losses = []
    for _ in range(60):
        _, logits = disc.classify(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 0.9 and losses[-1] < 0.3 * losses[0], losses[::10]
    patches, logits = disc.classify(images[:2])
    assert logits.shape == (2, 3) and patches.shape[:2] == (2, 1)


def test_classify_needs_the_head():
    with pytest.raises(ValueError, match="no classifier head"):
        PatchDiscriminator(2, 1, features=4, n_layers=1).classify(torch.zeros(1, 1, 16, 16))


BACKBONES = ({"backbone": "unet"}, {"backbone": "resunet", "mults": [1, 2], "blocks": 1})


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b["backbone"])
def test_self_reconstruction_is_near_identity_after_a_few_steps(backbone):
    torch.manual_seed(0)
    config = build_config("unified", "tiny", {"features": 8, **backbone})
    method = get_method_class("unified")(config, "t1", "t1ce")
    ctx = _Ctx(method.configure_optimizers())
    x = _toy_images(64, 16, seed=1)
    code = torch.tensor([0, 1, 2, 3] * 2)
    request = SynthesisRequest(target_code=2)
    before = float((method.synthesize(x[:8], request)[0] - x[:8]).abs().mean())
    for step in range(120):
        batch = x[(step * 8) % 64:(step * 8) % 64 + 8]
        method.adversarial_step({"source": batch, "target": batch, "source_code": code,
                                 "target_code": code}, ctx)
    method.eval()
    error = float((method.synthesize(x[:8], request)[0] - x[:8]).abs().mean())
    assert error < 0.08 and error < 0.25 * before, (before, error)


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b["backbone"])
def test_one_model_learns_opposite_directions_by_code(backbone):
    """Two toy contrasts of one anatomy ``a`` in [0.2, 1]: ``t1 = a``, ``t2 = -a``. One
    network learns both directions and the self-reconstructions; the code alone decides the
    output's sign."""
    torch.manual_seed(0)
    config = build_config("unified", "tiny", {"features": 8, "modalities": ["t1", "t2"],
                                              **backbone})
    method = get_method_class("unified")(config, "t1", "t2")
    ctx = _Ctx(method.configure_optimizers())
    anatomy = 0.6 + 0.4 * _toy_images(64, 16, seed=2)

    def contrast(a: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return a * (1 - 2 * code.float()).view(-1, 1, 1, 1)

    for step in range(150):
        a = anatomy[(step * 8) % 64:(step * 8) % 64 + 8]
        src, tgt = torch.randint(2, (8,)), torch.randint(2, (8,))
        method.adversarial_step({"source": contrast(a, src), "target": contrast(a, tgt),
                                 "source_code": src, "target_code": tgt}, ctx)
    method.eval()
    probe = anatomy[:8]  # t1 inputs
    to_t2 = method.synthesize(probe, SynthesisRequest(target_code=1))[0]
    to_t1 = method.synthesize(probe, SynthesisRequest(target_code=0))[0]
    assert float((to_t2 + probe).abs().mean()) < 0.15
    assert float((to_t1 - probe).abs().mean()) < 0.15
    from_t2 = method.synthesize(-probe, SynthesisRequest(target_code=0))[0]
    assert float((from_t2 - probe).abs().mean()) < 0.15


# ---------------------------------------------------------------- data

def test_multicontrast_items_are_one_subject_with_codes_drawn_evenly(mc_cohort: Path):
    from synth_core.data import MultiContrastDataset, VolumeStore, discover_subjects

    records = discover_subjects(mc_cohort)
    store = VolumeStore(records, multiple=4)
    data = MultiContrastDataset(store, records, MODS, spatial="2d", seed=3,
                                samples_per_epoch=400)
    counts = np.zeros((4, 4), int)
    for i in range(400):
        item = data[i]
        s, t = int(item["source_code"]), int(item["target_code"])
        counts[s, t] += 1
        if i < 20:
            sid, z = item["source_id"], None
            full_s, full_t = store.get(sid, MODS[s])[0], store.get(sid, MODS[t])[0]
            z = [k for k in range(full_s.shape[-1]) if torch.equal(full_s[..., k], item["source"][0])]
            assert z and torch.equal(full_t[..., z[0]], item["target"][0])  # one slice, co-registered
    assert counts.sum(1).min() > 70  # each source about 100 of 400
    assert np.diag(counts).sum() > 50  # self-reconstruction among the targets
    again = data[7]
    assert torch.equal(again["source"], data[7]["source"])
    assert int(again["target_code"]) == int(data[7]["target_code"])


# ---------------------------------------------------------------- training, card, zoo

def test_training_writes_an_any_to_any_card(unified_run):
    card = json.loads((unified_run.run_dir / "model.json").read_text())
    assert card["any_to_any"] is True and card["modalities"] == list(MODS)
    assert card["config"]["modalities"] == list(MODS)
    assert set(card["normalisation"]["references"]) == set(MODS)
    assert set(card["input_reference"]) == set(MODS)
    info = zoo.locate("tiny-unified")
    assert info.task == "any of t1, t1ce, t2, flair"
    for source in MODS:
        for target in MODS:
            if source != target:
                assert zoo._fits(info, source, target)
    assert not zoo._fits(info, "t1", "pet")


def test_the_validity_suite_judges_every_direction_of_an_any_to_any_checkpoint(unified_run):
    from synth_core.validity_suite import _directions

    pairs = _directions(zoo.locate("tiny-unified"))
    assert len(pairs) == 12 and len(set(pairs)) == 12
    assert all(a != b and a in MODS and b in MODS for a, b in pairs)


def test_one_checkpoint_answers_all_12_directions(unified_run, mc_cohort: Path):
    from synth_core.inference import _cached_method, translate
    from synth_core.io import load_volume

    info = zoo.locate("tiny-unified")
    model = _cached_method(str(info.directory), info.sha256, "cpu")
    for source in MODS:
        volume = load_volume(mc_cohort / "sub-006" / f"sub-006_{source}.nii.gz")
        outs = {}
        for target in MODS:
            if target == source:
                continue
            result = translate(volume, "unified", target, source=source, checkpoint="tiny-unified",
                               device="cpu")
            assert result.volume.shape == volume.shape
            assert np.isfinite(result.volume.data).all()
            assert result.provenance["Parameters"]["target_code"] == MODS.index(target)
            assert result.provenance["TargetModality"] == target
            outs[target] = result
        assert len(outs) == 3
    # The network itself answers differently by code (not only the per-target intensity map).
    x = _toy_images(2, 16)
    nets = [model.synthesize(x, SynthesisRequest(target_code=k))[0] for k in range(4)]
    assert all(float((nets[k] - nets[0]).abs().max()) > 1e-6 for k in range(1, 4))


# ---------------------------------------------------------------- the command line

def test_cli_completes_a_study(unified_run, mc_cohort: Path, tmp_path: Path, capsys):
    scan = mc_cohort / "sub-005" / "sub-005_t1.nii.gz"
    out = tmp_path / "study"
    code = main(["translate", str(scan), "--method", "unified", "--to", "t1ce,t2,flair",
                 "-o", str(out), "--checkpoint", "tiny-unified", "--device", "cpu"])
    assert code == 0
    err = capsys.readouterr().err
    assert "source t1" in err
    for target in ("t1ce", "t2", "flair"):
        image = out / "sub-005" / f"sub-005_{target}.nii.gz"
        side = json.loads((out / "sub-005" / f"sub-005_{target}.json").read_text())
        assert image.is_file() and side["Synthetic"] is True
        assert side["TargetModality"] == target and side["SourceModality"] == "t1"
        assert side["SourceModalityFrom"] == "from the file name"
        assert nib.load(image).shape == nib.load(scan).shape


@pytest.mark.parametrize("args, message", [
    (["--to", "t2"], "cannot tell which the input is"),           # no --from, no modality in name
    (["--to", "pet", "--from", "t1"], "not to 'pet'"),            # unsupported target
    (["--to", "mri", "--from", "t1"], "unknown"),                 # unknown target
    (["--to", "t1", "--from", "t1"], "names the input's own modality"),
    (["--to", "t2,t1", "--from", "t1"], "names the input's own modality"),
    (["--to", "t2", "--from", "pet"], "takes t1, t1ce, t2, flair input"),
])
def test_cli_any_to_any_mistakes_are_one_line(unified_run, mc_cohort: Path, tmp_path: Path,
                                              capsys, args: list[str], message: str):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes((mc_cohort / "sub-005" / "sub-005_t1.nii.gz").read_bytes())
    out = tmp_path / ("out" if "," in args[1] else "out.nii.gz")
    code = main(["translate", str(scan), "--method", "unified", "-o", str(out),
                 "--checkpoint", "tiny-unified", "--device", "cpu", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--method", "unified", "--from", "t1", "--to", "t2"], "give --modalities"),
    (["--method", "pix2pix", "--modalities", "t1,t2"], "give --from and --to"),
    (["--method", "unified", "--modalities", "t1"], "at least two modalities"),
    (["--method", "unified", "--modalities", "t1,t1"], "names a modality twice"),
    (["--method", "unified", "--modalities", "t1,t1,t2", "--from", "t1"], "not both"),
])
def test_cli_train_modalities_mistakes(mc_cohort: Path, tmp_path: Path, capsys, args, message):
    code = main(["train", "--data", str(mc_cohort), "--out", str(tmp_path / "run"),
                 "--preset", "tiny", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_models_lists_the_any_to_any_task(unified_run, capsys):
    assert main(["models"]) == 0
    line = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("tiny-unified"))
    assert "any of t1, t1ce, t2, flair" in line


def test_api_takes_the_source_from_a_volume_with_a_stated_modality(unified_run, mc_cohort: Path):
    from synth_core.inference import translate
    from synth_core.io import load_volume

    stated = load_volume(mc_cohort / "sub-006" / "sub-006_t2.nii.gz", modality="t2")
    result = translate(stated, "unified", "flair", checkpoint="tiny-unified", device="cpu")
    assert result.provenance["SourceModality"] == "t2"
    assert result.provenance["SourceModalityFrom"] == "the volume's stated modality"
    guessed = load_volume(mc_cohort / "sub-006" / "sub-006_t2.nii.gz")  # modality guessed
    assert guessed.metadata["modality_guessed"] is True
    with pytest.raises(synth_core_errors.UserError, match="cannot tell which the input is"):
        translate(guessed, "unified", "flair", checkpoint="tiny-unified", device="cpu")


def test_heldout_scores_any_direction_of_an_any_to_any_checkpoint(unified_run):
    from synth_core.heldout import heldout_scores

    info = zoo.locate("tiny-unified")
    entry = heldout_scores(str(info.directory), "unified", subjects=1, seed=1000,
                           direction=("t2", "flair"), lesion_fraction=1.0)
    assert entry["direction"] == "t2->flair" and entry["cohort"]["lesion_fraction"] == 1.0
    assert "--lesion-fraction 1" in entry["cohort"]["command"]
    assert 0.0 <= entry["scores"]["ssim"] <= 1.0 and entry["checkpoint_sha256"] == info.sha256


def test_benchmark_report_tables(tmp_path: Path):
    from synth_core import benchmark_unified as bench

    ways = bench.directions()
    assert len(ways) == 12 and ("t1", "t1ce") in ways
    scores = {name: {f"{s}->{t}": {"ssim": base + 0.01 * i, "psnr": 20.0, "mae": 0.1,
                                   "lesion_ratio": 0.9, "subjects": 2}
                     for i, (s, t) in enumerate(ways)}
              for name, base in (("unified", 0.70), ("pix2pix", 0.75))}
    text = bench.report({"scores": scores}, tmp_path).read_text()
    assert text.count("\n| t1->t1ce |") == 2 and "in 0 of 12 directions" in text
    assert json.loads((tmp_path / "unified.json").read_text())["scores"] == scores


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b["backbone"])
def test_3d_model_steps_and_answers_each_code(backbone):
    torch.manual_seed(0)
    config = build_config("unified", "tiny", {"spatial": "3d", **backbone})
    method = get_method_class("unified")(config, "t1", "t1ce")
    ctx = _Ctx(method.configure_optimizers())
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    codes = torch.tensor([0, 3])
    losses = method.adversarial_step({"source": x, "target": x.flip(-1), "source_code": codes,
                                      "target_code": codes.flip(0)}, ctx)
    assert all(torch.isfinite(v) for v in losses.values())
    method.eval()
    outs = [method.synthesize(x[:1], SynthesisRequest(target_code=k)) for k in range(4)]
    assert outs[0].shape == (1, 1, 1, 16, 16, 16)
    assert float((outs[1] - outs[2]).abs().max()) > 0
    with pytest.raises(synth_core_errors.UserError, match="needs a target"):
        method.synthesize(x[:1], SynthesisRequest())


def test_an_unknown_backbone_is_a_user_error():
    config = build_config("unified", "tiny", {"backbone": "transformer"})
    with pytest.raises(synth_core_errors.UserError, match="unet or resunet"):
        get_method_class("unified")(config, "t1", "t1ce")


def test_dice_scores_are_monai_dice_per_label_and_nan_without_truth():
    from synth_core import benchmark_unified as bench

    truth = np.zeros((8, 8, 8), dtype=np.int64)
    truth[2:4, 2:4, 2:4] = 1  # tumour, 8 voxels
    truth[4:6, 2:4, 2:4] = 2  # oedema, 8 voxels
    assert bench.dice_scores(truth, truth) == {"lesion": 1.0, "tumour": 1.0, "oedema": 1.0}
    pred = truth.copy()
    pred[pred == 2] = 1  # the oedema called tumour: whole lesion right, each label half
    scores = bench.dice_scores(pred, truth)
    assert scores["lesion"] == 1.0 and scores["oedema"] == 0.0
    assert abs(scores["tumour"] - 2 * 8 / (16 + 8)) < 1e-6
    healthy = bench.dice_scores(np.zeros_like(truth), np.zeros_like(truth))
    assert all(np.isnan(v) for v in healthy.values())


def test_segmenter_input_and_target_from_phantom_labels():
    from synth_core import benchmark_unified as bench
    from synth_core.phantom import generate_subject

    subject = generate_subject(0, seed=3, preset="small", lesion="tumour")
    mask = subject.volumes["brainmask"].data > 0
    image = bench.segmenter_input(subject.volumes, mask)
    assert image.shape == (4, *mask.shape) and image.dtype == np.float32
    assert float(np.abs(image[:, ~mask]).max()) == 0.0
    target = bench.segmenter_target(np.asarray(subject.volumes["labels"].data))
    assert set(np.unique(target)) <= {0, 1, 2} and (target == 1).any()
    net = bench.make_segmenter()
    assert bench.segment(net.eval(), image).shape == mask.shape


def test_cpu_preset_objective_and_learning_rate_decay():
    config = build_config("unified", "cpu", {})
    assert (config.beta, config.lambda1) == (0.0, 0.0) and config.lambda_ssim > 0
    assert config.backbone == "resunet" and config.train.ema_decay == 0.999
    for name in ("cpu-unet", "cpu-3d"):  # the earlier recipe, and whole volumes, on the U-Net
        other = build_config("unified", name, {})
        assert other.backbone == "unet" and other.train.ema_decay == 0.0
        assert (other.lambda_l1, other.lambda_ssim, other.alpha) == (100.0, 200.0, 10.0)
    method = get_method_class("unified")(config, "t1", "t2")
    total = config.train.max_steps
    assert method.lr_lambda(0) == 1.0 and method.lr_lambda(total // 2 - 1) == 1.0
    assert 0.0 < method.lr_lambda(3 * total // 4) < 1.0 and method.lr_lambda(total) == 0.0
    assert get_method_class("unified")(build_config("unified", "paper", {}), "t1", "t2").lr_lambda(
        10**6) == 1.0


def test_brain_and_ssim_terms_enter_the_loss_only_when_weighted():
    torch.manual_seed(0)
    x = _toy_images(2)
    codes = torch.tensor([0, 1])
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., 4:12, 4:12] = True
    batch = {"source": x, "target": -x, "source_code": codes, "target_code": codes.flip(0),
             "mask": mask}
    plain = get_method_class("unified")(build_config("unified", "tiny", {}), "t1", "t2")
    losses = plain.adversarial_step(batch, _Ctx(plain.configure_optimizers()))
    assert float(losses["brain_l1"]) == 0.0 and float(losses["ssim_loss"]) == 0.0
    torch.manual_seed(0)
    weighted = get_method_class("unified")(
        build_config("unified", "tiny", {"lambda_brain": 1.0, "lambda_ssim": 1.0}), "t1", "t2")
    with torch.no_grad():
        fake = weighted.autoencoder(x, weighted.code(codes.flip(0)))
    expected = float((fake + x).abs()[mask].mean())
    losses = weighted.adversarial_step(batch, _Ctx(weighted.configure_optimizers()))
    assert abs(float(losses["brain_l1"]) - expected) < 1e-5
    assert 0.0 < float(losses["ssim_loss"]) <= 2.0


@pytest.mark.parametrize("weights", [{}, {"beta": 0.0, "lambda1": 0.0}])
def test_the_discriminator_trains_only_while_its_terms_weigh_in(weights):
    torch.manual_seed(0)
    x = _toy_images(2)
    codes = torch.tensor([0, 1])
    batch = {"source": x, "target": -x, "source_code": codes, "target_code": codes.flip(0)}
    method = get_method_class("unified")(build_config("unified", "tiny", weights), "t1", "t2")
    before = [p.detach().clone() for p in method.discriminator.parameters()]
    coder = [p.detach().clone() for p in method.autoencoder.parameters()]
    losses = method.adversarial_step(batch, _Ctx(method.configure_optimizers()))
    moved = any(not torch.equal(a, b) for a, b in zip(before, method.discriminator.parameters(), strict=True))
    assert moved == bool(weights == {}) and ("d_adv" in losses) == moved
    assert any(not torch.equal(a, b) for a, b in zip(coder, method.autoencoder.parameters(), strict=True))
    if not moved:
        assert float(losses["g_adv"]) == 0.0 and float(losses["g_mc"]) == 0.0
    # the engine counts one optimiser step a batch then, so max_steps stays batches
    assert type(method).optimizer_steps_per_batch(method.config) == (2 if moved else 1)


def test_benchmark_settings_reach_the_unified_and_every_pairwise_run(monkeypatch, tmp_path: Path):
    # `bench_unified.py --set KEY=VALUE` (e.g. the weight average) must change both sides of
    # the comparison alike, or the table compares different recipes.
    from synth_core import benchmark_unified as bench

    seen: list[tuple[str, dict]] = []
    monkeypatch.setattr(bench, "_train", lambda out, **kw: seen.append((kw["method"], kw["overrides"])) or {})
    monkeypatch.setattr(bench, "seconds_per_step", lambda method, overrides, *a, **k: 0.1)
    extra = {"ema_decay": 0.999, "ema_warmup": True}
    bench.train_unified(tmp_path, tmp_path, 10, settings=extra)
    bench.train_pairwise(tmp_path, tmp_path, 12.0, log=lambda _: None, settings=extra)
    assert [m for m, _ in seen] == ["unified"] + ["pix2pix"] * 12
    assert all(o["ema_decay"] == 0.999 and o["ema_warmup"] is True for _, o in seen)
    assert seen[0][1]["max_steps"] == 10 and all(o["max_steps"] == 10 for _, o in seen[1:])
    assert all(o["lambda_gan"] == 0.0 for _, o in seen[1:])  # the pairwise recipe is kept


def test_benchmark_3d_mode_trains_both_sides_on_whole_volumes(monkeypatch, tmp_path: Path):
    from synth_core import benchmark_unified as bench

    seen: list[tuple[str, str, dict]] = []
    timed: list[tuple[int, ...]] = []
    monkeypatch.setattr(bench, "_train", lambda out, **kw: seen.append(
        (kw["method"], kw["preset"], kw["overrides"])) or {})
    monkeypatch.setattr(bench, "seconds_per_step",
                        lambda method, overrides, shape=(48, 64), **k: timed.append(shape) or 0.1)
    bench.train_unified(tmp_path, tmp_path, 10, spatial="3d")
    bench.train_pairwise(tmp_path, tmp_path, 12.0, log=lambda _: None, spatial="3d")
    assert seen[0][:2] == ("unified", "cpu-3d")
    assert build_config("unified", "cpu-3d", {}).train.spatial == "3d"
    assert all(o["spatial"] == "3d" and o["batch_size"] == 1 for _, _, o in seen[1:])
    assert timed == [(48, 64, 48)] and len(seen) == 13
    # and a real 3D pix2pix step can be timed on such a volume
    assert bench.seconds_per_step("pix2pix", bench.PAIRWISE | {"spatial": "3d", "batch_size": 1},
                                  shape=(16, 16, 16), steps=1) > 0


def test_a_run_without_the_discriminator_trains_exactly_max_steps_batches(mc_cohort: Path, tmp_path: Path):
    import csv

    from synth_core.training import TrainRequest, train

    result = train(TrainRequest(method="unified", data=mc_cohort, source="", target="",
                                out=tmp_path / "no-dis", preset="tiny", modalities=MODS,
                                overrides={"beta": 0.0, "lambda1": 0.0, "max_steps": 5,
                                           "val_every": 5, "checkpoint_every": 5},
                                register=False))
    assert result.steps == 5
    with open(tmp_path / "no-dis" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train_loss")]
    assert len(rows) == 5 and not any(r.get("train_d_adv") for r in rows)

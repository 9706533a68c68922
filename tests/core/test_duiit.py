"""DUIIT: labelled unpaired data, the joint objective, the three-optimiser step count."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from synth_core.data import LabelledDataset, VolumeStore, discover_subjects
from synth_core.errors import UserError
from synth_core.methods import build_config, get_method_class


def write_labelled_cohort(out: Path, n: int = 9, size: int = 16, seed: int = 0) -> Path:
    """t1, pet and ct (HU) of ``n`` subjects whose images brighten with age, so age is
    recoverable from every modality; ages 56 to 56 + 4 (n - 1)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[:size, :size, :size].astype(np.float32)
    c = (size - 1) / 2
    brain = np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2) < size * 0.38
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    rows = ["participant_id\tage\tsex\tdiagnosis"]
    for i in range(n):
        sid = f"sub-{i + 1:03d}"
        age = 56 + 4 * i
        (out / sid).mkdir(exist_ok=True)
        pattern = np.sin(x / 3 + i)
        images = {
            "t1": brain * (60 + age + 10 * pattern) + 5,
            "pet": brain * (150 - age + 8 * np.cos(y / 3)) + 5,
            "ct": np.where(brain, 20 + 0.3 * age + 5 * pattern, -1000.0),
        }
        for mod, data in images.items():
            data = data + rng.normal(0, 1, data.shape)
            nib.save(nib.Nifti1Image(data.astype(np.float32), affine), out / sid / f"{sid}_{mod}.nii.gz")
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), out / sid / f"{sid}_brainmask.nii.gz")
        rows.append(f"{sid}\t{age}\t{'F' if i % 2 else 'M'}\t{'AD' if i % 3 == 0 else 'CN'}")
    (out / "participants.tsv").write_text("\n".join(rows) + "\n")
    return out


@pytest.fixture(scope="module")
def labelled_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled_cohort(tmp_path_factory.mktemp("labelled"))


def _dataset(cohort: Path, sources=("t1", "pet"), **kwargs) -> LabelledDataset:
    records = discover_subjects(cohort)
    store = VolumeStore(records, multiple=4)
    return LabelledDataset(store, records, list(sources), "ct", **kwargs)


def test_labels_travel_from_participants_tsv_to_the_batch(labelled_cohort):
    data = _dataset(labelled_cohort)
    ages = {f"sub-{i + 1:03d}": 56 + 4 * i for i in range(9)}
    pools = data.pools
    # Unpaired by construction: three disjoint roles, every subject in one.
    assert sorted(s for ids in pools.values() for s in ids) == sorted(ages)
    assert [len(pools[m]) for m in ("ct", "t1", "pet")] == [3, 3, 3]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    batch = next(iter(loader))
    assert batch["sources"].shape[:2] == (4, 2) and batch["target"].shape[0] == 4
    for b in range(4):
        assert batch["target_id"][b] in pools["ct"]
        assert batch["target_age"][b] == ages[batch["target_id"][b]]
        for i, modality in enumerate(("t1", "pet")):
            sid = batch["source_ids"][i][b]
            assert sid in pools[modality]
            assert batch["source_age"][b, i] == ages[sid]
    summary = data.label_summary()
    assert summary["age_mean"] == pytest.approx(np.mean(list(ages.values())))
    diagnosis = _dataset(labelled_cohort, task="diagnosis")
    item = diagnosis[0]
    record = diagnosis.store.records[item["target_id"]]
    assert diagnosis.classes[int(item["target_label"])] == record.label == (
        "AD" if int(item["target_id"][-3:]) % 3 == 1 else "CN")


def test_pools_refuse_a_missing_label(tmp_path):
    cohort = write_labelled_cohort(tmp_path / "c", n=4)
    (cohort / "participants.tsv").write_text("participant_id\tsex\nsub-001\tF\n")
    with pytest.raises(UserError, match="age"):
        _dataset(cohort)


class _RecordGeneratorGradients:
    """A step context that steps nothing and keeps the generators' gradient of the loss
    handed to optimiser 0 (eq. 3)."""

    def __init__(self, method) -> None:
        self.params = list(method.generator_parameters())
        self.global_step = 0
        self.grads: list[torch.Tensor] = []

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        if index == 0:
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            self.grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)]
        return True


def _method_and_batch(cohort: Path, lambda_pred: float):
    data = _dataset(cohort, sources=("t1",))
    config = build_config("duiit", "tiny", {"lambda_pred": lambda_pred})
    cls = get_method_class("duiit")
    cls.fit_labels(config, data.label_summary(), ["t1"])
    torch.manual_seed(0)
    method = cls(config, "t1", "ct")
    torch.nn.init.normal_(method.predictor.head.weight)  # a predictor that responds to its input
    return method, next(iter(torch.utils.data.DataLoader(data, batch_size=4)))


def _pred_loss(method, batch) -> float:
    with torch.no_grad():  # eq. 2 on this batch, as the generators' step sees it
        fake = method.to_target["t1"](batch["sources"][:, 0])
        return float(method._pred_terms([fake], batch["target"], batch))


def test_the_joint_objective_moves_the_predictors_loss_on_translations(labelled_cohort):
    gradients = {}
    for lambda_pred in (0.0, 1.0):
        method, batch = _method_and_batch(labelled_cohort, lambda_pred)
        ctx = _RecordGeneratorGradients(method)
        method.adversarial_step(batch, ctx)
        gradients[lambda_pred] = ctx.grads
    # What lambda adds to the translator's gradient is the predictor's term, through G.
    added = [a - b for a, b in zip(gradients[1.0], gradients[0.0], strict=True)]
    norm = torch.sqrt(sum((d ** 2).sum() for d in added))
    assert norm > 0
    method, batch = _method_and_batch(labelled_cohort, 1.0)
    before = _pred_loss(method, batch)
    with torch.no_grad():  # a small step of G along that term alone lowers the predictor's loss
        for p, d in zip(method.generator_parameters(), added, strict=True):
            p -= 1e-3 * d / norm
    after = _pred_loss(method, batch)
    assert after < before, (after, before)
    # Eq. 2 reaches G only: F (target -> source) gets nothing from it.
    assert all(float(d.abs().sum()) == 0 for d in added[len(list(method.to_target.parameters())):])


def test_the_step_count_is_exact_with_three_optimisers(labelled_cohort, tmp_path):
    from synth_core.training import TrainRequest, train

    result = train(TrainRequest(method="duiit", data=labelled_cohort, source="t1,pet", target="ct",
                                out=tmp_path / "run", preset="tiny", register=False,
                                overrides={"max_steps": 5}))
    assert result.steps == 5
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", map_location="cpu", weights_only=True)
    assert len(ckpt["optimizer_states"]) == 3
    for state in ckpt["optimizer_states"]:
        steps = {int(s["step"]) for s in state["state"].values()}
        assert steps == {5}
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["source"] == "t1" and card["capabilities"]["sources"] == ["t1", "pet"]
    predictor = card["capabilities"]["predictor"]
    assert predictor["task"] == "age" and predictor["units"] == "years"
    assert 56 <= predictor["age_mean"] <= 88 and predictor["age_std"] > 1


@pytest.fixture(scope="module")
def duiit_run(labelled_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny duiit model, t1 and pet -> ct, with an age predictor."""
    from synth_core.training import TrainRequest, train

    out = tmp_path_factory.mktemp("duiit") / "run"
    train(TrainRequest(method="duiit", data=labelled_cohort, source="t1,pet", target="ct",
                       out=out, preset="tiny", register=False))
    return out


def test_a_duiit_checkpoint_translates_each_source_and_reports_its_predicted_age(labelled_cohort, duiit_run):
    import synth_core as sc

    for source in ("t1", "pet"):
        volume = sc.load_volume(labelled_cohort / "sub-002" / f"sub-002_{source}.nii.gz")
        result = sc.translate(volume, method="duiit", to="ct", source=source,
                              checkpoint=str(duiit_run), check_modality=False)
        assert result.volume.shape == volume.shape
        assert result.provenance["SourceModality"] == source
        prediction = result.provenance["Prediction"]
        assert prediction["units"] == "years" and np.isfinite(prediction["age"])
    with pytest.raises(UserError, match="expects"):
        sc.translate(volume, method="duiit", to="ct", source="t2", checkpoint=str(duiit_run))
    assert any(line.startswith("predicted age: ") for line in result.summary())
    from synth_core import zoo

    info = zoo.locate(str(duiit_run))
    assert info.task == "t1,pet -> ct" and info.summary()["source"] == "t1,pet"


def test_several_sources_only_for_labelled_methods():
    from synth_core.methods import check_modalities

    check_modalities(get_method_class("duiit"), "t1,pet", "ct")
    with pytest.raises(UserError, match="one source"):
        check_modalities(get_method_class("cyclegan"), "t1,pet", "ct")
    with pytest.raises(UserError, match="both"):
        check_modalities(get_method_class("duiit"), "t1,ct", "ct")


def _augment(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from synth_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["augment", "--method", "duiit", *args])
    return code, out.getvalue(), err.getvalue()


def test_augment_writes_a_labelled_data_set_resumes_and_never_overwrites(labelled_cohort, duiit_run, tmp_path):
    out = tmp_path / "augmented"
    common = ["--checkpoint", str(duiit_run), "--data", str(labelled_cohort), "--to", "ct",
              "-o", str(out)]
    code, stdout, _ = _augment(*common, "--from", "t1,pet")
    assert code == 0, stdout
    subjects = sorted(p.name for p in out.glob("sub-*"))
    assert len(subjects) == 9
    for source in ("t1", "pet"):
        image = out / "sub-003" / f"sub-003_ct-from-{source}.nii.gz"
        side = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
        assert side["Synthetic"] is True and side["SourceModality"] == source
        assert side["CheckpointSHA256"] and np.isfinite(side["Prediction"]["age"])
        assert nib.load(image).shape == (16, 16, 16)
    rows = [line.split("\t") for line in (out / "participants.tsv").read_text().splitlines()]
    header = rows[0]
    table = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert float(table["sub-003"]["age"]) == 64 and table["sub-003"]["diagnosis"] == "CN"
    assert table["sub-003"]["synthetic_from"] == "t1,pet"
    # The written data set is one another run can discover, labels and all.
    records = {r.subject_id: r for r in discover_subjects(out)}
    assert records["sub-001"].age == 56 and "ct-from-t1" in records["sub-001"].paths

    stamp = (out / "sub-001" / "sub-001_ct-from-t1.nii.gz").stat().st_mtime_ns
    code, _, err = _augment(*common, "--from", "t1,pet")
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    code, stdout, _ = _augment(*common, "--from", "t1,pet", "--resume")
    assert code == 0 and "0 synthetic ct volumes" in stdout and "18 up to date" in stdout
    assert (out / "sub-001" / "sub-001_ct-from-t1.nii.gz").stat().st_mtime_ns == stamp
    assert (out / "participants.tsv").read_text().splitlines() == ["\t".join(r) for r in rows]


def test_augment_refuses_mistakes_in_one_line_before_any_work(labelled_cohort, duiit_run, tmp_path):
    import shutil

    common = ["--checkpoint", str(duiit_run), "--to", "ct", "-o", str(tmp_path / "out")]
    code, _, err = _augment(*common, "--data", str(labelled_cohort), "--from", "t2")
    assert code == 2 and "not t2" in err and len(err.strip().splitlines()) == 1
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(labelled_cohort, unlabelled)
    (unlabelled / "participants.tsv").write_text("participant_id\tsex\nsub-001\tF\n")
    code, _, err = _augment(*common, "--data", str(unlabelled), "--from", "t1")
    assert code == 2 and "no 'age' column" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_benchmark_scores_every_row_on_disjoint_subjects(labelled_cohort, tmp_path):
    from synth_core.benchmark_duiit import ROWS, Settings, run, table

    settings = Settings(splits=2, n_target=2, n_source=2, n_test=3, translator_steps=2,  # tiny
                        translator_batch=2, predictor_steps=2, predictor_batch=4, preset="tiny")
    report = run(labelled_cohort, tmp_path / "bench", settings, log=lambda line: None,
                 tune_pool=labelled_cohort)
    assert set(report["summary"]) == set(ROWS)
    tuning = report["tuning"]
    assert tuning["chosen"] == min(tuning["candidates"], key=lambda k: tuning["candidates"][k]["mse"])
    split = json.loads((tmp_path / "bench" / "split-0.json").read_text())
    roles = split["roles"]
    everyone = [s for ids in roles.values() for s in ids]
    assert len(everyone) == len(set(everyone)) == 9
    ages = {f"sub-{i + 1:03d}": 56 + 4 * i for i in range(9)}
    guess = np.mean([ages[s] for s in roles["train"]])
    assert split["rows"]["mean"]["mse"] == pytest.approx(np.mean([(guess - ages[s]) ** 2 for s in roles["test"]]))
    assert all(np.isfinite(v["mse"]) for v in split["rows"].values())
    assert split["rows"]["oracle-ct"]["mse"] >= 0
    assert "| pure-ct |" in table(report) and report["units"]["mse"] == "years^2"
    assert -1 <= report["age_signal"]["corr_age_csf_fraction"] <= 1


def test_volumes_in_3d_train_and_predict(labelled_cohort):
    data = _dataset(labelled_cohort, spatial="3d")
    config = build_config("duiit", "tiny", {"spatial": "3d"})
    cls = get_method_class("duiit")
    cls.fit_labels(config, data.label_summary(), ["t1", "pet"])
    method = cls(config, "t1,pet", "ct")
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert batch["sources"].shape == (2, 2, 1, 16, 16, 16)
    ctx = _RecordGeneratorGradients(method)
    losses = method.adversarial_step(batch, ctx)
    assert all(torch.isfinite(v) for v in losses.values())
    estimate = method.predict_volume(batch["target"][:1])
    assert np.isfinite(estimate["age"])


def test_a_diagnosis_predictor_keeps_its_vocabulary(labelled_cohort):
    data = _dataset(labelled_cohort, task="diagnosis")
    config = build_config("duiit", "tiny", {"task": "diagnosis"})
    cls = get_method_class("duiit")
    cls.fit_labels(config, data.label_summary(), ["t1", "pet"])
    assert config.classes == ("AD", "CN")
    method = cls(config, "t1,pet", "ct")
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    losses = method.adversarial_step(batch, _RecordGeneratorGradients(method))
    assert torch.isfinite(losses["pred"])
    volume = data.store.get(batch["target_id"][0], "ct")[None]
    estimate = method.predict_volume(volume)
    assert estimate["diagnosis"] in ("AD", "CN")
    assert sum(estimate["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert method.card_capabilities()["predictor"] == {"task": "diagnosis", "classes": ["AD", "CN"]}


def test_translate_from_the_command_line_prints_the_predicted_age(labelled_cohort, duiit_run, tmp_path):
    import contextlib
    import io

    from synth_core.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["translate", str(labelled_cohort / "sub-004" / "sub-004_pet.nii.gz"), "-o",
                     str(tmp_path / "ct.nii.gz"), "--method", "duiit", "--checkpoint", str(duiit_run),
                     "--to", "ct", "--no-input-check"])
    assert code == 0
    assert "source: pet (from the file name)" in out.getvalue()
    assert "predicted age: " in out.getvalue()
    side = json.loads((tmp_path / "ct.json").read_text())
    assert side["Synthetic"] is True and side["Prediction"]["units"] == "years"


def test_heldout_scores_each_source_of_a_several_source_model(duiit_run, monkeypatch):
    import synth_core.inference as inference
    from synth_core.heldout import heldout_scores

    # The toy cohort's scans do not look like the phantom's: skip the input check.
    translate = inference.translate
    monkeypatch.setattr(inference, "translate",
                        lambda *a, **k: translate(*a, **k, check_modality=False))
    entry = heldout_scores(str(duiit_run), "duiit", subjects=1, source="pet")
    assert entry["direction"] == "pet->ct" and entry["mask"].startswith("head")
    assert np.isfinite(entry["scores"]["mae"]) and "passes" in entry["floor"]
    with pytest.raises(UserError, match="not from t2"):
        heldout_scores(str(duiit_run), "duiit", subjects=1, source="t2")


def test_a_ct_models_error_is_broken_down_by_label(duiit_run, monkeypatch):
    import synth_core.inference as inference
    from synth_core.benchmark_duiit_ct import label_errors

    translate = inference.translate
    monkeypatch.setattr(inference, "translate",
                        lambda *a, **k: translate(*a, **k, check_modality=False))
    rows = label_errors(str(duiit_run), "pet", seed=3, subjects=1, preset="small")
    assert set(rows) == {"brain", "skull", "scalp"}
    assert rows["skull"]["true"] > 500 > rows["brain"]["true"]  # bone is in the skull label
    assert all(np.isfinite(r["mae"]) and r["mae"] >= 0 for r in rows.values())

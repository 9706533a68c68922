"""The shared input check: a scan of another modality is refused before any model runs.

Calibrated on phantom subjects (true inputs pass, mislabelled ones are refused); a
volume too small for the models is refused too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synth_core.cli import main
from synth_core.errors import ModalityMismatch
from synth_core.input_check import LIMIT, MIN_REFERENCE_SUBJECTS, check_input, make_reference


@pytest.fixture(scope="module")
def phantom():
    """Six reference subjects of one phantom seed and one held-out subject of another."""
    from synth_core.phantom import generate_subject

    reference = [generate_subject(i, seed=31, preset="small") for i in range(6)]
    return reference, generate_subject(0, seed=32, preset="small")


@pytest.mark.parametrize("claimed, others", [("t1", ("t2", "pet", "ct")), ("t2", ("t1", "ct")),
                                             ("pet", ("t1", "ct")), ("ct", ("t1", "t2", "pet"))])
def test_true_inputs_pass_and_mislabelled_ones_are_refused(phantom, claimed, others):
    reference_subjects, held_out = phantom
    reference = make_reference([s.volumes[claimed].data for s in reference_subjects], claimed)
    record = check_input(held_out.volumes[claimed].data, claimed, reference)
    assert record["score"] <= LIMIT
    for actual in others:
        with pytest.raises(ModalityMismatch, match=rf"(?i)look like .*{claimed}.*pass the right --from"):
            check_input(held_out.volumes[actual].data, claimed, reference)


def test_an_input_from_a_coarser_grid_gets_twice_the_limit_and_a_pet_is_still_refused(phantom):
    from synth_core.input_check import UPSAMPLED_LIMIT_FACTOR

    reference_subjects, held_out = phantom
    reference = make_reference([s.volumes["t1"].data for s in reference_subjects], "t1")
    tight = dict(reference, limit=0.5)  # a true T1 above this limit: refused on its own grid
    with pytest.raises(ModalityMismatch):
        check_input(held_out.volumes["t1"].data, "t1", tight)
    record = check_input(held_out.volumes["t1"].data, "t1", dict(reference, limit=reference["limit"]),
                         upsampled=True)
    assert record["limit"] == LIMIT * UPSAMPLED_LIMIT_FACTOR and "coarser grid" in record["limit_why"]
    with pytest.raises(ModalityMismatch):
        check_input(held_out.volumes["pet"].data, "t1", reference, upsampled=True)
    score = check_input(held_out.volumes["t1"].data, "t1", dict(reference, limit=100.0))["score"]
    assert 0.5 < score  # so the tight limit above refused a true T1, and twice it ...
    halfway = dict(reference, limit=score / 1.5)
    with pytest.raises(ModalityMismatch):
        check_input(held_out.volumes["t1"].data, "t1", halfway)
    assert check_input(held_out.volumes["t1"].data, "t1", halfway, upsampled=True)["score"] == score


def test_without_a_reference_only_the_physics_rule_runs_and_says_so(phantom):
    _, held_out = phantom
    record = check_input(held_out.volumes["pet"].data, "t1", None)
    assert "skipped" in record["fingerprint"]
    with pytest.raises(ModalityMismatch, match="Hounsfield"):
        check_input(held_out.volumes["ct"].data, "t1", None)
    with pytest.raises(ModalityMismatch, match="does not look like a CT"):
        check_input(held_out.volumes["t1"].data, "ct", None)


@pytest.fixture
def checkpoint_with_phantom_reference(trained, phantom, tmp_path) -> Path:
    """The tiny pix2pix (t1 -> pet) with the phantom T1s' reference in its card."""
    folder = tmp_path / "pix2pix-phantom-ref"
    shutil.copytree(trained["pix2pix"].run_dir, folder,
                    ignore=shutil.ignore_patterns("*.ckpt", "*.csv", "lightning_logs"))
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    reference_subjects, _ = phantom
    card["input_reference"] = {"t1": make_reference([s.volumes["t1"].data for s in reference_subjects], "t1")}
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def _save(volume, path: Path) -> Path:
    nib.save(nib.Nifti1Image(volume.data.astype(np.float32), volume.affine), path)
    return path


def test_cli_refuses_a_pet_given_as_t1_and_records_the_check_for_a_t1(
        checkpoint_with_phantom_reference, phantom, tmp_path, capsys):
    _, held_out = phantom
    pet = _save(held_out.volumes["pet"], tmp_path / "scan_a.nii.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["translate", str(pet), "-o", str(tmp_path / "out.nii.gz"), "--method", "pix2pix",
                 "--to", "pet", "--from", "t1", "--checkpoint", str(checkpoint_with_phantom_reference)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--from" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    t1 = _save(held_out.volumes["t1"], tmp_path / "scan_b.nii.gz")
    code = main(["translate", str(t1), "-o", str(tmp_path / "out.nii.gz"), "--method", "pix2pix",
                 "--to", "pet", "--from", "t1", "--checkpoint", str(checkpoint_with_phantom_reference)])
    assert code == 0, capsys.readouterr().err
    check = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["InputCheck"]
    assert check["modality"] == "t1" and 0 <= check["score"] <= check["limit"] == LIMIT


def test_a_card_without_a_reference_records_that_the_fingerprint_was_skipped(trained, tiny_cohort, tmp_path):
    import synth_core

    folder = tmp_path / "old-card"
    shutil.copytree(trained["pix2pix"].run_dir, folder,
                    ignore=shutil.ignore_patterns("*.ckpt", "*.csv", "lightning_logs"))
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card.pop("input_reference", None)
    (folder / "model.json").write_text(json.dumps(card))
    t1 = synth_core.load_volume(tiny_cohort / "sub-001" / "sub-001_t1.nii.gz")
    result = synth_core.translate(t1, "pix2pix", "pet", checkpoint=str(folder))
    assert "skipped" in result.provenance["InputCheck"]["fingerprint"]


def test_training_stores_the_reference_the_check_reads(trained, tiny_cohort):
    card = trained["pix2pix"].model.card
    reference = card["input_reference"]["t1"]
    assert reference["n_subjects"] >= 2 and len(reference["median"]) == len(reference["spread"]) == 24
    import synth_core

    t1 = synth_core.load_volume(tiny_cohort / "sub-006" / "sub-006_t1.nii.gz")
    check = synth_core.translate(t1, "pix2pix", "pet").provenance["InputCheck"]
    # The tiny cohort trains on 4 subjects: too few spreads to refuse on, so recorded only.
    assert check["reference_subjects"] == reference["n_subjects"] < MIN_REFERENCE_SUBJECTS
    assert check["enforced"] is False and check["score"] >= 0 and "not enforced" in check["fingerprint"]


@pytest.mark.parametrize("shape, spacing", [((4, 4, 4), 4.0), ((64, 64, 12), 1.0)])
def test_a_volume_too_small_for_the_models_is_refused_before_the_model(
        trained, tmp_path, monkeypatch, capsys, shape, spacing):
    import synth_core.inference as inference

    monkeypatch.setattr(inference, "_cached_method", lambda *a: pytest.fail("the model was loaded"))
    data = np.random.default_rng(0).random(shape).astype(np.float32) + 1
    path = tmp_path / "small_t1.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0])), path)
    code = main(["translate", str(path), "-o", str(tmp_path / "o.nii.gz"), "--method", "pix2pix",
                 "--to", "pet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "too small" in err and "at least 16 voxels" in err and "4 mm" in err
    assert not (tmp_path / "o.nii.gz").exists()

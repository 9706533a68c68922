"""CT intensity window: wide enough for bone, recorded in the card, legacy cards keep theirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from synth_core import preprocess
from synth_core.inference import model_input
from synth_core.training import TrainRequest, train
from synth_core.volume import Volume


def test_the_default_window_holds_the_skulls_bone_inside_a_tanh_output():
    params = preprocess.fit_normalisation(np.zeros((4, 4, 4), np.float32), "ct")
    air, bone, dense = preprocess.normalise(np.array([-1000.0, 1500.0, 2500.0]), params)
    assert -0.95 < air < bone < dense < 0.95  # a tanh reaches them; [-1000, 1000] HU did not


def test_a_card_without_a_window_is_read_with_the_legacy_one():
    assert preprocess.card_ct_window({}) == preprocess.LEGACY_CT_WINDOW
    assert preprocess.card_ct_window({"normalisation": {"ct_window": [1000, 2200]}}) == (1000.0, 2200.0)
    ct = np.full((16, 16, 16), -1000.0, np.float32)
    ct[4:12, 4:12, 4:12] = 1000.0
    vol = Volume(ct, np.diag([4.0, 4.0, 4.0, 1.0]), modality="ct")
    legacy, _ = model_input(vol, {"spacing": [4, 4, 4], "multiple": 16}, "ct")
    wide, _ = model_input(vol, {"spacing": [4, 4, 4], "multiple": 16,
                                "normalisation": {"ct_window": list(preprocess.CT_WINDOW)}}, "ct")
    assert np.isclose(legacy.max(), 1.0) and np.isclose(legacy.min(), -1.0)
    assert wide.max() < 0.5 and wide.min() > -1.0


def _with_ct(cohort: Path, out: Path) -> Path:
    shutil.copytree(cohort, out)
    for sub in sorted(out.glob("sub-*")):
        brain = nib.load(sub / f"{sub.name}_brainmask.nii.gz")
        b = np.asarray(brain.dataobj) > 0
        shell = np.zeros_like(b)
        shell[1:-1, 1:-1, 1:-1] = True
        ct = np.where(b, 40.0, np.where(shell, 1500.0, -1000.0)).astype(np.float32)
        nib.save(nib.Nifti1Image(ct, brain.affine), sub / f"{sub.name}_ct.nii.gz")
    return out


def test_a_new_run_records_its_ct_window_and_a_resumed_legacy_run_keeps_the_old(tiny_cohort, tmp_path):
    data = _with_ct(tiny_cohort, tmp_path / "data")
    run = tmp_path / "run"
    request = dict(method="pix2pix", data=data, source="t1", target="ct", preset="tiny",
                   register=False, overrides={"train.max_steps": 1, "train.val_every": 1})
    train(TrainRequest(out=run, **request))
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert card["normalisation"]["ct_window"] == list(preprocess.CT_WINDOW)
    assert config["ct_window"] == list(preprocess.CT_WINDOW)
    assert card["normalisation"]["target_reference"]["window"] == list(preprocess.CT_WINDOW)
    # A run started before the window was recorded resumes with the window it trained with.
    del config["ct_window"]
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    train(TrainRequest(out=run, resume=True, **(request | {"overrides": {"train.max_steps": 2,
                                                                          "train.val_every": 1}})))
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert card["normalisation"]["ct_window"] == list(preprocess.LEGACY_CT_WINDOW)

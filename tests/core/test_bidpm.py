"""Bi-DPM, rectified flow and CFM as methods: training, both directions, step counts,
partially paired data, LPIPS inside the loss, the CLI, and units after --reverse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import synth_core as sc
from synth_core.cli import main
from synth_core.errors import UserError
from synth_core.io import load_volume
from synth_core.methods import build_config, get_method_class
from synth_core.nn.perceptual import LPIPS, FeatureTaps
from synth_core.training import TrainRequest, train


@pytest.fixture(scope="module")
def flows(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny runs: Bi-DPM paired and partially paired, rectified flow, OT-CFM (t1 <-> t2)."""
    runs = {}
    for name, method, preset, mode in (("bidpm", "bi-dpm", "tiny", "paired"),
                                       ("bidpm-partial", "bi-dpm", "tiny", "partial"),
                                       ("rf", "rectified-flow", "tiny", "paired"),
                                       ("otcfm", "cfm", "tiny", "paired")):
        out = tmp_path_factory.mktemp("flows") / name
        overrides = {"variant": "ot"} if name == "otcfm" else {}
        result = train(TrainRequest(method=method, data=tiny_cohort, source="t1", target="t2", out=out,
                                    preset=preset, mode=mode, paired_fraction=0.5, overrides=overrides,
                                    name=f"tiny-{name}-t1-t2"))
        assert result.steps == 4
        runs[name] = out
    return runs


def _vol(cohort: Path, mod: str, sid: str = "sub-006"):
    return load_volume(cohort / sid / f"{sid}_{mod}.nii.gz")


def test_cards_record_directions_default_steps_and_both_intensity_references(flows):
    card = json.loads((flows["bidpm"] / "model.json").read_text(encoding="utf-8"))
    # Bi-DPM's network is matched only at its trained time points: the card allows exactly them.
    assert card["capabilities"]["bidirectional"] and card["capabilities"]["steps"] == [1, 1]
    assert card["capabilities"]["default_steps"] == 1  # the trained time points
    rf_card = json.loads((flows["rf"] / "model.json").read_text(encoding="utf-8"))
    assert rf_card["capabilities"]["steps"] == [1, 100]  # a flow runs on any grid
    norm = card["normalisation"]
    assert norm["target_reference"]["modality"] == "t2" and norm["source_reference"]["modality"] == "t1"
    assert json.loads((flows["rf"] / "model.json").read_text(encoding="utf-8"))["capabilities"]["default_steps"] == 10
    assert json.loads((flows["otcfm"] / "model.json").read_text(encoding="utf-8"))["config"]["variant"] == "ot"
    two = get_method_class("bi-dpm")(build_config("bi-dpm", "cpu-2step"), "t1", "t2")
    assert two.card_capabilities() == {"default_steps": 2, "steps": [2, 2]}


@pytest.mark.parametrize("run", ["bidpm", "bidpm-partial", "rf", "otcfm"])
def test_both_directions_and_the_step_counts_each_checkpoint_allows(flows, tiny_cohort, run):
    method = json.loads((flows[run] / "model.json").read_text(encoding="utf-8"))["method"]
    t1, t2 = _vol(tiny_cohort, "t1"), _vol(tiny_cohort, "t2")
    one = sc.translate(t1, method=method, to="t2", checkpoint=str(flows[run]), steps=1)
    back = sc.translate(t2, method=method, to="t1", checkpoint=str(flows[run]))
    assert one.volume.shape == t1.shape and one.volume.modality == "t2"
    if method == "bi-dpm":  # trained on one time point: other grids are refused, with the reason
        with pytest.raises(UserError, match="trained for 1 step and its network is matched only there"):
            sc.translate(t1, method=method, to="t2", checkpoint=str(flows[run]), steps=7)
        many = one
    else:
        many = sc.translate(t1, method=method, to="t2", checkpoint=str(flows[run]), steps=7)
        assert many.provenance["Parameters"]["steps"] == 7
        with pytest.raises(UserError, match="outside 1 to 100"):
            sc.translate(t1, method=method, to="t2", checkpoint=str(flows[run]), steps=101)
    assert one.provenance["Parameters"]["steps"] == 1
    assert back.provenance["Parameters"]["reverse"] is True and back.volume.modality == "t1"
    default = 1 if method == "bi-dpm" else 10
    assert back.provenance["Parameters"]["steps"] == default
    assert back.provenance["DefaultedParameters"]["steps"]["value"] == default  # said, not silent
    assert "steps" not in one.provenance["DefaultedParameters"]
    assert np.isfinite(many.volume.data).all() and np.isfinite(back.volume.data).all()


def test_reverse_output_is_in_the_source_modality_units(flows, tiny_cohort):
    """The tiny model is nearly the identity in normalised units, so T2 -> T1 must land on
    the T1 training reference's range, not on the T2 input's."""
    card = json.loads((flows["bidpm"] / "model.json").read_text(encoding="utf-8"))
    t1_ref, t2_ref = card["normalisation"]["source_reference"], card["normalisation"]["target_reference"]
    t2 = _vol(tiny_cohort, "t2")
    back = sc.translate(t2, method="bi-dpm", to="t1", checkpoint=str(flows["bidpm"]))
    mask = load_volume(tiny_cohort / "sub-006" / "sub-006_brainmask.nii.gz").data > 0
    hi = float(np.percentile(back.volume.data[mask], 99.5))
    assert abs(hi - t1_ref["hi"]) < 0.25 * abs(t2_ref["hi"] - t1_ref["hi"]), (hi, t1_ref, t2_ref)


def test_bidpm_losses_on_a_partially_paired_batch_and_with_lpips():
    config = build_config("bi-dpm", "tiny")
    method = get_method_class("bi-dpm")(config, "t1", "t2")
    nn.init.normal_(method.velocity.out.weight, std=0.1)
    x, z = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    batch = {"source": x, "target": z, "paired": torch.tensor([True, True, False, False])}
    losses = method.losses(batch)
    assert float(losses["paired"]) > 0 and float(losses["mmd"]) > 0
    losses["loss"].backward()
    assert method.velocity.out.weight.grad is not None
    # Fully paired batches use no MMD (the paper's lambda_u = 0).
    assert float(method.losses(batch | {"paired": torch.ones(4, dtype=torch.bool)})["mmd"]) == 0.0
    # LPIPS as the paired distance, with a tiny stand-in feature network.
    torch.manual_seed(0)
    features = FeatureTaps(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), (1,))
    method._lpips.append(LPIPS(features))
    method.zero_grad()
    lpips_loss = method.losses(batch | {"paired": torch.ones(4, dtype=torch.bool)})["loss"]
    lpips_loss.backward()
    assert float(lpips_loss) > 0 and float(method.velocity.out.weight.grad.abs().sum()) > 0
    assert not any(k.startswith("_lpips") for k in method.state_dict())


def test_lpips_without_local_weights_is_a_user_error():
    config = build_config("bi-dpm", "tiny", {"distance": "lpips"})
    with pytest.raises(UserError, match="local VGG16 weights"):
        get_method_class("bi-dpm")(config, "t1", "t2")
    config = build_config("bi-dpm", "tiny", {"distance": "lpips", "lpips_weights": "/no/such/vgg.pth"})
    with pytest.raises(UserError, match="does not exist"):
        get_method_class("bi-dpm")(config, "t1", "t2")
    with pytest.raises(UserError, match="unknown distance"):
        get_method_class("bi-dpm")(build_config("bi-dpm", "tiny", {"distance": "l2"}), "t1", "t2")


def test_bidpm_trains_and_translates_in_3d(tiny_cohort, tmp_path):
    result = train(TrainRequest(method="bi-dpm", data=tiny_cohort, source="t1", target="pet",
                                out=tmp_path / "run3d", preset="tiny", overrides={"spatial": "3d",
                                                                                   "batch_size": 1},
                                register=False))
    assert result.steps == 4
    out = sc.translate(_vol(tiny_cohort, "t1"), method="bi-dpm", to="pet", checkpoint=str(tmp_path / "run3d"),
                       steps=1)
    assert out.volume.shape == _vol(tiny_cohort, "t1").shape


def test_cli_steps_and_reverse(flows, tiny_cohort, tmp_path, capsys):
    t2 = tmp_path / "t2.nii.gz"
    t2.write_bytes((tiny_cohort / "sub-006" / "sub-006_t2.nii.gz").read_bytes())
    out = tmp_path / "t1_from_t2.nii.gz"
    code = main(["translate", str(t2), "-o", str(out), "--method", "bi-dpm", "--to", "t1",
                 "--checkpoint", "tiny-bidpm-t1-t2", "--reverse", "--steps", "1"])
    assert code == 0, capsys.readouterr().err
    sidecar = json.loads((tmp_path / "t1_from_t2.json").read_text(encoding="utf-8"))
    assert sidecar["Synthetic"] is True and sidecar["SourceModality"] == "t2"
    assert sidecar["Parameters"]["steps"] == 1 and sidecar["Parameters"]["reverse"] is True
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra, message in ((["--steps", "2"], "trained for 1 step"),
                           (["--samples", "3"], "deterministic"),
                           (["--age", "70"], "takes no age")):
        code = main(["translate", str(t2), "-o", str(tmp_path / "x.nii.gz"), "--method", "bi-dpm",
                     "--to", "t1", "--checkpoint", "tiny-bidpm-t1-t2", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_partial_data_gives_bidpm_half_paired_batches(tiny_cohort):
    from synth_core.data import TranslationDataset, VolumeStore, discover_subjects

    records = discover_subjects(tiny_cohort)
    store = VolumeStore(records)
    ds = TranslationDataset(store, records, "t1", "t2", mode="partial", paired_fraction=0.34,
                            paired_share=0.5, spatial="2d", samples_per_epoch=40)
    assert len(ds.paired_subjects) == 2
    assert sum(bool(ds[i]["paired"]) for i in range(len(ds))) == 20
    with pytest.raises(UserError, match="paired_share"):
        TranslationDataset(store, records, "t1", "t2", mode="partial", paired_share=1.5)


def test_cli_set_reaches_nested_and_method_settings(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--method", "bi-dpm", "--preset", "tiny", "--data", str(tiny_cohort),
                 "--from", "t1", "--to", "t2", "--out", str(out), "--no-register",
                 "--set", "net.features=6", "--set", "time_points=2", "--set", "lambda_u=0.3"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert card["config"]["net"]["features"] == 6 and card["config"]["time_points"] == 2
    assert card["capabilities"]["default_steps"] == 2
    for bad, message in (("distance", "not KEY=VALUE"), ("net.width=3", "no setting 'net.width'"),
                         ("time_points=two", "takes a value like 1"), ("nope.x=1", "no group")):
        code = main(["train", "--method", "bi-dpm", "--preset", "tiny", "--data", str(tiny_cohort),
                     "--from", "t1", "--to", "t2", "--out", str(tmp_path / "bad"), "--set", bad])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert not (tmp_path / "bad").exists()


def test_cli_takes_the_source_modality_from_the_file_name(flows, tiny_cohort, tmp_path, capsys):
    """A T2 file does not run through a T1 -> T2 model's forward direction by default."""
    t2 = tmp_path / "sub-006_t2.nii.gz"
    t2.write_bytes((tiny_cohort / "sub-006" / "sub-006_t2.nii.gz").read_bytes())
    code = main(["translate", str(t2), "-o", str(tmp_path / "x.nii.gz"), "--method", "pix2pix",
                 "--to", "pet"])
    err = capsys.readouterr().err
    assert code == 2 and "t2 -> pet" in err and "--from" in err, err
    assert not (tmp_path / "x.nii.gz").exists()
    # ... and the stated modality picks the direction of a bidirectional model.
    code = main(["translate", str(t2), "-o", str(tmp_path / "t1.nii.gz"), "--method", "bi-dpm",
                 "--to", "t1", "--checkpoint", "tiny-bidpm-t1-t2"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "t1.json").read_text(encoding="utf-8"))["Parameters"]["reverse"] is True

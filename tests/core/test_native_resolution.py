"""Native resolution: patch training, the card's spacing and patch, the resolution warning,
and the zoo's preference for the checkpoint nearest the input's voxel size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import synth_core as sc
from conftest import write_tiny_cohort
from synth_core import zoo
from synth_core.cli import build_parser, main
from synth_core.data import TranslationDataset, VolumeStore, discover_subjects
from synth_core.errors import UserError
from synth_core.methods import TrainSettings, check_patch_size
from synth_core.phantom import PRESETS
from synth_core.preprocess import resample
from synth_core.training import TrainRequest, train


@pytest.fixture(scope="module")
def wide_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32^3 subjects whose brain (a ball) fills about a quarter of the volume."""
    return write_tiny_cohort(tmp_path_factory.mktemp("wide"), n=4, size=32)


def test_fine_preset_is_the_1mm_grid_of_the_same_field_of_view() -> None:
    fine, full = PRESETS["fine"], PRESETS["full"]
    assert (fine.spacing_mm, fine.shape, fine.template_mm) == (1.0, (192, 224, 192), 1)
    extent = lambda p: np.asarray(p.shape) * p.spacing_mm  # noqa: E731
    np.testing.assert_allclose(extent(fine), extent(full))
    # Both grids' centres fall on the same world point (the MNI brain centre).
    centre = lambda p: (p.affine @ np.append((np.asarray(p.shape) - 1) / 2, 1))[:3]  # noqa: E731
    np.testing.assert_allclose(centre(fine), centre(full), atol=1e-9)
    args = build_parser().parse_args(["phantom", "out", "--preset", "fine"])
    assert args.preset == "fine"


def test_every_patch_lies_inside_the_volume_and_mostly_in_the_brain(wide_cohort: Path) -> None:
    records = discover_subjects(wide_cohort)
    store = VolumeStore(records, multiple=4)
    ds = TranslationDataset(store, records, "t1", "t2", patch_size=(8, 12, 8),
                            samples_per_epoch=200, seed=1)
    shape = store.shape
    brain_fraction = float(np.mean([store.mask(r.subject_id).float().mean() for r in records]))
    in_brain = []
    for index in range(len(ds)):
        item = ds[index]
        assert item["source"].shape == item["target"].shape == (1, 8, 12, 8)
        rng = np.random.default_rng([0x4954454D, ds.seed, ds.epoch, index])
        ds._position(index)  # the same draw as __getitem__: slot, then location
        location = ds._location(item["source_id"], None, rng)
        for window, size in zip(location[1:], shape, strict=True):
            assert 0 <= window.start < window.stop <= size
        in_brain.append(float(item["mask"].float().mean()))
    # Centres drawn from the mask: patches are far richer in brain than the volume is.
    assert 0.15 < brain_fraction < 0.35
    assert np.mean(in_brain) > 2.5 * brain_fraction
    assert min(in_brain) >= 0.0


def test_patch_size_is_checked_before_any_work() -> None:
    settings = TrainSettings(multiple=16, patch_size=64)  # type: ignore[arg-type]
    assert check_patch_size(settings) == (64, 64, 64)
    settings.patch_size = (48, 64, 32)
    assert check_patch_size(settings) == (48, 64, 32)
    for bad in (40, (64, 64), "big", (64, 64, 0)):
        settings.patch_size = bad  # type: ignore[assignment]
        with pytest.raises(UserError, match="patch_size"):
            check_patch_size(settings)
    settings = TrainSettings(multiple=4, spatial="2d", patch_size=8)  # type: ignore[arg-type]
    assert check_patch_size(settings) == (8, 8)


@pytest.fixture(scope="module")
def patch_run(wide_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("patchrun") / "run"
    return train(TrainRequest(method="pix2pix", data=wide_cohort, source="t1", target="t2",
                              out=out, preset="tiny", overrides={"patch_size": 16},
                              name="tiny-pix2pix-patch"))


def test_card_records_spacing_and_patch_and_validation_ran_in_windows(patch_run) -> None:
    card = json.loads((patch_run.run_dir / zoo.CARD).read_text(encoding="utf-8"))
    assert card["spacing"] == [4.0, 4.0, 4.0]
    assert card["patch_size"] == [16, 16, 16]
    assert card["config"]["train"]["patch_size"] == 16 or card["config"]["train"]["patch_size"] == [16, 16, 16]
    metrics = (patch_run.run_dir / "metrics.csv").read_text(encoding="utf-8")
    assert "val_psnr" in metrics


def test_a_patch_trained_model_translates_in_windows_of_its_patch(patch_run, wide_cohort, monkeypatch):
    import synth_core.inference as inference

    calls = []
    real = inference.sliding_window

    def spy(fn, x, window, overlap, progress):
        calls.append((tuple(window), tuple(x.shape[2:])))
        return real(fn, x, window, overlap, progress)

    monkeypatch.setattr(inference, "sliding_window", spy)
    vol = sc.load_volume(wide_cohort / "sub-001" / "sub-001_t1.nii.gz", modality="t1")
    out = sc.translate(vol, method="pix2pix", to="t2", checkpoint=str(patch_run.run_dir), device="cpu")
    assert calls == [((16, 16, 16), (32, 32, 32))]
    assert out.volume.shape == vol.shape and np.isfinite(out.volume.data).all()


def test_windows_skip_the_air_around_a_small_head_and_the_sidecar_says_so(patch_run, wide_cohort,
                                                                          monkeypatch):
    import synth_core.inference as inference

    calls = []
    real = inference.sliding_window
    monkeypatch.setattr(inference, "sliding_window",
                        lambda fn, x, window, *a: calls.append(tuple(x.shape[2:])) or real(fn, x, window, *a))
    vol = sc.load_volume(wide_cohort / "sub-001" / "sub-001_t1.nii.gz", modality="t1")
    wide = np.zeros((64, 64, 64), np.float32)  # the same head with 32 voxels of air beside it
    wide[:32, 16:48, 16:48] = vol.data
    out = sc.translate(sc.Volume(wide, vol.affine, modality="t1"), method="pix2pix", to="t2",
                       checkpoint=str(patch_run.run_dir), device="cpu")
    region = out.provenance["Parameters"]["window_region"]
    (x0, x1), (y0, y1), (z0, z1) = region["box_voxels"]
    assert calls == [(x1 - x0, y1 - y0, z1 - z0)] and x1 - x0 < 64  # fewer windows than 64^3 needs
    assert "head's bounding box" in region["Description"]
    data = out.volume.data
    outside = np.ones(data.shape, bool)
    outside[x0:x1, y0:y1, z0:z1] = False
    assert outside.any() and np.ptp(data[outside]) < 1e-5 * max(1.0, float(np.abs(data).max()))
    assert np.isfinite(data).all() and np.ptp(data[~outside]) > 0


def test_the_cards_inference_block_runs_whole_or_mirrored(patch_run, wide_cohort, tmp_path,
                                                        monkeypatch):
    import synth_core.inference as inference

    folder = tmp_path / "whole-flip"
    shutil.copytree(patch_run.run_dir, folder, ignore=shutil.ignore_patterns("*.ckpt", "*.csv"))
    card = json.loads((folder / zoo.CARD).read_text(encoding="utf-8"))
    card["inference"] = {"window": "whole", "flip": True}
    (folder / zoo.CARD).write_text(json.dumps(card))
    windows = []
    real = inference.sliding_window
    monkeypatch.setattr(inference, "sliding_window",
                        lambda fn, x, window, *a: windows.append(tuple(window)) or real(fn, x, window, *a))
    vol = sc.load_volume(wide_cohort / "sub-001" / "sub-001_t1.nii.gz", modality="t1")
    run = lambda v, **kw: sc.translate(v, method="pix2pix", to="t2", checkpoint=str(folder),  # noqa: E731
                                       device="cpu", **kw)
    both = run(vol)
    assert windows == [] and both.provenance["Parameters"]["window"] == "whole"
    assert both.provenance["Parameters"]["flip"] is True
    # The mirrored pass, mirrored back and averaged in: the mean of the two single passes.
    plain = run(vol, flip=False)
    mirrored = run(sc.Volume(vol.data[::-1].copy(), vol.affine, modality="t1"), flip=False)
    assert plain.provenance["Parameters"]["flip"] is False
    np.testing.assert_allclose(both.volume.data, (plain.volume.data + mirrored.volume.data[::-1]) / 2,
                               rtol=1e-4, atol=1e-4 * float(np.abs(plain.volume.data).max()))
    assert not np.allclose(plain.volume.data, mirrored.volume.data[::-1])  # the test can fail
    # An explicit window wins over the card's "whole".
    windowed = run(vol, window=(16, 16, 16), flip=False)
    assert windows == [(16, 16, 16)] and windowed.provenance["Parameters"]["window"] == [16, 16, 16]


def test_resolution_is_reported_and_a_coarser_model_warns(patch_run, wide_cohort) -> None:
    vol = sc.load_volume(wide_cohort / "sub-001" / "sub-001_t1.nii.gz", modality="t1")
    same = sc.translate(vol, method="pix2pix", to="t2", checkpoint=str(patch_run.run_dir))
    grids = same.provenance["Resolution"]
    assert grids["ModelGrid"] == {"spacing_mm": [4.0, 4.0, 4.0], "shape": [32, 32, 32]}
    assert grids["InputGrid"] == {"spacing_mm": [4.0, 4.0, 4.0], "shape": [32, 32, 32]}
    assert not grids["ModelCoarserThanInput"] and not same.warnings

    fine = resample(vol, (2.0, 2.0, 4.0), order=1)  # finer than the model along x and y
    finer = sc.translate(fine, method="pix2pix", to="t2", checkpoint=str(patch_run.run_dir))
    grids = finer.provenance["Resolution"]
    assert grids["InputGrid"]["spacing_mm"] == [2.0, 2.0, 4.0]
    assert grids["ModelGrid"]["spacing_mm"] == [4.0, 4.0, 4.0]
    assert grids["ModelCoarserThanInput"]
    assert any("coarser than the input's 2 x 2 x 4 mm" in w for w in finer.warnings)
    assert finer.volume.shape == fine.shape
    assert "limit_why" not in finer.provenance["InputCheck"]  # a finer input keeps the limit

    coarse = resample(vol, (8.0, 4.0, 4.0), order=1)  # interpolated up onto the model's grid
    up = sc.translate(coarse, method="pix2pix", to="t2", checkpoint=str(patch_run.run_dir))
    check = up.provenance["InputCheck"]
    assert "coarser grid" in check["limit_why"] and check["limit"] == 2 * same.provenance["InputCheck"]["limit"]


def test_cli_states_both_grids_and_warns_on_stderr(patch_run, wide_cohort, tmp_path, capsys):
    vol = sc.load_volume(wide_cohort / "sub-002" / "sub-002_t1.nii.gz", modality="t1")
    fine = resample(vol, (2.0, 2.0, 2.0), order=1)
    sc.save_volume(fine, tmp_path / "sub-002_t1.nii.gz")
    out = tmp_path / "t2.nii.gz"
    code = main(["translate", str(tmp_path / "sub-002_t1.nii.gz"), "-o", str(out), "--method",
                 "pix2pix", "--to", "t2", "--checkpoint", str(patch_run.run_dir)])
    captured = capsys.readouterr()
    assert code == 0
    assert ("resolution: the network ran on 4 x 4 x 4 mm (32 x 32 x 32 voxels), coarser than "
            "the input; input 2 x 2 x 2 mm (64 x 64 x 64 voxels)") in captured.out
    assert "warning: the model runs on a 4 x 4 x 4 mm grid" in captured.err
    sidecar = json.loads(out.with_name("t2.json").read_text(encoding="utf-8"))
    assert sidecar["Resolution"]["ModelCoarserThanInput"] is True


def test_zoo_prefers_the_checkpoint_nearest_the_inputs_spacing(patch_run, tmp_path, monkeypatch) -> None:
    bundled = tmp_path / "bundled"
    for name, mm in (("near-1mm", 1.0), ("near-2mm", 2.0), ("near-4mm", 4.0)):
        folder = bundled / name
        shutil.copytree(patch_run.run_dir, folder, ignore=shutil.ignore_patterns("*.ckpt", "*.csv"))
        card = json.loads((folder / zoo.CARD).read_text(encoding="utf-8"))
        card["spacing"] = [mm] * 3
        (folder / zoo.CARD).write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "bundled_dir", lambda: bundled)
    pick = lambda s: zoo.resolve(None, method="pix2pix", source="t1", target="t2", spacing=s).name  # noqa: E731
    assert pick((1.0, 1.0, 1.0)) == "near-1mm"
    assert pick((0.9, 1.2, 1.0)) == "near-1mm"
    assert pick((2.0, 2.0, 2.4)) == "near-2mm"
    assert pick((4.0, 4.0, 4.0)) == "near-4mm"
    assert zoo.spacing_distance({"spacing": None}, (1.0, 1.0, 1.0)) == float("inf")
    # The user's own default still wins, whatever its spacing.
    zoo.set_default(patch_run.registered.name)
    try:
        assert pick((1.0, 1.0, 1.0)) == patch_run.registered.name
    finally:
        zoo.set_default("near-4mm")  # naming a bundled one drops the user's default


def test_native_scores_put_each_model_beside_the_noise_floor(tmp_path) -> None:
    from synth_core.benchmark_native import score_native, score_table
    from synth_core.phantom import write_cohort

    data = write_cohort(tmp_path / "heldout", 1, seed=11, preset="small", clean=True)
    rows = score_native(data, [("bi-dpm-t1-t2-small", "bi-dpm")], targets=("t2", "ct"))
    by_model = {(r["target"], r["model"]): r for r in rows}
    # bi-dpm-t1-t2-small maps to T2 only (and back to T1); the floor is scored for both targets.
    assert set(by_model) == {("t2", "noise floor"), ("t2", "bi-dpm-t1-t2-small"),
                             ("ct", "noise floor")}
    floor, model = by_model[("t2", "noise floor")], by_model[("t2", "bi-dpm-t1-t2-small")]
    assert floor["normalisation"] == model["normalisation"] == "mr-p1-p99"
    assert by_model[("ct", "noise floor")]["normalisation"] == "ct-hu"
    assert 0.5 < floor["ssim"] <= 1.0 and model["ssim"] < floor["ssim"]
    assert model["spacing_mm"] == [4.0, 4.0, 4.0]
    table = score_table(rows)
    assert "| t2 | bi-dpm-t1-t2-small | 4x4x4 | 1 |" in table


def test_cli_refuses_a_bad_patch_size_before_any_work(wide_cohort: Path, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "--method", "pix2pix", "--preset", "tiny", "--data", str(wide_cohort),
                 "--from", "t1", "--to", "t2", "--out", str(out), "--set", "patch_size=[8,8]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "patch_size [8, 8] is not 3 whole numbers" in err[0] and "--set patch_size=16" in err[0]
    assert not out.exists()
    code = main(["train", "--method", "dual-glow", "--data", str(wide_cohort), "--from", "t1",
                 "--to", "pet", "--out", str(out), "--set", "patch_size=64"])
    err = capsys.readouterr().err
    assert code == 2 and "runs on whole volumes only" in err and "drop patch_size" in err
    assert not out.exists()


def test_cli_train_takes_the_split_seed(wide_cohort: Path, tmp_path) -> None:
    out = tmp_path / "run"
    code = main(["train", "--method", "pix2pix", "--preset", "tiny", "--data", str(wide_cohort),
                 "--from", "t1", "--to", "t2", "--out", str(out), "--set", "patch_size=16",
                 "--max-steps", "1", "--val-every", "1", "--split-seed", "3", "--no-register"])
    assert code == 0
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["split_seed"] == 3

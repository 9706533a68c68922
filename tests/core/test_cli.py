"""The modality-synth command: every user mistake exits 2 with one line and writes nothing."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from synth_core.cli import main


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([4.0, 4, 4, 1]) if affine is None else affine),
             path)
    return path


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def workdir(tmp_path, tiny_cohort):
    t1 = tiny_cohort / "sub-006" / "sub-006_t1.nii.gz"
    (tmp_path / "t1.nii.gz").write_bytes(t1.read_bytes())
    return tmp_path


BAD_INPUTS = {
    "missing": (None, "does not exist|not found|no such"),
    "text.nii": (b"this is not an image", "not|could not|unreadable"),
    "flat2d.nii.gz": (np.ones((8, 8)), "2D"),
    "series4d.nii.gz": (np.random.default_rng(0).random((8, 8, 8, 3)), "4D"),
    "nan.nii.gz": (np.where(np.eye(8)[:, :, None] > 0, np.nan, 1.0) * np.ones((8, 8, 8)), "NaN"),
    "constant.nii.gz": (np.full((8, 8, 8), 5.0), "constant"),
    "truncated.nii.gz": ("truncate", "truncated|unreadable|could not|corrupt"),
    "zerospacing.nii.gz": ("zero-spacing", "spacing|pixdim|affine"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(name, workdir, trained, capsys):
    content, message = BAD_INPUTS[name]
    path = workdir / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str) and content == "truncate":
        full = (workdir / "t1.nii.gz").read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif isinstance(content, str) and content == "zero-spacing":
        img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), None)
        img.header["pixdim"][1:4] = (0.0, 1.0, 1.0)
        nib.save(img, path)
    elif content is not None:
        _nifti(path, content)
    before = _snapshot(workdir)
    code, out, err = _run(["translate", str(path), "-o", str(workdir / "out.nii.gz"),
                           "--method", "pix2pix", "--to", "pet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert name.split(".")[0] in lines[0] or name == "missing" and "missing" in lines[0]
    import re
    assert re.search(message, lines[0], re.IGNORECASE), lines[0]
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("extra, message", [
    (["--method", "nope", "--to", "pet"], "unknown method 'nope'"),
    (["--method", "pix2pix", "--to", "xray"], "unknown target modality 'xray'"),
    (["--method", "pix2pix", "--to", "ct"], "no checkpoint for method 'pix2pix'"),
    (["--method", "pix2pix", "--to", "pet", "--age", "70"], "takes no age"),
    (["--method", "pix2pix", "--to", "pet", "--steps", "8"], "integrates no ODE"),
    (["--method", "pix2pix", "--to", "pet", "--samples", "4"], "deterministic"),
    (["--method", "cyclegan", "--to", "pet", "--checkpoint", "tiny-pix2pix-t1-pet"],
     "trained for method 'pix2pix', not 'cyclegan'"),
    (["--method", "pix2pix", "--to", "pet", "--checkpoint", "no-such-model"], "no checkpoint named"),
])
def test_bad_options_exit_2_and_write_nothing(extra, message, workdir, trained, capsys):
    before = _snapshot(workdir)
    code, _, err = _run(["translate", str(workdir / "t1.nii.gz"), "-o", str(workdir / "o.nii.gz"),
                         *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert _snapshot(workdir) == before


def test_pickle_checkpoint_is_refused_before_it_runs(workdir, trained, capsys):
    marker = workdir / "PWNED"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = workdir / "model.pt"
    evil.write_bytes(pickle.dumps(Payload()))
    before = _snapshot(workdir)
    code, _, err = _run(["translate", str(workdir / "t1.nii.gz"), "-o", str(workdir / "o.nii.gz"),
                         "--method", "pix2pix", "--to", "pet", "--checkpoint", str(evil)], capsys)
    assert code == 2 and "pickle" in err
    assert not marker.exists() and _snapshot(workdir) == before


def test_output_that_exists_or_is_the_input_is_refused(workdir, trained, capsys):
    existing = workdir / "exists.nii.gz"
    existing.write_bytes(b"precious")
    code, _, err = _run(["translate", str(workdir / "t1.nii.gz"), "-o", str(existing),
                         "--method", "pix2pix", "--to", "pet"], capsys)
    assert code == 2 and "--overwrite" in err and existing.read_bytes() == b"precious"
    t1 = workdir / "t1.nii.gz"
    data = t1.read_bytes()
    code, _, err = _run(["translate", str(t1), "-o", str(t1), "--method", "pix2pix", "--to", "pet",
                         "--overwrite"], capsys)
    assert code == 2 and "is the input" in err and t1.read_bytes() == data


def test_translate_writes_the_volume_and_its_sidecar(workdir, trained, capsys):
    out = workdir / "pet.nii.gz"
    code, stdout, err = _run(["translate", str(workdir / "t1.nii.gz"), "-o", str(out),
                              "--method", "pix2pix", "--to", "pet"], capsys)
    assert code == 0, err
    img, src = nib.load(out), nib.load(workdir / "t1.nii.gz")
    assert img.shape == src.shape and np.allclose(img.affine, src.affine)
    assert img.header["descrip"].tobytes().startswith(b"SYNTHETIC")
    sidecar = json.loads((workdir / "pet.json").read_text(encoding="utf-8"))
    assert sidecar["Synthetic"] is True and sidecar["Method"] == "pix2pix"
    assert len(sidecar["CheckpointSHA256"]) == 64


def test_evaluate_matches_scikit_image(tmp_path, capsys):
    rng = np.random.default_rng(1)
    target = rng.random((12, 13, 14)).astype(np.float32) * 10
    pred = (target + rng.normal(0, 0.5, target.shape)).astype(np.float32)
    p, t = _nifti(tmp_path / "p.nii.gz", pred), _nifti(tmp_path / "t.nii.gz", target)
    code, out, _ = _run(["evaluate", str(p), str(t), "--json"], capsys)
    scores = json.loads(out)
    rng_ = float(target.max() - target.min())
    assert code == 0
    assert scores["psnr"] == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=rng_), abs=1e-5)
    assert scores["ssim"] == pytest.approx(structural_similarity(target, pred, data_range=rng_), abs=1e-5)
    assert scores["mae"] == pytest.approx(float(np.abs(pred - target).mean()), rel=1e-5)
    code, _, err = _run(["evaluate", str(p), str(_nifti(tmp_path / "s.nii.gz", target[:10]))], capsys)
    assert code == 2 and "shape" in err


def test_evaluate_normalise_scores_pet_as_suvr_and_says_so(tmp_path, capsys):
    rng = np.random.default_rng(4)
    target = np.zeros((16, 16, 16), np.float32)
    target[3:13, 3:13, 3:13] = rng.uniform(2.0, 8.0, (10, 10, 10))
    t = _nifti(tmp_path / "sub-001_pet.nii.gz", target)
    p = _nifti(tmp_path / "synth_pet.nii.gz", 3.0 * target)  # another dose, the same uptake
    code, out, _ = _run(["evaluate", str(p), str(t), "--normalise", "--json"], capsys)
    scores = json.loads(out)
    assert code == 0 and scores["normalisation"] == "pet-p95"
    assert scores["mae"] == pytest.approx(0.0, abs=1e-6)
    code, out, _ = _run(["evaluate", str(p), str(t)], capsys)
    assert "units: the target's own units" in out  # raw figures say they are raw
    assert float(out.split("mae")[1].split()[0]) == pytest.approx(
        float(np.abs(2.0 * target).mean()), rel=1e-4)
    code, _, err = _run(["evaluate", str(p), str(t), "--normalise", "--data-range", "2"], capsys)
    assert code == 2 and "data range" in err and len(err.strip().splitlines()) == 1


def test_train_errors_exit_2(tmp_path, tiny_cohort, capsys):
    base = ["train", "--from", "t1", "--to", "pet", "--out", str(tmp_path / "run")]
    code, _, err = _run(base + ["--method", "nope", "--data", str(tiny_cohort)], capsys)
    assert code == 2 and "unknown method" in err
    code, _, err = _run(base + ["--method", "pix2pix", "--data", str(tmp_path / "nodata")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = _run(base + ["--method", "pix2pix", "--data", str(tiny_cohort), "--resume"], capsys)
    assert code == 2 and "cannot resume" in err
    assert not (tmp_path / "run").exists()


def test_models_lists_checkpoints_as_json(trained, capsys):
    code, out, _ = _run(["models", "--json"], capsys)
    rows = json.loads(out)
    names = {r["name"] for r in rows}
    assert code == 0 and {"tiny-pix2pix-t1-pet", "tiny-cyclegan-t1-t2"} <= names
    row = next(r for r in rows if r["name"] == "tiny-pix2pix-t1-pet")
    assert {"method", "source", "target", "preset", "validation", "sha256"} <= set(row)


def test_phantom_command_writes_the_tree(tmp_path, capsys):
    out = tmp_path / "cohort"
    code, _, err = _run(["phantom", str(out), "--subjects", "2", "--seed", "3", "--preset", "small"],
                        capsys)
    assert code == 0, err
    assert (out / "participants.tsv").exists() and (out / "cohort.json").exists()
    for mod in ("t1", "t1ce", "t2", "flair", "pet", "ct", "t1-lowres", "ct-sharp", "ct-smooth",
                "brainmask", "labels"):
        assert (out / "sub-002" / f"sub-002_{mod}.nii.gz").exists(), mod
    code, _, err = _run(["phantom", str(out), "--subjects", "2"], capsys)
    assert code == 2 and "not empty" in err


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "synth_core.cli", "translate", str(tmp_path / "x.nii"),
                           "-o", str(tmp_path / "y.nii.gz"), "--method", "pix2pix", "--to", "pet"],
                          capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "synth_core.cli", "translate"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_models_prints_held_out_scores_with_their_units(capsys):
    from synth_core import zoo

    bundled = [c for c in zoo._scan(zoo.bundled_dir(), "bundled") if c.card.get("heldout")]
    if not bundled:
        pytest.skip("no bundled checkpoint with held-out scores")
    info = bundled[0]
    entry = info.card["heldout"]["directions"][f"{info.source}->{info.target}"]
    code, out, _ = _run(["models"], capsys)
    row = next(line for line in out.splitlines() if line.startswith(info.name + " "))
    assert code == 0
    assert f"{entry['scores']['ssim']:.3f}" in row and f"{entry['noise_floor']['ssim']:.3f}" in row
    assert entry["normalisation"] in row
    assert any(line.startswith(entry["normalisation"] + ":") for line in out.splitlines())

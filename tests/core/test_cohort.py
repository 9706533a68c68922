"""Cohort workflows: translate a folder or manifest into one layout, resume, evaluate, register."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synth_core.cli import main

CKPT = "tiny-pix2pix-t1-pet"


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out_dir: Path, name: str = "summary.tsv") -> list[dict[str, str]]:
    with open(out_dir / name, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _translate(cohort: Path, out: Path, *extra: str) -> list[str]:
    return ["translate", str(cohort), "-o", str(out), "--method", "pix2pix", "--to", "pet",
            "--checkpoint", CKPT, *extra]


@pytest.fixture
def cohort(tmp_path, tiny_cohort) -> Path:
    """A private copy of the tiny cohort (tests damage or rename subjects)."""
    return Path(shutil.copytree(tiny_cohort, tmp_path / "cohort"))


def test_cohort_layout_sidecars_and_summary(cohort, tmp_path, trained, capsys):
    import synth_core as sc
    from synth_core.zoo import locate

    out = tmp_path / "out"
    code, stdout, err = _run(_translate(cohort, out), capsys)
    assert code == 0, err
    rows = _rows(out)
    assert [r["subject"] for r in rows] == [f"sub-{i:03d}" for i in range(1, 7)]
    assert {r["status"] for r in rows} == {"done"} and all(float(r["seconds"]) > 0 for r in rows)
    sha = locate(CKPT).sha256
    for row in rows:
        sid = row["subject"]
        image = out / sid / f"{sid}_pet.nii.gz"
        assert row["output"] == f"{sid}/{sid}_pet.nii.gz" and row["checkpoint"] == CKPT
        side = json.loads((out / sid / f"{sid}_pet.json").read_text(encoding="utf-8"))
        assert side["Synthetic"] is True and side["CheckpointSHA256"] == sha
        assert side["TargetModality"] == "pet" and side["SourceModality"] == "t1"
        source = nib.load(cohort / sid / f"{sid}_t1.nii.gz")
        written = nib.load(image)
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    # The cohort path computes exactly what the single-scan API computes.
    direct = sc.translate(sc.load_volume(cohort / "sub-004" / "sub-004_t1.nii.gz"), "pix2pix", "pet",
                          checkpoint=CKPT)
    written = nib.load(out / "sub-004" / "sub-004_pet.nii.gz").get_fdata()
    assert np.allclose(written, direct.volume.data, atol=1e-4)
    assert "wrote 6 outputs" in stdout


def test_several_targets_for_one_file_use_the_layout(cohort, tmp_path, trained, capsys):
    out = tmp_path / "multi"
    code, _, err = _run(["translate", str(cohort / "sub-002" / "sub-002_t1.nii.gz"), "-o", str(out),
                         "--method", "cyclegan", "--to", "t2,t1", "--checkpoint",
                         "tiny-cyclegan-t1-t2", "--from", "t1"], capsys)
    # t1 from a t1 input is the cyclegan's reverse direction and needs a t2: refused before work
    assert code == 2 and len(err.strip().splitlines()) == 1 and not out.exists()
    # Two targets of one method, each from its own default checkpoint (the user's choice).
    from synth_core import zoo

    defaults = zoo.user_defaults()
    zoo.set_default(trained["pix2pix-t1-t2"].registered.name)
    try:
        code, _, err = _run(["translate", str(cohort / "sub-002" / "sub-002_t1.nii.gz"), "-o",
                             str(out), "--method", "pix2pix", "--to", "pet,t2"], capsys)
    finally:
        zoo._defaults_file().write_text(json.dumps({"defaults": defaults}))
    assert code == 0, err
    assert _files(out) == {"summary.tsv", "sub-002", "sub-002/sub-002_pet.nii.gz",
                           "sub-002/sub-002_pet.json", "sub-002/sub-002_t2.nii.gz",
                           "sub-002/sub-002_t2.json"}
    rows = _rows(out)
    assert [(r["target"], r["status"]) for r in rows] == [("pet", "done"), ("t2", "done")]


def test_non_empty_out_dir_needs_resume_or_overwrite(cohort, tmp_path, trained, capsys):
    out = tmp_path / "out"
    assert _run(_translate(cohort, out), capsys)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, _, err = _run(_translate(cohort, out), capsys)
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    code, _, err = _run(_translate(cohort, out, "--overwrite"), capsys)
    assert code == 0, err
    assert {r["status"] for r in _rows(out)} == {"done"}
    assert all(p.stat().st_mtime_ns > before[p] for p in out.rglob("*.nii.gz"))
    # The cohort folder as OUT_DIR would replace the true PETs: refused, nothing touched.
    truth = {p: p.read_bytes() for p in cohort.rglob("*_pet.nii.gz")}
    code, _, err = _run(_translate(cohort, cohort, "--overwrite"), capsys)
    assert code == 2 and "input" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in cohort.rglob("*_pet.nii.gz")} == truth
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(_translate(cohort, tmp_path / "afile" / "out"), capsys)
    assert code == 2 and "is a file" in err


def test_bad_subject_fails_alone_exit_1_and_is_listed(cohort, tmp_path, trained, capsys):
    (cohort / "sub-003" / "sub-003_t1.nii.gz").write_bytes(b"not an image")
    (cohort / "sub-005" / "sub-005_t1.nii.gz").unlink()
    out = tmp_path / "out"
    code, stdout, err = _run(_translate(cohort, out), capsys)
    assert code == 1
    status = {r["subject"]: (r["status"], r["message"]) for r in _rows(out)}
    assert status["sub-003"][0] == "failed" and "sub-003_t1.nii.gz" in status["sub-003"][1]
    assert status["sub-005"] == ("failed", "no t1 scan for this subject")
    assert [s for s, (st, _) in status.items() if st == "done"] == ["sub-001", "sub-002", "sub-004",
                                                                     "sub-006"]
    assert not (out / "sub-003" / "sub-003_pet.nii.gz").exists()
    assert "failed: sub-003 pet" in err and "4 outputs" in stdout
    code, _, err = _run(_translate(cohort, tmp_path / "o2", "--to", "xray"), capsys)
    assert code == 2 and "xray" in err and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("bad", ["../evil", "/abs/path", "sub-a_b", "sub-01 x"])
def test_subject_ids_that_are_not_bids_labels_are_refused(bad, cohort, tmp_path, trained, capsys):
    rows = ["subject\tt1"] + [f"{sid}\t{cohort / sid / (sid + '_t1.nii.gz')}"
                              for sid in ("sub-001", "sub-002")]
    rows.append(f"{bad}\t{cohort / 'sub-003' / 'sub-003_t1.nii.gz'}")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    before = _files(tmp_path)
    code, _, err = _run(_translate(manifest, tmp_path / "out"), capsys)
    assert code == 2 and "BIDS label" in err and len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == before  # not even OUT_DIR was made


def test_manifest_ids_become_sub_labels(cohort, tmp_path, trained, capsys):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("subject\tt1\tage\nA7\tcohort/sub-001/sub-001_t1.nii.gz\t70\n")
    code, _, err = _run(_translate(manifest, tmp_path / "out"), capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "sub-A7" / "sub-A7_pet.nii.gz").is_file()


def test_resume_skips_done_and_recomputes_stale(cohort, tmp_path, trained, capsys):
    out = tmp_path / "out"
    assert _run(_translate(cohort, out), capsys)[0] == 0
    reference = {p.name: nib.load(p).get_fdata() for p in out.rglob("*.nii.gz")}
    # As a kill between the sidecar and the image would leave it: a sidecar without image.
    (out / "sub-002" / "sub-002_pet.nii.gz").unlink()
    # A sidecar for other options (an earlier run with another seed): recomputed.
    side = out / "sub-004" / "sub-004_pet.json"
    record = json.loads(side.read_text(encoding="utf-8"))
    record["CohortRequest"]["seed"] = 7
    side.write_text(json.dumps(record))
    # A temporary file a killed write left behind.
    (out / "sub-005" / ".sub-005_pet.0123abcd.tmp.nii.gz").write_bytes(b"half")
    code, _, err = _run(_translate(cohort, out, "--resume"), capsys)
    assert code == 0, err
    status = {r["subject"]: r["status"] for r in _rows(out)}
    assert status == {"sub-001": "skipped", "sub-002": "done", "sub-003": "skipped",
                      "sub-004": "done", "sub-005": "skipped", "sub-006": "skipped"}
    assert json.loads(side.read_text(encoding="utf-8"))["CohortRequest"]["seed"] == 0
    assert not list(out.rglob(".*"))
    for p in out.rglob("*.nii.gz"):
        assert np.allclose(nib.load(p).get_fdata(), reference[p.name], atol=1e-5)
    # Other options (a new seed) make every output stale.
    code, _, _ = _run(_translate(cohort, out, "--resume", "--seed", "3"), capsys)
    assert code == 0 and {r["status"] for r in _rows(out)} == {"done"}


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from synth_core import io
    real_write = io._write_image
    calls = {"n": 0}
    def write(image, path, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the third output: half a file, then killed
            with open(path, "wb") as handle:
                handle.write(b"\\x1f\\x8b half a volume")
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(image, path, **kw)
    io._write_image = write
    from synth_core.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_kill_leaves_no_partial_file_and_resume_completes(cohort, tmp_path, trained, capsys):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _KILLER, *_translate(cohort, out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    visible = {p for p in _files(out) if not Path(p).name.startswith(".")}
    assert {p for p in visible if p.endswith(".nii.gz")} == {"sub-001/sub-001_pet.nii.gz",
                                                             "sub-002/sub-002_pet.nii.gz"}
    for p in out.rglob("sub-00[12]_pet.nii.gz"):
        assert nib.load(p).get_fdata().shape == (16, 16, 16)  # complete, readable files
    code, _, err = _run(_translate(cohort, out, "--resume"), capsys)
    assert code == 0, err
    status = [r["status"] for r in _rows(out)]
    assert status == ["skipped", "skipped", "done", "done", "done", "done"]
    assert not list(out.rglob(".*")) and len(list(out.rglob("*_pet.nii.gz"))) == 6


def test_cohort_options_are_refused_for_one_scan(cohort, tmp_path, trained, capsys):
    code, _, err = _run(["translate", str(cohort / "sub-001" / "sub-001_t1.nii.gz"), "-o",
                         str(tmp_path / "x.nii.gz"), "--method", "pix2pix", "--to", "pet",
                         "--resume"], capsys)
    assert code == 2 and "--resume" in err and not (tmp_path / "x.nii.gz").exists()


def test_evaluate_folders_matches_per_file_evaluate(cohort, tmp_path, trained, capsys):
    out = tmp_path / "out"
    assert _run(_translate(cohort, out), capsys)[0] == 0
    code, stdout, err = _run(["evaluate", str(out), str(cohort), "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    rows = _rows(out, "evaluation.tsv")
    assert [r["subject"] for r in rows] == [f"sub-{i:03d}" for i in range(1, 7)]
    for row in rows:
        sid = row["subject"]
        code, single, _ = _run(["evaluate", str(out / sid / f"{sid}_pet.nii.gz"),
                                str(cohort / sid / f"{sid}_pet.nii.gz"), "--mask",
                                str(cohort / sid / f"{sid}_brainmask.nii.gz"), "--json"], capsys)
        scores = json.loads(single)
        assert row["mask"] == "brainmask" and row["status"] == "scored"
        for key in ("mae", "psnr", "ssim", "corrcoef"):
            assert float(row[key]) == pytest.approx(scores[key], rel=1e-5)
    psnr = [float(r["psnr"]) for r in rows]
    assert report["summary"]["pet"]["psnr"]["mean"] == pytest.approx(np.mean(psnr), rel=1e-5)
    assert report["summary"]["pet"]["psnr"]["sd"] == pytest.approx(np.std(psnr, ddof=1), rel=1e-4)
    # The scoring normalisation (PET / its brain 95th percentile), the same per folder as per file.
    code, stdout, err = _run(["evaluate", str(out), str(cohort), "--normalise", "--tsv",
                              str(tmp_path / "norm.tsv"), "--json"], capsys)
    assert code == 0, err
    normalised = _rows(tmp_path, "norm.tsv")
    assert {r["normalisation"] for r in normalised} == {"pet-p95"}
    _, single, _ = _run(["evaluate", str(out / "sub-002" / "sub-002_pet.nii.gz"),
                         str(cohort / "sub-002" / "sub-002_pet.nii.gz"), "--normalise", "--mask",
                         str(cohort / "sub-002" / "sub-002_brainmask.nii.gz"), "--json"], capsys)
    assert float(normalised[1]["psnr"]) == pytest.approx(json.loads(single)["psnr"], rel=1e-5)
    assert float(normalised[1]["psnr"]) != pytest.approx(float(rows[1]["psnr"]), rel=1e-3)
    assert json.loads(stdout)["summary"]["pet"]["units"] == json.loads(single)["units"]
    # Again without --overwrite: the TSV exists, refused before scoring.
    code, _, err = _run(["evaluate", str(out), str(cohort)], capsys)
    assert code == 2 and "evaluation.tsv" in err
    # A prediction without a target is listed and makes the exit status 1.
    shutil.rmtree(cohort / "sub-006")
    code, _, err = _run(["evaluate", str(out), str(cohort), "--overwrite"], capsys)
    assert code == 1 and "sub-006" in err


def test_register_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y, z = np.mgrid[:40, :40, :40].astype(np.float32)
    data = (np.exp(-((x - 16) ** 2 + (y - 22) ** 2 + (z - 19) ** 2) / 60) * 100
            + np.exp(-((x - 26) ** 2 + (y - 14) ** 2 + (z - 24) ** 2) / 25) * 60
            + (x > 30) * 20 + rng.normal(0, 1, x.shape)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted = affine.copy()
    shifted[:3, 3] = (6.0, -4.0, 2.0)  # the same voxels placed 6, -4, 2 mm away
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "fixed.nii.gz")
    nib.save(nib.Nifti1Image(data, shifted), tmp_path / "moving.nii.gz")
    out = tmp_path / "moved.nii.gz"
    code, stdout, err = _run(["register", str(tmp_path / "moving.nii.gz"),
                              str(tmp_path / "fixed.nii.gz"), "-o", str(out)], capsys)
    assert code == 0, err
    moved = nib.load(out)
    assert np.allclose(moved.affine, affine)
    side = json.loads((tmp_path / "moved.json").read_text(encoding="utf-8"))
    world = np.array(side["MovingToFixedWorldRAS"])
    assert side["Synthetic"] is False
    assert np.allclose(world[:3, 3], (-6.0, 4.0, -2.0), atol=0.5)
    assert np.allclose(world[:3, :3], np.eye(3), atol=0.02)
    inner = (slice(6, -6),) * 3
    assert np.corrcoef(moved.get_fdata()[inner].ravel(), data[inner].ravel())[0, 1] > 0.99
    for argv, message in ((["-o", str(out)], "exists"),
                          (["-o", str(tmp_path / "moving.nii.gz"), "--overwrite"], "input")):
        before = {p: p.read_bytes() for p in tmp_path.iterdir()}
        code, _, err = _run(["register", str(tmp_path / "moving.nii.gz"),
                             str(tmp_path / "fixed.nii.gz"), *argv], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
        assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_each_job_is_done_by_the_one_rank_that_owns_it(tmp_path):
    """The rule predict_step applies under DDP (rank r does jobs r, r + N, ...), checked
    without starting processes; the 2-process run itself is measured by scripts/bench_cohort.py."""
    from types import SimpleNamespace

    from synth_core.cohort import CohortPlan, OutputJob
    from synth_core.cohort.predict import CohortPredictor
    from synth_core.zoo import CheckpointInfo

    info = CheckpointInfo("c", tmp_path, {"sha256": "0" * 64}, "path")
    jobs = [OutputJob(f"sub-{i}", "pet", tmp_path / "in.nii.gz", tmp_path / f"sub-{i}" / "x.nii.gz",
                      None, info, {}) for i in range(5)]
    plan = CohortPlan(tmp_path, jobs)
    seen = {}
    for rank in (0, 1):
        status = tmp_path / f"status{rank}"
        status.mkdir()
        module = CohortPredictor(plan, status)
        module._trainer = SimpleNamespace(world_size=2, global_rank=rank)
        for index in range(5):  # every rank sees every index here; the rule keeps its own
            row = module.predict_step({"index": index, "volume": None, "error": "unreadable",
                                       "read_seconds": 0.0})
            if row is not None:
                seen.setdefault(row["subject"], []).append(rank)
        lines = (status / f"rank{rank}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["status"] for line in lines] == ["failed"] * len(lines)
    assert seen == {"sub-0": [0], "sub-1": [1], "sub-2": [0], "sub-3": [1], "sub-4": [0]}


def test_ctrl_c_keeps_what_was_written_and_lists_the_rest(cohort, tmp_path, trained, capsys,
                                                          monkeypatch):
    import signal

    from synth_core.cohort import predict

    real, calls = predict.translate, {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "translate", interrupting)
    handler = signal.getsignal(signal.SIGINT)
    out = tmp_path / "out"
    code, _, err = _run(_translate(cohort, out), capsys)
    assert code == 130 and "--resume" in err
    assert [r["status"] for r in _rows(out)] == ["done", "done"] + ["interrupted"] * 4
    assert len(list(out.rglob("*_pet.nii.gz"))) == 2 and not list(out.rglob(".*"))
    assert signal.getsignal(signal.SIGINT) == handler  # Ctrl+C works again afterwards

"""Outputs that cannot be written are refused before any work: exit 2, one line, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synth_core import Volume
from synth_core.cli import main
from synth_core.errors import UserError
from synth_core.io import save_volume


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def no_model_runs(monkeypatch):
    """Fail the test if translate() is ever reached (the check must come first)."""
    import synth_core.inference

    def forbidden(*args, **kwargs):
        raise AssertionError("translate ran although the output cannot be written")

    monkeypatch.setattr(synth_core.inference, "translate", forbidden)


def _one_line_exit_2(argv: list[str], capsys) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_translate_into_a_read_only_folder_is_refused_before_the_model(
        tiny_cohort, readonly_folder, no_model_runs, capsys):
    t1 = tiny_cohort / "sub-001" / "sub-001_t1.nii.gz"
    line = _one_line_exit_2(["translate", str(t1), "-o", str(readonly_folder / "pet.nii.gz"),
                             "--method", "pix2pix", "--to", "pet"], capsys)
    assert "cannot write" in line and str(readonly_folder) in line and "-o" in line
    assert _snapshot(readonly_folder) == set()


def test_translate_under_a_file_is_refused_before_the_model(tiny_cohort, tmp_path, no_model_runs,
                                                            capsys):
    t1 = tiny_cohort / "sub-001" / "sub-001_t1.nii.gz"
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    before = _snapshot(tmp_path)
    line = _one_line_exit_2(["translate", str(t1), "-o", str(blocker / "pet.nii.gz"),
                             "--method", "pix2pix", "--to", "pet"], capsys)
    assert "is a file" in line and "notes.txt" in line
    assert _snapshot(tmp_path) == before and blocker.read_text(encoding="utf-8") == "a file, not a folder"


def test_phantom_into_a_read_only_folder_is_refused_at_once(readonly_folder, monkeypatch, capsys):
    import synth_core.phantom

    monkeypatch.setattr(synth_core.phantom, "write_cohort",
                        lambda *a, **k: pytest.fail("the phantom was generated"))
    line = _one_line_exit_2(["phantom", str(readonly_folder / "cohort"), "--subjects", "1"], capsys)
    assert "cannot write" in line and "OUT_DIR" in line
    assert _snapshot(readonly_folder) == set()


def test_phantom_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    line = _one_line_exit_2(["phantom", str(tmp_path / "f" / "cohort"), "--subjects", "1"], capsys)
    assert "is a file" in line


def test_train_into_a_read_only_folder_is_refused_before_reading_data(
        tiny_cohort, readonly_folder, monkeypatch, capsys):
    import synth_core.training.run as run

    monkeypatch.setattr(run, "discover_subjects", lambda *a, **k: pytest.fail("data was read"))
    line = _one_line_exit_2(["train", "--method", "pix2pix", "--data", str(tiny_cohort), "--from", "t1",
                             "--to", "pet", "--out", str(readonly_folder / "run")], capsys)
    assert "cannot write" in line and "--out" in line
    assert _snapshot(readonly_folder) == set()


def test_save_volume_into_a_read_only_folder_is_a_user_error(readonly_folder):
    volume = Volume(np.random.default_rng(0).random((4, 4, 4)).astype(np.float32), np.eye(4), "t1")
    with pytest.raises(UserError, match="cannot write"):
        save_volume(volume, readonly_folder / "v.nii.gz")
    assert _snapshot(readonly_folder) == set()


def test_the_probe_leaves_nothing_behind(tmp_path):
    from synth_core.io import check_writable_folder

    assert check_writable_folder(tmp_path) == tmp_path
    assert _snapshot(tmp_path) == set()
    with pytest.raises(UserError, match="does not exist"):
        check_writable_folder(tmp_path / "missing")
    assert check_writable_folder(tmp_path / "new" / "deeper", may_create=True) == tmp_path / "new" / "deeper"
    assert _snapshot(tmp_path) == set()

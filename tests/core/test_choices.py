"""Visible choices: the success line and the sidecar name the checkpoint, the source modality
and how it was known, every defaulted setting and the intended use; the zoo's default is
the user's to choose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synth_core import zoo
from synth_core.cli import main
from synth_core.errors import UserError

HINT = "from its file name"


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name, extra, source_from", [
    ("sub-01_t1.nii.gz", [], "from the file name"),
    ("scan.nii.gz", [], "the checkpoint's source"),
    ("scan.nii.gz", ["--from", "t1"], "given"),
])
def test_success_names_checkpoint_source_and_intended_use(trained, tiny_cohort, tmp_path, capsys,
                                                          name, extra, source_from):
    shutil.copy(tiny_cohort / "sub-001" / "sub-001_t1.nii.gz", tmp_path / name)
    code, out, err = _run(["translate", str(tmp_path / name), "-o", str(tmp_path / "pet.nii.gz"),
                           "--method", "pix2pix", "--to", "pet", *extra], capsys)
    assert code == 0, err
    steps = trained["pix2pix"].model.card["steps"]
    assert f"checkpoint: tiny-pix2pix-t1-pet (user, trained {steps} steps" in out
    assert f"source: t1 ({source_from})" in out
    assert "intended use: trained on the user's own data" in out
    sidecar = json.loads((tmp_path / "pet.json").read_text(encoding="utf-8"))
    assert sidecar["SourceModalityFrom"] == source_from
    assert sidecar["CheckpointInfo"]["Origin"] == "user" and sidecar["CheckpointInfo"]["TrainedSteps"] == steps
    assert sidecar["IntendedUse"].startswith("trained on the user's own data")


def test_the_file_name_hint_is_added_only_where_the_modality_matters(trained, tiny_cohort, tmp_path,
                                                                     capsys):
    t1 = tmp_path / "sub-01_t1.nii.gz"
    shutil.copy(tiny_cohort / "sub-001" / "sub-001_t1.nii.gz", t1)
    code, _, err = _run(["translate", str(t1), "-o", str(tmp_path / "o.nii.gz"), "--method", "pix2pix",
                         "--to", "pet", "--age", "70"], capsys)
    assert code == 2 and "takes no age" in err and HINT not in err
    t2 = tmp_path / "sub-01_t2.nii.gz"
    shutil.copy(tiny_cohort / "sub-001" / "sub-001_t2.nii.gz", t2)
    code, _, err = _run(["translate", str(t2), "-o", str(tmp_path / "o.nii.gz"), "--method", "pix2pix",
                         "--to", "pet"], capsys)
    assert code == 2 and "no checkpoint for method 'pix2pix' (t2 -> pet)" in err
    assert f"taken as t2 {HINT}" in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def fresh_home(monkeypatch, tmp_path, trained) -> Path:
    """An empty user zoo holding one copy of the tiny pix2pix (t1 -> pet), newer than any bundle."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODALITY_SYNTH_HOME", str(home))
    mine = home / "models" / "mine"
    mine.mkdir(parents=True)
    for name in ("model.safetensors", "model.json"):
        shutil.copy(trained["pix2pix"].run_dir / name, mine / name)
    return home


def _bundled(method: str, source: str, target: str) -> str:
    rows = [c for c in zoo.list_checkpoints(method, source, target) if c.origin == "bundled"]
    if not rows:
        pytest.skip(f"no bundled {method} {source} -> {target} checkpoint")
    return rows[0].name


def test_a_newer_user_checkpoint_is_not_the_default_until_the_user_says_so(fresh_home, capsys):
    bundled = _bundled("pix2pix", "t1", "pet")
    assert zoo.resolve(None, method="pix2pix", source="t1", target="pet").name == bundled
    code, out, _ = _run(["models", "--default", "mine"], capsys)
    assert code == 0 and "mine (user) is now the default for pix2pix t1 -> pet" in out
    assert json.loads((fresh_home / "defaults.json").read_text(encoding="utf-8")) == {"defaults": ["mine"]}
    assert zoo.resolve(None, method="pix2pix", source="t1", target="pet").name == "mine"
    _, out, _ = _run(["models", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["mine"]["default"] is True and rows[bundled]["default"] is False
    _, table, _ = _run(["models"], capsys)
    assert any(line.startswith("mine ") and " yes " in line for line in table.splitlines())
    # --checkpoint always wins over the default
    assert zoo.resolve(bundled, method="pix2pix", source="t1", target="pet").name == bundled
    # naming the bundled one goes back to it
    code, _, _ = _run(["models", "--default", bundled], capsys)
    assert code == 0 and zoo.resolve(None, method="pix2pix", source="t1", target="pet").name == bundled


def test_only_an_own_checkpoint_fitting_is_named_not_taken(fresh_home, capsys):
    card_path = fresh_home / "models" / "mine" / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["target"] = "flair"  # a task no bundled pix2pix covers
    card_path.write_text(json.dumps(card))
    with pytest.raises(UserError, match="only your own 'mine'.*--checkpoint mine.*models --default mine"):
        zoo.resolve(None, method="pix2pix", source="t1", target="flair")
    code, _, err = _run(["models", "--default", "nothing-like-it"], capsys)
    assert code == 2 and "no checkpoint named 'nothing-like-it'" in err


def test_a_bundled_card_without_intended_use_is_taken_as_phantom_trained():
    info = zoo.CheckpointInfo("x", Path("."), {"method": "pix2pix"}, "bundled")
    assert zoo.intended_use(info).startswith("trained on synthetic phantom data only: not validated")
    user = zoo.CheckpointInfo("x", Path("."), {"method": "pix2pix"}, "user")
    assert "not stated" in zoo.intended_use(user)


def test_a_run_on_a_phantom_cohort_says_so_in_its_card(tiny_cohort, tmp_path):
    from synth_core.training import TrainRequest, train

    data = tmp_path / "phantom-like"
    shutil.copytree(tiny_cohort, data)
    (data / "cohort.json").write_text(json.dumps({"Synthetic": True, "preset": "small", "seed": 4}))
    result = train(TrainRequest(method="pix2pix", data=data, source="t1", target="pet",
                                out=tmp_path / "run", preset="tiny", register=False,
                                overrides={"max_steps": 2, "val_every": 2}))
    card = result.model.card
    assert card["intended_use"].startswith("trained on synthetic phantom data only: not validated on real scans")
    assert card["training_data"]["description"].startswith("synthetic phantom cohort")
    assert "seed 4" in card["training_data"]["description"]

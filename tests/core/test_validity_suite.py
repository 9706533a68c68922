"""The validity report: its schema, its figures' sanity, and the mistakes refused up front."""

from __future__ import annotations

import json

import pytest

import synth_core.validity_suite as suite
from synth_core.cli import main
from synth_core.zoo import list_checkpoints

KEPT = ("bi-dpm-t1-t2-small", "pix2pix-t1-pet-full")
PET = "pix2pix-t1-pet-full"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # A PET and a bidirectional MR checkpoint cover the kinds of entry the bundle has;
    # `benchmark --suite validity --quick` runs every bundled checkpoint.
    out = tmp_path_factory.mktemp("validity") / "report"
    original = suite.list_checkpoints
    suite.list_checkpoints = lambda: [c for c in original() if c.name in KEPT]
    try:
        suite.run_validity(out, quick=True)
    finally:
        suite.list_checkpoints = original
    return out


def test_report_schema(report):
    data = json.loads((report / "validity.json").read_text(encoding="utf-8"))
    assert data["suite"] == "validity" and data["cohort"]["seed"] == suite.DEFAULT_SEED
    assert data["cohort"]["healthy_subjects"] == 1 and data["cohort"]["lesioned_subjects"] == 1
    assert data["cohort"]["disease_subjects"] == suite.SuiteSettings.for_run(True).disease
    assert [c["name"] for c in data["checkpoints"]] == sorted(KEPT)
    mr_entry, pet_entry = data["checkpoints"]
    # Each checkpoint runs at the phantom grid of its own voxel size.
    assert (mr_entry["preset"], mr_entry["voxel_mm"]) == ("small", 4.0)
    assert (pet_entry["preset"], pet_entry["voxel_mm"]) == ("full", 2.0)
    for entry in (mr_entry, pet_entry):
        for direction in entry["directions"]:
            for key in ("scores", "scores_sd", "noise_floor", "noise_floor_sd"):
                assert set(direction[key]) == set(suite.METRICS)
            # The clean truth scores better against the noisy target than any model does.
            assert direction["noise_floor"]["psnr"] > direction["scores"]["psnr"]
            assert direction["noise_floor"]["ssim"] > direction["scores"]["ssim"]
        # Neither bundled model is stochastic; both have a T1 input reference.
        assert entry["uncertainty"] is None
        check = entry["ood"]["input_check"]
        assert entry["ood"]["source"] == "t1" and 0.0 <= check["auroc"] <= 1.0
        assert set(check["per_kind"]) == set(suite.OOD_KINDS) - {"t1"}
    pet = pet_entry["directions"][0]
    assert pet["normalisation"] == "pet-p95"
    assert pet["hallucination"] is None and pet["lesions"] is None
    # No bundled checkpoint is age-conditioned: no counterfactual-age entry.
    assert mr_entry["counterfactual_age"] is None and pet_entry["counterfactual_age"] is None
    assert [(d["source"], d["target"]) for d in mr_entry["directions"]] == [("t1", "t2"), ("t2", "t1")]
    for mr in mr_entry["directions"]:
        assert mr["normalisation"] == "mr-p1-p99"
        assert 0.0 <= mr["hallucination"]["volume_mm3"] <= mr["hallucination"]["brain_mm3"]
        assert set(mr["lesions"]) <= set(suite.LESIONS) and "tumour" in mr["lesions"]
        assert mr["lesions"]["tumour"]["contrast_true"] != 0.0

    # The references at the cohort's own grid, and the 2 mm PET model at its grid.
    references, section = data["disease_signal"]
    assert (references["preset"], section["preset"]) == ("small", "full")
    assert references["gaps"] == [] and section["goal_gap"] == suite.GAP_GOAL
    assert [e["name"] for e in references["inputs"]] == ["true_pet", "anatomy", "t1", "age", "control"]
    names = [entry["name"] for entry in section["inputs"]]
    assert names == ["true_pet", "anatomy", "t1", "age", "control", f"synthetic:{PET}"]
    for entry in section["inputs"] + references["inputs"]:
        lo, hi = entry["interval"]
        assert 0.0 <= lo <= entry["balanced_accuracy"] <= hi <= 1.0
    by_name = {entry["name"]: entry for entry in section["inputs"]}
    # The true PET carries the phantom's AD effect: it separates AD from CN.
    assert by_name["true_pet"]["balanced_accuracy"] > 0.8
    (gap,) = section["gaps"]
    assert gap["checkpoint"] == PET
    assert gap["gap"] == pytest.approx(by_name["t1"]["balanced_accuracy"]
                                       - by_name[f"synthetic:{PET}"]["balanced_accuracy"])
    assert gap["meets_goal"] == (gap["gap"] <= suite.GAP_GOAL)
    presets = data["cohort"]["presets"]
    for part in (references, section):
        n = part["subjects"]
        assert n["ad"] + n["cn"] + n["mci_left_out"] == presets[part["preset"]]["disease_subjects"]
    # Figures: the accuracy bars and the lesion ratios (no age-conditioned model here).
    assert {"validity-figures/disease-signal-small.png",
            "validity-figures/disease-signal-full.png"} <= set(data["figures"])
    for name in data["figures"]:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_shows_the_json_figures(report):
    data = json.loads((report / "validity.json").read_text(encoding="utf-8"))
    page = (report / "validity.md").read_text(encoding="utf-8")
    pet = data["checkpoints"][1]["directions"][0]
    assert f"{pet['scores']['psnr']:.2f}" in page and f"{pet['noise_floor']['psnr']:.2f}" in page
    tumour = data["checkpoints"][0]["directions"][0]["lesions"]["tumour"]
    assert f"{tumour['ratio']:.2f} (true {tumour['contrast_true']:+.2f})" in page
    assert "no checkpoint here is age-conditioned" in page
    assert data["command"] in page
    for section in data["disease_signal"]:
        for entry in section["inputs"]:
            assert f"| {entry['label']} | {entry['balanced_accuracy']:.3f} |" in page
    # The method pages link to the per-method headings.
    assert "## `pix2pix`" in page and "## `bi-dpm`" in page
    for name in data["figures"]:
        assert f"]({name})" in page


def test_mistakes_exit_2_before_any_work(tmp_path, capsys):
    training_seeds = {((c.card.get("training_data") or {}).get("phantom") or {}).get("seed")
                      for c in list_checkpoints() if c.origin == "bundled"} - {None}
    cases = [(["--suite", "validity", "--seed", str(min(training_seeds))], "training cohort"),
             (["--seed", "3"], "--suite validity only"),
             (["--suite", "validity", "--seed", "-1"], ">= 0")]
    for extra, message in cases:
        code = main(["benchmark", "--out", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "validity.json").write_text("{}")
    assert main(["benchmark", "--out", str(tmp_path / "old"), "--suite", "validity"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "old" / "validity.json").read_text(encoding="utf-8") == "{}"


def test_cohort_folder_gives_its_own_subjects(tmp_path, capsys, monkeypatch):
    cohort = tmp_path / "cohort"
    assert main(["phantom", str(cohort), "--subjects", "2", "--seed", "4",
                 "--wmh-fraction", "0.5"]) == 0
    monkeypatch.setattr(suite, "list_checkpoints",
                        lambda: [c for c in list_checkpoints() if c.name == "bi-dpm-t1-t2-small"])
    out = tmp_path / "report"
    assert main(["benchmark", "--out", str(out), "--suite", "validity", "--cohort",
                 str(cohort)]) == 0
    data = json.loads((out / "validity.json").read_text(encoding="utf-8"))
    assert data["cohort"]["seed"] == 4
    assert (data["cohort"]["healthy_subjects"], data["cohort"]["lesioned_subjects"]) == (1, 1)
    assert data["cohort"]["lesions"] == ["wmh"]
    assert set(data["checkpoints"][0]["directions"][0]["lesions"]) == {"wmh"}
    assert "--cohort cohort" in data["command"]


def test_cohort_mistakes_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cohort.json").write_text('{"seed": 4}')
    for extra, message in [(["--cohort", str(tmp_path / "empty")], "no cohort.json"),
                           (["--cohort", str(tmp_path / "empty"), "--seed", "12"], "give one of them"),
                           (["--cohort", str(tmp_path / "broken")], "not a phantom cohort")]:
        assert main(["benchmark", "--out", str(tmp_path / "out"), "--suite", "validity",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _one_checkpoint_report(entry: dict) -> dict:
    """A validity report around one hand-made checkpoint entry (2 healthy subjects, seed 11)."""
    return {"command": "modality-synth benchmark --suite validity --out OUT", "version": "x",
            "seconds": 60.0, "cohort": {"seed": 11, "preset": "small", "voxel_mm": 4.0,
                                        "healthy_subjects": 2, "lesioned_subjects": 0,
                                        "lesions": [], "disease_subjects": 0},
            "checkpoints": [entry], "disease_signal": [], "figures": [], "not_measured": []}


def test_markdown_of_an_age_conditioned_stochastic_model():
    # The branches the current bundle does not reach (no bundled model is age-conditioned or
    # stochastic), rendered from a hand-made report entry.
    from synth_core.validity_report import render_markdown

    scores = {k: 0.5 for k in suite.METRICS}
    entry = {
        "name": "glow", "method": "dual-glow", "sha256": "ab" * 32, "origin": "path",
        "title": "DUAL-GLOW", "preset": "small", "voxel_mm": 4.0,
        "directions": [{"source": "t1", "target": "pet", "units": "PET", "subjects": 2,
                        "normalisation": "pet-p95", "scores": scores, "scores_sd": scores,
                        "noise_floor": scores, "noise_floor_sd": scores,
                        "hallucination": None, "lesions": None}],
        "counterfactual_age": {"slope_ratio": 0.78, "leak_ratio": 0.61, "correlation": 0.42,
                               "subjects": 2, "regions": []},
        "uncertainty": {"direction": "t1->pet", "samples": 8, "correlation": -0.03,
                        "coverage": 0.609, "calibrated_coverage": 7 / 9, "subjects": 3},
        "ood": {"source": "t1", "input_check": None,
                "likelihood": {"auroc": 0.9, "per_kind": {"t2": 1.0, "ct": 0.8},
                               "inputs": {"t1": 4, "t2": 4, "ct": 4}}},
    }
    page = render_markdown(_one_checkpoint_report(entry))
    assert "| `glow` | 0.78 | 0.61 | 0.42 | 2 |" in page
    assert "| `glow` | t1->pet | 8 | -0.03 | 0.609 | 0.778 | 3 |" in page
    assert "| `glow` | likelihood | 0.900 | T2 1.00, CT 0.80 | 4 / 8 |" in page
    assert "## `dual-glow`" in page and "Not measured: too few AD or CN" in page


def test_markdown_names_an_any_to_any_checkpoints_modalities_once():
    from synth_core.validity_report import render_markdown

    scores = {k: 0.5 for k in suite.METRICS}
    mods = ("t1", "t1ce", "t2", "flair")
    directions = [{"source": a, "target": b, "units": "MR", "subjects": 2,
                   "normalisation": "mr-p1-p99", "scores": scores, "scores_sd": scores,
                   "noise_floor": scores, "noise_floor_sd": scores, "hallucination": None,
                   "lesions": None} for a in mods for b in mods if a != b]
    entry = {"name": "uni", "method": "unified", "sha256": "cd" * 32, "origin": "path",
             "title": "Unified", "preset": "small", "voxel_mm": 4.0, "directions": directions,
             "counterfactual_age": None, "uncertainty": None, "ood": None}
    page = render_markdown(_one_checkpoint_report(entry))
    assert "### Unified: any of T1, T1ce, T2, FLAIR into any other (`uni`)" in page
    assert page.count("| T1ce → FLAIR |") >= 1

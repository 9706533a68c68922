"""DUAL-GLOW as a method: presets, training through the engine, translation, age, OOD warning."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import synth_core
from synth_core import zoo
from synth_core.errors import UserError
from synth_core.methods import SynthesisRequest, build_config, config_from_dict, get_method_class
from synth_core.methods.dual_glow import DualGlowSettings, TrainingStatistics
from synth_core.nn.flows import DualGlowConfig, DualGlowNetworkSettings, cpu_preset, paper_preset
from synth_core.volume import Volume

KEY = "dual-glow"


@pytest.fixture(scope="module")
def dual_glow_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny DUAL-GLOW trained through ``train()`` on the tiny cohort (ages 60-85)."""
    from synth_core.training import TrainRequest, train

    out = tmp_path_factory.mktemp("runs") / "dual-glow"
    # 12 steps fill the 8-batch bits-per-voxel window of the tiny preset; one validation at
    # the end exports the final weights.
    return train(TrainRequest(method=KEY, data=tiny_cohort, source="t1", target="pet", out=out,
                              preset="tiny", overrides={"max_steps": 12, "val_every": 12},
                              name="tiny-dual-glow"))


def _t1(tiny_cohort: Path, subject: str = "sub-001") -> Volume:
    return synth_core.load_volume(str(tiny_cohort / subject / f"{subject}_t1.nii.gz"))


def test_presets_carry_the_network_presets_and_round_trip():
    net_fields = {f.name for f in dataclasses.fields(DualGlowSettings)}
    for name, reference in (("paper", paper_preset()), ("cpu", cpu_preset())):
        cfg = build_config(KEY, name)
        for field in dataclasses.fields(reference):
            if field.name in net_fields:
                assert getattr(cfg, field.name) == getattr(reference, field.name), field.name
        assert (cfg.beta1, cfg.beta2) == reference.betas
        assert cfg.train.lr == reference.lr and cfg.train.warmup_steps == reference.warmup_steps
        assert config_from_dict(KEY, dataclasses.asdict(cfg)) == cfg
    paper = build_config(KEY, "paper")
    assert (paper.levels, paper.steps_per_level, paper.hidden_channels) == (4, 16, 512)
    assert (paper.lambda_mri, paper.age_loss_weight, paper.train.lr) == (0.001, 0.01, 1e-3)
    cfg = build_config(KEY, "cpu", {"learned_scale": False, "max_steps": 9})
    assert cfg.learned_scale is False and cfg.train.max_steps == 9
    assert cfg.network().learned_scale is False


def test_network_settings_are_defined_once_and_the_bundled_card_round_trips():
    shared = [f.name for f in dataclasses.fields(DualGlowNetworkSettings)]
    assert len(shared) == 17 and issubclass(DualGlowSettings, DualGlowNetworkSettings)
    assert issubclass(DualGlowConfig, DualGlowNetworkSettings)
    # A setting changed on the method reaches the network unchanged, whatever its name.
    cfg = build_config(KEY, "tiny", {"lambda_mri": 0.5, "age_keep_weight": 0.2, "n_bins": 64})
    assert cfg.network().network_settings() == cfg.network_settings()
    assert (cfg.network().lambda_mri, cfg.network().age_keep_weight, cfg.network().n_bins) == (0.5, 0.2, 64)
    # Cards store the flat settings; the bundled card's config loads and writes back the same.
    card = zoo.bundled_dir() / "dual-glow-t1-pet-small" / zoo.CARD
    if card.is_file():
        stored = json.loads(card.read_text(encoding="utf-8"))["config"]
        loaded = config_from_dict(KEY, stored)
        written = json.loads(json.dumps(dataclasses.asdict(loaded)))
        assert {k: written[k] for k in stored} == stored  # settings added since take defaults
        assert config_from_dict(KEY, written) == loaded
        assert (loaded.levels, loaded.age_effect, loaded.learned_scale) == (3, "regional", False)


def test_optimiser_is_adamax_with_the_paper_betas_and_a_warmup():
    method = get_method_class(KEY)(build_config(KEY, "tiny"), "t1", "pet")
    (opt,) = method.configure_optimizers()
    assert isinstance(opt, torch.optim.Adamax)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["lr"] == 1e-3
    assert method.lr_lambda(0) == pytest.approx(0.5) and method.lr_lambda(5) == 1.0


def test_training_statistics_ring_buffer_and_age_range():
    stats = TrainingStatistics(window=4)
    assert stats.bits_reference() is None and stats.middle_age() is None
    values = [3.0, 9.0, 1.0, 2.0, 4.0, 6.0]
    for i, v in enumerate(values):
        stats.record(torch.tensor([v]), torch.tensor([60.0 + 4 * i]))
    mean, std, count = stats.bits_reference()  # type: ignore[misc]
    last = np.array(values[-4:])
    assert count == 4
    assert mean == pytest.approx(last.mean()) and std == pytest.approx(last.std(ddof=1), rel=1e-6)
    assert stats.middle_age() == pytest.approx((60.0 + 80.0) / 2)


def test_augmentation_flips_and_shifts_both_volumes_of_a_pair_alike():
    cfg = build_config(KEY, "tiny", {"augment_flip": True, "augment_shift": 1})
    method = get_method_class(KEY)(cfg, "t1", "pet")
    mri = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8, 8)
    pet = mri * -2.0 + 5.0

    def moved(v: torch.Tensor, flip: bool, ox: int, oy: int, oz: int) -> torch.Tensor:
        padded = torch.nn.functional.pad(v.flip(2) if flip else v, (1,) * 6, mode="replicate")
        return padded[:, :, ox:ox + 8, oy:oy + 8, oz:oz + 8]

    candidates = [(flip, *o) for flip in (False, True) for o in np.ndindex(3, 3, 3)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        a, b = method._augment(mri, pet)
        matches = [c for c in candidates if torch.equal(a, moved(mri, *c))]
        assert len(matches) == 1
        assert torch.equal(b, moved(pet, *matches[0]))
        seen.add(matches[0])
    assert len(seen) > 6 and {m[0] for m in seen} == {False, True}


def test_training_needs_ages_inside_the_age_range():
    method = get_method_class(KEY)(build_config(KEY, "tiny"), "t1", "pet")
    x = torch.rand(1, 1, 8, 8, 8) * 2 - 1
    with pytest.raises(UserError, match="has no age"):
        method.losses({"source": x, "target": x, "age": torch.tensor([math.nan])})
    with pytest.raises(UserError, match="outside the model's age_range"):
        method.losses({"source": x, "target": x, "age": torch.tensor([30.0])})


def test_a_diverged_batch_is_named_and_kept_out_of_the_ood_reference():
    x = torch.rand(1, 1, 8, 8, 8) * 2 - 1
    batch = {"source": x, "target": x, "age": torch.tensor([70.0])}
    methods = {limit: get_method_class(KEY)(build_config(KEY, "tiny", {"divergence_bits": limit}),
                                            "t1", "pet") for limit in (64.0, 0.5, 0.0)}
    for limit, method in methods.items():
        for _ in range(2):
            out = method.losses(batch)
        assert 0.5 < float(out["loss"].detach()) < 64  # a fresh model: a few bits per voxel
        reason = method.diverged(out)
        if limit == 0.5:
            assert "objectives above 0.5 bits per voxel (a uniform guess costs 8" in reason
            assert method.stats.bits_reference() is None  # the skipped steps recorded nothing
        else:  # the default, and 0 = off
            assert reason is None and method.stats.bits_reference()[2] == 2


def test_a_resumed_run_may_change_its_loss_weights_but_not_its_shape(dual_glow_run, tmp_path):
    import shutil

    from synth_core.training import TrainRequest, train

    out = tmp_path / "run"
    shutil.copytree(dual_glow_run.run_dir, out)
    ask = dict(method=KEY, data=Path(json.loads((out / "config.json").read_text(encoding="utf-8"))["data"]),
               source="t1", target="pet", out=out, preset="tiny", resume=True, register=False)
    with pytest.raises(UserError, match=r"cannot change hidden_channels .*A resumed dual-glow run "
                                        r"can change only .*lambda_mri, age_loss_weight"):
        train(TrainRequest(**ask, overrides={"hidden_channels": 16}))
    with pytest.raises(UserError, match="age_keep_weight' of 'dual-glow' takes a value like 0.0"):
        train(TrainRequest(**ask, overrides={"age_keep_weight": "strong"}))  # unset, yet typed
    result = train(TrainRequest(**ask, overrides={"max_steps": 14, "age_keep_weight": 0.1}))
    assert result.steps == 14
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["config"]["age_keep_weight"] == 0.1
    assert saved["resumed_with"][-1]["changed"] == {"train.max_steps": [12, 14],
                                                    "age_keep_weight": [None, 0.1]}


def test_engine_trains_and_exports_statistics(dual_glow_run):
    card = dual_glow_run.model.card
    assert dual_glow_run.steps == 12
    assert card["age_range"] == [60.0, 85.0] or card["age_range"][0] >= 60.0
    method = zoo.load_method(dual_glow_run.model)
    mean, std, count = method.stats.bits_reference()
    assert count == 8 and math.isfinite(mean) and std > 0
    lo, hi = card["age_range"]
    # The ages recorded in training are the card's (every training subject was seen).
    assert (float(method.stats.age_min), float(method.stats.age_max)) == (lo, hi)


def test_translate_gives_mean_and_std_on_the_input_grid(dual_glow_run, tiny_cohort):
    vol = _t1(tiny_cohort)
    res = synth_core.translate(vol, method=KEY, to="pet", checkpoint=str(dual_glow_run.run_dir),
                               age=70, samples=3, temperature=0.5)
    assert res.volume.shape == vol.shape and np.allclose(res.volume.affine, vol.affine)
    assert res.std is not None and res.std.shape == vol.shape
    assert float(res.std.data.max()) > 0
    assert res.provenance["Parameters"]["age"] == 70
    likelihood = res.provenance["InputLikelihood"]
    assert math.isfinite(likelihood["bits_per_voxel"]) and likelihood["training_batches"] == 8


def test_zero_temperature_is_deterministic(dual_glow_run, tiny_cohort):
    vol = _t1(tiny_cohort)
    kw = dict(method=KEY, to="pet", checkpoint=str(dual_glow_run.run_dir), age=75, temperature=0.0)
    a = synth_core.translate(vol, samples=2, seed=1, **kw)
    b = synth_core.translate(vol, samples=1, seed=2, **kw)
    np.testing.assert_array_equal(a.volume.data, b.volume.data)
    assert float(np.abs(a.std.data).max()) == 0.0
    c = synth_core.translate(vol, method=KEY, to="pet", checkpoint=str(dual_glow_run.run_dir),
                             age=75, temperature=0.5, seed=2)
    assert float(np.abs(c.volume.data - a.volume.data).max()) > 0


def test_age_outside_the_card_range_is_refused(dual_glow_run, tiny_cohort):
    lo, hi = dual_glow_run.model.card["age_range"]
    for age in (lo - 1, hi + 0.5):
        with pytest.raises(UserError, match="outside the range the model was trained on"):
            synth_core.translate(_t1(tiny_cohort), method=KEY, to="pet",
                                 checkpoint=str(dual_glow_run.run_dir), age=age)


def test_defaults_mode_for_one_sample_and_middle_age(dual_glow_run):
    method = zoo.load_method(dual_glow_run.model)
    lo, hi = dual_glow_run.model.card["age_range"]
    x = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    default = method.synthesize(x, SynthesisRequest())
    explicit = method.synthesize(x, SynthesisRequest(age=(lo + hi) / 2, temperature=0.0))
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
    other_age = method.synthesize(x, SynthesisRequest(age=lo, temperature=0.0))
    assert float((other_age - default).abs().max()) > 0  # the age reaches the output
    gen = torch.Generator().manual_seed(0)
    spread = method.synthesize(x, SynthesisRequest(samples=3, generator=gen))
    assert spread.shape == (3, 1, 1, 16, 16, 16) and float(spread.std(0).max()) > 0


def test_translate_without_age_records_and_says_the_age_it_used(dual_glow_run, tiny_cohort):
    lo, hi = dual_glow_run.model.card["age_range"]
    res = synth_core.translate(_t1(tiny_cohort), method=KEY, to="pet",
                               checkpoint=str(dual_glow_run.run_dir))
    assert res.provenance["Parameters"]["age"] == pytest.approx((lo + hi) / 2, abs=0.01)
    assert res.provenance["Parameters"]["temperature"] == 0.0
    defaulted = res.provenance["DefaultedParameters"]
    assert defaulted["age"]["value"] == res.provenance["Parameters"]["age"]
    assert f"{lo:.1f} to {hi:.1f} years" in defaulted["age"]["why"]
    assert any(line.startswith(f"age: {defaulted['age']['value']} (not given; the middle of the training ages")
               for line in res.summary())
    given = synth_core.translate(_t1(tiny_cohort), method=KEY, to="pet", age=lo,
                                 checkpoint=str(dual_glow_run.run_dir))
    assert "age" not in given.provenance["DefaultedParameters"]


def _with_statistics(run, folder: Path, bits: list[float]) -> Path:
    """The run's checkpoint with its recorded training bits per voxel replaced by ``bits``."""
    method = zoo.load_method(run.model)
    method.stats.mri_bits.copy_(torch.tensor(bits))
    zoo.save_model(method, folder, run.model.card)
    return folder


def test_ood_warning_checks_each_level_and_calibration_uses_the_checkpoints_weights(
        dual_glow_run, tiny_cohort, tmp_path):
    vol = _t1(tiny_cohort, "sub-006")
    kw = dict(method=KEY, to="pet", age=70)
    info = synth_core.translate(vol, checkpoint=str(dual_glow_run.run_dir), **kw).provenance[
        "InputLikelihood"]
    bits, levels = info["bits_per_voxel"], info["level_bits"]
    assert len(levels) == 2 and len(info["training_level_mean"]) == 2  # recorded in training
    spread = torch.tensor([-0.05, 0.05] * 4)
    for level in range(2):  # the total in range, one level far from the training MRIs'
        method = zoo.load_method(dual_glow_run.model)
        method.stats.mri_bits.copy_(bits + spread)
        shifted = torch.tensor(levels)
        shifted[level] += 3.0
        method.stats.mri_level_bits.copy_(shifted + spread[:, None])
        folder = tmp_path / f"level{level}"
        zoo.save_model(method, folder, dual_glow_run.model.card)
        res = synth_core.translate(vol, checkpoint=str(folder), **kw)
        assert len(res.warnings) == 1 and f"latent bits at level {level + 1}, below" in res.warnings[0]
    # A checkpoint from before the per-level statistics: loads, and checks the total only.
    state = {k: v for k, v in zoo.load_method(dual_glow_run.model).state_dict().items()
             if k != "stats.mri_level_bits"}
    old = get_method_class(KEY)(config_from_dict(KEY, dual_glow_run.model.card["config"]), "t1",
                                "pet")
    old.load_state_dict(state)
    assert old.stats.level_reference() is None
    result = old.out_of_distribution(torch.zeros(1, 1, 8, 8, 8))
    assert "training_level_mean" not in result and "level_bits" in result
    # Calibration refills the reference with the checkpoint's own weights.
    method = zoo.load_method(dual_glow_run.model)
    inputs = [torch.randn(1, 1, 8, 8, 8).clamp(-1, 1) for _ in range(3)]
    assert method.calibrate(inputs) == 3
    mean, _, count = method.stats.bits_reference()
    expected = torch.stack([method.flow.mri_bits_per_voxel(x) for x in inputs]).mean()
    assert count == 3 and mean == pytest.approx(float(expected), abs=1e-5)
    l_mean, _, l_count = method.stats.level_reference()
    expected = torch.cat([method.flow.mri_level_bits(x) for x in inputs]).mean(0)
    assert l_count == 3
    torch.testing.assert_close(l_mean, expected)


def test_ood_warning_is_two_sided_around_the_training_statistics(dual_glow_run, tiny_cohort,
                                                                  tmp_path):
    vol = _t1(tiny_cohort, "sub-006")
    kw = dict(method=KEY, to="pet", age=70)
    first = synth_core.translate(vol, checkpoint=str(dual_glow_run.run_dir), **kw)
    bits = first.provenance["InputLikelihood"]["bits_per_voxel"]
    spread = [-0.05, 0.05] * 4
    tolerance = 4.0 * float(np.std(spread, ddof=1)) + 0.25  # the tiny preset's sigmas, margin
    for name, shift, warned in (("near", 0.3, False), ("training above", 2.0, True),
                                ("training below", -2.0, True)):
        folder = _with_statistics(dual_glow_run, tmp_path / name,
                                  [bits + shift + d for d in spread])
        res = synth_core.translate(vol, checkpoint=str(folder), **kw)
        info = res.provenance["InputLikelihood"]
        assert info["training_mean"] == pytest.approx(bits + shift, abs=1e-3)
        assert info["tolerance"] == pytest.approx(tolerance, abs=1e-3)
        assert info["bits_per_voxel"] == pytest.approx(bits, abs=1e-4)
        assert "warning" not in info
        assert len(res.warnings) == int(warned), name
        if warned:
            side = "below" if shift > 0 else "above"
            assert f"{side} the training range" in res.warnings[0]


def _bundled_dual_glow() -> zoo.CheckpointInfo | None:
    rows = [c for c in zoo.list_checkpoints(method=KEY, target="pet") if c.origin == "bundled"]
    return rows[0] if rows else None


@pytest.mark.skipif(_bundled_dual_glow() is None, reason="no bundled dual-glow checkpoint")
def test_bundled_checkpoint_flags_ct_and_pet_given_as_t1_but_not_a_held_out_t1():
    from synth_core.phantom import generate_subject

    info = _bundled_dual_glow()
    assert info is not None
    subject = generate_subject(0, seed=11, preset="small")  # a cohort no model was trained on
    lo, hi = info.card["age_range"]
    kw = dict(method=KEY, to="pet", checkpoint=str(info.directory), source="t1",
              age=min(max(subject.age, lo), hi))
    held_out = synth_core.translate(subject.volumes["t1"], **kw)
    assert held_out.warnings == []
    for modality in ("ct", "pet"):
        given = subject.volumes[modality]
        as_t1 = Volume(given.data, given.affine, "t1")
        # The likelihood check on its own (the shared input check refuses a CT first).
        assert len(synth_core.translate(as_t1, check_modality=False, **kw).warnings) == 1, modality
    ct = subject.volumes["ct"]
    with pytest.raises(UserError, match="Hounsfield"):
        synth_core.translate(Volume(ct.data, ct.affine, "t1"), **kw)


def test_export_last_writes_the_state_of_last_ckpt(dual_glow_run, tmp_path):
    from synth_core.training import export_last

    out = tmp_path / "last"
    info = export_last(dual_glow_run.run_dir, out)
    assert info.card["steps"] == dual_glow_run.steps and "validation" not in info.card
    # Here the last step is also the exported best one: the same weights.
    exported = zoo.load_method(info).state_dict()
    best = zoo.load_method(dual_glow_run.model).state_dict()
    assert exported.keys() == best.keys()
    for key, value in best.items():
        torch.testing.assert_close(exported[key], value)
    with pytest.raises(UserError, match="exists"):
        export_last(dual_glow_run.run_dir, out)
    with pytest.raises(UserError, match="no model.json"):
        export_last(tmp_path, tmp_path / "other")

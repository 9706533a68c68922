"""Training on Lightning: run folder, determinism, stop and resume, SIGKILL, DDP, NaN guard."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from synth_core.errors import UserError
from synth_core.methods import Capabilities, Method, TrainSettings, base
from synth_core.training import StopRequest, TrainRequest, train
from synth_core.zoo import sha256_file

CLI = [sys.executable, "-m", "synth_core.cli"]


def _request(cohort: Path, out: Path, **kw) -> TrainRequest:
    args = dict(method="pix2pix", data=cohort, source="t1", target="pet", out=out, preset="tiny",
                register=False)
    args.update(kw)
    return TrainRequest(**args)


def test_run_folder_holds_config_metrics_checkpoint_and_card(trained):
    run = trained["pix2pix"].run_dir
    assert {"config.json", "metrics.csv", "last.ckpt", "model.safetensors", "model.json"} <= {
        p.name for p in run.iterdir()}
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"val_mae", "val_psnr", "val_ssim", "train_loss"} <= set(rows[0])
    assert any(r["val_psnr"] for r in rows)
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    for key in ("method", "config", "source", "target", "spacing", "normalisation", "training_data",
                "validation", "package_version", "sha256"):
        assert key in card, key
    assert card["sha256"] == sha256_file(run / "model.safetensors")
    assert card["spacing"] == [4.0, 4.0, 4.0]
    assert card["training_data"]["n_subjects"]["train"] >= 3 if isinstance(
        card["training_data"].get("n_subjects"), dict) else True
    state = torch.load(run / "last.ckpt", weights_only=True)  # loads without running code
    assert state["global_step"] == 2 * card["config"]["train"]["max_steps"]  # two optimisers


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def test_training_is_deterministic_on_cpu(tiny_cohort, tmp_path):
    # Compare tensors, not file hashes: safetensors writes its metadata map in arbitrary order.
    a = _weights(train(_request(tiny_cohort, tmp_path / "a")).run_dir)
    b = _weights(train(_request(tiny_cohort, tmp_path / "b")).run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = _weights(train(_request(tiny_cohort, tmp_path / "c", overrides={"seed": 1})).run_dir)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_stop_request_leaves_a_checkpoint_that_resumes(tiny_cohort, tmp_path):
    stop = StopRequest()
    events = []

    def sink(event):
        events.append(event)
        if event.kind == "step" and event.step >= 2:
            stop.set()

    out = tmp_path / "run"
    first = train(_request(tiny_cohort, out, overrides={"max_steps": 6}), sink=sink, stop=stop)
    assert first.stopped and first.steps == 2
    assert events[-1].kind == "stopped"
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # 2 steps x 2 optimisers
    adam_steps = [s["step"] for s in ckpt["optimizer_states"][0]["state"].values()]
    assert all(int(s) == 2 for s in adam_steps)

    seen = []
    second = train(_request(tiny_cohort, out, resume=True), sink=lambda e: seen.append(e))
    assert not second.stopped and second.steps == 6
    steps = [e.step for e in seen if e.kind == "step"]
    assert steps[0] == 3 and steps[-1] == 6  # the counter continues where it stopped
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert all(int(s["step"]) == 6 for s in ckpt["optimizer_states"][0]["state"].values())


def test_resume_and_new_run_guard_the_run_folder(tiny_cohort, tmp_path):
    with pytest.raises(UserError, match="cannot resume"):
        train(_request(tiny_cohort, tmp_path / "empty", resume=True))
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        train(_request(tiny_cohort, out))
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"



def test_resume_refuses_other_modalities_and_extends_a_finished_run(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    train(_request(tiny_cohort, out, overrides={"max_steps": 3, "checkpoint_every": 100}))
    assert _step_of(out / "last.ckpt") == 3  # the end state is saved, not only periodic ones
    with pytest.raises(UserError, match="trains pix2pix t1 -> pet, not pix2pix t1 -> t2"):
        train(_request(tiny_cohort, out, target="t2", resume=True))
    seen = []
    train(_request(tiny_cohort, out, resume=True, overrides={"max_steps": 5}),
          sink=lambda e: seen.append(e.step) if e.kind == "step" else None)
    assert seen == [4, 5]


def test_resume_may_change_the_learning_rate_and_records_it(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    train(_request(tiny_cohort, out, overrides={"max_steps": 2, "lr": 2e-4}))
    before = torch.load(out / "last.ckpt", weights_only=True)["lr_schedulers"]
    # the first run's own settings may be repeated (the same command line or form)
    train(_request(tiny_cohort, out, resume=True,
                   overrides={"max_steps": 4, "lr": 5e-5, "batch_size": 1}))
    after = torch.load(out / "last.ckpt", weights_only=True)
    for old, new in zip(before, after["lr_schedulers"], strict=True):  # generator, discriminator
        assert new["base_lrs"] == pytest.approx([b / 4 for b in old["base_lrs"]])
    for opt, sched in zip(after["optimizer_states"], after["lr_schedulers"], strict=True):
        assert opt["param_groups"][0]["initial_lr"] == pytest.approx(sched["base_lrs"][0])
        assert opt["param_groups"][0]["lr"] == pytest.approx(sched["_last_lr"][0])
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["config"]["train"]["lr"] == 5e-5
    assert [r["changed"] for r in saved["resumed_with"]] == [
        {"train.max_steps": [2, 4], "train.lr": [2e-4, 5e-5]}]


def test_resume_refuses_a_setting_that_would_make_another_model(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    train(_request(tiny_cohort, out, overrides={"max_steps": 2}))
    record = (out / "config.json").read_bytes()
    checkpoint = sha256_file(out / "last.ckpt")
    with pytest.raises(UserError, match=r"cannot change features \(4 -> 16\) when resuming .*"
                                        r"start a new run"):
        train(_request(tiny_cohort, out, resume=True, overrides={"features": 16}))
    assert (out / "config.json").read_bytes() == record
    assert sha256_file(out / "last.ckpt") == checkpoint


def _step_of(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["global_step"]) // 2


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_loses_at_most_the_steps_since_the_checkpoint(
        tiny_cohort, tmp_path):
    out = tmp_path / "run"
    args = CLI + ["train", "--method", "pix2pix", "--preset", "tiny", "--data", str(tiny_cohort),
                  "--from", "t1", "--to", "pet", "--out", str(out),
                  "--checkpoint-every", "1", "--val-every", "100000", "--no-register"]
    long_run = ["--max-steps", "100000"]  # never ends by itself while we kill it
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    last = out / "last.ckpt"
    killed_at = []
    for attempt, delay in enumerate((0.3, 0.05, 0.6)):
        proc = subprocess.Popen(args + long_run + (["--resume"] if attempt else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        before = _step_of(last) if last.exists() else 0
        deadline = time.time() + 60
        while time.time() < deadline and not (last.exists() and _step_of(last) > before):
            time.sleep(0.02)
        time.sleep(delay)  # kill at an arbitrary moment, often in the middle of a write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        step = _step_of(last)  # always loads: never half-written
        assert step > before
        killed_at.append(step)
    final = killed_at[-1] + 5
    done = subprocess.run(args + ["--resume", "--max-steps", str(final)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _step_of(last) == final
    assert not list(out.glob(".last.ckpt.*.tmp"))
    assert killed_at == sorted(killed_at)


@pytest.mark.slow
def test_two_ddp_processes_see_different_shards_and_end_identical(tiny_cohort, tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run(
        CLI + ["train", "--method", "pix2pix", "--preset", "tiny", "--data", str(tiny_cohort),
               "--from", "t1", "--to", "pet", "--out", str(out), "--max-steps", "4",
               "--devices", "2", "--device", "cpu", "--no-register", "--record-shards"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / "shards" / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert ranks[0]["world_size"] == 2 and ranks[0]["sampler"] == "DistributedSampler"
    seen = [{tuple(pair) for pair in r["indices"]} for r in ranks]
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1]  # within every epoch, each sample went to one rank only
    epochs = {e for e, _ in seen[0] | seen[1]}
    for epoch in epochs:  # and together the ranks covered the epoch
        indices = sorted(i for e, i in seen[0] | seen[1] if e == epoch)
        assert indices == list(range(len(indices)))
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]


@dataclass
class _NaNConfig:
    nan_steps: tuple[int, ...] = ()
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        max_steps=5, val_every=100, checkpoint_every=100, multiple=4, lr=1e-2))


class _NaNMethod(Method):
    """A one-layer method whose loss is NaN at chosen calls (automatic optimisation path)."""

    key = "test-nan"
    title = "test only"
    capabilities = Capabilities(data=("paired",))
    config_class = _NaNConfig
    presets = {"cpu": _NaNConfig, "paper": _NaNConfig, "tiny": _NaNConfig}

    def __init__(self, config, source, target):
        super().__init__(config, source, target)
        self.net = torch.nn.Conv3d(1, 1, 1)
        self.calls = 0

    def configure_optimizers(self):
        return [torch.optim.SGD(self.parameters(), lr=self.config.train.lr)]

    def losses(self, batch):
        self.calls += 1
        loss = torch.nn.functional.l1_loss(self.net(batch["source"]), batch["target"])
        if self.calls in self.config.nan_steps or -1 in self.config.nan_steps:
            loss = loss * float("nan")
        return {"loss": loss}

    def synthesize(self, x, request):
        return self.net(x).unsqueeze(0)


@pytest.fixture
def nan_method():
    base.register(_NaNMethod)
    yield _NaNMethod
    base._REGISTRY.pop("test-nan")


def test_nan_guard_skips_a_bad_step(tiny_cohort, tmp_path, nan_method, monkeypatch):
    monkeypatch.setattr(_NaNConfig, "__init__", _with_nan_steps((2,)))
    result = train(_request(tiny_cohort, tmp_path / "r", method="test-nan"))
    # Lightning still counts the skipped attempt towards max_steps (it calls the optimiser
    # with an empty closure); the weights were updated on the 4 finite steps only.
    assert result.steps == 4
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "r" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nan_guard_stops_a_diverged_run_with_a_clear_message(tiny_cohort, tmp_path, nan_method,
                                                            monkeypatch):
    monkeypatch.setattr(_NaNConfig, "__init__", _with_nan_steps((-1,)))
    with pytest.raises(UserError, match="diverged: 5 non-finite losses in a row"):
        train(_request(tiny_cohort, tmp_path / "r", method="test-nan"))


class _DivergingMethod(_NaNMethod):
    """Finite losses that its own test calls diverged."""

    key = "test-diverging"

    def diverged(self, losses):
        return "losses above the test's limit"


def test_a_methods_own_divergence_test_stops_the_run(tiny_cohort, tmp_path):
    base.register(_DivergingMethod)
    try:
        with pytest.raises(UserError, match="diverged: 5 losses above the test's limit in a row at "
                                            "step 0; resume from last.ckpt with a lower learning"):
            train(_request(tiny_cohort, tmp_path / "r", method="test-diverging"))
    finally:
        base._REGISTRY.pop("test-diverging")


def _with_nan_steps(steps):
    original = _NaNConfig.__init__

    def init(self, nan_steps=steps, train=None):
        original(self, nan_steps=steps, **({"train": train} if train is not None else {}))

    return init


def test_export_callback_keeps_the_best_or_the_last_validation():
    from types import SimpleNamespace

    from synth_core.training.callbacks import ExportBestCallback

    for keep, expected in (("best", [1, 3]), ("last", [1, 2, 3, 4])):
        exported: list[int] = []
        callback = ExportBestCallback(
            lambda m, metrics, out=exported: out.append(metrics["step"]), keep=keep)
        for step, psnr in enumerate([20.0, 18.0, 21.0, 19.0], start=1):
            trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True,
                                      callback_metrics={"val_psnr": torch.tensor(psnr)})
            callback.on_validation_end(trainer, SimpleNamespace(batches_done=step))
        assert exported == expected, keep
        assert callback.best == 21.0


def test_a_folder_without_participants_tsv_trains_and_validates(tiny_cohort, tmp_path):
    """Scans alone, no participants.tsv: validation batches still collate (no label is "")."""
    import shutil

    data = tmp_path / "scans-only"
    shutil.copytree(tiny_cohort, data)
    for table in data.glob("participants.*"):
        table.unlink()
    result = train(_request(data, tmp_path / "run", overrides={"train.max_steps": 2,
                                                                "train.val_every": 1}))
    assert (result.run_dir / "model.safetensors").exists()

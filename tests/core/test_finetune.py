"""Fine-tuning (``train --init-from``): the parent's weights exactly, its architecture, its record."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from synth_core.cli import main
from synth_core.errors import UserError
from synth_core.methods import get_method_class
from synth_core.training import TrainRequest, train
from synth_core.training.finetune import load_parent_weights, parent_checkpoint, parent_config

PARENT = "tiny-pix2pix-t1-pet"


def test_init_from_loads_the_parents_weights_exactly(trained):
    parent = parent_checkpoint(PARENT, "pix2pix", "t1", "pet")
    method = get_method_class("pix2pix")(parent_config(parent, {}, ()), "t1", "pet")
    saved = load_file(str(parent.weights))
    assert any(not torch.equal(method.state_dict()[k], v) for k, v in saved.items())  # fresh init
    load_parent_weights(method, parent)
    state = method.state_dict()
    assert saved and all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in saved.items())


def test_fine_tuned_run_starts_from_the_parent_and_records_it(trained, tiny_cohort, tmp_path):
    parent = parent_checkpoint(PARENT, "pix2pix", "t1", "pet")
    # A learning rate of ~0 leaves the weights where they started: the parent's.
    result = train(TrainRequest(method="pix2pix", data=tiny_cohort, source="t1", target="pet",
                                out=tmp_path / "ft", preset="cpu", init_from=PARENT, register=False,
                                overrides={"lr": 1e-30, "max_steps": 2}))
    card = json.loads((result.run_dir / "model.json").read_text(encoding="utf-8"))
    assert card["parent"]["name"] == PARENT and card["parent"]["sha256"] == parent.sha256
    assert json.loads((result.run_dir / "config.json").read_text(encoding="utf-8"))["init_from"]["sha256"] == parent.sha256
    # The parent's architecture (tiny preset), not the "cpu" preset asked for; train settings new.
    assert card["config"]["features"] == parent.card["config"]["features"] == 4
    assert card["config"]["train"]["max_steps"] == 2 and card["preset"] == parent.card["preset"]
    assert card["spacing"] == parent.card["spacing"]
    child, before = load_file(str(result.run_dir / "model.safetensors")), load_file(str(parent.weights))
    assert child.keys() == before.keys()
    assert all(torch.allclose(child[k], before[k], atol=1e-12) for k in before)


def test_init_from_another_method_or_architecture_is_refused(trained, tiny_cohort, tmp_path, capsys):
    with pytest.raises(UserError, match="not pix2pix t1 -> pet"):
        parent_checkpoint("tiny-cyclegan-t1-t2", "pix2pix", "t1", "pet")
    parent = parent_checkpoint(PARENT, "pix2pix", "t1", "pet")
    with pytest.raises(UserError, match="features"):
        parent_config(parent, {"features": 8}, ())
    out = tmp_path / "run"
    code = main(["train", "--method", "pix2pix", "--data", str(tiny_cohort), "--from", "t1",
                 "--to", "t2", "--out", str(out), "--init-from", PARENT])
    err = capsys.readouterr().err
    assert code == 2 and "--init-from" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()

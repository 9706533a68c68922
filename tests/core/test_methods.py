"""The Method contract: registry, capabilities, presets and configuration round trips."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import synth_core
from synth_core.errors import UserError
from synth_core.methods import SynthesisRequest, build_config, config_from_dict, get_method_class


def test_list_methods_reports_capabilities():
    methods = synth_core.list_methods()
    assert {"pix2pix", "cyclegan"} <= set(methods)
    assert methods["cyclegan"]["capabilities"]["bidirectional"] is True
    assert methods["pix2pix"]["capabilities"]["bidirectional"] is False
    assert methods["pix2pix"]["capabilities"]["data"] == ["paired"] or \
        tuple(methods["pix2pix"]["capabilities"]["data"]) == ("paired",)
    for info in methods.values():
        assert {"cpu", "paper"} <= set(info["presets"])


def test_paper_presets_follow_the_papers():
    p2p = build_config("pix2pix", "paper")
    assert (p2p.lambda_l1, p2p.train.lr, p2p.beta1, p2p.features) == (100.0, 2e-4, 0.5, 64)
    cyc = build_config("cyclegan", "paper")
    assert (cyc.lambda_cycle, cyc.lambda_identity, cyc.pool_size, cyc.n_blocks) == (10.0, 0.5, 50, 9)


def test_overrides_and_errors():
    cfg = build_config("pix2pix", "cpu", {"max_steps": 7, "lr": 1e-3, "batch_size": None})
    assert cfg.train.max_steps == 7 and cfg.train.lr == 1e-3
    with pytest.raises(UserError, match="no preset 'huge'"):
        build_config("pix2pix", "huge")
    with pytest.raises(UserError, match="unknown method 'nope'"):
        get_method_class("nope")
    with pytest.raises(UserError, match="no setting"):
        build_config("pix2pix", "cpu", {"wings": 2})


@pytest.mark.parametrize("key", ["pix2pix", "cyclegan"])
def test_config_round_trips_through_json(key):
    cfg = build_config(key, "cpu")
    again = config_from_dict(key, dataclasses.asdict(cfg))
    assert again == cfg


def test_lr_schedule_is_constant_then_linear_decay():
    cls = get_method_class("pix2pix")
    cfg = build_config("pix2pix", "tiny", {"max_steps": 100})
    method = cls(cfg, "t1", "pet")
    assert method.lr_lambda(0) == 1.0 and method.lr_lambda(49) == 1.0
    assert method.lr_lambda(75) == pytest.approx(0.5)
    assert method.lr_lambda(100) == 0.0


def test_cyclegan_reverse_uses_the_other_generator():
    cls = get_method_class("cyclegan")
    torch.manual_seed(0)
    method = cls(build_config("cyclegan", "tiny"), "t1", "t2").eval()
    x = torch.randn(1, 1, 8, 8, 8)
    forward = method.synthesize(x, SynthesisRequest())
    backward = method.synthesize(x, SynthesisRequest(reverse=True))
    assert forward.shape == (1, 1, 1, 8, 8, 8)
    assert torch.allclose(backward[0], method.generator_ba(x))
    assert not torch.allclose(forward, backward)

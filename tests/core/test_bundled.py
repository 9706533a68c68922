"""The checkpoints shipped inside the package: intact, small, and useful on unseen subjects."""

from __future__ import annotations

import pytest

from synth_core import zoo
from synth_core.benchmark import normalised_scores
from synth_core.inference import translate

BUNDLED = zoo._scan(zoo.bundled_dir(), "bundled")


def test_bundle_is_small():
    sizes = [c.weights.stat().st_size for c in BUNDLED]
    assert sum(sizes) < 30 * 2**20
    assert all(s < 20 * 2**20 for s in sizes)


@pytest.mark.parametrize("info", BUNDLED, ids=[c.name for c in BUNDLED])
def test_bundled_checkpoint_loads_with_its_card(info):
    assert info.card["storage_dtype"] == "float16"
    assert info.sha256 == zoo.sha256_file(info.weights)
    assert "trained with:" in info.card["bundle_note"]
    method = zoo.load_method(info)
    assert all(p.dtype.is_floating_point for p in method.parameters())


CASES = {  # (source, target, reverse, minimum SSIM, minimum correlation) on an unseen subject
    "pix2pix-t1-pet-small": ("t1", "pet", False, 0.7, 0.6),  # measured 0.86, 0.80
    "pix2pix-t1-t2-small": ("t1", "t2", False, 0.45, 0.6),  # measured 0.61, 0.77
    "cyclegan-t1-t2-small": ("t1", "t2", False, 0.15, 0.35),  # measured 0.28, 0.52: undertrained
}


@pytest.mark.parametrize("name", [n for n in CASES if n in {c.name for c in BUNDLED}])
def test_bundled_checkpoint_translates_an_unseen_phantom_subject(name):
    from synth_core.phantom import generate_subject

    source, target, reverse, min_ssim, min_corr = CASES[name]
    subject = generate_subject(3, seed=99, preset="small")  # a cohort no model was trained on
    mask = subject.volumes["brainmask"].data > 0
    info = next(c for c in BUNDLED if c.name == name)
    result = translate(subject.volumes[source], info.method, target, checkpoint=str(info.directory),
                       device="cpu")
    scores = normalised_scores(result.volume, subject.volumes[target], target, mask)
    assert scores["ssim"] > min_ssim and scores["corrcoef"] > min_corr, scores

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


CASES = {  # name: [(source, target, mask, minimum SSIM, minimum correlation)] on an unseen subject
    "pix2pix-t1-pet-small": [("t1", "pet", "brain", 0.7, 0.6)],  # measured 0.86, 0.80
    "pix2pix-t1-t2-small": [("t1", "t2", "brain", 0.45, 0.6)],  # measured 0.61, 0.77
    "cyclegan-t1-t2-small": [("t1", "t2", "brain", 0.15, 0.35)],  # measured 0.28, 0.52: undertrained
    # Bi-DPM and rectified flow run both ways; CT is scored in the head (inside the brain it
    # is nearly flat, 15-50 HU).
    "bi-dpm-t1-t2-small": [("t1", "t2", "brain", 0.75, 0.8),  # measured 0.87, 0.93
                           ("t2", "t1", "head", 0.8, 0.85)],  # measured 0.93, 0.95
    "bi-dpm-t1-ct-small": [("t1", "ct", "head", 0.8, 0.85),  # measured 0.94, 0.98 (2 steps)
                           ("ct", "t1", "brain", 0.45, 0.75)],  # measured 0.56, 0.85
    "rectified-flow-t1-t2-small": [("t1", "t2", "brain", 0.45, 0.55),  # measured 0.54, 0.64
                                   ("t2", "t1", "head", 0.7, 0.85)],  # measured 0.82, 0.94
}


@pytest.mark.parametrize("name, case", [(n, c) for n, cases in CASES.items() for c in cases
                                        if n in {b.name for b in BUNDLED}],
                         ids=lambda v: v if isinstance(v, str) else f"{v[0]}->{v[1]}")
def test_bundled_checkpoint_translates_an_unseen_phantom_subject(name, case):
    from synth_core.phantom import generate_subject
    from synth_core.preprocess import foreground_mask

    source, target, where, min_ssim, min_corr = case
    subject = generate_subject(3, seed=99, preset="small")  # a cohort no model was trained on
    if where == "brain":
        mask = subject.volumes["brainmask"].data > 0
    else:
        mask = (foreground_mask(subject.volumes[target].data, target)
                | foreground_mask(subject.volumes[source].data, source))
    info = next(c for c in BUNDLED if c.name == name)
    result = translate(subject.volumes[source], info.method, target, source=source,
                       checkpoint=str(info.directory), device="cpu")
    assert result.provenance["Parameters"]["reverse"] is (source != info.source)
    scores = normalised_scores(result.volume, subject.volumes[target], target, mask)
    assert scores["ssim"] > min_ssim and scores["corrcoef"] > min_corr, scores

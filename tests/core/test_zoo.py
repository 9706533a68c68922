"""Checkpoints: listing, validation against the method, and refusing files that run code."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from synth_core import zoo
from synth_core.errors import UserError


class _Payload:
    """Unpickling this runs os.system-like code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", ["model.pt", "last.ckpt", "weights.bin"])
def test_malicious_pickle_file_is_refused_and_never_runs(tmp_path, writer, name):
    import torch

    marker = tmp_path / "PWNED"
    evil = tmp_path / name
    if writer == "pickle":
        evil.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save(_Payload(marker), evil)
    with pytest.raises(UserError, match="pickle"):
        zoo.resolve(evil, method="pix2pix")
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_disguised_as_safetensors_is_refused_and_never_runs(tmp_path, trained, writer):
    import torch

    marker = tmp_path / "PWNED"
    folder = tmp_path / "disguised"
    folder.mkdir()
    if writer == "pickle":
        (folder / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save(_Payload(marker), folder / "model.safetensors")
    card = dict(trained["pix2pix"].model.card)
    card.pop("sha256")  # even without a hash to betray it
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="corrupt|could not be read"):
        zoo.load_method(zoo.resolve(folder, method="pix2pix"))
    assert not marker.exists(), "the pickle payload ran"


def test_bad_pickle_message_names_the_file_and_the_fix(tmp_path):
    evil = tmp_path / "weights.pt"
    evil.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match=r"weights\.pt.*pickle.*safetensors"):
        zoo.resolve(evil, method="pix2pix")


def test_listing_and_summary(trained):
    rows = zoo.list_checkpoints("pix2pix", "t1", "pet")
    assert rows and rows[0].name == "tiny-pix2pix-t1-pet"
    summary = rows[0].summary()
    assert summary["sha256"] == zoo.sha256_file(rows[0].weights)
    assert "val_psnr" in summary["validation"]
    assert zoo.list_checkpoints("pix2pix", "t1", "ct") == []


def test_card_mismatches_are_clear(trained, tmp_path):
    path = trained["pix2pix"].run_dir
    with pytest.raises(UserError, match="trained for method 'pix2pix', not 'cyclegan'"):
        zoo.resolve(path, method="cyclegan")
    with pytest.raises(UserError, match="not to 'ct'"):
        zoo.resolve(path, method="pix2pix", target="ct")
    with pytest.raises(UserError, match="expects t1 input, not 'flair'"):
        zoo.resolve(path, method="pix2pix", source="flair", target="pet")
    newer = tmp_path / "newer"
    shutil.copytree(path, newer)
    card = json.loads((newer / "model.json").read_text(encoding="utf-8"))
    card["package_version"] = "99.0.0"
    (newer / "model.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="newer"):
        zoo.resolve(newer, method="pix2pix")


def test_changed_or_truncated_weights_are_refused(trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained["pix2pix"].run_dir, copy)
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt|sha256"):
        zoo.load_method(zoo.resolve(copy, method="pix2pix"))
    weights.write_bytes(data[:-8] + b"\x00" * 8)
    with pytest.raises(UserError, match="sha256"):
        zoo.load_method(zoo.resolve(copy, method="pix2pix"))


def test_loaded_weights_equal_the_exported_ones(trained):
    import torch
    from safetensors.torch import load_file

    run = trained["pix2pix"].run_dir
    method = zoo.load_method(zoo.resolve(run, method="pix2pix"))
    saved = load_file(str(run / "model.safetensors"))
    state = method.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())

"""Speed-related behaviour that must not regress: lazy imports, the SimpleITK resampler's
agreement with scipy's, and the upsampling option's compatibility with existing cards."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from synth_core.methods import config_from_dict
from synth_core.nn import UNet
from synth_core.preprocess import _sitk_affine


def _modules_after(code: str, env_home: str) -> set[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"MODALITY_SYNTH_HOME": env_home, "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": ":".join(sys.path)})
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_models_lists_cards_without_torch_or_nibabel(tmp_path):
    loaded = _modules_after("from synth_core.cli import main\nmain(['models'])", str(tmp_path))
    assert "synth_core.zoo" in loaded
    assert not {"torch", "nibabel", "SimpleITK", "synth_core.methods"} & loaded


def test_a_method_imports_only_its_own_module(tmp_path):
    loaded = _modules_after("from synth_core.methods import get_method_class\n"
                            "get_method_class('pix2pix')", str(tmp_path))
    assert "synth_core.methods.pix2pix" in loaded
    others = {"synth_core.methods.dual_glow", "synth_core.methods.bi_dpm",
              "synth_core.methods.cyclegan", "synth_core.methods.flow_matching"}
    assert not others & loaded


@pytest.mark.parametrize("order", [0, 1])
def test_sitk_resampler_equals_scipy_inside_the_field_of_view(order):
    rng = np.random.default_rng(order)
    data = rng.normal(size=(21, 25, 17)).astype(np.float32)
    angle = 0.4
    matrix = np.array([[np.cos(angle), -np.sin(angle), 0.1], [np.sin(angle), np.cos(angle), 0.0],
                       [0.0, 0.2, 1.0]]) * np.array([1.3, 0.7, 1.1])
    offset = np.array([2.0, -1.5, 0.7])
    shape = (24, 22, 20)
    expected = ndimage.affine_transform(data, matrix, offset, shape, np.float32, order, "nearest")
    got = _sitk_affine(data, matrix, offset, shape, order)
    index = np.indices(shape).reshape(3, -1)
    source = matrix @ index + offset[:, None]
    inside = np.all((source >= -0.5) & (source <= np.asarray(data.shape)[:, None] - 0.5), axis=0)
    inside = inside.reshape(shape)
    assert 0.2 < inside.mean() < 0.9  # the test covers both the inside and the outside
    np.testing.assert_allclose(got[inside], expected[inside], atol=1e-5)


def test_a_card_without_upsample_loads_the_transposed_layers():
    card = {"features": 4, "depth": 2, "train": {"multiple": 4}}
    config = config_from_dict("pix2pix", card)
    assert config.upsample == "transpose"
    old = UNet(3, 1, 1, features=4, depth=2, upsample=config.upsample)
    new = UNet(3, 1, 1, features=4, depth=2, upsample="interp")
    transposed = lambda net: any(isinstance(m, torch.nn.ConvTranspose3d) for m in net.modules())  # noqa: E731
    assert transposed(old) and not transposed(new)
    x = torch.randn(1, 1, 16, 12, 8)
    assert new(x).shape == old(x).shape == x.shape
    # The interpolating decoder makes no checkerboard: a constant input stays smooth.
    torch.manual_seed(0)
    with torch.no_grad():
        flat = UNet(3, 1, 1, features=4, depth=2, norm="none", upsample="interp",
                    final_activation="none")(torch.ones(1, 1, 16, 16, 16))
    inner = flat[0, 0, 4:-4, 4:-4, 4:-4]
    even, odd = inner[::2].mean(), inner[1::2].mean()
    assert abs(float(even - odd)) < 1e-3 * (1 + float(inner.abs().mean()))


def _blobs(seed: int) -> np.ndarray:
    """A 3D mask of a few closed shells (enclosed holes) and loose voxels, some at the border."""
    rng = np.random.default_rng(seed)
    grid = np.indices((30, 26, 22)).astype(np.float32)
    mask = np.zeros((30, 26, 22), dtype=bool)
    for _ in range(4):
        centre = rng.uniform([10, 10, 10], [20, 16, 12])[:, None, None, None]
        radius = np.sqrt(((grid - centre) ** 2).sum(0))
        outer = rng.uniform(4, 9.5)
        mask |= (radius < outer) & (radius > outer - rng.uniform(1.5, 3))
    return mask | (rng.random(mask.shape) < 0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sitk_fill_holes_and_distance_equal_scipy(seed):
    from synth_core.preprocess import distance_inside, fill_holes

    mask = _blobs(seed)
    filled = fill_holes(mask)
    assert filled.sum() > mask.sum()  # the shells enclose holes, so the test can fail
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(mask))
    expected = ndimage.distance_transform_edt(filled)
    assert expected.max() > 3
    np.testing.assert_allclose(distance_inside(filled), expected, atol=1e-4)
    np.testing.assert_array_equal(fill_holes(mask[:, :, 5]), ndimage.binary_fill_holes(mask[:, :, 5]))
    # the same inside a larger array, where both work on the mask's bounding box alone
    wide = np.zeros((40, 31, 27), bool)
    wide[7:7 + mask.shape[0], 3:3 + mask.shape[1], 0:mask.shape[2]] = mask  # touches one face
    filled = fill_holes(wide)
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(wide))
    np.testing.assert_allclose(distance_inside(filled), ndimage.distance_transform_edt(filled), atol=1e-4)


@pytest.mark.parametrize("threads", [1, 3])
def test_gzip_bytes_is_standard_gzip_that_nibabel_reads(threads, tmp_path, monkeypatch):
    import gzip

    import nibabel as nib

    from synth_core import io

    rng = np.random.default_rng(threads)
    data = rng.normal(size=300_000).astype(np.float32).tobytes() + bytes(7000)
    assert gzip.decompress(io.gzip_bytes(data, threads=threads)) == data
    assert gzip.decompress(io.gzip_bytes(b"", threads=threads)) == b""
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))  # save_volume's default
    vol = io.Volume(rng.normal(size=(9, 8, 7)).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    path = io.save_volume(vol, tmp_path / "v.nii.gz", provenance={"Method": "test"})
    image = nib.load(path)
    np.testing.assert_array_equal(np.asarray(image.dataobj), vol.data)
    np.testing.assert_array_equal(image.affine, vol.affine)
    assert image.header["descrip"].tobytes().startswith(b"SYNTHETIC")


def test_preparation_figures_run_on_a_small_scan(tmp_path):
    from synth_core import io
    from synth_core.benchmark_native import preparation_seconds

    grid = np.indices((24, 26, 20)).astype(np.float32)
    head = (((grid - np.array([12, 13, 10])[:, None, None, None]) ** 2).sum(0) < 64).astype(np.float32)
    path = io.save_volume(io.Volume(100 * head + 1, np.eye(4)), tmp_path / "t1.nii.gz")
    figures = preparation_seconds(path, repeats=1)
    assert {"fill_holes_scipy", "fill_holes_simpleitk", "distance_scipy", "distance_simpleitk",
            "gzip_zlib_1_thread", "gzip_isal_1_thread"} <= set(figures)
    assert all(v > 0 for v in figures.values())


def test_a_translation_imports_no_training_stack(tmp_path):
    loaded = _modules_after("from synth_core import cli\nfrom synth_core.inference import translate\n"
                            "from synth_core.methods import get_method_class\n"
                            "get_method_class('pix2pix')", str(tmp_path))
    assert "synth_core.inference" in loaded
    assert not {"lightning", "pytorch_lightning", "synth_core.training", "monai"} & loaded


def _head(shape: tuple[int, int, int], centre: tuple[float, float, float],
          radii: tuple[float, float, float]) -> np.ndarray:
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    return (((grid - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1) <= 1.0


def test_foreground_box_covers_the_head_and_its_margin_and_spares_windows():
    from synth_core.inference import FOREGROUND_MARGIN, foreground_box

    head = _head((96, 112, 96), (50, 60, 40), (20, 25, 18))
    box = foreground_box(head, (32, 32, 32))
    assert box is not None
    hits = np.argwhere(head)
    for axis, part in enumerate(box):
        assert part.start <= max(0, hits[:, axis].min() - FOREGROUND_MARGIN)
        assert part.stop >= min(head.shape[axis], hits[:, axis].max() + 1 + FOREGROUND_MARGIN)
        assert part.stop - part.start >= 32
    # a head filling the volume spares no window; an empty mask gives no box
    assert foreground_box(np.ones((64, 64, 64), bool), (32, 32, 32)) is None
    assert foreground_box(np.zeros((64, 64, 64), bool), (32, 32, 32)) is None
    # a box narrower than a window is widened to one window, inside the volume
    small = _head((96, 96, 96), (4, 48, 90), (3, 3, 3))
    widened = foreground_box(small, (48, 48, 48))
    assert widened is not None
    assert all(p.stop - p.start == 48 and 0 <= p.start and p.stop <= 96 for p in widened)


def test_windows_on_the_head_equal_windows_on_its_box_and_fill_the_air():
    from synth_core.inference import WINDOW_OVERLAP, foreground_box, windowed_on_foreground
    from synth_core.nn.sliding_window import sliding_window

    torch.manual_seed(0)
    head = _head((80, 96, 80), (40, 44, 38), (16, 20, 14))
    x = torch.where(torch.from_numpy(head), 1.0, -1.0)[None, None] + 0.1 * torch.randn(1, 1, 80, 96, 80)
    calls: list[tuple[int, ...]] = []

    def fn(w: torch.Tensor) -> torch.Tensor:  # a window's own statistics, as instance norm
        calls.append(tuple(w.shape[2:]))
        return torch.stack([(w - w.mean()) * 2.0, w + 3.0])  # K = 2 samples

    box = foreground_box(head, (32, 32, 32))
    assert box is not None
    out = windowed_on_foreground(fn, x, head, box, (32, 32, 32), lambda f: None)
    assert all(c == (32, 32, 32) for c in calls)
    full_windows = len(calls)
    inner = sliding_window(fn, x[(slice(None), slice(None), *box)], (32, 32, 32), WINDOW_OVERLAP)
    assert full_windows == len(calls) - full_windows  # the same windows, and no others
    torch.testing.assert_close(out[(slice(None), slice(None), slice(None), *box)], inner)
    outside = np.ones(head.shape, bool)
    outside[box] = False
    for k in range(2):  # outside the box: the median of that sample's output on the air inside it
        air = inner[k, 0, 0][torch.from_numpy(~head[box])]
        assert torch.all(out[k, 0, 0][torch.from_numpy(outside)] == air.median())
    assert len(calls) - full_windows < len(list(np.ndindex(3, 3, 3)))  # fewer than the whole grid's 27


def test_a_1mm_fingerprint_read_on_every_second_voxel_matches_the_full_one(monkeypatch):
    from synth_core import input_check

    rng = np.random.default_rng(3)
    shape = (168, 200, 168)  # over SUBSAMPLE_ABOVE voxels, as a 1 mm head
    assert np.prod(shape) > input_check.SUBSAMPLE_ABOVE
    head = _head(shape, (84, 100, 84), (70, 88, 72))
    core = _head(shape, (84, 100, 84), (40, 50, 42))
    ventricles = _head(shape, (84, 100, 84), (8, 14, 8))
    data = np.where(head, 300.0, 0.0) + np.where(core, 200.0, 0.0) - np.where(ventricles, 350.0, 0.0)
    data = (data + rng.normal(0.0, 20.0, shape)).clip(0).astype(np.float32)
    sub = input_check.fingerprint(data, "t1")
    monkeypatch.setattr(input_check, "SUBSAMPLE_ABOVE", 10**12)
    full = input_check.fingerprint(data, "t1")
    np.testing.assert_allclose(sub, full, atol=0.01)

"""Shared fixtures: a tiny paired cohort on disk and tiny trained checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_tiny_cohort(out: Path, n: int = 6, size: int = 16, seed: int = 0) -> Path:
    """Phantom-style folder of ``n`` subjects: t1, t2, pet, brainmask at 4 mm, ages 60..."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["participant_id\tage\tsex\tdiagnosis"]
    x, y, z = np.mgrid[:size, :size, :size].astype(np.float32)
    c = (size - 1) / 2
    for i in range(1, n + 1):
        sid = f"sub-{i:03d}"
        (out / sid).mkdir(exist_ok=True)
        r = np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2)
        brain = (r < size * 0.38).astype(np.float32)
        t1 = brain * (100 + 20 * np.sin(x / 3 + i)) + rng.normal(0, 2, brain.shape) + 5
        pet = brain * (50 + 10 * np.cos(y / 3 + i)) + rng.normal(0, 2, brain.shape) + 5
        t2 = brain * (300 - t1) + rng.normal(0, 2, brain.shape) + 5
        affine = np.diag([4.0, 4.0, 4.0, 1.0])
        affine[:3, 3] = -size * 2
        for mod, data in (("t1", t1), ("t2", t2), ("pet", pet)):
            nib.save(nib.Nifti1Image(np.abs(data).astype(np.float32), affine),
                     out / sid / f"{sid}_{mod}.nii.gz")
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), out / sid / f"{sid}_brainmask.nii.gz")
        rows.append(f"{sid}\t{55 + i * 5}\t{'F' if i % 2 else 'M'}\t{'CN' if i % 2 else 'AD'}")
    (out / "participants.tsv").write_text("\n".join(rows) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="session")
def zoo_home() -> Path:
    """The session's private MODALITY_SYNTH_HOME (set in tests/conftest.py)."""
    return Path(os.environ["MODALITY_SYNTH_HOME"])


@pytest.fixture(scope="session")
def trained(tiny_cohort: Path, zoo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny pix2pix (t1 -> pet) and CycleGAN (t1 <-> t2) runs, registered in the session zoo
    and made defaults; a tiny pix2pix t1 -> t2, registered only (``runs["pix2pix-t1-t2"]``)."""
    from synth_core import zoo
    from synth_core.training import TrainRequest, train

    runs = {}
    for method, source, target in (("pix2pix", "t1", "pet"), ("cyclegan", "t1", "t2"),
                                   ("pix2pix", "t1", "t2")):
        out = tmp_path_factory.mktemp("runs") / f"{method}-{source}-{target}"
        result = train(TrainRequest(method=method, data=tiny_cohort, source=source, target=target,
                                    out=out, preset="tiny", name=f"tiny-{method}-{source}-{target}"))
        if target == "t2" and method == "pix2pix":
            runs["pix2pix-t1-t2"] = result
            continue
        runs[method] = result
        zoo.set_default(result.registered.name)  # as a user would, so translate picks them
    return runs


@pytest.fixture
def readonly_folder(tmp_path: Path):
    """An empty folder nobody can create files in, not even root (who ignores mode bits).

    As root it is made immutable (``chattr +i``); otherwise its mode is 0555. The test
    is skipped only where neither makes a folder read-only (checked by trying).
    """
    import shutil
    import subprocess

    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here (no chattr +i)")
    else:
        folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        pass
    else:
        (folder / "probe").unlink()
        pytest.skip("this file system lets the test write into a read-only folder")
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)

"""The one manifest is found in a built wheel installed into a new environment, not only in
the editable install."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_npe2_validates_the_plugin_installed_from_a_wheel(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("napari_modality_synth-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    target = next((env_dir / "lib").glob("python3*/site-packages"))
    # The wheel goes into the new environment; its dependencies are borrowed from this one,
    # minus this project's own editable install, so only the wheel can provide the plugin.
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        name = entry.name.lower()
        if "napari_modality_synth" in name or "__editable__" in name or name.endswith(".pth"):
            continue
        (borrowed / entry.name).symlink_to(entry)
    (target / "borrowed.pth").write_text(str(borrowed) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(target), str(wheel)], check=True, timeout=300)

    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run([str(python), "-c", "import napari_modality_synth as m; print(m.__file__)"],
                           capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(target) in where.stdout  # imported from the wheel, not from src/
    clean_env["PYTHONIOENCODING"] = "utf-8"
    proc = subprocess.run([str(python), "-m", "npe2", "validate", "napari-modality-synth", "--imports"],
                          capture_output=True, text=True, encoding="utf-8", env=clean_env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in (proc.stdout + proc.stderr).lower()

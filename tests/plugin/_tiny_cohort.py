"""tests/core/conftest.py's tiny paired cohort, for the plugin tests (one loader for all)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def write_tiny_cohort(out: Path) -> Path:
    """Tiny paired cohort (t1, t2, pet at 4 mm, 16^3 voxels), as in tests/core/conftest.py."""
    name = "modality_synth_core_conftest"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "core" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].write_tiny_cohort(out)


def write_labelled_cohort(out: Path) -> Path:
    """tests/core/test_duiit.py's labelled cohort (t1, pet and ct whose images change with age)."""
    name = "modality_synth_core_test_duiit"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "core" / "test_duiit.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].write_labelled_cohort(out)

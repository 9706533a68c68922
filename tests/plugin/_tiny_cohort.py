"""tests/core's cohort writers, for the plugin tests (one loader for all)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _core_module(name: str, filename: str) -> ModuleType:
    """``tests/core/<filename>`` loaded once, as ``sys.modules[name]``."""
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "core" / filename
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def write_tiny_cohort(out: Path) -> Path:
    """Tiny paired cohort (t1, t2, pet at 4 mm, 16^3 voxels), as in tests/core/conftest.py."""
    return _core_module("modality_synth_core_conftest", "conftest.py").write_tiny_cohort(out)


def write_labelled_cohort(out: Path) -> Path:
    """tests/core/test_duiit.py's labelled cohort (t1, pet and ct whose images change with age)."""
    return _core_module("modality_synth_core_test_duiit", "test_duiit.py").write_labelled_cohort(out)

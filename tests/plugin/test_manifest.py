"""The npe2 manifest: valid, importable, found by napari, and declaring what the plugin offers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import npe2
from npe2.manifest.utils import import_python_name
from qtpy.QtWidgets import QWidget

PLUGIN = "napari-modality-synth"
WIDGETS = {
    "Translate": "napari_modality_synth.widgets.translate:TranslateWidget",
    "Compare": "napari_modality_synth.widgets.compare:CompareWidget",
    "Age explorer": "napari_modality_synth.widgets.age_explorer:AgeExplorerWidget",
    "Train": "napari_modality_synth.widgets.train:TrainWidget",
}


def test_npe2_validate_with_imports_passes() -> None:
    npe2_cli = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2_cli), "validate", PLUGIN, "--imports"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_plugin_manager_finds_every_contribution() -> None:
    manager = npe2.PluginManager()
    manager.discover()
    manifest = manager.get_manifest(PLUGIN)
    contributions = manifest.contributions
    commands = {command.id: command.python_name for command in contributions.commands}

    [reader] = contributions.readers
    assert reader.accepts_directories
    assert {"*.nii", "*.nii.gz", "*.mha", "*.mhd", "*.nrrd", "*.nhdr"} <= set(reader.filename_patterns)
    assert commands[reader.command] == "napari_modality_synth._reader:get_reader"
    assert [r.command for r in manager.iter_compatible_readers(["scan.nii.gz"])].count(reader.command) == 1

    [writer] = contributions.writers
    assert writer.layer_types == ["image"]
    assert set(writer.filename_extensions) == {".nii", ".nii.gz"}
    found, path = manager.get_writer("out", ["image"], plugin_name=PLUGIN)
    assert found is not None and found.command == writer.command and path == "out.nii.gz"

    [sample] = contributions.sample_data
    assert sample.key == "phantom_subject"
    assert commands[sample.command] == "napari_modality_synth._sample_data:phantom_subject"

    widgets = {widget.display_name: commands[widget.command] for widget in contributions.widgets}
    assert widgets == WIDGETS
    for python_name in WIDGETS.values():
        assert issubclass(import_python_name(python_name), QWidget), python_name


def test_one_manifest_in_the_package() -> None:
    package = Path(__import__("napari_modality_synth").__file__).parent
    assert [p.name for p in package.rglob("*.yaml")] == ["napari.yaml"]

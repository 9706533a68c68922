"""Screenshots of the plugin's dock widgets in use, for the docs (docs/screenshots/*.png).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--register RUN_DIR ...]

Opens a real napari viewer on a virtual X server (Xvfb) with the phantom sample and, one
dock widget at a time: Translate after translating the sample T1 to PET (and its T2 back
to T1 with Bi-DPM), Compare after
comparing that with the true PET in the brain mask, Age explorer after an age series (or
its "unavailable" state when no method takes an age), Train during and after a short
run. The checkpoints used are the bundled ones; ``--register`` adds trained run folders
(e.g. a Dual-GLOW run) to a temporary zoo first; a missing one is trained on the spot
with the ``tiny`` preset (the output says so). Nothing is written to the user's zoo.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _virtual_display import run_under_xvfb, wait_until

WINDOW = (1600, 1000)
SAMPLE = "sub-001"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "screenshots")
    parser.add_argument("--register", type=Path, action="append", default=[],
                        help="a trained run folder (model.safetensors + model.json) to offer too")
    args = parser.parse_args()
    status = run_under_xvfb("SCREENSHOTS_CHILD", WINDOW)
    if status is not None:
        return status
    work = Path(tempfile.mkdtemp(prefix="screenshots-"))
    os.environ["MODALITY_SYNTH_HOME"] = str(work / "home")
    return Shots(work, args.out.resolve()).run(args.register)


class Shots:
    """The viewer, one dock widget at a time, and a PNG of the window for each state."""

    def __init__(self, work: Path, out: Path) -> None:
        import napari

        self.work, self.out = work, out
        out.mkdir(parents=True, exist_ok=True)
        self.viewer = napari.Viewer(show=True, title="napari-modality-synth")
        self.viewer.window.resize(*WINDOW)
        self.viewer.open_sample("napari-modality-synth", "phantom_subject")
        self.dock = None
        self._cohort: Path | None = None

    def run(self, register: list[Path]) -> int:
        import synth_core
        from synth_core.zoo import register_user_checkpoint

        for run in register:
            if not (run / "model.safetensors").is_file() or not (run / "model.json").is_file():
                print(f"skipping {run}: it has no exported model (model.safetensors + model.json) yet")
                continue
            info = register_user_checkpoint(run, run.name)
            print(f"offering {info.name} ({info.method} {info.source} -> {info.target})")
        pix2pix = self.checkpoint("pix2pix", "t1", "pet")
        bidpm = self.checkpoint("bi-dpm", "t1", "t2")
        self.translate(bidpm, "bi-dpm", "t2", "t1", steps=1, shot="translate_bidpm.png")  # backwards
        result = self.translate(pix2pix)
        self.compare(result)
        age_methods = [k for k, v in synth_core.list_methods().items()
                       if "age" in v["capabilities"]["conditions"]]
        self.age_explorer(age_methods)
        self.train()
        self.viewer.close()
        return 0

    # --- helpers -------------------------------------------------------------------------
    def cohort(self) -> Path:
        if self._cohort is None:
            from synth_core.phantom import write_cohort

            self._cohort = write_cohort(self.work / "cohort", 6, seed=0, preset="small")
        return self._cohort

    def checkpoint(self, method: str, source: str, target: str) -> str:
        """The name of a checkpoint for ``method``: bundled or registered, else a tiny one trained now."""
        import synth_core
        from synth_core.training import TrainRequest, train

        found = synth_core.list_checkpoints(method, source, target)
        if found:
            print(f"{method}: using {found[0].name} ({found[0].origin})")
            return found[0].name
        name = f"tiny-{method}-{source}-{target}"
        print(f"{method}: no checkpoint; training a tiny one ({name}) first")
        train(TrainRequest(method=method, data=self.cohort(), source=source, target=target,
                           out=self.work / name, preset="tiny", name=name,
                           overrides={"max_steps": 40, "val_every": 20}))
        return name

    def show(self, widget, title: str) -> None:
        if self.dock is not None:
            self.viewer.window.remove_dock_widget(self.dock)
        self.dock = self.viewer.window.add_dock_widget(widget, name=title, area="right")
        wait_until(lambda: False, 0.3)

    def only(self, *names: str) -> None:
        for layer in self.viewer.layers:
            layer.visible = layer.name in names
            if layer.visible and hasattr(layer, "interpolation2d"):
                layer.interpolation2d = "linear"  # 4 mm voxels look less blocky
        shown = [layer for layer in self.viewer.layers if layer.visible]
        if shown:  # the layer controls then describe a layer on screen
            self.viewer.layers.selection.active = shown[-1]

    def axial(self) -> None:
        """Axial slices, anterior up: slide along z (the last world axis) and show y over x."""
        ndim = self.viewer.dims.ndim
        self.viewer.dims.order = (*range(ndim - 3), ndim - 1, ndim - 2, ndim - 3)
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9 moved the camera there
        camera = scene.camera if scene is not None else self.viewer.camera
        camera.orientation2d = ("up", "right")
        self.viewer.reset_view()

    def save(self, name: str) -> None:
        from qtpy.QtWidgets import QApplication

        # napari's toasts (e.g. its notice that PyQt5 support is deprecated) would cover the canvas.
        for widget in QApplication.allWidgets():
            if type(widget).__name__ == "NapariQtNotification":
                widget.hide()
        wait_until(lambda: False, 0.5)
        path = self.out / name
        self.viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"wrote {path}")

    # --- the widgets ---------------------------------------------------------------------
    def translate(self, checkpoint: str, method: str = "pix2pix", source: str = "t1", target: str = "pet",
                  steps: int | None = None, shot: str = "translate.png") -> str:
        from napari_modality_synth.widgets.translate import TranslateWidget

        widget = TranslateWidget(self.viewer)
        self.show(widget, "Translate")
        given = f"{SAMPLE}_{source} [{source}]"
        widget.input.setCurrentIndex(widget.input.findText(given))
        widget.method.setCurrentIndex(widget.method.findData(method))
        widget.source.setCurrentIndex(widget.source.findData(source))
        widget.target.setCurrentIndex(widget.target.findData(target))
        widget.checkpoint.setCurrentIndex(next(
            i for i in range(widget.checkpoint.count()) if widget.checkpoint.itemText(i).startswith(checkpoint)))
        if steps is not None:
            widget.controls.steps.setValue(steps)
        widget.button.click()
        wait_until(lambda: bool(widget.added), 120)
        wait_until(lambda: not widget.worker.is_running, 10)
        name = widget.added[0].name
        # Side by side: the input, the synthesized scan, the acquired one.
        truth = f"{SAMPLE}_{target} [{target}]"
        self.only(given, name, truth)
        self.viewer.layers[truth].contrast_limits = self.viewer.layers[name].contrast_limits
        canvas = getattr(self.viewer, "canvas", None)  # napari >= 0.9 moved the grid there
        grid = canvas.grid if canvas is not None else self.viewer.grid
        grid.enabled = True
        grid.shape = (1, -1)
        self.axial()
        self.save(shot)
        grid.enabled = False
        return name

    def compare(self, synthesized: str) -> None:
        from napari_modality_synth.widgets.compare import CompareWidget

        widget = CompareWidget(self.viewer)
        self.show(widget, "Compare")
        widget.first.setCurrentText(synthesized)
        widget.second.setCurrentText(f"{SAMPLE}_pet [pet]")
        widget.mask.setCurrentIndex(widget.mask.findText(f"{SAMPLE}_brainmask"))
        widget.compare()
        wait_until(lambda: widget.metrics is not None, 60)
        self.only(f"difference: {synthesized} - {SAMPLE}_pet [pet]")
        self.axial()
        self.save("compare.png")

    def age_explorer(self, age_methods: list[str]) -> None:
        from napari_modality_synth.widgets.age_explorer import AgeExplorerWidget

        if age_methods:
            self.checkpoint(age_methods[0], "t1", "pet")
        widget = AgeExplorerWidget(self.viewer)
        self.show(widget, "Age explorer")
        if not widget.button.isEnabled():
            self.save("age_explorer.png")  # its "unavailable" state
            return
        widget.input.setCurrentIndex(widget.input.findText(f"{SAMPLE}_t1 [t1]"))
        widget.labels.setCurrentIndex(widget.labels.findText(f"{SAMPLE}_labels"))
        widget.explore()
        wait_until(lambda: widget.layer is not None, 600)
        wait_until(lambda: not widget.worker.is_running, 10)
        if widget.layer is None:
            print("the age series failed; see the notification above")
            return
        self.only(widget.layer.name)
        self.axial()
        self.viewer.dims.set_current_step(0, len(widget.series.ages) - 1)  # the oldest age
        self.save("age_explorer.png")

    def train(self) -> None:
        from napari_modality_synth.widgets.train import TrainWidget

        widget = TrainWidget(self.viewer)
        self.show(widget, "Train")
        widget.data.setText(str(self.cohort()))
        widget.method.setCurrentIndex(widget.method.findData("pix2pix"))
        widget.preset.setCurrentIndex(widget.preset.findData("tiny"))
        widget.settings["steps"].setText("150")
        widget.settings["val_every"].setText("25")
        widget.out.setText(str(self.work / "train-run"))
        self.only(f"{SAMPLE}_t1 [t1]")
        self.axial()
        widget.start()
        wait_until(lambda: widget.log.step >= 60 or widget.handle.finished.is_set(), 600)
        self.save("train_running.png")
        wait_until(widget.handle.finished.is_set, 600)
        wait_until(lambda: widget.result is not None, 10)
        self.save("train_done.png")


if __name__ == "__main__":
    sys.exit(main())

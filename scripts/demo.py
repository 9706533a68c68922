"""`make demo`: the main job on the built-in phantom.

Generates a small phantom cohort, summarises one subject, translates its T1 to PET
with the bundled pix2pix checkpoint, evaluates the result against the phantom's own
PET and prints the figures and where the outputs are. The napari part (a viewer with
the sample data and the Translate and Compare widgets) runs when a display is present;
without one a screenshot of the viewer is saved instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

import synth_core as sc
from synth_core.phantom import generate_subject, write_cohort
from synth_core.zoo import list_checkpoints

OUT = Path(os.environ.get("DEMO_OUT", "demo_out"))
warnings.filterwarnings("ignore", message=".*(System theme|PyQt5 backend).*")


def main() -> int:
    cohort = OUT / "phantom"
    if not (cohort / "participants.tsv").exists():
        print(f"generating a 4-subject `small` phantom cohort in {cohort} ...")
        write_cohort(cohort, 4, seed=7, preset="small", overwrite=True)
    subject = generate_subject(0, seed=7, preset="small")
    subject.volumes["t1"]
    print(f"\nsubject {subject.subject_id}: age {subject.age:.1f}, sex {subject.sex}, "
          f"diagnosis {subject.diagnosis}")
    for name, vol in subject.volumes.items():
        print(f"  {name:<10} shape {vol.shape}  spacing {tuple(round(s, 2) for s in vol.spacing)} mm  "
              f"range [{vol.data.min():.1f}, {vol.data.max():.1f}]")
    print("\nnoise floor: each noisy scan scored against its noise-free twin, in the scoring")
    print("normalisation (MR: brain 1st-99th percentile -> [0, 1]; PET: / brain 95th percentile;")
    print("both data range 1, inside the brain; CT: HU inside the head, PSNR over [-1024, 3000])")
    brain = subject.volumes["brainmask"].data > 0
    head = subject.volumes["labels"].data > 0
    for name, clean in subject.clean.items():
        mask = head if name.startswith("ct") else brain
        floor = sc.evaluate(subject.volumes[name], clean, mask=mask, normalise=True, modality=name)
        mae_unit = " HU" if floor["normalisation"] == "ct-hu" else ""
        print(f"  {name:<10} PSNR {floor['psnr']:6.2f} dB  SSIM {floor['ssim']:.3f}  "
              f"MAE {floor['mae']:.3f}{mae_unit}")

    if not list_checkpoints("pix2pix", "t1", "pet"):
        print("\nno pix2pix t1->pet checkpoint is installed; see docs/methods/pix2pix.md to train one")
        return 0
    t1_path = cohort / subject.subject_id / f"{subject.subject_id}_t1.nii.gz"
    pet_path = cohort / subject.subject_id / f"{subject.subject_id}_pet.nii.gz"
    mask_path = cohort / subject.subject_id / f"{subject.subject_id}_brainmask.nii.gz"
    out_path = OUT / f"{subject.subject_id}_pet_synth.nii.gz"
    result = sc.translate(sc.load_volume(t1_path), method="pix2pix", to="pet")
    sc.save_volume(result.volume, out_path, overwrite=True, provenance=result.provenance)
    truth = sc.load_volume(pet_path)
    mask = sc.load_volume(mask_path).data > 0
    from synth_core.benchmark import normalised_scores

    scores = normalised_scores(result.volume, truth, "pet", mask)
    floor = normalised_scores(subject.clean["pet"], truth, "pet", mask)
    print(f"\ntranslated {t1_path.name} -> PET with pix2pix ({result.provenance['Checkpoint']})")
    print("scores against the phantom's PET inside the brain, beside the noise floor (the")
    print("noise-free PET scored the same way)")
    print(f"units: {scores['units']}; PSNR in dB")
    for key in ("mae", "psnr", "ssim", "corrcoef"):
        print(f"  {key:<9} {scores[key]:8.4f}   noise floor {floor[key]:8.4f}")
    print(f"\noutputs: {out_path} and its sidecar {out_path.with_suffix('').with_suffix('.json')}")
    print(f"synthetic flag in sidecar: {result.provenance['Synthetic']}")
    assert np.isfinite(result.volume.data).all()
    show_in_napari([t1_path, pet_path, out_path], mask_path)
    return 0


def show_in_napari(images: list[Path], mask: Path) -> None:
    """With a display: napari with the scans and the Translate and Compare widgets docked.

    Without one (or under CI): the same viewer in a child process on a virtual X server
    (the server must outlive Qt), saved as a screenshot next to the outputs.
    """
    interactive = bool(os.environ.get("DISPLAY")) and not os.environ.get("CI") \
        and not os.environ.get("DEMO_HEADLESS")
    if interactive:
        _viewer(images, mask, screenshot=None)
        return
    try:
        from pyvirtualdisplay import Display

        with Display(visible=False, size=(1400, 900), color_depth=24):
            shot = OUT / "demo_viewer.png"
            code = subprocess.run([sys.executable, __file__, "--viewer", str(shot), str(mask),
                                   *map(str, images)], check=False).returncode
    except Exception as exc:  # no Xvfb here: say so; the rest of the demo stands
        print(f"\nnapari view skipped: no display and no virtual X server ({exc}); "
              "install xvfb (scripts/setup.sh does, as root)")
        return
    if code == 0:
        print(f"\nno display: saved a screenshot of the napari viewer to {shot}")
    else:
        print(f"\nnapari view failed (exit {code}); the outputs above are complete")


def _viewer(images: list[Path], mask: Path, screenshot: Path | None) -> None:
    import napari

    viewer = napari.Viewer(show=True, title="napari-modality-synth demo")
    for path in images:
        viewer.open(str(path), plugin="napari-modality-synth")
    viewer.open(str(mask), plugin="napari-modality-synth")
    viewer.canvas.grid.enabled = True
    viewer.dims.order = (2, 1, 0)  # axial slices
    from napari_modality_synth.widgets.compare import CompareWidget
    from napari_modality_synth.widgets.translate import TranslateWidget

    viewer.window.add_dock_widget(TranslateWidget(viewer), name="Translate", area="right")
    viewer.window.add_dock_widget(CompareWidget(viewer), name="Compare", area="right")
    viewer.window.resize(1400, 900)
    viewer.layers.selection.active = viewer.layers[2]  # the synthetic PET
    if screenshot is None:
        print("\nnapari is open with the scans and the Translate and Compare widgets docked")
        napari.run()
    else:
        import time

        from qtpy.QtWidgets import QApplication

        for _ in range(30):  # let Qt lay out the docks before the grab
            QApplication.processEvents()
            time.sleep(0.03)
        viewer.screenshot(str(screenshot), canvas_only=False)
        viewer.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--viewer"]:
        _viewer([Path(p) for p in sys.argv[4:]], Path(sys.argv[3]), Path(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())

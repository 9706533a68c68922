"""PNG figures of the validity report (matplotlib, a development dependency).

matplotlib is imported only when a figure is drawn; without it ``available()`` is False and
the report says the figures were skipped. Every figure is small (about 100 dpi) and is
written atomically: drawn to a temporary file in the folder, then renamed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def _temporary(path: Path) -> str:
    """A temporary file beside ``path``, readable as a plain new file would be (umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _save(plt: Any, fig: Any, path: Path) -> Path:
    tmp = _temporary(path)
    try:
        fig.tight_layout()
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def accuracy_bars(section: dict[str, Any], path: Path) -> Path:
    """Balanced accuracy per input with its 95 % interval; chance and the T1 ceiling marked."""
    plt, fig = _figure(8.5, 0.45 * len(section["inputs"]) + 1.3)
    ax = fig.add_subplot(1, 1, 1)
    rows = section["inputs"][::-1]
    y = np.arange(len(rows))
    acc = np.array([r["balanced_accuracy"] for r in rows])
    lo = np.array([r["interval"][0] for r in rows])
    hi = np.array([r["interval"][1] for r in rows])
    colours = {"reference": "tab:green", "oracle": "tab:gray", "ceiling": "tab:blue",
               "confound": "tab:olive", "control": "tab:brown", "synthetic": "tab:orange"}
    ax.barh(y, acc, xerr=[acc - lo, hi - acc], color=[colours.get(r["kind"], "tab:orange")
                                                      for r in rows], capsize=3)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.axvline(0.5, color="k", lw=0.8, ls=":")
    ceiling = next((r["balanced_accuracy"] for r in rows if r["kind"] == "ceiling"), None)
    if ceiling is not None:
        ax.axvline(ceiling - section["goal_gap"], color="tab:blue", lw=0.8, ls="--")
    ax.set_xlim(0.3, 1.02)
    ax.set_xlabel("balanced accuracy, AD against CN (95 % interval)")
    return _save(plt, fig, path)


def lesion_ratios(rows: list[dict[str, Any]], path: Path) -> Path:
    """Lesion contrast ratio (synthetic over true) per checkpoint, direction and lesion."""
    plt, fig = _figure(7.5, 0.35 * max(len(rows), 1) + 1.3)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    ax.barh(y, [r["ratio"] for r in rows], color="tab:purple")
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel("lesion contrast ratio (synthetic / true; 1 = kept, 0 = erased)")
    return _save(plt, fig, path)


def change_maps(true_change: np.ndarray, synthetic_change: np.ndarray, title: str,
                path: Path) -> Path:
    """Axial, coronal and sagittal middle slices of the true and the synthetic change."""
    plt, fig = _figure(7.5, 5.0)
    limit = float(np.percentile(np.abs(true_change), 99.5)) or 1.0
    centre = [s // 2 for s in true_change.shape]
    for row, (name, image) in enumerate((("true", true_change), ("synthetic", synthetic_change))):
        views = (image[:, :, centre[2]].T, image[:, centre[1], :].T, image[centre[0], :, :].T)
        for col, view in enumerate(views):
            ax = fig.add_subplot(2, 3, 3 * row + col + 1)
            shown = ax.imshow(view, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_axis_off()
            if col == 0:
                ax.set_title(f"{name} change", fontsize=9, loc="left")
    fig.colorbar(shown, ax=fig.axes, shrink=0.6, label="change in SUVR (older minus younger)")
    fig.suptitle(title, fontsize=9)
    tmp = _temporary(path)
    try:
        fig.savefig(tmp, format="png")  # no tight_layout: the shared colour bar
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def region_changes(regions: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Mean true and synthetic change per atlas region (the slope per region)."""
    plt, fig = _figure(6.4, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(regions))
    ax.bar(x - 0.2, [r["true_change"] for r in regions], 0.4, label="true", color="tab:green")
    ax.bar(x + 0.2, [r["synthetic_change"] for r in regions], 0.4, label="synthetic",
           color="tab:orange")
    ax.set_xticks(x, [r["region"].replace("_", " ") for r in regions], rotation=40,
                  ha="right", fontsize=8)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel("mean change in SUVR")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)

"""napari-modality-synth: the napari plugin (reader, writer, sample data, dock widgets).

Its manifest is ``napari.yaml`` beside this file. The plugin calls the engine
``synth_core`` only through its public API; ``layers`` is the one place that maps a
Volume's affine onto a napari layer.
"""

from __future__ import annotations

from synth_core import __version__

__all__ = ["__version__"]

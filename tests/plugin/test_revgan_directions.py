"""The Translate widget's choices offer a RevGAN checkpoint both ways, from its capabilities alone."""

from __future__ import annotations

from types import SimpleNamespace

from napari_modality_synth.widgets import _choices
from synth_core import list_methods


def test_a_revgan_checkpoint_is_offered_both_ways_and_runs_reverse_for_the_way_back() -> None:
    caps = list_methods()["revgan"]["capabilities"]
    info = SimpleNamespace(source="ct-smooth", target="ct-sharp", card={})
    assert _choices.directions(info, caps) == [("ct-smooth", "ct-sharp"), ("ct-sharp", "ct-smooth")]
    assert _choices.target_options([info], caps, "ct-sharp") == ["ct-smooth"]
    assert _choices.runs_reverse(info, "ct-sharp", "ct-smooth")
    assert not _choices.runs_reverse(info, "ct-smooth", "ct-sharp")

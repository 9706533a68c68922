import sys

sys.path.insert(0, "/work/main/tests/plugin")
import test_age_explorer as t


def test_dbg(make_napari_viewer, monkeypatch, small_volume):
    monkeypatch.setattr(t.module, "list_methods", t._age_methods)
    monkeypatch.setattr(t.module, "list_checkpoints", t._checkpoints)
    viewer, widget = t._setup(make_napari_viewer, small_volume, t._labels(small_volume.shape))
    print(widget.methods.keys(), widget.method.currentData(), widget.checkpoint.count(), widget.checkpoint.itemText(0), widget.checkpoint.currentData(), widget._age_range, widget.first.minimum(), widget.first.maximum())

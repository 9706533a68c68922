"""The plugin's dock widgets, one module each: compare, translate, age_explorer, train.

Each is a QWidget taking the viewer as its first argument (npe2 passes ``napari_viewer``),
so it can also be opened on its own: ``CompareWidget(napari.Viewer())``.
"""

"""``flashseg report``: what the labels of a segmentation mean (docs/report.md).

- :mod:`.enrichment`  overlap and neighborhood enrichment, segment-length laws (pure numpy, no files);
- :mod:`.figures`     the heat maps, duration and locus figures (matplotlib, imported when drawing);
- :mod:`.html`        the ``index.html`` page that shows them all.

The files it reads (segments, annotations, anchors) are parsed in
``flashseg/io/annotations.py``; the command is ``flashseg/cli/report.py``.
"""

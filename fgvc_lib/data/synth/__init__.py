"""Deterministic synthetic data sets written in real on-disk formats.

:mod:`~fgvc_lib.data.synth.render` is the one shared renderer (class design, drawing primitives, birds,
per-image RNG, JPEG writing); :mod:`~fgvc_lib.data.synth.scene` draws the multi-label scenes with it. One
writer module per format, each importing only the renderer (and its format's reader for the layout
constants): :mod:`~fgvc_lib.data.synth.cub` (CUB-200-2011), :mod:`~fgvc_lib.data.synth.cifar`
(CIFAR-100 python files), :mod:`~fgvc_lib.data.synth.inat` (iNaturalist-2019 JSON) and
:mod:`~fgvc_lib.data.synth.multilabel` (the report's images/ + annotations/ layout).
"""

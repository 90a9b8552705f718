"""Former home of the synthetic birds and the CUB writer; kept only so old imports keep working.

The renderer is :mod:`fgvc_lib.data.synth.render`, the CUB-200-2011 writer :mod:`fgvc_lib.data.synth.cub`.
These re-exports go once every caller imports from there.
"""

from fgvc_lib.data.synth.cub import is_complete, write_cub  # noqa: F401
from fgvc_lib.data.synth.render import DISCRIMINATIVE_PART, image_rng, render_bird  # noqa: F401

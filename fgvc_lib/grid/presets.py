"""A grid preset applied to one run's values (``replace`` substitutions, then ``base`` overrides)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def apply_preset(run: Mapping[str, Any], preset: Mapping[str, Any]) -> dict[str, Any]:
    """``replace`` substitutions on the run's values, then the preset's ``base`` overrides.

    A substitution whose new value is a mapping sets several parameters for the runs that match, after
    ``base`` (e.g. ``model: {efficientnet-b4: {model: tf_efficientnet_lite0, pretrained: true}}``)."""
    out = dict(run)
    bundles: dict[str, Any] = {}
    for key, substitutions in preset.get("replace", {}).items():
        if key in out:
            for old, new in substitutions.items():
                if _same(out[key], old):
                    if isinstance(new, Mapping):
                        bundles.update(new)
                    else:
                        out[key] = new
                    break
    out.update(preset.get("base", {}))
    out.update(bundles)
    return out

"""Loss registry ``LOSSES`` (:class:`fgvc_lib.registry.Registry`) with the timm-style wrappers ``register_loss`` /
``create_loss`` / ``list_losses``.

An unknown name is a ValueError listing the choices; an option a loss does not take is a TypeError naming it.
Keywords are named after the experiment parameters (``fgvc_lib.config``), so an experiment builds its loss with
``LOSSES.create_from(p.loss, p)``, offering values only some losses need as a list:
``LOSSES.create_from(p.loss, [p, {"num_classes": k}])``.

Options, ``factory(**options)``:

- ``ce``: label_smoothing (0)
- ``ohem`` (:class:`OHEMLoss`): ratio (1; the keep ratio, set every epoch by the OHEM strategy), label_smoothing (0)
- ``focal``: gamma (2), reduction ('mean')
- ``flsd53`` / ``flsd52`` (FLSD, gamma fixed 3 / 2): thresholds, reduction ('mean')
- ``mc`` (mutual-channel): num_classes (required), mc_mu (1.5), mc_lambda (20), drop_per_group, mask_generator
- ``complement`` (COT): num_classes (None: the logits' width)
- ``bce`` / ``mse`` (multi-label): ``bce`` pos_weight (None), both reduction ('mean')
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fgvc_lib.registry import Registry

__all__ = ["LOSSES", "register_loss", "create_loss", "list_losses", "OHEMLoss"]

LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")
"""A loss class or ``factory(**options) -> nn.Module`` by name (options: see the module docstring)."""

register_loss = LOSSES.register  # register_loss(name, factory=None, *, replace=False); decorator without factory
create_loss = LOSSES.create  # create_loss(name, **options); unknown options: TypeError
list_losses = LOSSES.names


@register_loss("ce")
def _cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Plain cross entropy (mean over the batch) with optional label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


from fgvc_lib.losses.complement import ComplementEntropy as ComplementEntropy  # noqa: E402  ('complement')
from fgvc_lib.losses.focal import AdaptiveFocalLoss as AdaptiveFocalLoss  # noqa: E402  (registers flsd5x)
from fgvc_lib.losses.focal import FocalLoss as FocalLoss  # noqa: E402  (registers 'focal')
from fgvc_lib.losses.mc_loss import MCLoss as MCLoss  # noqa: E402  (registers 'mc'; needs num_classes)
from fgvc_lib.losses.multilabel import BCEMultiLabel as BCEMultiLabel  # noqa: E402  (registers 'bce', 'mse')
from fgvc_lib.losses.ohem import OHEMLoss  # noqa: E402  (registers 'ohem'; needs register_loss above)

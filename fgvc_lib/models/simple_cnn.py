"""The multi-label report's small CNN trained from scratch (its section 7, "Simple ConvNet").

Five blocks of 3x3 convolutions (stride 1, padding 1, bias, ReLU after each) with 2, 2, 3, 3, 3
convolutions of 32, 64, 128, 256, 512 channels; a 2x2 max pool (stride 2, no padding) *between* blocks,
so four pools and none after the last block; then flatten -> Linear(100) -> ReLU -> Dropout ->
Linear(100) -> ReLU -> Dropout -> Linear(num_classes).

Reading of the report. Its prose says the pools use "stride of 1", but its layer table halves the maps
(128 -> 64 -> 32 -> 16 -> 8), so the pools are the usual stride-2 ones; the table lists four pools and
``Linear-18`` has 3,276,900 = 32768 * 100 + 100 parameters, i.e. an 8 x 8 x 512 = 32768 flatten at 128 px.
With a 3-channel input and bias everywhere the per-layer table sums to the report's total exactly
(a conv has 9 * c_in * c_out + c_out parameters, a Linear in * out + out)::

    block 1   3 -> 32:    896 + 9,248                            =     10,144
    block 2  32 -> 64:  18,496 + 36,928                          =     55,424
    block 3  64 -> 128: 73,856 + 2 * 147,584                     =    369,024
    block 4 128 -> 256: 295,168 + 2 * 590,080                    =  1,475,328
    block 5 256 -> 512: 1,180,160 + 2 * 2,359,808                =  5,899,776
    convolutions                                                 =  7,809,696
    Linear 32768 -> 100: 3,276,900; 100 -> 100: 10,100; 100 -> 14: 1,414 = 3,288,414
    total                                                        = 11,098,110

The flatten size follows ``img_size`` (512 * (H // 16) * (W // 16)), fixed at construction.

The network speaks timm's protocol (``forward_features``, ``forward_head(x, pre_logits)``,
``get_classifier``, ``reset_classifier``, ``num_features``, ``pretrained_cfg``) so ``Classifier(net, 'timm',
...)`` wraps it: ``pool`` is everything up to the input of the last Linear (``num_features`` = 100 wide),
``head`` that last Linear, and Grad-CAM reads the last 512-channel convolution map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["SmallCNN", "SMALL_CNN_BLOCKS", "SMALL_CNN_HIDDEN", "small_cnn_flat_features"]

SMALL_CNN_BLOCKS: tuple[tuple[int, int], ...] = ((2, 32), (2, 64), (3, 128), (3, 256), (3, 512))
"""(number of 3x3 convolutions, channels) per block; a 2x2 max pool sits between consecutive blocks."""
SMALL_CNN_HIDDEN = 100
"""Width of the two hidden fully connected layers."""


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def small_cnn_flat_features(
    img_size: int | Sequence[int], blocks: Sequence[tuple[int, int]] = SMALL_CNN_BLOCKS
) -> int:
    """Length of the flattened last feature map for an input of ``img_size`` (one halving per pool)."""
    h, w = _pair(img_size)
    pools = len(blocks) - 1
    return blocks[-1][1] * (h >> pools) * (w >> pools)


class SmallCNN(nn.Module):
    """The report's small CNN: ``SmallCNN(num_classes=14, img_size=128, dropout=0.5, in_chans=3)``.

    ``num_classes=0`` leaves the last Linear out (``get_classifier()`` is an Identity); the network then
    returns the 100-wide pre-logit vector.
    """

    def __init__(
        self,
        num_classes: int = 14,
        img_size: int | Sequence[int] = 128,
        dropout: float = 0.5,
        in_chans: int = 3,
        hidden: int = SMALL_CNN_HIDDEN,
    ):
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes: expected >= 0, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        if in_chans < 1 or hidden < 1:
            raise ValueError(f"in_chans and hidden must be >= 1, got in_chans={in_chans}, hidden={hidden}")
        self.img_size = _pair(img_size)
        shrink = 2 ** (len(SMALL_CNN_BLOCKS) - 1)
        if min(self.img_size) < shrink:
            raise ValueError(f"img_size: expected at least {shrink} px (four 2x2 pools), got {img_size}")
        layers: list[nn.Module] = []
        channels = in_chans
        for i, (n_convs, width) in enumerate(SMALL_CNN_BLOCKS):
            if i:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(n_convs):
                layers += [
                    nn.Conv2d(channels, width, kernel_size=3, stride=1, padding=1),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.feature_channels = channels
        self.flat_features = small_cnn_flat_features(self.img_size)
        self.fc1 = nn.Linear(self.flat_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.ReLU()
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)
        self.num_features = hidden  # width of the pre-logit vector (the last Linear's input)
        self.num_classes = num_classes
        self.fc = nn.Linear(hidden, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg: dict[str, Any] = {
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "input_size": (in_chans, *self.img_size),
            "interpolation": "bilinear",
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution map (B, 512, H / 16, W / 16)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten -> two hidden Linear/ReLU/Dropout layers (-> last Linear unless ``pre_logits``)."""
        x = x.flatten(1)
        if x.shape[1] != self.flat_features:
            raise ValueError(
                f"SmallCNN was built for img_size={self.img_size} ({self.flat_features} flattened features) "
                f"but got {x.shape[1]}; build it with the input size you feed it"
            )
        x = self.drop1(self.act(self.fc1(x)))
        x = self.drop2(self.act(self.fc2(x)))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        """The last Linear (an Identity when ``num_classes=0``)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh last Linear with ``num_classes`` outputs (0: Identity)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

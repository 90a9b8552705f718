"""Class-aware sampling for long-tailed data: BBN's uniform / reversed / balanced class distributions.

``class_weights`` gives the per-class draw probabilities; ``ClassAwareSampler`` is a torch ``Sampler`` that
draws whole epochs of indices (class first, then an instance of it, vectorised); ``ReversedPairDataset``
reproduces BBN's official second sample, drawn *per item* inside ``__getitem__`` (spec §1): the DataLoader
shuffles uniformly and every item brings a partner from the reversed distribution.

Probabilities for class counts n_c (classes with n_c = 0 always get 0):

- ``uniform``: n_c / N, the data distribution (the sampler then simply draws instances uniformly);
- ``reversed``: w_c = n_max / n_c normalised, i.e. proportional to 1 / n_c (BBN's official code);
- ``balanced``: 1 / (number of non-empty classes) each.

The sampler registry ``SAMPLERS`` (wrappers ``register_sampler`` / ``create_sampler`` / ``list_samplers``) holds
one :class:`ClassAwareSampler` factory per kind, ``factory(labels, *, num_samples=None, generator=None,
seed=None)``; an option a factory does not take is a TypeError naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fgvc_lib.registry import Registry, unknown_name_error

__all__ = [
    "SAMPLING_KINDS",
    "class_counts",
    "class_weights",
    "ClassAwareSampler",
    "ReversedPairDataset",
    "SAMPLERS",
    "register_sampler",
    "create_sampler",
    "list_samplers",
]

SAMPLING_KINDS: tuple[str, ...] = ("uniform", "reversed", "balanced")

LabelsLike = Sequence[int] | np.ndarray | torch.Tensor


def _as_labels(labels: LabelsLike) -> np.ndarray:
    """Labels as a 1-D int64 array of non-negative class indices (at least one)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels is empty: nothing to sample from")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(f"labels must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(arr.min())}")
    return arr


def class_counts(labels: LabelsLike, num_classes: int | None = None) -> np.ndarray:
    """Images per class, (K,) int64; K = ``num_classes`` or max(label) + 1."""
    arr = _as_labels(labels)
    needed = int(arr.max()) + 1
    if num_classes is not None and num_classes < needed:
        raise ValueError(f"num_classes={num_classes} but labels contain class {needed - 1}")
    return np.bincount(arr, minlength=needed if num_classes is None else num_classes)


def _weights_from_counts(counts: np.ndarray, kind: str) -> np.ndarray:
    counts = counts.astype(np.float64)
    present = counts > 0
    if kind == "uniform":
        w = counts
    elif kind == "reversed":
        w = np.divide(counts.max(), counts, out=np.zeros_like(counts), where=present)
    elif kind == "balanced":
        w = present.astype(np.float64)
    else:
        raise unknown_name_error("sampling kind", kind, SAMPLING_KINDS)
    return w / w.sum()


def class_weights(labels: LabelsLike, kind: str, num_classes: int | None = None) -> np.ndarray:
    """Per-class draw probabilities (K,) float64 summing to 1 for ``kind`` in uniform / reversed / balanced.

    Classes without images get probability 0. ``num_classes`` pads trailing empty classes.
    """
    if kind not in SAMPLING_KINDS:
        raise unknown_name_error("sampling kind", kind, SAMPLING_KINDS)
    return _weights_from_counts(class_counts(labels, num_classes), kind)


class _ClassIndex:
    """Dataset indices grouped by class: ``order[starts[c]:starts[c] + counts[c]]`` are class c's indices."""

    def __init__(self, labels: np.ndarray) -> None:
        self.order = np.argsort(labels, kind="stable")
        self.counts = np.bincount(labels)
        self.starts = np.concatenate(([0], np.cumsum(self.counts)[:-1]))

    def pick(self, classes: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Instance of each class in ``classes`` at uniform position ``u`` in [0, 1) within the class."""
        n = self.counts[classes]
        offset = np.minimum((u * n).astype(np.int64), n - 1)
        return self.order[self.starts[classes] + offset]


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed mixing ``seed`` and ``epoch`` (SeedSequence: (0, 1) and (1, 0) do not collide)."""
    return int(
        np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0] >> np.uint64(1)
    )


class ClassAwareSampler(Sampler[int]):
    """Draws ``num_samples`` dataset indices with replacement: a class from ``class_weights(labels, kind)``,
    then an instance of that class uniformly (``'uniform'`` draws instances uniformly directly).

    Random source, first that applies: after ``set_epoch(e)`` a private generator seeded from
    (``seed``, e) (every ``iter`` of the same epoch repeats, as DistributedSampler); else ``generator``;
    else torch's global RNG. ``seed`` defaults to ``generator.initial_seed()`` if a generator is given, else 0.
    """

    def __init__(
        self,
        labels: LabelsLike,
        kind: str = "reversed",
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        arr = _as_labels(labels)
        self.kind = kind
        self.weights = class_weights(arr, kind)  # validates kind
        self.num_samples = len(arr) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
        self.generator = generator
        self.seed = int(generator.initial_seed() if seed is None and generator is not None else (seed or 0))
        self.epoch: int | None = None
        self._num_items = len(arr)
        index = _ClassIndex(arr)
        self._order = torch.from_numpy(index.order)
        self._counts = torch.from_numpy(index.counts)
        self._starts = torch.from_numpy(index.starts)
        self._weights = torch.from_numpy(self.weights)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch`` from a generator seeded by (seed, epoch) from now on."""
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator | None:
        if self.epoch is not None:
            return torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        return self.generator

    def draw(self) -> torch.Tensor:
        """One epoch of indices, (num_samples,) int64 (vectorised)."""
        g = self._generator()
        n = self.num_samples
        if self.kind == "uniform":
            return torch.randint(self._num_items, (n,), generator=g)
        classes = torch.multinomial(self._weights, n, replacement=True, generator=g)
        sizes = self._counts[classes]
        u = torch.rand(n, generator=g, dtype=torch.float64)
        offset = torch.minimum((u * sizes).long(), sizes - 1)
        return self._order[self._starts[classes] + offset]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, num_samples={self.num_samples}, seed={self.seed})"


# SplitMix64 constants (Steele, Lea & Flood 2014): a counter-based stream with random access.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix_uniform(key: int, positions: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1): outputs at ``positions`` (uint64) of the SplitMix64 stream seeded with ``key``."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (positions + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class ReversedPairDataset(Dataset):
    """Wraps a map-style ``(x, y)`` dataset: item i is ``(x_i, y_i, x_j, y_j)`` with j drawn per item, with
    replacement, class ~ ``class_weights(labels, kind)`` then an instance uniformly (BBN's second sample).

    j depends only on (``seed``, epoch, i), never on DataLoader workers or order: item i of an epoch reads
    positions 2i and 2i + 1 of a SplitMix64 stream keyed by ``SeedSequence([seed, epoch])``, so the
    vectorised ``draw_pairs`` and ``__getitem__`` agree. The epoch lives in shared memory: ``set_epoch``
    reaches persistent DataLoader workers too.
    """

    def __init__(self, dataset: Any, labels: LabelsLike, kind: str = "reversed", seed: int = 0) -> None:
        arr = _as_labels(labels)
        if len(arr) != len(dataset):
            raise ValueError(f"labels has {len(arr)} entries but the dataset has {len(dataset)} items")
        self.dataset = dataset
        self.labels = arr
        self.kind = kind
        self.weights = class_weights(arr, kind)  # validates kind
        self.seed = int(seed)
        self._index = _ClassIndex(arr)
        self._cdf = np.cumsum(self.weights)
        self._last_class = int(np.flatnonzero(self.weights > 0)[-1])
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch whose partners are drawn."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Draw partners for ``epoch`` from now on (visible to already running workers)."""
        self._epoch.fill_(int(epoch))

    def draw_pairs(self, indices: Sequence[int] | np.ndarray, epoch: int | None = None) -> np.ndarray:
        """Partner index j for every item index in ``indices`` (vectorised), for ``epoch`` (default current)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.labels)):
            raise IndexError(f"item indices must be in [0, {len(self.labels)}), got {idx.min()}..{idx.max()}")
        key = _epoch_seed(self.seed, self.epoch if epoch is None else epoch)
        pos = idx.astype(np.uint64) * np.uint64(2)
        u_class = _splitmix_uniform(key, pos) * self._cdf[-1]
        classes = np.minimum(np.searchsorted(self._cdf, u_class, side="right"), self._last_class)
        return self._index.pick(classes, _splitmix_uniform(key, pos + np.uint64(1)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, Any, Any]:
        j = int(self.draw_pairs([index])[0])
        x_i, y_i = self.dataset[index][:2]
        x_j, y_j = self.dataset[j][:2]
        return x_i, y_i, x_j, y_j


SAMPLERS: Registry[Callable[..., Sampler[int]]] = Registry("sampler")
"""``factory(labels, **options) -> Sampler`` by name (options: num_samples, generator, seed)."""

register_sampler = SAMPLERS.register  # register_sampler(name, factory=None, *, replace=False)
create_sampler = SAMPLERS.create  # create_sampler(name, labels, **options); unknown options: TypeError
list_samplers = SAMPLERS.names


def _class_aware_factory(kind: str) -> Callable[..., ClassAwareSampler]:
    def factory(
        labels: LabelsLike,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> ClassAwareSampler:
        return ClassAwareSampler(labels, kind, num_samples=num_samples, generator=generator, seed=seed)

    factory.__doc__ = f"ClassAwareSampler(labels, kind={kind!r})."
    return factory


for _kind in SAMPLING_KINDS:
    register_sampler(_kind, _class_aware_factory(_kind))

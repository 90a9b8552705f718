"""Where a trained model fails: one inference pass over the evaluation split, kept as arrays, many views.

After fastai's ``ClassificationInterpretation``: the pass is stored as item indices (positions in the evaluation
split's dataset, so ``dataset[i]`` gives the image back), targets, predicted probabilities and per-item losses;
never as input tensors. :class:`Interpretation` (single-label) offers the confusion matrix, the most-confused
pairs, a per-class report and the top losses; :class:`MultiLabelInterpretation` per-label precision / recall /
F1 at a threshold and per-label F1-vs-threshold curves. Both save to ``<run_dir>/interpretation.npz`` (atomic,
no pickles) and load back with ``load(run_dir)``; ``load_interpretation(run_dir)`` picks the class.

Per-item losses are the cross-entropy of the prediction (single-label) and the mean binary cross-entropy over
the labels (multi-label), whatever loss trained the model, so top losses rank the same way for every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from .fileio import atomic_write
from .multilabel_metrics import DEFAULT_GRID, per_label_f1

__all__ = [
    "FILENAME",
    "Interpretation",
    "MultiLabelInterpretation",
    "load_interpretation",
]

FILENAME = "interpretation.npz"
_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before a log


def _array(x: Any, dtype: Any = None) -> np.ndarray:
    """A NumPy array from a NumPy array, a sequence or a torch tensor (on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _npz_path(path: str | Path) -> Path:
    path = Path(path)
    return path / FILENAME if path.is_dir() or path.suffix != ".npz" else path


def _save(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_write(_npz_path(path), lambda fh: np.savez_compressed(fh, **arrays), mode="wb")


def _read(path: str | Path) -> dict[str, np.ndarray]:
    path = _npz_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no interpretation saved there (a finished run writes {FILENAME})")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _indices(indices: Any, n: int) -> np.ndarray:
    out = np.arange(n, dtype=np.int64) if indices is None else _array(indices, np.int64)
    if out.shape != (n,):
        raise ValueError(f"indices: expected {n} item indices, got shape {out.shape}")
    return out


@dataclass(repr=False)
class Interpretation:
    """Single-label predictions of one evaluation pass: ``indices`` (N,) items of the split's dataset,
    ``targets`` (N,) class indices, ``probs`` (N, K) softmax probabilities, ``losses`` (N,) cross-entropy,
    ``classes`` the K class names (full, as figures show them), ``split`` the split's name."""

    indices: np.ndarray
    targets: np.ndarray
    probs: np.ndarray
    losses: np.ndarray
    classes: list[str]
    split: str = "val"

    KIND = "single"

    def __post_init__(self) -> None:
        self.probs = _array(self.probs, np.float32)
        if self.probs.ndim != 2:
            raise ValueError(f"probs: expected shape (N, K), got {self.probs.shape}")
        n, k = self.probs.shape
        self.targets = _array(self.targets, np.int64)
        if self.targets.shape != (n,):
            raise ValueError(f"targets: expected ({n},) class indices, got shape {self.targets.shape}")
        if n and (self.targets.min() < 0 or self.targets.max() >= k):
            raise ValueError(f"targets: expected class indices in [0, {k}), got {self.targets.min()}..{self.targets.max()}")
        self.losses = _array(self.losses, np.float32)
        if self.losses.shape != (n,):
            raise ValueError(f"losses: expected ({n},), got shape {self.losses.shape}")
        self.indices = _indices(self.indices, n)
        self.classes = [str(c) for c in self.classes]
        if len(self.classes) != k:
            raise ValueError(f"classes: expected {k} names (one per column of probs), got {len(self.classes)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_logits(
        cls, logits: Any, targets: Any, classes: Sequence[str], *, indices: Any = None, split: str = "val"
    ) -> Interpretation:
        """From (N, K) logits: softmax probabilities and per-item cross-entropy (in float64)."""
        z = _array(logits, np.float64)
        if z.ndim != 2:
            raise ValueError(f"logits: expected shape (N, K), got {z.shape}")
        y = _array(targets, np.int64)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        if y.shape != (len(z),):
            raise ValueError(f"targets: expected ({len(z)},) class indices, got shape {y.shape}")
        losses = -log_p[np.arange(len(z)), np.clip(y, 0, z.shape[1] - 1)]
        return cls(indices, y, np.exp(log_p), losses, list(classes), split)

    @classmethod
    def from_probs(
        cls, probs: Any, targets: Any, classes: Sequence[str], *, indices: Any = None, split: str = "val"
    ) -> Interpretation:
        """From (N, K) probabilities; the loss is ``-log p(target)`` (probabilities clipped at 1e-7)."""
        p = _array(probs, np.float64)
        y = _array(targets, np.int64)
        if p.ndim != 2 or y.shape != (len(p),):
            raise ValueError(f"probs {p.shape} and targets {y.shape}: expected (N, K) and (N,)")
        losses = -np.log(np.clip(p[np.arange(len(p)), np.clip(y, 0, p.shape[1] - 1)], _EPS, 1.0))
        return cls(indices, y, p, losses, list(classes), split)

    @classmethod
    def from_trainer(cls, trainer: Any, loader: Any, classes: Sequence[str], *, split: str = "val") -> Interpretation:
        """One ``trainer.predict`` pass over ``loader`` (not shuffled: item i of the loader is ``dataset[i]``)."""
        logits, targets = trainer.predict(loader)
        return cls.from_logits(logits, targets, classes, split=split)

    # ------------------------------------------------------------------ views
    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]

    @property
    def preds(self) -> np.ndarray:
        """Predicted class of each item (argmax of the probabilities)."""
        return self.probs.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy over the split."""
        return float((self.preds == self.targets).mean()) if len(self.targets) else float("nan")

    def confusion_matrix(self, normalize: str | None = None) -> np.ndarray:
        """(K, K) matrix, rows the actual class, columns the predicted one; ``normalize="true"`` divides each
        row by its support (a class without items keeps a row of zeros), ``None`` gives counts."""
        if normalize not in (None, "true", "pred", "all"):
            raise ValueError(f"normalize: expected None, 'true', 'pred' or 'all', got {normalize!r}")
        return sk_confusion_matrix(
            self.targets, self.preds, labels=np.arange(self.num_classes), normalize=normalize
        )

    def most_confused(self, min_count: int = 1, top: int | None = 20) -> pd.DataFrame:
        """Off-diagonal (actual, predicted) pairs seen at least ``min_count`` times, most frequent first (ties:
        by class index), at most ``top`` (None: all). Columns: actual, predicted (names), count, share (of the
        actual class's items), actual_id, predicted_id."""
        counts = self.confusion_matrix()
        np.fill_diagonal(counts, 0)
        rows, cols = np.nonzero(counts >= max(1, min_count))
        order = np.lexsort((cols, rows, -counts[rows, cols]))
        if top is not None:
            order = order[:top]
        rows, cols = rows[order], cols[order]
        support = np.bincount(self.targets, minlength=self.num_classes)
        return pd.DataFrame({
            "actual": [self.classes[i] for i in rows],
            "predicted": [self.classes[j] for j in cols],
            "count": counts[rows, cols].astype(np.int64),
            "share": counts[rows, cols] / np.maximum(support[rows], 1),
            "actual_id": rows.astype(np.int64),
            "predicted_id": cols.astype(np.int64),
        })

    def per_class(self) -> pd.DataFrame:
        """One row per class (index: class id): class, support, predicted (items predicted as it), accuracy
        (recall), precision, f1. Undefined values are NaN: accuracy of a class without items, precision of a
        class never predicted."""
        labels = np.arange(self.num_classes)
        precision, recall, f1, support = precision_recall_fscore_support(
            self.targets, self.preds, labels=labels, zero_division=np.nan
        )
        frame = pd.DataFrame({
            "class": self.classes,
            "support": support.astype(np.int64),
            "predicted": np.bincount(self.preds, minlength=self.num_classes).astype(np.int64),
            "accuracy": recall,
            "precision": precision,
            "f1": f1,
        })
        frame.index.name = "class_id"
        return frame

    def top_losses(self, k: int | None = 9, largest: bool = True) -> pd.DataFrame:
        """The ``k`` items with the largest (or smallest) loss, in order (ties: evaluation order). Columns:
        index (the dataset item), loss, target, pred, actual / predicted (names), prob (of the prediction),
        target_prob."""
        order = np.argsort(-self.losses if largest else self.losses, kind="stable")[:k]
        preds = self.preds[order]
        targets = self.targets[order]
        return pd.DataFrame({
            "index": self.indices[order],
            "loss": self.losses[order],
            "target": targets,
            "pred": preds,
            "actual": [self.classes[i] for i in targets],
            "predicted": [self.classes[i] for i in preds],
            "prob": self.probs[order, preds],
            "target_prob": self.probs[order, targets],
        })

    # ------------------------------------------------------------------ files
    def save(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/interpretation.npz`` (or the ``.npz`` path given) atomically; returns the path."""
        return _save(run_dir, {
            "kind": np.array(self.KIND), "split": np.array(self.split), "classes": np.array(self.classes, dtype=str),
            "indices": self.indices, "targets": self.targets, "probs": self.probs, "losses": self.losses,
        })

    @classmethod
    def load(cls, run_dir: str | Path) -> Interpretation:
        """The interpretation saved in ``run_dir`` (or the ``.npz`` path given)."""
        data = _read(run_dir)
        _check_kind(data, cls)
        return cls(data["indices"], data["targets"], data["probs"], data["losses"],
                   data["classes"].tolist(), str(data["split"]))

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (f"Interpretation(split={self.split!r}, {len(self)} items, {self.num_classes} classes, "
                f"top-1 {self.accuracy:.3f})")


@dataclass(repr=False)
class MultiLabelInterpretation:
    """Multi-label predictions of one evaluation pass: ``indices`` (N,), ``targets`` (N, K) 0/1, ``probs``
    (N, K) sigmoid probabilities, ``losses`` (N,) mean binary cross-entropy, ``labels`` the K label names,
    ``threshold`` (a label is predicted when its probability is above it, as the run's metrics)."""

    indices: np.ndarray
    targets: np.ndarray
    probs: np.ndarray
    losses: np.ndarray
    labels: list[str]
    split: str = "val"
    threshold: float = 0.5

    KIND = "multilabel"

    def __post_init__(self) -> None:
        self.probs = _array(self.probs, np.float32)
        if self.probs.ndim != 2:
            raise ValueError(f"probs: expected shape (N, K), got {self.probs.shape}")
        n, k = self.probs.shape
        self.targets = _array(self.targets).astype(np.uint8)
        if self.targets.shape != (n, k):
            raise ValueError(f"targets: expected shape {(n, k)} like probs, got {self.targets.shape}")
        self.losses = _array(self.losses, np.float32)
        if self.losses.shape != (n,):
            raise ValueError(f"losses: expected ({n},), got shape {self.losses.shape}")
        self.indices = _indices(self.indices, n)
        self.labels = [str(label) for label in self.labels]
        if len(self.labels) != k:
            raise ValueError(f"labels: expected {k} names (one per column of probs), got {len(self.labels)}")
        self.threshold = float(self.threshold)

    @classmethod
    def from_probs(
        cls, probs: Any, targets: Any, labels: Sequence[str], *, indices: Any = None, split: str = "val",
        threshold: float = 0.5,
    ) -> MultiLabelInterpretation:
        """From (N, K) probabilities; the loss is the mean binary cross-entropy (probabilities clipped at 1e-7)."""
        p = np.clip(_array(probs, np.float64), _EPS, 1 - _EPS)
        t = _array(targets, np.float64)
        if p.shape != t.shape:
            raise ValueError(f"probs {p.shape} and targets {t.shape} differ in shape")
        losses = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=1) if p.size else np.zeros(len(p))
        return cls(indices, t, _array(probs, np.float64), losses, list(labels), split, threshold)

    @classmethod
    def from_logits(
        cls, logits: Any, targets: Any, labels: Sequence[str], *, indices: Any = None, split: str = "val",
        threshold: float = 0.5,
    ) -> MultiLabelInterpretation:
        """From (N, K) logits (sigmoid outputs)."""
        z = _array(logits, np.float64)
        return cls.from_probs(1 / (1 + np.exp(-z)), targets, labels, indices=indices, split=split, threshold=threshold)

    @property
    def num_labels(self) -> int:
        return self.probs.shape[1]

    def preds(self, threshold: float | None = None) -> np.ndarray:
        """(N, K) 0/1 predictions: probability above ``threshold`` (default: the interpretation's)."""
        limit = self.threshold if threshold is None else float(threshold)
        return (self.probs.astype(np.float64) > limit).astype(np.uint8)  # as multilabel_metrics (float64)

    def per_label(self, threshold: float | None = None) -> pd.DataFrame:
        """One row per label (index: label id): label, support, predicted, precision, recall, f1 at
        ``threshold`` (default: the interpretation's). Undefined values are NaN: precision of a label never
        predicted, recall of a label without positives, F1 of a label with neither."""
        precision, recall, f1, support = precision_recall_fscore_support(
            self.targets, self.preds(threshold), average=None, labels=np.arange(self.num_labels),
            zero_division=np.nan,
        )
        frame = pd.DataFrame({
            "label": self.labels,
            "support": support.astype(np.int64),
            "predicted": self.preds(threshold).sum(axis=0).astype(np.int64),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        })
        frame.index.name = "label_id"
        return frame

    def threshold_curves(self, grid: Any = DEFAULT_GRID) -> pd.DataFrame:
        """Per-label F1 at every threshold of ``grid`` (index: threshold, one column per label); NaN where a
        label has neither positives nor predictions."""
        grid = np.asarray(grid, dtype=np.float64).ravel()
        if len(self.targets) == 0:
            raise ValueError("threshold curves of an empty split are undefined")
        rows = [per_label_f1(self.probs, self.targets, float(t), zero_division=np.nan) for t in grid]
        frame = pd.DataFrame(np.array(rows).reshape(len(grid), self.num_labels), index=grid, columns=self.labels)
        frame.index.name = "threshold"
        return frame

    def best_thresholds(self, grid: Any = DEFAULT_GRID) -> pd.DataFrame:
        """Per label the grid threshold with the best F1 (first on ties) and that F1 (searched on this same
        split: optimistic, see ``multilabel_metrics.held_out_thresholds`` for honest figures)."""
        curves = self.threshold_curves(grid)
        values = curves.to_numpy()
        best = np.where(np.isnan(values).all(axis=0), 0, np.argmax(np.nan_to_num(values, nan=-1.0), axis=0))
        frame = pd.DataFrame({
            "label": self.labels,
            "threshold": curves.index.to_numpy()[best],
            "f1": values[best, np.arange(self.num_labels)],
        })
        frame.index.name = "label_id"
        return frame

    def top_losses(self, k: int | None = 9, largest: bool = True) -> pd.DataFrame:
        """The ``k`` items with the largest (or smallest) loss: index, loss, actual and predicted label names
        (comma-separated, at the interpretation's threshold)."""
        order = np.argsort(-self.losses if largest else self.losses, kind="stable")[:k]
        preds = self.preds()

        def names(row: np.ndarray) -> str:
            return ", ".join(self.labels[j] for j in np.flatnonzero(row)) or "(none)"

        return pd.DataFrame({
            "index": self.indices[order],
            "loss": self.losses[order],
            "actual": [names(self.targets[i]) for i in order],
            "predicted": [names(preds[i]) for i in order],
        })

    def save(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/interpretation.npz`` (or the ``.npz`` path given) atomically; returns the path."""
        return _save(run_dir, {
            "kind": np.array(self.KIND), "split": np.array(self.split), "classes": np.array(self.labels, dtype=str),
            "threshold": np.array(self.threshold), "indices": self.indices, "targets": self.targets,
            "probs": self.probs, "losses": self.losses,
        })

    @classmethod
    def load(cls, run_dir: str | Path) -> MultiLabelInterpretation:
        """The interpretation saved in ``run_dir`` (or the ``.npz`` path given)."""
        data = _read(run_dir)
        _check_kind(data, cls)
        return cls(data["indices"], data["targets"], data["probs"], data["losses"], data["classes"].tolist(),
                   str(data["split"]), float(data["threshold"]))

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (f"MultiLabelInterpretation(split={self.split!r}, {len(self)} items, {self.num_labels} labels, "
                f"threshold {self.threshold:g})")


_KINDS: dict[str, type] = {Interpretation.KIND: Interpretation, MultiLabelInterpretation.KIND: MultiLabelInterpretation}


def _check_kind(data: dict[str, np.ndarray], cls: type) -> None:
    kind = str(data.get("kind", ""))
    if kind != cls.KIND:
        other = _KINDS.get(kind)
        hint = f"; load it with {other.__name__}.load or load_interpretation" if other else ""
        raise ValueError(f"the saved interpretation is of kind {kind!r}, not {cls.KIND!r} ({cls.__name__}){hint}")


def load_interpretation(run_dir: str | Path) -> Interpretation | MultiLabelInterpretation:
    """The interpretation saved in ``run_dir`` (or the ``.npz`` path), single- or multi-label as saved."""
    data = _read(run_dir)
    kind = str(data.get("kind", ""))
    if kind not in _KINDS:
        raise ValueError(f"{_npz_path(run_dir)}: unknown interpretation kind {kind!r}, expected one of {sorted(_KINDS)}")
    return _KINDS[kind].load(run_dir)

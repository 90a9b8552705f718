"""Class-aware samplers and BBN's reversed pairs: class frequencies against the spec's probabilities."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2
from torch.utils.data import DataLoader

from fgvc_lib.data.samplers import (
    SAMPLERS,
    ClassAwareSampler,
    ReversedPairDataset,
    class_counts,
    class_weights,
    create_sampler,
    list_samplers,
    register_sampler,
)

COUNTS = [5000, 500, 50]
LABELS = np.repeat(np.arange(3), COUNTS)
REVERSED = np.array([1, 10, 100]) / 111  # spec §1: [0.009009, 0.090090, 0.900901]
EXPECTED = {"uniform": np.array(COUNTS) / sum(COUNTS), "reversed": REVERSED, "balanced": np.full(3, 1 / 3)}
N_DRAWS = 100_000


class IndexDataset:
    """Items are just (index, label): drawing pairs costs nothing."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, int(self.labels[i])


def frequencies(labels: np.ndarray, indices: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    return np.bincount(labels[np.asarray(indices)], minlength=k) / len(indices)


def assert_uniform_within_class(labels: np.ndarray, indices: np.ndarray, cls: int) -> None:
    """Pearson chi-square of the instances drawn from class ``cls`` against uniform (>= 5 expected each)."""
    members = np.flatnonzero(labels == cls)
    drawn = indices[labels[indices] == cls]
    expected = len(drawn) / len(members)
    assert expected >= 5, "too few draws for a chi-square test"
    observed = np.bincount(np.searchsorted(members, drawn), minlength=len(members))
    stat, dof = float(((observed - expected) ** 2 / expected).sum()), len(members) - 1
    assert stat < chi2.isf(1e-6, dof), (stat, dof)  # a uniform draw fails once in a million


# ---------------------------------------------------------------------------------------- class_weights


@pytest.mark.parametrize("kind", ["uniform", "reversed", "balanced"])
def test_class_weights_spec_numbers(kind):
    w = class_weights(LABELS, kind)
    np.testing.assert_allclose(w, EXPECTED[kind], atol=1e-12)
    assert w.sum() == pytest.approx(1.0)


def test_reversed_matches_spec_decimals():
    np.testing.assert_allclose(class_weights(LABELS, "reversed"), [0.009009, 0.090090, 0.900901], atol=1e-6)


@pytest.mark.parametrize("kind", ["uniform", "reversed", "balanced"])
def test_empty_classes_get_zero(kind):
    labels = np.array([0, 0, 0, 0, 2, 2, 4])  # classes 1, 3 (and padded 5, 6) have no images
    w = class_weights(labels, kind, num_classes=7)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0)
    assert np.all(w[[1, 3, 5, 6]] == 0)
    expected = {"uniform": [4, 2, 1], "reversed": [1 / 4, 1 / 2, 1], "balanced": [1, 1, 1]}[kind]
    np.testing.assert_allclose(w[[0, 2, 4]], np.array(expected) / sum(expected))


def test_class_counts_and_label_errors():
    assert class_counts([1, 1, 3]).tolist() == [0, 2, 0, 1]
    assert class_counts(torch.tensor([0, 2]), num_classes=4).tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="num_classes=2"):
        class_counts([0, 2], num_classes=2)
    with pytest.raises(ValueError, match="empty"):
        class_weights([], "uniform")
    with pytest.raises(ValueError, match=">= 0"):
        class_weights([0, -1], "uniform")
    with pytest.raises(ValueError, match="integer"):
        class_weights([0.5, 1.0], "uniform")


def test_unknown_kind_names_it():
    with pytest.raises(ValueError, match=r"Unknown sampling kind 'reverse'.*did you mean 'reversed'"):
        class_weights(LABELS, "reverse")
    with pytest.raises(ValueError, match="'square'"):
        ClassAwareSampler(LABELS, "square")
    with pytest.raises(ValueError, match="'square'"):
        ReversedPairDataset(IndexDataset(LABELS), LABELS, kind="square")


# ------------------------------------------------------------------------------------ ClassAwareSampler


@pytest.mark.parametrize("kind", ["uniform", "reversed", "balanced"])
def test_sampler_class_frequencies(kind):
    sampler = ClassAwareSampler(LABELS, kind, num_samples=N_DRAWS, generator=torch.Generator().manual_seed(1))
    indices = sampler.draw()
    assert indices.shape == (N_DRAWS,) and indices.dtype == torch.int64
    np.testing.assert_allclose(frequencies(LABELS, indices, 3), EXPECTED[kind], atol=0.005)


@pytest.mark.parametrize("kind", ["uniform", "reversed"])
def test_sampler_instances_uniform_within_class(kind):
    sampler = ClassAwareSampler(LABELS, kind, num_samples=N_DRAWS, seed=3)
    sampler.set_epoch(0)
    indices = sampler.draw().numpy()
    for cls in (1, 2) if kind == "reversed" else (0, 1, 2):
        assert_uniform_within_class(LABELS, indices, cls)


def test_sampler_never_draws_empty_classes():
    labels = np.repeat([0, 2, 5], [300, 30, 3])  # 1, 3, 4 empty
    sampler = ClassAwareSampler(labels, "reversed", num_samples=N_DRAWS, seed=0)
    sampler.set_epoch(0)
    drawn = sampler.draw().numpy()
    np.testing.assert_allclose(
        frequencies(labels, drawn, 6), [1 / 111, 0, 10 / 111, 0, 0, 100 / 111], atol=0.005
    )
    # an empty class picked by mistake would land on the previous class's last instance
    for cls in (2, 5):
        assert_uniform_within_class(labels, drawn, cls)


def test_sampler_length_and_iteration():
    sampler = ClassAwareSampler(LABELS, "balanced")
    assert len(sampler) == len(LABELS)
    items = list(sampler)
    assert len(items) == len(LABELS) and all(isinstance(i, int) for i in items[:10])
    assert 0 <= min(items) and max(items) < len(LABELS)
    assert len(ClassAwareSampler(LABELS, "reversed", num_samples=7)) == 7
    with pytest.raises(ValueError, match="num_samples"):
        ClassAwareSampler(LABELS, "reversed", num_samples=0)


def test_sampler_generator_is_reproducible():
    def draws(seed: int) -> list[int]:
        return list(
            ClassAwareSampler(
                LABELS, "reversed", num_samples=500, generator=torch.Generator().manual_seed(seed)
            )
        )

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)
    torch.manual_seed(11)  # without generator: torch's global RNG
    a = list(ClassAwareSampler(LABELS, "reversed", num_samples=500))
    torch.manual_seed(11)
    assert a == list(ClassAwareSampler(LABELS, "reversed", num_samples=500))


def test_sampler_set_epoch():
    a = ClassAwareSampler(LABELS, "reversed", num_samples=500, seed=7)
    b = ClassAwareSampler(LABELS, "reversed", num_samples=500, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    first = list(a)
    assert first == list(a) == list(b)  # repeats within the epoch, like DistributedSampler
    b.set_epoch(3)
    assert list(b) != first
    c = ClassAwareSampler(LABELS, "reversed", num_samples=500, seed=8)
    c.set_epoch(2)
    assert list(c) != first
    # the seed defaults to the generator's initial seed
    g = ClassAwareSampler(LABELS, "reversed", num_samples=500, generator=torch.Generator().manual_seed(7))
    g.set_epoch(2)
    assert list(g) == first


def test_sampler_in_dataloader():
    sampler = create_sampler("reversed", LABELS, num_samples=64, seed=0)
    loader = DataLoader(IndexDataset(LABELS), batch_size=16, sampler=sampler)
    batches = list(loader)
    assert len(batches) == 4
    idx, y = batches[0]
    assert torch.equal(y, torch.as_tensor(LABELS)[idx])


def test_sampler_registry():
    assert list_samplers() == ["balanced", "reversed", "uniform"]
    sampler = create_sampler("balanced", LABELS, num_samples=10, generator=torch.Generator().manual_seed(0))
    assert isinstance(sampler, ClassAwareSampler) and sampler.kind == "balanced" and len(sampler) == 10
    with pytest.raises(ValueError, match=r"Unknown sampler 'balance'.*did you mean 'balanced'"):
        create_sampler("balance", LABELS)
    with pytest.raises(TypeError, match="'replacement'"):
        create_sampler("uniform", LABELS, replacement=False)
    with pytest.raises(ValueError, match="sampler 'uniform' is already registered"):
        register_sampler("uniform", lambda labels: None)
    assert SAMPLERS.create_from("reversed", {"seed": 3, "lr": 0.1}, LABELS).seed == 3


# ---------------------------------------------------------------------------------- ReversedPairDataset

BIG_COUNTS = [90_000, 9_000, 900]  # same ratios as the spec's [5000, 500, 50]; 99,900 distinct items
BIG_LABELS = np.repeat(np.arange(3), BIG_COUNTS)


@pytest.mark.parametrize("kind", ["uniform", "reversed", "balanced"])
def test_pairs_class_frequencies(kind):
    ds = ReversedPairDataset(IndexDataset(BIG_LABELS), BIG_LABELS, kind=kind, seed=0)
    partners = ds.draw_pairs(np.arange(len(ds)), epoch=0)
    assert partners.shape == (len(ds),)
    np.testing.assert_allclose(frequencies(BIG_LABELS, partners, 3), EXPECTED[kind], atol=0.005)
    if kind == "reversed":
        assert_uniform_within_class(BIG_LABELS, partners, 2)


def test_pairs_getitem_matches_draw_pairs():
    ds = ReversedPairDataset(IndexDataset(LABELS), LABELS, seed=4)
    ds.set_epoch(1)
    items = [3, 4000, 5100, 5549]
    partners = ds.draw_pairs(items)
    for i, j in zip(items, partners, strict=True):
        assert ds[i] == (i, int(LABELS[i]), int(j), int(LABELS[j]))
    assert len(ds) == len(LABELS)


def test_pairs_order_independent_and_deterministic():
    ds = ReversedPairDataset(IndexDataset(LABELS), LABELS, seed=4)
    all_items = ds.draw_pairs(np.arange(len(ds)), epoch=2)
    perm = np.random.default_rng(0).permutation(len(ds))
    np.testing.assert_array_equal(ds.draw_pairs(perm, epoch=2), all_items[perm])  # any worker/batch order
    again = ReversedPairDataset(IndexDataset(LABELS), LABELS, seed=4)
    np.testing.assert_array_equal(again.draw_pairs(np.arange(len(ds)), epoch=2), all_items)
    assert (ds.draw_pairs(np.arange(len(ds)), epoch=3) != all_items).mean() > 0.5
    other_seed = ReversedPairDataset(IndexDataset(LABELS), LABELS, seed=5)
    assert (other_seed.draw_pairs(np.arange(len(ds)), epoch=2) != all_items).mean() > 0.5
    assert ds.epoch == 0
    ds.set_epoch(2)
    assert ds.epoch == 2
    np.testing.assert_array_equal(ds.draw_pairs(np.arange(len(ds))), all_items)


def test_pairs_never_draw_empty_classes():
    labels = np.repeat([0, 2, 5], [3000, 300, 30])
    ds = ReversedPairDataset(IndexDataset(labels), labels, seed=0)
    partners = np.concatenate([ds.draw_pairs(np.arange(len(ds)), epoch=e) for e in range(30)])
    np.testing.assert_allclose(
        frequencies(labels, partners, 6), [1 / 111, 0, 10 / 111, 0, 0, 100 / 111], atol=0.005
    )
    assert_uniform_within_class(labels, partners, 5)


def test_pairs_errors():
    ds = ReversedPairDataset(IndexDataset(LABELS), LABELS)
    with pytest.raises(IndexError):
        ds.draw_pairs([len(LABELS)])
    with pytest.raises(ValueError, match="labels has 3 entries"):
        ReversedPairDataset(IndexDataset(LABELS), LABELS[:3])


def test_pairs_dataloader_workers_match_main_process():
    """Persistent workers see set_epoch (shared memory) and draw what the main process draws."""
    labels = LABELS[::50]  # 111 items
    ds = ReversedPairDataset(IndexDataset(labels), labels, seed=9)

    def epoch_partners(loader: DataLoader, epoch: int) -> np.ndarray:
        ds.set_epoch(epoch)
        return torch.cat([batch[2] for batch in loader]).numpy()

    workers = DataLoader(ds, batch_size=16, num_workers=2, persistent_workers=True)
    plain = DataLoader(ds, batch_size=16)
    for epoch in (0, 1):
        expected = ds.draw_pairs(np.arange(len(ds)), epoch=epoch)
        np.testing.assert_array_equal(epoch_partners(workers, epoch), expected)
        np.testing.assert_array_equal(epoch_partners(plain, epoch), expected)

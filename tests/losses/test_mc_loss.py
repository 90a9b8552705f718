"""Mutual-channel loss: spec unit numbers, channel grouping, CWA masks, gradients and the total."""

import math

import pytest
import torch
import torch.nn.functional as F

from fgvc_lib.losses import create_loss, list_losses
from fgvc_lib.losses.mc_loss import MCLoss, ccmp, channel_groups, cwa_mask, default_drop_count


def spec_features() -> torch.Tensor:
    """(1, 4, 2, 2): channel 0 is 1 at (0, 0), channel 1 is 1 at (1, 1), channels 2 and 3 are zero."""
    feats = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    feats[0, 0, 0, 0] = 1.0
    feats[0, 1, 1, 1] = 1.0
    return feats


def naive_terms(features: torch.Tensor, target: torch.Tensor, sizes: list[int], mask: torch.Tensor):
    """Reference with explicit loops over classes (test only)."""
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    masked = features * mask.view(1, -1, 1, 1)
    logits = torch.stack(
        [masked[:, s : s + n].amax(dim=1).mean(dim=(1, 2)) for s, n in zip(starts, sizes, strict=True)], dim=1
    )
    soft = F.softmax(features.flatten(2), dim=2)
    per_class = [soft[:, s : s + n].amax(dim=1).sum(dim=1) / n for s, n in zip(starts, sizes, strict=True)]
    div = 1.0 - torch.stack(per_class, dim=1).mean()
    return F.cross_entropy(logits, target), div, logits


@pytest.mark.parametrize("train", [True, False])
def test_spec_unit_numbers(train):
    loss = MCLoss(num_classes=2, drop_per_group=0).train(train)  # mask all ones either way
    parts = loss.terms(spec_features(), torch.tensor([0]))
    torch.testing.assert_close(parts["logits"], torch.tensor([[0.5, 0.0]], dtype=torch.float64))
    assert parts["dis"].item() == pytest.approx(0.474077, abs=1e-6)
    assert parts["div"].item() == pytest.approx(0.424878, abs=1e-6)
    assert torch.equal(parts["mask"], torch.ones(4, dtype=torch.float64))


def test_spec_group_spatial_sums():
    soft = F.softmax(spec_features().flatten(2), dim=2)
    sums = ccmp(soft, 2).sum(dim=2)
    # group 0: 2 (e + 1) / (e + 3) = 1.300489 (the spec's "1.30024" is a typo: loss_2 = 0.424878 needs 1.300489)
    e = math.e
    torch.testing.assert_close(sums, torch.tensor([[2 * (e + 1) / (e + 3), 1.0]], dtype=torch.float64))
    assert 1 - sums.mean().item() / 2 == pytest.approx(0.424878, abs=1e-6)


def test_ccmp_structure():
    x = torch.arange(6.0).view(1, 6, 1, 1) * torch.tensor([1, -1, 1, -1, 1, 1.0]).view(1, 6, 1, 1)
    out = ccmp(x, 2)  # groups of 3 consecutive channels
    assert out.shape == (1, 2, 1, 1)
    assert out.flatten().tolist() == [max(0.0, -1.0, 2.0), max(-3.0, 4.0, 5.0)]
    assert ccmp(torch.arange(6.0).view(1, 6), 2).tolist() == [[2.0, 5.0]]
    # uneven: 7 channels over 3 classes -> 2, 2, 3
    assert ccmp(torch.tensor([[9.0, 1, 2, 8, 3, 4, 7]]), 3).tolist() == [[9.0, 8.0, 7.0]]


@pytest.mark.parametrize(
    ("channels", "classes", "n_low", "xi_low", "n_high"),
    [(2048, 200, 152, 10, 48), (1792, 100, 8, 17, 92), (600, 200, 200, 3, 0), (1800, 200, 200, 9, 0)],
)
def test_channel_groups(channels, classes, n_low, xi_low, n_high):
    sizes = channel_groups(channels, classes)
    assert sizes == [xi_low] * n_low + [xi_low + 1] * n_high
    assert sum(sizes) == channels and len(sizes) == classes


def test_channel_groups_8_and_9():
    sizes = channel_groups(1792, 200)  # 1792 = 8 * 200 + 192: 8 classes of 8 channels, 192 of 9
    assert sizes == [8] * 8 + [9] * 192


def test_uneven_split_matches_naive_reference():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(3, 23, 4, 5, generator=gen, dtype=torch.float64)  # 23 = 5 * 4 + 3 -> 4,4,5,5,5
    target = torch.tensor([0, 4, 2])
    loss = MCLoss(5, mask_generator=torch.Generator().manual_seed(7))
    parts = loss.terms(feats, target)
    assert loss.group_sizes(23) == [4, 4, 5, 5, 5]
    dis, div, logits = naive_terms(feats, target, [4, 4, 5, 5, 5], parts["mask"])
    torch.testing.assert_close(parts["logits"], logits)
    torch.testing.assert_close(parts["dis"], dis)
    torch.testing.assert_close(parts["div"], div)


def test_even_split_div_is_official_form():
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 12, 3, 3, generator=gen, dtype=torch.float64)
    parts = MCLoss(4).eval().terms(feats, torch.tensor([1, 3]))
    soft = F.softmax(feats.flatten(2), dim=2).view(2, 4, 3, 9).amax(dim=2)
    torch.testing.assert_close(parts["div"], 1 - soft.sum(dim=2).mean() / 3)


def test_default_drop_rule():
    assert [default_drop_count(xi) for xi in (1, 2, 3, 10, 11, 17, 18)] == [0, 1, 1, 4, 4, 7, 7]


def test_cwa_mask_counts_per_group():
    gen = torch.Generator().manual_seed(0)
    mask = cwa_mask(2048, 200, generator=gen)
    low, high = mask[:1520].view(152, 10), mask[1520:].view(48, 11)
    assert (low.sum(dim=1) == 6).all() and (high.sum(dim=1) == 7).all()  # 4 dropped of 10 and of 11
    vgg = cwa_mask(600, 200, generator=gen).view(200, 3)
    assert (vgg.sum(dim=1) == 2).all()  # 1 of 3 dropped
    assert set(vgg.unique().tolist()) == {0.0, 1.0}
    assert (cwa_mask(600, 200, drop_per_group=2, generator=gen).view(200, 3).sum(dim=1) == 1).all()
    with pytest.raises(ValueError, match="drop_per_group"):
        cwa_mask(600, 200, drop_per_group=3)


def test_mask_shared_across_batch_and_new_each_call():
    gen = torch.Generator().manual_seed(0)
    one = torch.randn(1, 60, 4, 4, generator=gen)
    feats = one.expand(8, -1, -1, -1).contiguous()  # 8 identical samples
    target = torch.zeros(8, dtype=torch.long)
    loss = MCLoss(20, mask_generator=torch.Generator().manual_seed(1))
    first = loss.terms(feats, target)
    assert torch.equal(first["logits"], first["logits"][:1].expand(8, -1))  # one mask for the whole batch
    second = loss.terms(feats, target)
    assert not torch.equal(first["mask"], second["mask"])  # a new mask every forward
    # with no rescaling: masked logits are CCMP of F * mask
    expected = ccmp(feats * second["mask"].view(1, -1, 1, 1), 20).mean(dim=(2, 3))
    torch.testing.assert_close(second["logits"], expected)
    # reproducible with the same generator seed
    again = MCLoss(20, mask_generator=torch.Generator().manual_seed(1)).terms(feats, target)
    assert torch.equal(again["mask"], first["mask"])


def test_eval_mode_does_not_mask():
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 30, 3, 3, generator=gen)
    loss = MCLoss(10).eval()
    a, b = loss.terms(feats, torch.tensor([0, 1])), loss.terms(feats, torch.tensor([0, 1]))
    assert torch.equal(a["mask"], torch.ones(30)) and torch.equal(a["dis"], b["dis"])
    torch.testing.assert_close(a["logits"], ccmp(feats, 10).mean(dim=(2, 3)))


def test_total_and_gradient_flow():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(4, 33, 5, 5, generator=gen, requires_grad=True)  # 33 over 10 -> 7 x 3 + 3 x 4
    logits = torch.randn(4, 10, generator=gen, requires_grad=True)
    target = torch.tensor([0, 3, 9, 5])
    loss = MCLoss(10, mu=1.5, lam=20.0, mask_generator=torch.Generator().manual_seed(0))
    total = loss(logits, feats, target)
    replay = MCLoss(10, mask_generator=torch.Generator().manual_seed(0)).terms(feats, target)
    expected = F.cross_entropy(logits, target) + 1.5 * replay["dis"] + 20.0 * replay["div"]
    torch.testing.assert_close(total, expected)
    g_feats, g_logits = torch.autograd.grad(total, (feats, logits))
    assert torch.isfinite(g_feats).all() and g_feats.abs().sum() > 0 and g_logits.abs().sum() > 0
    for name in ("dis", "div"):
        (g_term,) = torch.autograd.grad(loss.terms(feats, target)[name], feats)
        assert g_term.abs().sum() > 0, name


def test_dropped_channels_get_no_dis_gradient():
    gen = torch.Generator().manual_seed(8)
    feats = torch.randn(2, 9, 3, 3, generator=gen, requires_grad=True)
    loss = MCLoss(3, mask_generator=torch.Generator().manual_seed(0))
    parts = loss.terms(feats, torch.tensor([0, 2]))
    (grad,) = torch.autograd.grad(parts["dis"], feats)
    dropped = parts["mask"] == 0
    assert dropped.sum() == 3  # one per group of 3
    assert grad[:, dropped].abs().sum() == 0


def test_validation_and_registry():
    assert "mc" in list_losses()
    loss = create_loss("mc", num_classes=5, mc_mu=2.0)
    assert isinstance(loss, MCLoss) and loss.mu == 2.0 and loss.lam == 20.0
    assert create_loss("mc", num_classes=5, mc_lambda=3.0).lam == 3.0
    with pytest.raises(TypeError, match="loss 'mc': missing a required argument: 'num_classes'"):
        create_loss("mc")
    with pytest.raises(TypeError, match="'mu' for loss 'mc'"):
        create_loss("mc", num_classes=5, mu=2.0)
    with pytest.raises(ValueError, match="features"):
        MCLoss(10).terms(torch.randn(2, 8, 3, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="features"):
        MCLoss(2).terms(torch.randn(2, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        MCLoss(0)
    with pytest.raises(ValueError, match="drop_per_group"):
        MCLoss(3, drop_per_group=-1)
    with pytest.raises(ValueError, match="drop_per_group"):  # would zero whole groups of 2
        MCLoss(3, drop_per_group=2).terms(torch.randn(1, 6, 2, 2), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="num_channels"):
        channel_groups(3, 4)

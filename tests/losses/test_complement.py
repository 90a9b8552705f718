"""Complement entropy (COT) against the spec's numbers from the official code (henry8527/COT)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fgvc_lib.losses import create_loss, list_losses
from fgvc_lib.losses.complement import ComplementEntropy, complement_entropy


def loss_of(logits: list[list[float]], targets: list[int], **kwargs) -> torch.Tensor:
    z = torch.tensor(logits, dtype=torch.float64)
    return ComplementEntropy(**kwargs)(z, torch.tensor(targets))


def non_target_entropy(logits: torch.Tensor, target: int) -> float:
    p = F.softmax(logits.detach(), dim=-1)
    q = torch.cat([p[:target], p[target + 1 :]])
    q = q / q.sum()
    return float(-(q * q.log()).sum())


def test_spec_values():
    assert loss_of([[0.0, 0.0, 0.0]], [0]).item() == pytest.approx(-0.231049, abs=1e-6)
    assert loss_of([[2.0, 1.0, 0.0]], [0]).item() == pytest.approx(-0.194068, abs=1e-6)
    assert loss_of([[0.0, 0.0, 0.0]], [0], num_classes=3).item() == pytest.approx(-0.231049, abs=1e-6)


def test_divides_by_k_not_k_minus_1():
    # uniform wrong classes: sum_j P_j log P_j = -ln(K - 1); the official code divides by K
    for k in (3, 5, 10):
        value = loss_of([[0.0] * k], [1]).item()
        assert value == pytest.approx(-math.log(k - 1) / k, abs=1e-6)
        assert value != pytest.approx(-math.log(k - 1) / (k - 1), abs=1e-6)


def test_batch_is_mean_of_rows():
    torch.manual_seed(0)
    z = torch.randn(6, 7, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 6, 2, 2, 5])
    rows = torch.stack([complement_entropy(z[i : i + 1], y[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(complement_entropy(z, y), rows.mean())
    assert (rows <= 0).all()


def test_value_is_non_positive_and_ignores_target_logit():
    z = torch.tensor([[5.0, -1.0, 0.5, 2.0]], dtype=torch.float64)
    base = complement_entropy(z, torch.tensor([0])).item()
    assert base <= 0
    z2 = z.clone()
    z2[0, 0] = -3.0  # the wrong-class distribution does not depend on the target logit (up to the 1e-7)
    assert complement_entropy(z2, torch.tensor([0])).item() == pytest.approx(base, abs=1e-6)


def test_gradient_flattens_non_target_distribution():
    z = torch.tensor([[1.0, 4.0, 0.0, -2.0, 2.5]], requires_grad=True)
    y = torch.tensor([1])
    loss_fn = ComplementEntropy()
    opt = torch.optim.SGD([z], lr=5.0)
    entropies, losses = [non_target_entropy(z[0], 1)], []
    for _ in range(10):
        opt.zero_grad()
        loss = loss_fn(z, y)
        loss.backward()
        assert z.grad is not None and torch.isfinite(z.grad).all()
        opt.step()
        losses.append(loss.item())
        entropies.append(non_target_entropy(z[0], 1))
    assert all(b > a for a, b in zip(entropies, entropies[1:], strict=False))
    assert entropies[-1] > entropies[0] + 0.1 and losses[-1] < losses[0]
    assert entropies[-1] <= math.log(4) + 1e-6


def test_shape_and_num_classes_errors():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="num_classes=4"):
        ComplementEntropy(num_classes=4)(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target shape"):
        ComplementEntropy()(z, torch.tensor([0]))
    with pytest.raises(ValueError, match="logits of shape"):
        ComplementEntropy()(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="num_classes"):
        ComplementEntropy(num_classes=1)


def test_registry():
    assert "complement" in list_losses()
    loss = create_loss("complement", num_classes=3)
    assert isinstance(loss, ComplementEntropy) and "num_classes=3" in repr(loss)
    assert loss(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(-0.231049, abs=1e-6)
    assert "divides by K" in ComplementEntropy.__doc__

"""Multi-label BCE / MSE on sigmoid outputs: hand values, pos_weight, decode, gradients and the registry."""

import math

import pytest
import torch
import torch.nn.functional as F

from fgvc_lib.losses import create_loss, list_losses
from fgvc_lib.losses.multilabel import BCEMultiLabel, MSEMultiLabel


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


Z = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
Y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)


def test_bce_hand_value():
    # label 1: logit 0, target 1 -> -log(0.5) = log 2; label 2: logit 2, target 0 -> -log(1 - s(2)) = log(1 + e^2)
    expected = (math.log(2.0) + math.log(1.0 + math.e**2)) / 2
    assert BCEMultiLabel()(Z, Y).item() == pytest.approx(expected, abs=1e-12)


def test_mse_hand_value():
    expected = ((0.5 - 1.0) ** 2 + sigmoid(2.0) ** 2) / 2
    assert MSEMultiLabel()(Z, Y).item() == pytest.approx(expected, abs=1e-12)


def test_mean_over_batch_and_labels_and_reductions():
    torch.manual_seed(0)
    z, y = torch.randn(5, 4), (torch.rand(5, 4) > 0.5).float()
    ref = F.binary_cross_entropy(torch.sigmoid(z), y, reduction="none")
    torch.testing.assert_close(BCEMultiLabel(reduction="none")(z, y), ref)
    torch.testing.assert_close(BCEMultiLabel()(z, y), ref.mean())
    torch.testing.assert_close(BCEMultiLabel(reduction="sum")(z, y), ref.sum())
    torch.testing.assert_close(MSEMultiLabel()(z, y), F.mse_loss(torch.sigmoid(z), y))
    with pytest.raises(ValueError, match="reduction"):
        MSEMultiLabel(reduction="avg")


def test_integer_and_bool_targets():
    z = torch.tensor([[0.3, -1.0, 2.0]])
    y = torch.tensor([[1, 0, 1]])
    for loss in (BCEMultiLabel(), MSEMultiLabel()):
        torch.testing.assert_close(loss(z, y), loss(z, y.float()))
        torch.testing.assert_close(loss(z, y.bool()), loss(z, y.float()))


def test_pos_weight_scales_positive_terms_only():
    # pos_weight 3 on label 1: its positive term 3 * log 2; label 2 has target 0, unaffected.
    loss = BCEMultiLabel(pos_weight=[3.0, 5.0])
    expected = (3.0 * math.log(2.0) + math.log(1.0 + math.e**2)) / 2
    assert loss(Z, Y).item() == pytest.approx(expected, abs=1e-6)
    assert "pos_weight" in dict(loss.named_buffers())  # moves with .to(device), saved in state_dict
    assert "pos_weight" in loss.state_dict()
    with pytest.raises(ValueError, match="labels"):
        loss(torch.zeros(1, 3), torch.zeros(1, 3))


@pytest.mark.parametrize("bad", [[0.0, 1.0], [[1.0, 2.0]], [float("nan"), 1.0], []])
def test_pos_weight_validated(bad):
    with pytest.raises(ValueError, match="pos_weight"):
        BCEMultiLabel(pos_weight=bad)


def test_shape_mismatch_rejected():
    for loss in (BCEMultiLabel(), MSEMultiLabel()):
        with pytest.raises(ValueError, match="shape"):
            loss(torch.zeros(2, 3), torch.zeros(2, 4))
        with pytest.raises(ValueError, match="shape"):
            loss(torch.zeros(3), torch.zeros(3))


def test_activation_and_decode():
    z = torch.tensor([[-2.0, 0.0, 0.1, 3.0]])
    for loss in (BCEMultiLabel(), MSEMultiLabel()):
        torch.testing.assert_close(loss.activation(z), torch.sigmoid(z))
        assert loss.decode(z).tolist() == [[0.0, 0.0, 1.0, 1.0]]  # sigmoid(0) = 0.5 is not > 0.5
        assert loss.decode(z, threshold=0.9).tolist() == [[0.0, 0.0, 0.0, 1.0]]
        per_label = torch.tensor([0.1, 0.6, 0.5, 0.99])
        assert loss.decode(z, threshold=per_label).tolist() == [[1.0, 0.0, 1.0, 0.0]]
        with pytest.raises(ValueError, match="threshold"):
            loss.decode(z, threshold=[0.5, 0.5])


def test_gradients_finite_even_for_extreme_logits():
    z = torch.tensor([[-80.0, 0.0, 80.0], [30.0, -30.0, 1.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    for loss in (BCEMultiLabel(), MSEMultiLabel(), BCEMultiLabel(pos_weight=[2.0, 1.0, 0.5])):
        z.grad = None
        value = loss(z, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    # BCE on a confidently wrong logit still pushes: gradient (sigmoid(z) - y) / numel
    z.grad = None
    BCEMultiLabel()(z, y).backward()
    assert z.grad[0, 0].item() == pytest.approx(-1.0 / 6, abs=1e-6)


def test_mse_gradient_hand_value():
    # d/dz mean((s - y)^2) = 2 (s - y) s (1 - s) / numel
    z = Z.clone().requires_grad_(True)
    MSEMultiLabel()(z, Y).backward()
    s = sigmoid(2.0)
    assert z.grad[0, 0].item() == pytest.approx(2 * (0.5 - 1.0) * 0.25 / 2, abs=1e-12)
    assert z.grad[0, 1].item() == pytest.approx(2 * s * s * (1 - s) / 2, abs=1e-12)


def test_registry_names():
    assert {"bce", "mse"} <= set(list_losses())
    assert isinstance(create_loss("bce"), BCEMultiLabel)
    assert isinstance(create_loss("mse"), MSEMultiLabel)
    weighted = create_loss("bce", pos_weight=[1.0, 2.0])
    assert weighted.pos_weight.tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="pos_weight"):
        create_loss("mse", pos_weight=[1.0])

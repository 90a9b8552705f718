"""Focal loss and FLSD-53/52 against the spec's numbers (torrvision/focal_calibration, verified there)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fgvc_lib.losses import create_loss, list_losses
from fgvc_lib.losses.focal import FLSD_THRESHOLDS, AdaptiveFocalLoss, FocalLoss, focal_loss

Z = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
Y = torch.tensor([0, 2, 1])
PT = [0.665241, 0.090031, 0.451863]
CE = [0.407606, 2.407606, 0.794377]
FL2 = [0.045678, 1.993605, 0.238674]
FL3 = [0.015291, 1.814119, 0.130826]
FLSD53 = [0.015291, 1.502171, 0.130826]


def close(actual: torch.Tensor, expected: list[float], tol: float = 2e-6) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=tol, rtol=0)


def _p_t() -> list[float]:
    """p_t = softmax(z)[y] of the spec inputs in plain floats (no torch)."""
    rows = zip(Z.tolist(), Y.tolist(), strict=True)
    return [math.exp(row[y]) / sum(math.exp(v) for v in row) for row, y in rows]


def _by_hand(gamma: float) -> list[float]:
    """Focal loss from the definition: FL = -(1 - p_t) ** gamma * log(p_t)."""
    return [-((1 - p) ** gamma) * math.log(p) for p in _p_t()]


def test_spec_inputs_by_hand():
    """The spec's tables follow from the definition (no torch), and FocalLoss reproduces them."""
    assert _p_t() == pytest.approx(PT, abs=1e-6)
    assert [-math.log(p) for p in _p_t()] == pytest.approx(CE, abs=1e-6)
    # row 0 in closed form: p_t = e^2 / (e^2 + e + 1), FL_2 = (1 - p_t)^2 * log(1 + e^-1 + e^-2)
    p0 = math.e**2 / (math.e**2 + math.e + 1)
    assert FocalLoss(2.0, reduction="none")(Z, Y)[0].item() == pytest.approx(
        (1 - p0) ** 2 * math.log(1 + math.exp(-1) + math.exp(-2)), abs=1e-12
    )
    for gamma, table in ((0.0, CE), (2.0, FL2), (3.0, FL3)):
        assert _by_hand(gamma) == pytest.approx(table, abs=1e-6)
        close(FocalLoss(gamma, reduction="none")(Z, Y), _by_hand(gamma), tol=1e-12)
    assert FocalLoss(2.0)(Z, Y).item() == pytest.approx(sum(_by_hand(2.0)) / 3, abs=1e-12)


def test_focal_gamma2_and_gamma3():
    close(FocalLoss(2.0, reduction="none")(Z, Y), FL2)
    close(FocalLoss(3.0, reduction="none")(Z, Y), FL3)
    assert FocalLoss(3.0, reduction="sum")(Z, Y).item() == pytest.approx(1.960236, abs=2e-6)
    assert FocalLoss(2.0)(Z, Y).item() == pytest.approx(sum(FL2) / 3, abs=2e-6)  # mean is the default


def test_report_check_pt_02_gamma2():
    logits = torch.tensor([[math.log(0.2), math.log(0.8)]], dtype=torch.float64)
    target = torch.tensor([0])
    assert F.cross_entropy(logits, target).item() == pytest.approx(1.609438, abs=1e-6)
    assert FocalLoss(2.0)(logits, target).item() == pytest.approx(0.64 * 1.609438, abs=1e-6)
    assert FocalLoss(2.0)(logits, target).item() == pytest.approx(1.030, abs=5e-4)


def test_gamma0_equals_cross_entropy_exactly():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(16, 7, generator=gen) * 5).requires_grad_()
    target = torch.randint(0, 7, (16,), generator=gen)
    for reduction in ("mean", "sum", "none"):
        ours = FocalLoss(0.0, reduction=reduction)(logits, target)
        ref = F.cross_entropy(logits, target, reduction=reduction)
        assert torch.equal(ours, ref)
    g1 = torch.autograd.grad(FocalLoss(0.0)(logits, target), logits)[0]
    g2 = torch.autograd.grad(F.cross_entropy(logits, target), logits)[0]
    assert torch.equal(g1, g2)


def test_matches_naive_formula_and_is_stable():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 5, generator=gen, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (32,), generator=gen)
    p_t = F.softmax(logits, dim=1)[torch.arange(32), target]
    for gamma in (0.5, 1.0, 2.0, 4.5):
        naive = -((1 - p_t) ** gamma) * torch.log(p_t)
        close(FocalLoss(gamma, reduction="none")(logits, target), naive.tolist(), tol=1e-10)
    # saturated logits (p_t == 1 in float32) and gamma < 1: finite values and gradients
    extreme = torch.tensor([[200.0, -200.0, 0.0], [-300.0, 300.0, 0.0]], requires_grad=True)
    for gamma in (0.3, 2.0):
        loss = FocalLoss(gamma, reduction="sum")(extreme, torch.tensor([0, 0]))
        (grad,) = torch.autograd.grad(loss, extreme)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert loss.item() == pytest.approx(600.0, rel=1e-5)  # row 2: -log p_t = 300 - (-300), weight 1


def test_flsd53_spec_numbers():
    loss = AdaptiveFocalLoss(reduction="none")
    close(loss(Z, Y), FLSD53)
    assert AdaptiveFocalLoss(reduction="sum")(Z, Y).item() == pytest.approx(1.648288, abs=2e-6)
    assert loss.sample_gammas(Z, Y).tolist() == [3.0, 5.0, 3.0]  # middle sample: p_t < 0.2 -> gamma 5
    assert create_loss("flsd53", reduction="sum")(Z, Y).item() == pytest.approx(1.648288, abs=2e-6)


def test_flsd_gamma_table_boundaries():
    pts = torch.tensor([0.05, 0.1999, 0.2, 0.3, 0.4999, 0.5, 0.9], dtype=torch.float64)
    logits = torch.stack([pts.log(), (1 - pts).log()], dim=1)
    target = torch.zeros(len(pts), dtype=torch.long)
    assert AdaptiveFocalLoss(gamma=3.0).sample_gammas(logits, target).tolist() == [5, 5, 3, 3, 3, 3, 3]
    assert create_loss("flsd52").sample_gammas(logits, target).tolist() == [5, 5, 3, 3, 3, 2, 2]
    custom = AdaptiveFocalLoss(gamma=1.0, thresholds={0.3: 4.0})
    assert custom.sample_gammas(logits, target).tolist() == [4, 4, 4, 1, 1, 1, 1]
    # per-sample loss uses the chosen gamma
    naive = -((1 - pts) ** torch.tensor([5, 5, 3, 3, 3, 2, 2.0], dtype=torch.float64)) * pts.log()
    close(create_loss("flsd52", reduction="none")(logits, target), naive.tolist(), tol=1e-10)
    assert FLSD_THRESHOLDS == {0.2: 5.0, 0.5: 3.0}


def test_no_gradient_through_gamma():
    logits = Z.clone().requires_grad_()
    gammas = AdaptiveFocalLoss().sample_gammas(logits, Y)
    assert not gammas.requires_grad
    (ours,) = torch.autograd.grad(AdaptiveFocalLoss(reduction="sum")(logits, Y), logits)
    (ref,) = torch.autograd.grad(focal_loss(logits, Y, gammas.clone(), reduction="sum"), logits)
    torch.testing.assert_close(ours, ref)
    # and equals the fixed-gamma focal loss per sample
    (fixed3,) = torch.autograd.grad(FocalLoss(3.0, reduction="sum")(logits[[0]], Y[[0]]), logits)
    torch.testing.assert_close(ours[0], fixed3[0])


def test_registry_and_validation():
    assert {"focal", "flsd53", "flsd52"} <= set(list_losses())
    focal = create_loss("focal", gamma=3.0, reduction="none")
    assert isinstance(focal, FocalLoss) and focal.gamma == 3.0
    assert create_loss("flsd53").gamma == 3.0 and create_loss("flsd52").gamma == 2.0
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        AdaptiveFocalLoss(gamma=float("nan"))
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        AdaptiveFocalLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="thresholds"):
        AdaptiveFocalLoss(thresholds={1.5: 2.0})
    with pytest.raises(ValueError, match="thresholds"):
        AdaptiveFocalLoss(thresholds={0.2: -1.0})
    with pytest.raises(TypeError, match="gama"):
        create_loss("focal", gama=2.0)

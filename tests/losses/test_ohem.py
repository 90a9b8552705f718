"""OHEM loss, keep-ratio schedules and the loss registry."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fgvc_lib.losses import LOSSES, create_loss, list_losses, register_loss
from fgvc_lib.losses.ohem import (
    OHEM_SCHEDULES,
    OHEMLoss,
    create_ohem_schedule,
    list_ohem_schedules,
    ohem_keep_count,
    ohem_ratio_constant,
    ohem_ratio_cyclical,
    ohem_ratio_step,
    ohem_select,
    scale_milestones,
)

PER_SAMPLE = [0.1, 2.0, 0.5, 1.0]


def logits_with_ce(losses: list[float]) -> torch.Tensor:
    """2-class logits [0, z] whose CE against class 0 is l: log(1 + e^z) = l  =>  z = log(e^l - 1)."""
    z = torch.tensor([math.log(math.expm1(v)) for v in losses], dtype=torch.float64)
    return torch.stack([torch.zeros_like(z), z], dim=1)


def naive_ohem(
    logits: torch.Tensor, target: torch.Tensor, ratio: float, label_smoothing: float
) -> torch.Tensor:
    """Reference: per-sample Python loop, sort, keep max(1, floor(ratio * B)), average."""
    losses = [
        F.cross_entropy(logits[i : i + 1], target[i : i + 1], label_smoothing=label_smoothing)
        for i in range(len(target))
    ]
    k = max(1, int(ratio * len(losses)))
    kept = sorted(losses, key=lambda t: t.item(), reverse=True)[:k]
    return sum(kept) / k


def test_select_on_given_losses():
    assert ohem_select(torch.tensor(PER_SAMPLE), 0.5).item() == pytest.approx(1.5)
    assert ohem_select(torch.tensor(PER_SAMPLE), 1.0).item() == pytest.approx(0.9)
    assert ohem_select(torch.tensor(PER_SAMPLE), 0.75).item() == pytest.approx(3.5 / 3)


def test_logit_construction_gives_the_wanted_losses():
    ce = F.cross_entropy(logits_with_ce(PER_SAMPLE), torch.zeros(4, dtype=torch.long), reduction="none")
    torch.testing.assert_close(ce, torch.tensor(PER_SAMPLE, dtype=torch.float64))


def test_ohem_loss_hand_computed():
    loss = OHEMLoss(ratio=0.5)(logits_with_ce(PER_SAMPLE), torch.zeros(4, dtype=torch.long))
    assert loss.item() == pytest.approx(1.5)


def test_keep_count_floor_and_minimum_one():
    assert ohem_keep_count(0.5, 4) == 2
    assert ohem_keep_count(0.7, 10) == 7
    assert ohem_keep_count(0.69, 10) == 6  # floor, not round
    assert ohem_keep_count(0.3, 10) == 3  # 0.3 * 10 = 3.0000000000000004 in floats
    assert ohem_keep_count(0.01, 4) == 1  # below 1/B: still one sample (the report used all of them)
    assert ohem_keep_count(1.0, 7) == 7


def test_tiny_ratio_keeps_only_the_hardest():
    loss = OHEMLoss(ratio=0.01)(logits_with_ce(PER_SAMPLE), torch.zeros(4, dtype=torch.long))
    assert loss.item() == pytest.approx(2.0)


@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_matches_naive_loop_values_and_grads(ratio, label_smoothing):
    gen = torch.Generator().manual_seed(int(ratio * 100) + int(label_smoothing * 10))
    logits = torch.randn(12, 5, generator=gen, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (12,), generator=gen)

    x1 = logits.clone().requires_grad_()
    got = OHEMLoss(ratio=ratio, label_smoothing=label_smoothing)(x1, target)
    got.backward()

    x2 = logits.clone().requires_grad_()
    want = naive_ohem(x2, target, ratio, label_smoothing)
    want.backward()

    torch.testing.assert_close(got, want)
    torch.testing.assert_close(x1.grad, x2.grad)


def test_gradient_only_reaches_kept_samples():
    logits = logits_with_ce(PER_SAMPLE).requires_grad_()
    OHEMLoss(ratio=0.5)(logits, torch.zeros(4, dtype=torch.long)).backward()
    row_has_grad = (logits.grad.abs().sum(dim=1) > 0).tolist()
    assert row_has_grad == [False, True, False, True]  # losses 2.0 and 1.0 are the kept ones


def test_ratio_is_mutable_and_validated():
    loss = OHEMLoss()
    assert loss.ratio == 1.0
    loss.ratio = 0.25
    logits, target = logits_with_ce(PER_SAMPLE), torch.zeros(4, dtype=torch.long)
    assert loss(logits, target).item() == pytest.approx(2.0)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            OHEMLoss(ratio=bad)
        with pytest.raises(ValueError, match="ratio"):
            loss.ratio = bad
    assert loss.ratio == 0.25


def test_empty_batch_gives_zero():
    logits = torch.zeros(0, 3, requires_grad=True)
    out = OHEMLoss(ratio=0.5)(logits, torch.zeros(0, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()


# ------------------------------------------------------------------------------------------- schedules

CYCLICAL_200 = {
    0: 1.0,
    19: 1.0,
    20: 1.0,
    60: 0.5,
    99: 0.0125,
    100: 0.5,
    119: 0.5,
    120: 0.5,
    160: 0.25,
    199: 0.00625,
}
# total=10: half=5, hold=1 -> (5-e)/4 on epochs 1..4, then 0.5 on 5, 0.5*(10-e)/4 on 6..9
CYCLICAL_10 = [1.0, 1.0, 0.75, 0.5, 0.25, 0.5, 0.5, 0.375, 0.25, 0.125]


@pytest.mark.parametrize(("epoch", "want"), CYCLICAL_200.items())
def test_cyclical_200(epoch, want):
    assert ohem_ratio_cyclical(epoch, 200) == pytest.approx(want)


def test_cyclical_10():
    assert [ohem_ratio_cyclical(e, 10) for e in range(10)] == pytest.approx(CYCLICAL_10)


def test_cyclical_edge_cases():
    assert ohem_ratio_cyclical(0, 1) == 1.0
    assert [ohem_ratio_cyclical(e, 2) for e in range(2)] == [1.0, 0.5]
    with pytest.raises(ValueError, match="epoch"):
        ohem_ratio_cyclical(10, 10)
    with pytest.raises(ValueError, match="epoch"):
        ohem_ratio_cyclical(-1, 10)


STEP = {
    0: 1.0,
    39: 1.0,
    40: 0.9,
    59: 0.9,
    60: 0.8,
    89: 0.8,
    90: 0.7,
    129: 0.7,
    130: 0.6,
    169: 0.6,
    170: 0.5,
    199: 0.5,
}


@pytest.mark.parametrize(("epoch", "want"), STEP.items())
def test_step(epoch, want):
    assert ohem_ratio_step(epoch) == want
    assert create_ohem_schedule("step", 200)(epoch) == want


def test_step_validation():
    with pytest.raises(ValueError, match="len"):
        ohem_ratio_step(0, milestones=(1, 2), ratios=(1.0, 0.5))
    with pytest.raises(ValueError, match="increasing"):
        ohem_ratio_step(0, milestones=(2, 2), ratios=(1.0, 0.9, 0.8))


@pytest.mark.parametrize("total", [6, 10, 17, 30, 100, 400])
def test_scaled_step_hits_every_ratio(total):
    ratios = [create_ohem_schedule("step", total)(e) for e in range(total)]
    assert ratios[0] == 1.0 and ratios[-1] == 0.5
    assert all(b <= a for a, b in zip(ratios, ratios[1:], strict=False))
    assert sorted(set(ratios), reverse=True) == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]


def test_scaled_milestones_for_10_epochs():
    # 40/20=2, 60/20=3, 90/20=4.5->5, 130/20=6.5->7, 170/20=8.5->9 (round half up)
    assert scale_milestones((40, 60, 90, 130, 170), 10, 200) == (2, 3, 5, 7, 9)
    want = [1.0, 1.0, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.5]
    assert [create_ohem_schedule("step", 10)(e) for e in range(10)] == want


def test_scaled_milestones_short_run_stay_increasing():
    assert scale_milestones((40, 60, 90, 130, 170), 3, 200) == (1, 2, 3, 4, 5)


def test_other_schedules_and_registry():
    # none = no schedule: the constant keep ratio (the bird parameter ohem_ratio, 0.7 by default)
    assert [create_ohem_schedule("none", 5)(e) for e in range(5)] == [0.7] * 5
    assert [create_ohem_schedule("none", 5, ratio=0.4)(e) for e in range(5)] == [0.4] * 5
    assert create_ohem_schedule("none", 5, ratio=1.0)(4) == 1.0
    assert create_ohem_schedule("constant", 5, ratio=0.6)(3) == 0.6
    assert create_ohem_schedule("cyclical", 10, ratio=0.3)(0) == 1.0  # ratio matters to none / constant only
    assert ohem_ratio_constant(7, 0.3) == 0.3
    assert create_ohem_schedule("cyclical", 200)(160) == pytest.approx(0.25)
    assert list_ohem_schedules() == ["constant", "cyclical", "none", "step"]
    with pytest.raises(ValueError, match=r"Unknown OHEM schedule 'cyclic'.*did you mean 'cyclical'\?"):
        create_ohem_schedule("cyclic", 10)
    with pytest.raises(ValueError, match="ratio"):
        create_ohem_schedule("constant", 10, ratio=1.2)
    with pytest.raises(ValueError, match="total_epochs"):
        create_ohem_schedule("step", 0)


def test_ohem_schedules_from_bird_parameters():
    params = {"epochs": 10, "ohem_ratio": 0.5, "ohem_schedule": "none", "lr": 0.1}
    for name in ("none", "constant"):
        assert [OHEM_SCHEDULES.create_from(name, params)(e) for e in (0, 9)] == [0.5, 0.5]
    assert OHEM_SCHEDULES.create_from("step", params)(0) == 1.0
    assert OHEM_SCHEDULES.create_from("cyclical", params)(0) == 1.0
    with pytest.raises(TypeError, match="'ohem_ratio' for OHEM schedule 'step'"):
        OHEM_SCHEDULES.create("step", 10, ohem_ratio=0.5)


# -------------------------------------------------------------------------------------------- registry


def test_loss_registry():
    assert {"ce", "ohem"} <= set(list_losses())
    ce = create_loss("ce", label_smoothing=0.1)
    assert isinstance(ce, nn.CrossEntropyLoss) and ce.label_smoothing == 0.1
    ohem = create_loss("ohem", ratio=0.5)
    assert isinstance(ohem, OHEMLoss) and ohem.ratio == 0.5
    assert create_loss("ohem")(
        logits_with_ce(PER_SAMPLE), torch.zeros(4, dtype=torch.long)
    ).item() == pytest.approx(0.9)


def test_unknown_loss_and_kwargs():
    with pytest.raises(
        ValueError, match=r"Unknown loss 'ohme', expected one of \(.*ce.*\); did you mean 'ohem'\?"
    ):
        create_loss("ohme")
    with pytest.raises(TypeError, match="'smoothing'"):
        create_loss("ce", smoothing=0.1)
    with pytest.raises(TypeError, match="'ratios'"):
        create_loss("ohem", ratios=0.5)


def test_register_loss_decorator(monkeypatch):
    monkeypatch.setattr(LOSSES, "_items", dict(LOSSES._items))  # keep the global registry clean

    @register_loss("_test_l1")
    def _l1() -> nn.Module:
        return nn.L1Loss()

    assert "_test_l1" in list_losses()
    assert isinstance(create_loss("_test_l1"), nn.L1Loss)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("_test_l1")(lambda: nn.MSELoss())
    register_loss("_test_l1", lambda: nn.MSELoss(), replace=True)
    assert isinstance(create_loss("_test_l1"), nn.MSELoss)


def test_losses_from_parameters():
    """Loss keywords are the experiment parameter names: create_from needs no per-name branching."""
    params = {"label_smoothing": 0.1, "gamma": 3.0, "mc_mu": 2.0, "mc_lambda": 5.0, "lr": 0.1, "epochs": 3}
    assert LOSSES.create_from("ce", params).label_smoothing == 0.1
    assert LOSSES.create_from("ohem", params).label_smoothing == 0.1
    assert LOSSES.create_from("focal", params).gamma == 3.0
    mc = LOSSES.create_from("mc", [params, {"num_classes": 4}])
    assert (mc.num_classes, mc.mu, mc.lam) == (4, 2.0, 5.0)
    for name in list_losses():
        assert isinstance(LOSSES.create_from(name, [params, {"num_classes": 4}]), nn.Module)

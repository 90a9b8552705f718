"""SAM, BatchNorm freezing, the optimizer registry and LRSchedule (values computed by hand)."""

import copy
import math

import pytest
import torch
from torch import nn

from fgvc_lib.optim import (
    OPTIMIZERS,
    SAM,
    SCHEDULERS,
    LRSchedule,
    bn_stats_frozen,
    create_optimizer,
    create_scheduler,
    disable_running_stats,
    enable_running_stats,
    list_optimizers,
    list_schedulers,
)

# ------------------------------------------------------------------------------------------------- SAM


def quad_loss(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * (w**2).sum()  # gradient = w


def make_sam(rho: float, adaptive: bool = False) -> tuple[nn.Parameter, SAM]:
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    return w, SAM([w], torch.optim.SGD, rho=rho, adaptive=adaptive, lr=0.1, momentum=0.0)


def test_sam_step_by_step():
    # g = [3, 4], ||g|| = 5, e = 0.05 * g / 5 = [0.03, 0.04]; update w - 0.1 * (w + e)
    w, opt = make_sam(0.05)
    quad_loss(w).backward()
    opt.first_step(zero_grad=True)
    torch.testing.assert_close(w.detach(), torch.tensor([3.03, 4.04], dtype=torch.float64))
    assert w.grad is None
    quad_loss(w).backward()
    opt.second_step(zero_grad=True)
    torch.testing.assert_close(
        w.detach(), torch.tensor([2.697, 3.596], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_sam_step_with_closure_and_factory():
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = create_optimizer("sam", [w], lr=0.1, momentum=0.0, rho=0.05)
    assert isinstance(opt, SAM) and isinstance(opt.base_optimizer, torch.optim.SGD)
    quad_loss(w).backward()

    def closure():
        loss = quad_loss(w)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(0.5 * (3.03**2 + 4.04**2))
    torch.testing.assert_close(
        w.detach(), torch.tensor([2.697, 3.596], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_adaptive_sam():
    # | w | * g = [9, 16], norm sqrt(337); e = 0.5 * w^2 * g / sqrt(337) = [0.735392, 1.743151]
    w, opt = make_sam(0.5, adaptive=True)
    quad_loss(w).backward()
    opt.first_step(zero_grad=True)
    torch.testing.assert_close(
        w.detach(), torch.tensor([3.735392, 5.743151], dtype=torch.float64), atol=1e-6, rtol=0
    )
    quad_loss(w).backward()
    opt.second_step()
    torch.testing.assert_close(
        w.detach(), torch.tensor([2.626461, 3.425685], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_sam_global_norm_spans_all_params():
    a = nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([4.0], dtype=torch.float64))
    c = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))  # no gradient: untouched
    opt = SAM([{"params": [a]}, {"params": [b, c]}], torch.optim.SGD, rho=0.05, lr=0.1)
    (0.5 * (a**2 + b**2)).sum().backward()
    opt.first_step()
    assert (a.item(), b.item(), c.item()) == pytest.approx((3.03, 4.04, 1.0))


def test_sam_errors():
    with pytest.raises(ValueError, match="rho"):
        make_sam(-0.1)
    w, opt = make_sam(0.05)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="first_step"):
        opt.second_step()
    quad_loss(w).backward()
    opt.first_step()
    with pytest.raises(RuntimeError, match="second_step"):
        opt.first_step()


def test_sam_shares_param_groups_with_base():
    w, opt = make_sam(0.05)
    assert opt.param_groups is opt.base_optimizer.param_groups
    opt.param_groups[0]["lr"] = 0.5
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.5


def _sam_train(opt: SAM, w: nn.Parameter, steps: int) -> None:
    for _ in range(steps):
        quad_loss(w).backward()
        opt.first_step(zero_grad=True)
        quad_loss(w).backward()
        opt.second_step(zero_grad=True)


def test_sam_state_dict_round_trip():
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = create_optimizer("sam", [w], lr=0.1, momentum=0.9, rho=0.05)
    _sam_train(opt, w, 2)
    state = copy.deepcopy(opt.state_dict())
    assert "momentum_buffer" in next(iter(state["state"].values()))

    w2 = nn.Parameter(w.detach().clone())
    opt2 = create_optimizer("sam", [w2], lr=0.3, momentum=0.9, rho=0.05)
    opt2.load_state_dict(state)
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.param_groups[0]["lr"] == 0.1
    _sam_train(opt, w, 1)
    _sam_train(opt2, w2, 1)
    torch.testing.assert_close(w2.detach(), w.detach())


# --------------------------------------------------------------------------------------------- BatchNorm


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


@pytest.mark.parametrize("freeze", [True, False])
def test_bn_running_stats_from_first_pass_only(freeze):
    model = _bn_model()
    reference = copy.deepcopy(model)
    x1, x2 = torch.randn(8, 3), torch.randn(8, 3) * 5 + 2
    reference(x1)  # one training-mode forward on the first-pass batch

    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    model(x1).pow(2).mean().backward()
    opt.first_step(zero_grad=True)
    if freeze:
        with bn_stats_frozen(model):
            model(x2).pow(2).mean().backward()
    else:
        model(x2).pow(2).mean().backward()
    opt.second_step(zero_grad=True)

    bn, ref_bn = model[1], reference[1]
    same = torch.equal(bn.running_mean, ref_bn.running_mean) and torch.equal(
        bn.running_var, ref_bn.running_var
    )
    assert same is freeze
    if freeze:
        assert bn.momentum == 0.1 and bn.num_batches_tracked.item() == 1


def test_disable_enable_restores_cumulative_momentum():
    bn = nn.BatchNorm1d(2, momentum=None)
    bn(torch.randn(4, 2))
    mean = bn.running_mean.clone()
    disable_running_stats(bn)
    assert bn.momentum == 0.0
    bn(torch.randn(4, 2) + 3)
    torch.testing.assert_close(bn.running_mean, mean, rtol=0, atol=0)
    enable_running_stats(bn)
    assert bn.momentum is None and bn.num_batches_tracked.item() == 1


# --------------------------------------------------------------------------------------------- registry


def test_optimizer_registry():
    assert set(list_optimizers()) >= {"sgd", "adam", "adamw", "sam", "sam_adamw"}
    p = [nn.Parameter(torch.zeros(2))]
    sgd = create_optimizer("sgd", p, lr=0.1, weight_decay=1e-4, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD)
    assert (
        sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 1e-4
    )
    adam = create_optimizer("adam", p, lr=1e-3, betas=(0.8, 0.99), eps=1e-6)
    assert (
        type(adam) is torch.optim.Adam
        and adam.defaults["betas"] == (0.8, 0.99)
        and adam.defaults["eps"] == 1e-6
    )
    assert type(create_optimizer("adamw", p, lr=1e-3, weight_decay=0.05)) is torch.optim.AdamW
    sam_adamw = create_optimizer("sam_adamw", p, lr=1e-3, rho=0.1)
    assert isinstance(sam_adamw.base_optimizer, torch.optim.AdamW) and sam_adamw.param_groups[0]["rho"] == 0.1
    with pytest.raises(
        ValueError, match=r"Unknown optimizer 'adamm', expected one of \(.*\); did you mean 'adam"
    ):
        create_optimizer("adamm", p, lr=0.1)


def test_create_optimizer_rejects_options_it_does_not_take():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(TypeError, match=r"Unknown argument\(s\) 'rho' for optimizer 'sgd'"):
        create_optimizer("sgd", p, lr=0.1, rho=0.05)
    with pytest.raises(TypeError, match="'momentum' for optimizer 'adam'"):
        create_optimizer("adam", p, lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match="optimizer 'adamw': missing a required argument: 'lr'"):
        create_optimizer("adamw", p)


def test_optimizers_and_schedules_from_parameters():
    """Factory keywords are the experiment parameter names: create_from needs no per-name branching."""
    params = {"lr": 0.2, "momentum": 0.5, "weight_decay": 1e-3, "rho": 0.1, "epochs": 4, "t0": 2,
              "lr_decay": 0.5, "lr_period": 1.0, "lr_steps": [1], "lr_gamma": 0.5, "lr_min": 1e-3, "seed": 0}
    w = [nn.Parameter(torch.zeros(2))]
    sgd = OPTIMIZERS.create_from("sgd", params, w)
    assert sgd.defaults["momentum"] == 0.5 and sgd.defaults["weight_decay"] == 1e-3
    adam = OPTIMIZERS.create_from("adam", params, w)
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.2
    sam = OPTIMIZERS.create_from("sam", params, w)
    assert sam.param_groups[0]["rho"] == 0.1 and sam.param_groups[0]["momentum"] == 0.5
    exp = SCHEDULERS.create_from("exponential", params, make_opt(0.1), steps_per_epoch=2)
    exp.optimizer.step()
    exp.step_epoch()
    assert exp.lr == pytest.approx(0.05)
    step = SCHEDULERS.create_from("multistep", params, make_opt(0.1), steps_per_epoch=2)
    step.optimizer.step()
    step.step_epoch()
    assert step.lr == pytest.approx(0.05)
    assert SCHEDULERS.create_from("cosine_restarts", params, make_opt(), steps_per_epoch=2).scheduler.T_0 == 2
    cycle = SCHEDULERS.create_from("onecycle", params, make_opt(0.1), steps_per_epoch=2)
    assert cycle.scheduler.optimizer.param_groups[0]["min_lr"] == pytest.approx(1e-3)
    for name in list_schedulers():
        assert SCHEDULERS.create_from(name, params, make_opt(), steps_per_epoch=2).name == name
    with pytest.raises(ValueError, match="not both"):
        create_scheduler("onecycle", make_opt(), epochs=2, steps_per_epoch=2, lr_min=1e-4, final_div_factor=10.0)
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        create_scheduler("cosine", make_opt(), epochs=2, steps_per_epoch=0)


# ------------------------------------------------------------------------------------------ LR schedules


def make_opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def run_batches(sched: LRSchedule, opt: torch.optim.Optimizer, n: int) -> list[float]:
    """LR used by each of ``n`` optimizer steps (recorded before the step)."""
    lrs = []
    for _ in range(n):
        lrs.append(sched.lr)
        opt.step()
        sched.step_batch()
    return lrs


def test_plateau_patience_and_cooldown():
    opt = make_opt(1.0)
    sched = create_scheduler("plateau", opt, epochs=20, steps_per_epoch=1)
    lrs = []
    for loss in [1.0] * 12:
        opt.step()
        sched.step_epoch(val_loss=loss)
        lrs.append(sched.lr)
    # epoch 0 sets best; epochs 1..5 are 5 = patience + 1 bad epochs -> halve after epoch 5;
    # epoch 6 is the cooldown epoch, then 5 more bad epochs (7..11) -> halve after epoch 11
    assert lrs == [1.0] * 5 + [0.5] * 6 + [0.25]

    opt = make_opt(1.0)
    sched = create_scheduler("plateau", opt, epochs=20, steps_per_epoch=1, cooldown=0)
    for _ in range(11):
        opt.step()
        sched.step_epoch(1.0)
    assert sched.lr == 0.25  # without cooldown the second halving comes one epoch earlier (after epoch 10)


def test_plateau_needs_val_loss():
    opt = make_opt()
    sched = create_scheduler("plateau", opt, epochs=5, steps_per_epoch=1)
    with pytest.raises(ValueError, match="val_loss"):
        sched.step_epoch()


def test_exponential():
    opt = make_opt(0.1)
    sched = create_scheduler("exponential", opt, epochs=10, steps_per_epoch=4)
    lrs = []
    for _ in range(7):
        lrs.append(sched.lr)
        run_batches(sched, opt, 4)  # batch steps do not move an epoch schedule
        sched.step_epoch()
    assert [lrs[0], lrs[3], lrs[6]] == pytest.approx([0.1, 0.08, 0.064])
    assert lrs[1] == pytest.approx(0.1 * 0.8 ** (1 / 3))


def test_onecycle_values():
    opt = make_opt(0.1)
    sched = create_scheduler("onecycle", opt, epochs=10, steps_per_epoch=10)
    lr, mom = [], []
    for i in range(100):
        lr.append(sched.lr)
        mom.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step_batch()
        if i % 10 == 9:
            sched.step_epoch()  # ignored by a batch schedule
    assert (lr[0], mom[0]) == pytest.approx((0.004, 0.95))
    assert (lr[29], mom[29]) == pytest.approx((0.1, 0.85))
    assert (lr[50], mom[50]) == pytest.approx((0.079389, 0.870611), abs=1e-6)
    assert lr[99] == pytest.approx(0.1 / 25 / 1e4)
    run_batches(sched, opt, 3)  # stepping past total_steps holds the final LR instead of raising
    assert sched.lr == pytest.approx(4e-7)


def test_cosine_restarts_returns_to_lr0():
    opt = make_opt(0.1)
    sched = create_scheduler("cosine_restarts", opt, epochs=8, steps_per_epoch=4)  # t0 = 8 // 4 = 2 epochs
    lrs = []
    for _ in range(3):
        lrs += run_batches(sched, opt, 4)
        sched.step_epoch()
    want = [0.05 * (1 + math.cos(math.pi * ((i / 4) % 2) / 2)) for i in range(12)]
    assert lrs == pytest.approx(want)
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.05) and lrs[8] == pytest.approx(0.1)

    opt = make_opt(0.1)
    sched = create_scheduler("cosine_restarts", opt, epochs=8, steps_per_epoch=2, t0=1)
    assert run_batches(sched, opt, 3) == pytest.approx([0.1, 0.05, 0.1])


def test_cosine_multistep_none():
    opt = make_opt(0.1)
    sched = create_scheduler("cosine", opt, epochs=4, steps_per_epoch=3)
    lrs = []
    for _ in range(4):
        sched.step_batch()
        opt.step()
        sched.step_epoch()
        lrs.append(sched.lr)
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(1, 5)], abs=1e-12)

    opt = make_opt(0.1)
    sched = create_scheduler("multistep", opt, epochs=6, steps_per_epoch=1, lr_steps=[2, 4])
    lrs = []
    for _ in range(5):
        lrs.append(sched.lr)
        opt.step()
        sched.step_epoch()
    # lr_steps are 1-based epochs in which the new LR applies (BBN's LR_STEP): epoch 2 and epoch 4
    assert lrs == pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(TypeError, match="'multistep': missing a required argument: 'lr_steps'"):
        create_scheduler("multistep", make_opt(), epochs=6, steps_per_epoch=1)
    opt = make_opt(0.1)
    sched = create_scheduler("multistep", opt, epochs=3, steps_per_epoch=1, lr_steps=[])  # no step: constant
    for _ in range(3):
        opt.step()
        sched.step_epoch()
    assert sched.lr == 0.1

    opt = make_opt(0.1)
    sched = create_scheduler("none", opt, epochs=3, steps_per_epoch=2)
    run_batches(sched, opt, 3)
    sched.step_epoch(val_loss=1.0)
    assert sched.lr == 0.1 and sched.name == "none"


def test_scheduler_registry_errors():
    assert set(list_schedulers()) >= {
        "none",
        "plateau",
        "cosine_restarts",
        "cosine",
        "exponential",
        "onecycle",
        "multistep",
    }
    with pytest.raises(ValueError, match=r"Unknown LR scheduler 'cosin', expected one of \(.*onecycle.*\)"):
        create_scheduler("cosin", make_opt(), epochs=3, steps_per_epoch=1)
    with pytest.raises(TypeError, match="'patiance'"):
        create_scheduler("plateau", make_opt(), epochs=3, steps_per_epoch=1, patiance=2)
    with pytest.raises(TypeError, match="'t0'"):
        create_scheduler("cosine", make_opt(), epochs=3, steps_per_epoch=1, t0=2)


CASES = [
    ("cosine_restarts", {"t0": 2}),
    ("onecycle", {}),
    ("exponential", {}),
    ("cosine", {}),
    ("multistep", {"lr_steps": [1, 3]}),
    ("plateau", {"patience": 0, "cooldown": 0}),
]


def _trajectory(sched: LRSchedule, opt: torch.optim.Optimizer, epochs: range) -> list[float]:
    lrs = []
    for e in epochs:
        lrs += run_batches(sched, opt, 3)
        sched.step_epoch(val_loss=1.0 + (e % 2))
    return lrs


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_state_dict_round_trip(name, kw):
    opt = make_opt(0.1)
    sched = create_scheduler(name, opt, epochs=6, steps_per_epoch=3, **kw)
    want = _trajectory(sched, opt, range(6))

    opt = make_opt(0.1)
    sched = create_scheduler(name, opt, epochs=6, steps_per_epoch=3, **kw)
    got = _trajectory(sched, opt, range(2))
    got += run_batches(sched, opt, 1)  # save mid-epoch
    saved = copy.deepcopy((opt.state_dict(), sched.state_dict()))

    opt = make_opt(0.1)
    sched = create_scheduler(name, opt, epochs=6, steps_per_epoch=3, **kw)
    opt.load_state_dict(saved[0])
    sched.load_state_dict(saved[1])
    got += run_batches(sched, opt, 2)
    sched.step_epoch(val_loss=1.0)
    got += _trajectory(sched, opt, range(3, 6))
    assert got == pytest.approx(want)
    assert len(set(want)) > 1


def test_load_state_dict_of_other_schedule_fails():
    sd = create_scheduler("cosine", make_opt(), epochs=3, steps_per_epoch=1).state_dict()
    with pytest.raises(ValueError, match="cosine"):
        create_scheduler("exponential", make_opt(), epochs=3, steps_per_epoch=1).load_state_dict(sd)


def test_scheduler_drives_sam():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = create_optimizer("sam", [w], lr=0.1, rho=0.05)
    sched = create_scheduler("onecycle", opt, epochs=2, steps_per_epoch=5)
    assert sched.optimizer is opt.base_optimizer
    assert opt.param_groups[0]["lr"] == pytest.approx(0.004)
    for _ in range(3):
        _sam_train(opt, w, 1)
        sched.step_batch()
    assert opt.param_groups[0]["lr"] == sched.lr == opt.base_optimizer.param_groups[0]["lr"]
    assert sched.lr > 0.004

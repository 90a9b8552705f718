"""The Registry helper behind every name -> factory table, and the tables built on it."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torchvision import transforms as T

from fgvc_lib.config import BirdParams, Cifar100Params, InatBBNParams, MultilabelParams
from fgvc_lib.data.batch_transforms import build_batch_transform, list_batch_presets
from fgvc_lib.data.transforms import PRESETS, build_transform, list_presets, preset_options, register_preset
from fgvc_lib.losses import LOSSES
from fgvc_lib.losses.ohem import OHEM_SCHEDULES
from fgvc_lib.optim import OPTIMIZERS, SCHEDULERS, LRSchedule
from fgvc_lib.registry import Registry, options_from


def _scale(x: float, *, factor: float = 2.0, offset: float = 0.0) -> float:
    return x * factor + offset


def _fresh() -> Registry:
    reg: Registry = Registry("widget")
    reg.register("scale", _scale)
    return reg


# ----------------------------------------------------------------------------------------- Registry


def test_duplicate_name_is_an_error_unless_replace():
    reg = _fresh()
    with pytest.raises(ValueError, match=r"widget 'scale' is already registered .*replace=True"):
        reg.register("scale", lambda x: x)
    reg.register("scale", _scale)  # the same object again: harmless
    reg.register("scale", lambda x: -x, replace=True)
    assert reg.create("scale", 3.0) == -3.0

    @reg.register("double")
    def double(x: float) -> float:
        return 2 * x

    assert reg.names() == ["double", "scale"] and "double" in reg and len(reg) == 2 and double(1) == 2
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", _scale)


def test_unknown_name_lists_the_names_and_the_closest():
    reg = _fresh()
    with pytest.raises(ValueError, match=r"Unknown widget 'scal', expected one of \(scale\); did you mean 'scale'\?"):
        reg.get("scal")
    with pytest.raises(ValueError) as exc:
        reg.create("zzzz", 1.0)
    assert "did you mean" not in str(exc.value)


def test_create_rejects_options_the_factory_does_not_take():
    reg = _fresh()
    assert reg.create("scale", 1.0, factor=3.0) == 3.0
    accepted = r"Unknown argument\(s\) 'facter' for widget 'scale'; accepted: \(x, factor, offset\)"
    with pytest.raises(TypeError, match=accepted):
        reg.create("scale", 1.0, facter=3.0)
    with pytest.raises(TypeError, match="widget 'scale': missing a required argument: 'x'"):
        reg.create("scale")
    with pytest.raises(TypeError, match="widget 'scale': too many positional arguments"):
        reg.create("scale", 1.0, 2.0)
    assert reg.accepts("scale") == ["x", "factor", "offset"]
    reg.register("anything", lambda **kw: kw)
    assert reg.accepts("anything") is None and reg.create("anything", a=1) == {"a": 1}
    reg.register("named", lambda x, *, name="": f"{name}{x}")  # an option called 'name' is fine
    assert reg.create("named", 1, name="n") == "n1" and reg.create_from("named", {"name": "m"}, 2) == "m2"


@dataclass
class _Params:
    factor: float = 5.0
    offset: float = 1.0
    lr: float = 0.1  # not an option of the factory: not passed


def test_create_from_picks_the_fields_the_factory_takes():
    reg = _fresh()
    assert reg.options("scale", _Params()) == {"factor": 5.0, "offset": 1.0}
    assert reg.create_from("scale", _Params(), 2.0) == 11.0
    assert reg.create_from("scale", {"factor": 3.0, "epochs": 9}, 2.0) == 6.0  # a mapping works too
    assert reg.create_from("scale", _Params(), 2.0, offset=0.0) == 10.0  # explicit keywords win
    assert reg.create_from("scale", [_Params(), {"offset": -1.0, "other": 1}], 2.0) == 9.0  # later sources win
    assert reg.create_from("scale", {"gain": 4.0}, 1.0, rename={"gain": "factor"}) == 4.0
    with pytest.raises(TypeError, match="'gain'"):  # explicit keywords are still checked
        reg.create_from("scale", _Params(), 1.0, gain=2.0)
    assert options_from({"a": 1, "b": 2}, lambda **kw: kw, rename={"a": "alpha"}) == {"alpha": 1}
    # a field named like an argument filled positionally is not passed again (BirdParams.optimizer is a name)
    assert reg.create_from("scale", {"x": "not me", "factor": 2.0}, 4.0) == 8.0


# ------------------------------------------------------------------------------------ presets


def _per_image(img_size, mean, std, strength: float = 1.0):
    return T.Compose([T.Resize((img_size, img_size)), T.ToTensor()])


def _batched(x, size, generator, /, *, strength: float = 1.0):
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear") * 0 + strength / 10


@pytest.fixture
def clean_presets(monkeypatch):
    monkeypatch.setattr(PRESETS, "_items", dict(PRESETS._items))


def test_register_preset_registers_both_forms(clean_presets):
    assert register_preset("_test_both", _per_image, _batched) is _per_image
    assert "_test_both" in list_presets() and "_test_both" in list_batch_presets()
    assert callable(build_transform("_test_both", 8, train=True, strength=2.0))
    out = build_batch_transform("_test_both", 4, train=True, mean=[0, 0, 0], std=[1, 1, 1], strength=2.0)(
        torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    )
    assert out.shape == (2, 3, 4, 4) and torch.allclose(out, torch.full_like(out, 0.2))
    with pytest.raises(ValueError, match="'_test_both' is already registered"):
        register_preset("_test_both", _per_image, _batched)
    register_preset("_test_both", _per_image, replace=True)  # now without a batched form
    assert "_test_both" not in list_batch_presets()


def test_preset_without_batched_form_fails_clearly_with_batch_augment(clean_presets):
    @register_preset("_test_pil_only")
    def pil_only(img_size, mean, std):
        return T.Compose([T.Resize((img_size, img_size)), T.ToTensor()])

    assert callable(build_transform("_test_pil_only", 8, train=True))
    with pytest.raises(ValueError, match="preset '_test_pil_only' has no batched form.*batch_augment"):
        build_batch_transform("_test_pil_only", 8, train=True)
    with pytest.raises(TypeError, match="'strength'"):
        build_transform("_test_pil_only", 8, train=False, strength=1.0)


def test_preset_forms_must_take_the_same_options(clean_presets):
    def no_options(x, size, generator, /):
        return x

    with pytest.raises(ValueError, match=r"'_test_mismatch': the per-image form takes options \(strength\)"):
        register_preset("_test_mismatch", _per_image, no_options)
    assert "_test_mismatch" not in list_presets()


def test_built_in_presets_have_both_forms():
    assert list_batch_presets() == list_presets() == ["bird", "cifar100", "inat", "light", "multilabel", "none"]


def test_preset_options_from_parameters():
    p = Cifar100Params(noise_std=0.1, noise_p=0.25)
    assert preset_options("cifar100", p) == {"noise_std": 0.1, "noise_p": 0.25}
    assert preset_options("light", p) == {} and preset_options("bird", BirdParams()) == {}  # img_size is positional


# -------------------------------------------------------------- factories named after the parameters


def _choices(params_class, name: str) -> tuple[str, ...]:
    return typing.get_args(params_class.field_types()[name])


@pytest.mark.parametrize("params_class", [BirdParams, Cifar100Params, InatBBNParams, MultilabelParams])
def test_every_choice_builds_from_the_experiment_parameters(params_class):
    """Each notebook's optimizer / scheduler / loss choices build with create_from, no branching on names."""
    p = params_class()
    model = nn.Linear(3, 4)
    for name in _choices(params_class, "optimizer"):
        optimizer = OPTIMIZERS.create_from(name, p, model.parameters())
        assert optimizer.defaults["lr"] == p.lr and optimizer.defaults["weight_decay"] == p.weight_decay
        if "momentum" in optimizer.defaults:
            assert optimizer.defaults["momentum"] == p.momentum
    schedules = _choices(params_class, "scheduler") if "scheduler" in params_class.field_types() else ("multistep",)
    for name in schedules:
        optimizer = OPTIMIZERS.create_from(p.optimizer, p, model.parameters())
        assert isinstance(SCHEDULERS.create_from(name, p, optimizer, steps_per_epoch=3), LRSchedule)
    losses = _choices(params_class, "loss") if "loss" in params_class.field_types() else ("ce", "complement")
    for name in losses:
        assert isinstance(LOSSES.create_from(name, [p, {"num_classes": 4}]), nn.Module)


def test_parameter_values_reach_the_factories():
    bird = BirdParams(optimizer="sam", rho=0.2, scheduler="cosine_restarts", t0=3, loss="ce", label_smoothing=0.1)
    sam = OPTIMIZERS.create_from(bird.optimizer, bird, nn.Linear(2, 2).parameters())
    assert sam.param_groups[0]["rho"] == 0.2
    assert SCHEDULERS.create_from(bird.scheduler, bird, sam, steps_per_epoch=2).scheduler.T_0 == 3
    assert LOSSES.create_from(bird.loss, bird).label_smoothing == 0.1
    assert OHEM_SCHEDULES.create_from("none", BirdParams(ohem_ratio=0.6))(5) == 0.6

    cifar = Cifar100Params(loss="mc", mc_mu=2.5, mc_lambda=7.0, lr_decay=0.5, lr_period=1.0)
    mc = LOSSES.create_from(cifar.loss, [cifar, {"num_classes": 4}])
    assert (mc.mu, mc.lam) == (2.5, 7.0)
    assert LOSSES.create_from("focal", Cifar100Params(gamma=1.5)).gamma == 1.5
    opt = OPTIMIZERS.create_from(cifar.optimizer, cifar, nn.Linear(2, 2).parameters())
    sched = SCHEDULERS.create_from("exponential", cifar, opt, steps_per_epoch=2)
    opt.step()
    sched.step_epoch()
    assert sched.lr == pytest.approx(cifar.lr * 0.5)

    inat = InatBBNParams(lr_steps=[1], lr_gamma=0.5)
    opt = OPTIMIZERS.create_from(inat.optimizer, inat, nn.Linear(2, 2).parameters())
    sched = SCHEDULERS.create_from("multistep", inat, opt, steps_per_epoch=2)
    opt.step()
    sched.step_epoch()
    assert sched.lr == pytest.approx(inat.lr * 0.5)

    ml = MultilabelParams(lr=0.01, lr_min=1e-5)
    opt = OPTIMIZERS.create_from(ml.optimizer, ml, nn.Linear(2, 2).parameters())
    sched = SCHEDULERS.create_from(ml.scheduler, ml, opt, steps_per_epoch=2)
    assert opt.param_groups[0]["min_lr"] == pytest.approx(1e-5)
    assert sched.name == "onecycle"

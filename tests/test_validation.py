"""Validation before the kernel: every mistake that needs no data is one line naming where the value was
given (``-p key`` or the file), the value and what is expected, from ``fgvc run`` / ``fgvc train`` /
``fgvc grid`` (``--dry-run`` too) before any kernel starts or run folder exists, and from the parameter
classes themselves (what the notebooks call, so papermill users get the same checks)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml

from fgvc_lib import execution
from fgvc_lib import grid as g
from fgvc_lib.cli import main
from fgvc_lib.config import (
    BirdParams,
    ExperimentParams,
    ParameterError,
    check_command_line,
    check_device,
    params_class,
    read_yaml_file,
)
from fgvc_lib.execution import load_values

HAS_CUDA = torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Outputs in a temp folder, and any attempt to start a notebook fails the test."""
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("FGVC_OUTPUTS", str(outputs))

    def kernel(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a kernel was started")

    monkeypatch.setattr(execution, "execute_notebook", kernel)
    return outputs


def _fgvc(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run the CLI in-process; it must fail with exit status 2 and ONE line on stderr, which is returned."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    print(err)
    return err


# --------------------------------------------------------------------------------------- fgvc run / train
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lr", "nan", "-p lr: expected a finite number > 0, got nan"),
        ("lr", "inf", "-p lr: expected a finite number > 0, got inf"),
        ("lr", "0", "-p lr: expected a value > 0, got 0.0"),
        ("seed", "-1", "-p seed: expected a value >= 0, got -1"),
        ("seed", str(2**32), "-p seed: expected a value <= 4294967295, got 4294967296"),
        ("momentum", "nan", "-p momentum: expected a finite number >= 0, got nan"),
        ("model", "resnet5", "-p model: Unknown model 'resnet5', expected a timm name"),
        ("model_b", "resnest50", "-p model_b: Unknown model 'resnest50'"),
        ("model", "torchvision:resnet5", "-p model: Unknown model 'torchvision:resnet5'"),
        ("augment", "brid", "-p augment: unknown augmentation preset 'brid'; did you mean 'bird'?"),
        ("pointing_part", "left_wing", "-p pointing_part: unknown part 'left_wing'; did you mean 'left wing'?"),
        ("loss", "ohme", "-p loss: expected one of 'ce', 'ohem', got 'ohme' (str); did you mean 'ohem'?"),
        ("scheduler", "cosin", "-p scheduler: expected one of"),
        ("optimizer", "adamm", "-p optimizer: expected one of"),
        ("cam_method", "gradcam+", "-p cam_method: expected one of"),
        ("device", "gpu", "-p device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("epcohs", "3", "-p epcohs: unknown parameter 'epcohs' for notebook 'bird'; did you mean 'epochs'?"),
    ],
)
@pytest.mark.parametrize("command", ["run", "train"])
def test_command_line_values_are_refused_before_any_kernel(
    no_kernel: Path, capsys: pytest.CaptureFixture, command: str, key: str, value: str, expected: str
) -> None:
    err = _fgvc(capsys, command, "bird", "-p", key, value)
    assert err.startswith(f"fgvc {command}: ParameterError: {expected}")
    assert not no_kernel.exists()  # no run folder, not even outputs/


def test_a_pointing_part_typo_names_the_closest_part_and_all_parts() -> None:
    with pytest.raises(ParameterError) as exc:
        BirdParams.from_dict({"pointing_part": "left_wing"})
    msg = str(exc.value)
    assert "parameter 'pointing_part': unknown part 'left_wing'; did you mean 'left wing'?" in msg
    assert "expected one of the CUB-200-2011 parts: back, beak," in msg
    assert BirdParams.from_dict({"pointing_part": "right wing"}).pointing_part == "right wing"
    assert BirdParams.from_dict({"pointing_part": ""}).pointing_part == ""  # no pointing game


def test_parts_come_from_the_data_sets_parts_file_when_it_is_there(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "parts.txt").write_text("1 head\n2 left wing tip\n", encoding="utf-8")
    assert BirdParams.from_dict({"data_root": str(tmp_path), "pointing_part": "left wing tip"})
    with pytest.raises(ParameterError) as exc:
        BirdParams.from_dict({"data_root": str(tmp_path), "pointing_part": "left wing"})
    assert f"expected one of {tmp_path / 'parts' / 'parts.txt'}: head, left wing tip" in str(exc.value)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_device_this_machine_lacks_is_refused_naming_what_is_available(
    no_kernel: Path, capsys: pytest.CaptureFixture, device: str
) -> None:
    err = _fgvc(capsys, "run", "bird", "-p", "device", device)
    assert f"-p device: '{device}' asked for, but this machine has no CUDA device (available: cpu" in err
    assert not no_kernel.exists()
    check_device("cpu")
    check_device("auto")


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_a_cuda_index_beyond_the_visible_devices_is_refused() -> None:
    n = torch.cuda.device_count()
    check_device("cuda")
    check_device(f"cuda:{n - 1}")
    with pytest.raises(ParameterError, match=rf"'cuda:{n}' asked for, but this machine has {n} CUDA device"):
        check_device(f"cuda:{n}")


def test_values_from_a_parameter_file_name_the_file(
    tmp_path: Path, no_kernel: Path, capsys: pytest.CaptureFixture
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 2\nlr: 0.1\n", encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nseed: -3\n", encoding="utf-8")
    err = _fgvc(capsys, "run", "bird", "-f", str(good), "-f", str(bad))
    assert f"{bad}: parameter 'seed': expected a value >= 0, got -3" in err
    err = _fgvc(capsys, "run", "bird", "-f", str(bad), "-p", "seed", "-4")  # -p wins, and is named
    assert "-p seed: expected a value >= 0, got -4" in err
    params = check_command_line("bird", [str(good)], [["seed", "5"]])
    assert (params.epochs, params.lr, params.seed) == (2, 0.1, 5)


# ------------------------------------------------------------------------------------------ YAML syntax
@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("epochs: 2\nlr: [0.1\nseed: 1\n", "3:5", "expected ',' or ']', but got ':'"),
        ("epochs: 2\n  lr: 3\n", "2:5", "mapping values are not allowed here"),
        ("model: 'resnet18\n", "2:1", "found unexpected end of stream"),
        ("\tepochs: 2\n", "1:1", "found character '\\t' that cannot start any token"),
    ],
    ids=["flow-list", "indent", "quote", "tab"],
)
def test_yaml_syntax_errors_give_file_line_and_column(
    tmp_path: Path, no_kernel: Path, capsys: pytest.CaptureFixture, text: str, where: str, problem: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    expected = f"{path}:{where}: YAML syntax error: {problem}"
    for call in (read_yaml_file, lambda p: load_values([str(p)], None), BirdParams.from_yaml):
        with pytest.raises(ParameterError) as exc:
            call(path)
        assert str(exc.value).startswith(expected), str(exc.value)
        assert "Traceback" not in str(exc.value) and "\n" not in str(exc.value)
    assert _fgvc(capsys, "run", "bird", "-f", str(path)).startswith(f"fgvc run: ParameterError: {expected}")
    assert _fgvc(capsys, "train", "bird", "-f", str(path)).startswith(f"fgvc train: ParameterError: {expected}")


def test_a_grid_file_with_a_yaml_syntax_error(tmp_path: Path, no_kernel: Path, capsys) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("notebook: bird\naxes:\n  seed: [0, 1\n", encoding="utf-8")
    err = _fgvc(capsys, "grid", str(path), "--dry-run")
    assert f"{path}:4:1: YAML syntax error: expected ',' or ']', but got '<stream end>'" in err


# -------------------------------------------------------------------------------------------------- grids
@pytest.mark.parametrize(
    ("axes", "expected"),
    [
        ({"model": ["resnet18", "resnet5"]}, "parameter 'model': Unknown model 'resnet5'"),
        ({"lr": [0.1, float("nan")]}, "parameter 'lr': expected a finite number > 0, got nan"),
        ({"seed": [0, -1]}, "parameter 'seed': expected a value >= 0, got -1"),
        ({"pointing_part": ["left_wing"]}, "unknown part 'left_wing'; did you mean 'left wing'?"),
        ({"augment": ["bird", "heavy"]}, "unknown augmentation preset 'heavy'"),
    ],
)
def test_grid_dry_run_checks_every_point(
    tmp_path: Path, no_kernel: Path, capsys: pytest.CaptureFixture, axes: dict, expected: str
) -> None:
    path = tmp_path / "bad_grid.yaml"
    path.write_text(yaml.safe_dump({"notebook": "bird", "base": {"epochs": 1}, "axes": axes}), encoding="utf-8")
    err = _fgvc(capsys, "grid", str(path), "--dry-run")
    assert f"{path}: run " in err and expected in err
    assert not no_kernel.exists()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_grid_device_is_checked_where_the_runs_execute(tmp_path: Path, no_kernel: Path, capsys) -> None:
    path = tmp_path / "cuda_grid.yaml"
    path.write_text(yaml.safe_dump({"notebook": "bird", "base": {"device": "cuda"}, "axes": {"seed": [0, 1]}}))
    err = _fgvc(capsys, "grid", str(path), "--dry-run")
    assert "parameter 'device': 'cuda' asked for, but this machine has no CUDA device" in err
    err = _fgvc(capsys, "grid", str(path), "--gpus", "none")
    assert "'cuda' asked for" in err and not no_kernel.exists()
    # SLURM jobs run elsewhere: the login node's devices say nothing
    assert main(["grid", str(path), "--dry-run", "--executor", "slurm"]) == 0


def test_every_shipped_grid_and_preset_still_validates() -> None:
    for path in sorted((ROOT / "parameters").glob("*.yaml")):
        if "notebook" not in (yaml.safe_load(path.read_text()) or {}):
            continue
        spec = g.load_grid(path)
        for preset in [None, *spec.presets]:
            assert g.validate_runs(spec, g.expand_grid(spec, preset)), (path.name, preset)


# ------------------------------------------------------------------------------- inside the notebook too
def test_the_notebooks_own_parameter_collection_validates_names() -> None:
    """``Params.from_namespace(globals())`` (the notebooks' first cell after the parameters): papermill's
    ``-p`` / ``-f`` values are checked there, before the experiment builds anything."""
    namespace = {**BirdParams().to_dict(), "pointing_part": "left_wing"}
    with pytest.raises(ParameterError, match="did you mean 'left wing'"):
        BirdParams.from_namespace(namespace)
    namespace = {**params_class("inat_bbn")().to_dict(), "alpha": "cumulativ", "seed": -2}
    with pytest.raises(ParameterError, match="parameter 'seed': expected a value >= 0, got -2"):
        params_class("inat_bbn").from_namespace(namespace)
    namespace["seed"] = 0
    with pytest.raises(ParameterError, match="'alpha': expected 'cumulative' or a number in \\[0, 1\\]"):
        params_class("inat_bbn").from_namespace(namespace)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_the_experiment_refuses_a_missing_device_before_its_run_folder(tmp_path: Path) -> None:
    from fgvc_lib.experiments.bird import BirdExperiment

    run = tmp_path / "run"
    with pytest.raises(ParameterError, match="'cuda' asked for"):
        BirdExperiment({"device": "cuda", "run_dir": str(run)})
    assert not run.exists()


# -------------------------------------------------------------------------------- names and registries
def _registries() -> dict[str, Any]:
    from fgvc_lib.cam import CAM_METHODS
    from fgvc_lib.data.samplers import SAMPLERS
    from fgvc_lib.losses import LOSSES
    from fgvc_lib.losses.ohem import OHEM_SCHEDULES
    from fgvc_lib.optim import OPTIMIZERS, SCHEDULERS
    from fgvc_lib.steps import STRATEGIES

    return {
        "loss": LOSSES,
        "optimizer": OPTIMIZERS,
        "scheduler": SCHEDULERS,
        "ohem_schedule": OHEM_SCHEDULES,
        "sampler": SAMPLERS,
        "cam_method": CAM_METHODS,
        "method": [*STRATEGIES, "plain", "cot"],
    }


@pytest.mark.parametrize("notebook", ["bird", "cifar100", "inat_bbn", "multilabel"])
def test_every_choice_a_parameter_offers_is_registered(notebook: str) -> None:
    """Choice parameters are checked by their type; the choices must exist where they are looked up."""
    cls = params_class(notebook)
    registries = _registries()
    for name, tp in cls.field_types().items():
        if typing.get_origin(tp) is typing.Literal and name in registries:
            missing = [c for c in typing.get_args(tp) if c not in registries[name]]
            assert not missing, f"{notebook}.{name}: {missing} not registered"
    defaults = cls()
    for name, kind in cls.NAME_FIELDS.items():  # every default name passes its own check
        assert kind in ("model", "preset", "part", "bbn alpha") and getattr(defaults, name) is not None


def test_a_notebook_can_opt_out_of_model_name_checks() -> None:
    from dataclasses import dataclass

    @dataclass
    class Custom(ExperimentParams):
        NOTEBOOK: ClassVar[str] = "custom"
        NAME_FIELDS: ClassVar[dict[str, str]] = {}

    assert Custom.from_dict({"model": "my-own-net"}).model == "my-own-net"
    with pytest.raises(ParameterError, match="Unknown model 'my-own-net'"):
        ExperimentParams.from_dict({"model": "my-own-net"})

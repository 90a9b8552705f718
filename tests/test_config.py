from pathlib import Path

import papermill as pm
import pytest
import yaml

from fgvc_lib.config import BirdParams, ParameterError, coerce, params_class

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_embedded_cpu_run():
    p = BirdParams()
    assert p.data_root == "" and p.model == "tf_efficientnet_lite0" and p.pretrained is True
    assert p.run_dir == "" and p.device == "auto" and p.resume is False


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        ("3", int, 3),
        (3.0, int, 3),
        ("1e-3", float, 0.001),
        (2, float, 2.0),
        ("true", bool, True),
        ("No", bool, False),
        (0, bool, False),
        (7, str, "7"),
        (None, str, ""),
        ("0.1, 0.2", list[float], [0.1, 0.2]),
    ],
)
def test_coerce_papermill_and_yaml_values(value, tp, expected):
    out = coerce("k", value, tp)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", "ten", "expected int"),
        ("epochs", 2.5, "expected int"),
        ("epochs", True, "expected int"),
        ("lr", "fast", "expected float"),
        ("pretrained", "maybe", "expected bool"),
        ("loss", "focal", "one of 'ce', 'ohem'"),
        ("model", ["a"], "expected str"),
    ],
)
def test_wrong_type_names_key_and_expected_type(key, value, expected):
    with pytest.raises(ParameterError) as err:
        BirdParams.from_dict({key: value})
    assert f"'{key}'" in str(err.value) and expected in str(err.value)


def test_unknown_key_suggests_closest():
    with pytest.raises(ParameterError, match=r"unknown parameter 'epoch' .*did you mean 'epochs'"):
        BirdParams.from_dict({"epoch": 3})


def test_choice_suggests_closest():
    with pytest.raises(ParameterError, match="did you mean 'ohem'"):
        BirdParams.from_dict({"loss": "ohme"})


def test_bounds_are_checked():
    with pytest.raises(ParameterError, match="'batch_size': expected a value >= 1"):
        BirdParams.from_dict({"batch_size": 0})
    with pytest.raises(ParameterError, match="'val_fraction': expected a value <= 0.9"):
        BirdParams.from_dict({"val_fraction": 0.95})


def test_from_yaml_names_the_file(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("epochs: 3\nlr: 1e-2\n")
    p = BirdParams.from_yaml(good, batch_size="8")
    assert (p.epochs, p.lr, p.batch_size) == (3, 0.01, 8)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: ten\n")
    with pytest.raises(ParameterError, match=r"bad.yaml: parameter 'epochs': expected int"):
        BirdParams.from_yaml(bad)
    with pytest.raises(ParameterError, match="does not exist"):
        BirdParams.from_yaml(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ParameterError, match="expected a mapping"):
        BirdParams.from_yaml(lst)


def test_from_namespace_rejects_unknown_variables():
    ns = {**BirdParams().to_dict(), "In": [], "_": None, "np": yaml, "epcohs": 3}
    with pytest.raises(ParameterError, match="unknown parameter 'epcohs'.*did you mean 'epochs'"):
        BirdParams.from_namespace(ns)
    ns.pop("epcohs")
    assert BirdParams.from_namespace(ns) == BirdParams()
    ns.pop("lr")
    with pytest.raises(ParameterError, match="does not define: lr"):
        BirdParams.from_namespace(ns)


def test_replace_revalidates():
    p = BirdParams().replace(epochs="4")
    assert p.epochs == 4
    with pytest.raises(ParameterError):
        p.replace(epochs=-1)


def test_unknown_notebook():
    with pytest.raises(ParameterError, match="unknown notebook 'brid'"):
        params_class("brid")


@pytest.mark.parametrize("notebook", ["bird", "cifar100", "inat_bbn", "multilabel"])
def test_notebook_parameters_cell_matches_dataclass(notebook):
    """The notebook's tagged parameters cell documents exactly the dataclass fields and defaults."""
    cls = params_class(notebook)
    inspected = pm.inspect_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"))
    defaults = cls().to_dict()
    assert set(inspected) == set(defaults)
    for name, info in inspected.items():
        assert yaml.safe_load(info["default"]) == defaults[name] or eval(info["default"]) == defaults[name], (
            name
        )
        assert info["help"], f"{name} has no help comment"


@pytest.mark.parametrize("path", sorted((ROOT / "parameters").glob("*.yaml")), ids=lambda p: p.name)
def test_every_parameter_file_validates(path):
    data = yaml.safe_load(path.read_text())
    if "notebook" in data:  # grid files are validated by the grid runner and its tests
        pytest.skip("grid file")
    from fgvc_lib.catalog import notebook_names

    notebook = max(
        (n for n in notebook_names() if path.stem == n or path.stem.startswith(n + "_")), key=len
    )
    params_class(notebook).from_dict(data)

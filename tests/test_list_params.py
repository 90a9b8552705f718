"""List parameters (``lr_steps``) written as ``15``, ``15,30`` or ``[15, 30]``: from ``fgvc -p`` (values read as
YAML scalars), from papermill's ``-p`` (papermill turns ``15`` into an int and passes the others on as strings
into the injected parameters cell; the notebook's ``from_namespace`` coerces them) and from Python."""

from __future__ import annotations

from pathlib import Path

import pytest
from papermill.cli import _resolve_type
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from fgvc_lib.config import InatBBNParams, ParameterError, check_command_line, coerce

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inat_bbn.ipynb"
WRITTEN = [("15", [15]), ("15,30", [15, 30]), ("[15, 30]", [15, 30]), ("[15]", [15]), (" 15 ; 30 ", [15, 30])]


@pytest.mark.parametrize(("value", "expected"), [
    (15, [15]), (15.0, [15]), ("15", [15]), ("15,30", [15, 30]), ("[15, 30]", [15, 30]), ([15, 30], [15, 30]),
    ((15, 30), [15, 30]), ("[]", []), ("", []),
])
def test_a_list_parameter_takes_one_number_a_comma_list_or_a_yaml_list(value, expected):
    assert coerce("lr_steps", value, list[int]) == expected


@pytest.mark.parametrize("value", [True, None, {"a": 1}, "[15", "[15, x]", 15.5, "fifteen"])
def test_what_is_not_a_list_of_ints_is_an_error_naming_the_parameter(value):
    with pytest.raises(ParameterError, match=r"parameter 'lr_steps"):
        coerce("lr_steps", value, list[int])


@pytest.mark.parametrize(("written", "expected"), WRITTEN)
def test_fgvc_dash_p_accepts_every_way_of_writing_a_list(written, expected):
    params = check_command_line("inat_bbn", None, [["lr_steps", written]], device=False)
    assert params.lr_steps == expected


@pytest.mark.parametrize(("written", "expected"), WRITTEN)
def test_papermill_dash_p_values_reach_the_notebook_and_coerce_there(written, expected):
    """What ``papermill notebooks/inat_bbn.ipynb out.ipynb -p lr_steps <written>`` executes, without a kernel:
    the parameters cell, papermill's injected cell (values typed as papermill's CLI types them), then the
    notebook's ``InatBBNParams.from_namespace(globals())``."""
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), {"lr_steps": _resolve_type(written)})
    namespace: dict = {}
    for tag in ("parameters", "injected-parameters"):
        cell = next(c for c in nb.cells if tag in c.metadata.get("tags", []))
        exec(cell.source, namespace)  # noqa: S102 - the notebook's own parameter cells
    assert InatBBNParams.from_namespace(namespace).lr_steps == expected

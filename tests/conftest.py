"""Shared test setup: headless matplotlib, outputs of library code kept inside pytest's tmp folders."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path_factory, monkeypatch):
    """Anything a test writes under outputs/ goes to a temp folder, never into the checkout."""
    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path_factory.getbasetemp() / "outputs"))

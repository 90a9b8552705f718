"""Shared test setup: headless matplotlib, outputs of library code kept inside pytest's tmp folders."""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path_factory, monkeypatch):
    """Anything a test writes under outputs/ goes to a temp folder, never into the checkout."""
    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path_factory.getbasetemp() / "outputs"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread per test: on a shared 2-core machine this is faster and steadier than two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

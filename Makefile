# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lab venv lint clean-outputs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## demo: generate the embedded data and run notebooks/bird.ipynb into outputs/runs/bird/<run-id>/
demo: $(STAMP)
	$(VENV)/bin/fgvc run bird -f parameters/bird.yaml

## test: the whole suite on the CPU (includes one papermill execution of each notebook)
test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest

## lab: JupyterLab on the notebooks (installs the [lab] extra once)
lab: $(STAMP)
	test -x $(VENV)/bin/jupyter-lab || $(PIP) -e '.[dev,lab]'
	$(VENV)/bin/jupyter lab notebooks/

lint: $(STAMP)
	$(VENV)/bin/ruff check fgvc_lib tests

clean-outputs:
	rm -rf outputs/runs

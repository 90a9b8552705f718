# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lab git-filter venv lint clean-outputs grid-demo bench gpu-wheels gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## demo: generate the embedded data and run the four notebooks into outputs/runs/<notebook>/<run-id>/, then one
## table of the four runs (headline metric, baseline, seconds, run folder)
demo: $(STAMP)
	$(VENV)/bin/fgvc run bird -f parameters/bird.yaml
	$(VENV)/bin/fgvc run cifar100 -f parameters/cifar100.yaml
	$(VENV)/bin/fgvc run inat_bbn -f parameters/inat_bbn.yaml
	$(VENV)/bin/fgvc run multilabel -f parameters/multilabel.yaml
	$(VENV)/bin/fgvc runs --latest

## grid-demo: the cifar100 report's Table 1 (ten runs) on the embedded data, CPU preset, then one summary table
grid-demo: $(STAMP)
	$(VENV)/bin/fgvc grid parameters/cifar100_table1.yaml --preset tiny --jobs 2

## test: the whole suite on the CPU (includes one papermill execution of each notebook and, with Debian's
## chromium installed, each notebook run in JupyterLab by a headless browser); installs the git filter first
test: $(STAMP) git-filter
	MPLBACKEND=Agg $(PY) -m pytest

## bench: the benchmarks (fast paths vs their baselines, as ratios) -> benchmarks/results/*.json + README.md
bench: $(STAMP)
	$(PY) -m benchmarks.run_all

## gpu-wheels: (here, with network) the wheels the bare GPU machine's image lacks -> .gpu-wheels/ (git-ignored)
gpu-wheels: $(STAMP)
	$(PY) tools/gpu_wheels.py download --out .gpu-wheels

## gpu-check: (on the GPU machine, with .gpu-wheels/ carried there) install the wheels beside the image's torch,
## then the four-part check in <= 8 minutes -> $$FGVC_GPU_CHECK_OUT (default outputs/gpu_check/)
GPU_PYTHON ?= python3
GPU_SITE   ?= /tmp/fgvc-gpu-site
gpu-check:
	$(GPU_PYTHON) tools/gpu_wheels.py install --wheels .gpu-wheels --target $(GPU_SITE)
	PYTHONPATH=$(GPU_SITE):$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} MPLBACKEND=Agg $(GPU_PYTHON) -m benchmarks.gpu_check

## lab: JupyterLab on the notebooks (installs the [lab] extra once, and the git filter: the outputs JupyterLab
## saves into notebooks/*.ipynb never reach git; its save hook, fgvc_lib/lab.py, keeps `git status` clean)
lab: $(STAMP) git-filter
	test -x $(VENV)/bin/jupyter-lab -a -x $(VENV)/bin/nbstripout || $(PIP) -e '.[dev,lab]'
	$(PY) -m fgvc_lib.lab notebooks/

## git-filter: configure for this clone the nbstripout filter that .gitattributes names for *.ipynb: what git
## stores is the notebook without outputs, execution counts or the metadata a kernel or editor adds (cell ids
## and the `parameters` tag kept), byte for byte the committed form. Idempotent; a no-op outside a git checkout.
NBSTRIPOUT     = "$(abspath $(PY))" -m nbstripout --keep-id
NB_EXTRA_KEYS := metadata.language_info.codemirror_mode metadata.language_info.file_extension \
	metadata.language_info.mimetype metadata.language_info.nbconvert_exporter \
	metadata.language_info.pygments_lexer metadata.language_info.version metadata.vscode cell.metadata.jupyter
git-filter:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
	  git config filter.nbstripout.smudge cat && \
	  git config filter.nbstripout.required true && \
	  git config filter.nbstripout.extrakeys '$(strip $(NB_EXTRA_KEYS))' && \
	  git config diff.ipynb.textconv '$(NBSTRIPOUT) --textconv'; \
	else echo "git-filter: not a git checkout, no filter to install"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check fgvc_lib tests

clean-outputs:
	rm -rf outputs/runs

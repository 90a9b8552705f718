"""Execute each of the four notebooks through papermill (as ``fgvc run``, ``make demo`` and grids do) on tiny
parameters: one parametrised run per notebook, common checks of its run folder, then the notebook's own checks.
Also: what git would commit of the notebooks carries no outputs (checked on temporary repositories to fail
when it does), and bad parameters fail before (or, through plain papermill, inside) the kernel."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import papermill as pm
import pytest

from fgvc_lib.cli import main
from fgvc_lib.config import ParameterError
from fgvc_lib.execution import execute_notebook, notebook_path
from fgvc_lib.runs import project_root

NOTEBOOKS = ("bird", "cifar100", "inat_bbn", "multilabel")

# On top of conftest's tiny parameters: what each notebook's run exercises.
EXTRA: dict[str, dict[str, Any]] = {
    "bird": dict(loss="ohem", ohem_schedule="cyclical"),
    "cifar100": dict(epochs=1, loss="mc"),
    "inat_bbn": dict(epochs=1),
    "multilabel": dict(epochs=1),
}


def _files(run_dir: Path, *names: str) -> None:
    for name in names:
        assert (run_dir / name).is_file(), name


def _figures(run_dir: Path, *names: str) -> None:
    _files(run_dir, *(f"figures/{name}.png" for name in names))


def _check_bird(run_dir: Path, metrics: dict[str, Any]) -> None:
    _files(run_dir, "checkpoints/best.pt", "splits/train.txt", "splits/val.txt", "splits/test.txt")
    _figures(run_dir, "augmentations", "learning_curves", "lr", "ohem_ratio", "cam_grid")
    for key in ("top1_acc", "top5_acc", "top1_error", "val_loss", "best_epoch", "seconds", "pointing_game"):
        assert key in metrics, key
    assert metrics["top1_error"] == pytest.approx(1 - metrics["top1_acc"])


def _check_cifar100(run_dir: Path, metrics: dict[str, Any]) -> None:
    assert {"top1_acc", "top5_acc", "ece", "val_loss"} <= set(metrics)
    _figures(run_dir, "reliability", "learning_curves", "augmentations")


def _check_inat_bbn(run_dir: Path, metrics: dict[str, Any]) -> None:
    _figures(run_dir, "class_histogram", "bbn_alpha", "cam_crops", "per_class_accuracy")


def _check_multilabel(run_dir: Path, metrics: dict[str, Any]) -> None:
    _figures(run_dir, "learning_curves", "schedule")


CHECKS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "bird": _check_bird,
    "cifar100": _check_cifar100,
    "inat_bbn": _check_inat_bbn,
    "multilabel": _check_multilabel,
}
# Inline figures (image/png outputs) the executed notebook must show at least.
MIN_IMAGES = {"bird": 4, "cifar100": 3, "inat_bbn": 4, "multilabel": 2}


@pytest.fixture(scope="module", params=NOTEBOOKS)
def executed(request, tiny_params, tmp_path_factory) -> tuple[str, dict[str, Any], Path]:
    """(notebook, its parameters, its run folder) after one papermill run on tiny parameters."""
    name = request.param
    values = tiny_params(name, **EXTRA[name], run_dir=str(tmp_path_factory.mktemp(name) / "run"))
    return name, values, execute_notebook(name, values)


def test_notebook_run_leaves_the_documented_outputs(executed):
    name, values, run_dir = executed
    assert run_dir == Path(values["run_dir"])
    _files(run_dir, f"{name}.ipynb", f"{name}.html", "metrics.json", "history.csv", "params.yaml")
    _files(run_dir, "checkpoints/last.pt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["notebook"] == name
    assert metrics["epochs_run"] == values["epochs"] and metrics["params"]["epochs"] == values["epochs"]
    assert metrics["params"]["run_dir"] == str(run_dir)
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + values["epochs"]  # header + epochs
    CHECKS[name](run_dir, metrics)


def test_executed_notebook_has_outputs_and_injected_parameters(executed):
    name, values, run_dir = executed
    nb = json.loads((run_dir / f"{name}.ipynb").read_text())
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    assert ["parameters"] in tags and ["injected-parameters"] in tags
    injected = "".join(nb["cells"][tags.index(["injected-parameters"])]["source"])
    assert all(f"{key} = " in injected for key in values), injected
    images = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    assert images >= MIN_IMAGES[name]
    assert "<html" in (run_dir / f"{name}.html").read_text()[:2000].lower()


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``git ARGS`` in ``cwd`` (GIT_* variables of a calling hook dropped: the repository is the one at cwd)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=env, check=False)


def stored_forms(path: Path) -> dict[str, bytes]:
    """What git would commit of the notebook ``path``, by where it comes from: the staged blob (``git show
    :path``) and the working file through the clean filter .gitattributes gives it, run as ``git add`` runs it
    (the nbstripout filter `make test` / `make lab` configure). The file itself when no filter is configured,
    or outside a git checkout. Outputs JupyterLab saved into the working file are thus no failure while the
    filter strips them; a notebook committed or staged with outputs is."""
    path = path.resolve()
    raw = path.read_bytes()
    top = _git(path.parent, "rev-parse", "--show-toplevel") if shutil.which("git") else None
    if top is None or top.returncode != 0:
        return {f"{path} (not in a git checkout)": raw}
    root = Path(top.stdout.decode().strip())
    rel = path.relative_to(root).as_posix()
    forms: dict[str, bytes] = {}
    staged = _git(root, "show", f":{rel}")
    if staged.returncode == 0:
        forms[f"git index :{rel}"] = staged.stdout
    driver = _git(root, "check-attr", "filter", "--", rel).stdout.decode().rsplit(": ", 1)[-1].strip()
    clean = _git(root, "config", f"filter.{driver}.clean").stdout.decode().strip()
    if driver in ("unspecified", "unset", "set") or not clean:
        forms[f"{rel} (no clean filter configured; `make git-filter` installs it)"] = raw
        return forms
    command = clean.replace("%f", shlex.quote(rel))
    cleaned = subprocess.run(command, shell=True, cwd=root, input=raw, capture_output=True, check=False)
    assert cleaned.returncode == 0, f"clean filter `{command}` failed on {rel}: {cleaned.stderr.decode()}"
    forms[f"{rel} through its clean filter `{command}`"] = cleaned.stdout
    return forms


def stripping_problems(text: bytes) -> list[str]:
    """Why a notebook's text must not be committed: outputs or execution counts in a code cell, a cell without
    its id, or no cell tagged ``parameters`` (papermill injects after it). Empty: fit to commit."""
    nb = json.loads(text)
    problems = []
    for index, cell in enumerate(nb["cells"]):
        where = f"cell {index} ({cell.get('id', 'no id')})"
        if "id" not in cell:
            problems.append(f"{where}: no cell id")
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{where}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"{where}: execution_count {cell['execution_count']}")
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]):
        problems.append("no cell tagged 'parameters'")
    return problems


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_stripped(name):
    forms = stored_forms(notebook_path(name))
    assert forms
    for where, text in forms.items():
        assert not stripping_problems(text), f"{where}: {stripping_problems(text)}"


def _notebook_with_outputs(stripped: bytes) -> bytes:
    """``stripped`` as JupyterLab saves it after a run: outputs, counts, the kernel's language_info, timings."""
    nb = json.loads(stripped)
    for count, cell in enumerate((c for c in nb["cells"] if c["cell_type"] == "code"), start=1):
        cell["execution_count"] = count
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-11-30T05:00:00.000000Z"}
        cell["outputs"] = [
            {"name": "stdout", "output_type": "stream", "text": ["epoch 1/2 loss 1.0\n"]},
            {"data": {"image/png": "iVBORw0KGgo=", "text/plain": ["<Figure>"]}, "metadata": {},
             "output_type": "display_data"},
        ]
    nb["metadata"]["language_info"].update(
        codemirror_mode={"name": "ipython", "version": 3}, file_extension=".py", mimetype="text/x-python",
        nbconvert_exporter="python", pygments_lexer="ipython3", version="3.11.7",
    )
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


def _repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    assert _git(root, "init", "-q").returncode == 0
    for key, value in (("user.name", "test"), ("user.email", "test@example.com"), ("commit.gpgsign", "false")):
        _git(root, "config", key, value)
    return root


def _commit(repo: Path) -> None:
    assert _git(repo, "add", "-A").returncode == 0
    done = _git(repo, "commit", "-q", "--no-verify", "-m", "notebook")
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture()
def committed_bird() -> bytes:
    return notebook_path("bird").read_bytes()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_stripped_check_fails_on_outputs_committed_or_about_to_be(tmp_path, committed_bird):
    # committed with outputs, no filter: the index form fails
    repo = _repo(tmp_path / "committed")
    (repo / "nb.ipynb").write_bytes(_notebook_with_outputs(committed_bird))
    _commit(repo)
    forms = stored_forms(repo / "nb.ipynb")
    assert any(k.startswith("git index") for k in forms)
    assert all(stripping_problems(text) for text in forms.values())
    # committed stripped, the working file with outputs and no filter: `git add` would store them, so it fails
    repo = _repo(tmp_path / "unfiltered")
    (repo / "nb.ipynb").write_bytes(committed_bird)
    _commit(repo)
    (repo / "nb.ipynb").write_bytes(_notebook_with_outputs(committed_bird))
    problems = {where: stripping_problems(text) for where, text in stored_forms(repo / "nb.ipynb").items()}
    assert [bool(p) for p in problems.values()] == [False, True], problems
    # outside git: the file itself
    (tmp_path / "loose.ipynb").write_bytes(_notebook_with_outputs(committed_bird))
    assert stripping_problems(stored_forms(tmp_path / "loose.ipynb").popitem()[1])


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_makefile_git_filter_stores_the_committed_form(tmp_path, committed_bird):
    """`make git-filter`'s nbstripout filter: a notebook saved with outputs has no diff, and `git add` stores
    it byte for byte as committed (cell ids and the parameters tag kept), staging nothing."""
    pytest.importorskip("nbstripout", reason="nbstripout (the [dev] extra) is not installed")
    root = project_root(Path(__file__).parent)
    repo = _repo(tmp_path / "repo")
    shutil.copy(root / ".gitattributes", repo / ".gitattributes")
    make = subprocess.run(
        ["make", "-s", "-C", str(repo), "-f", str(root / "Makefile"), "git-filter", f"PY={sys.executable}"],
        capture_output=True, text=True, check=False,
    )
    assert make.returncode == 0, make.stderr
    (repo / "nb.ipynb").write_bytes(committed_bird)
    _commit(repo)
    (repo / "nb.ipynb").write_bytes(_notebook_with_outputs(committed_bird))
    assert _git(repo, "diff", "--quiet", "--no-textconv").returncode == 0  # content: what the index holds
    for where, text in stored_forms(repo / "nb.ipynb").items():
        assert text == committed_bird, where
    assert _git(repo, "add", "nb.ipynb").returncode == 0
    assert _git(repo, "show", ":nb.ipynb").stdout == committed_bird
    assert _git(repo, "diff", "--cached", "--quiet").returncode == 0
    assert _git(repo, "status", "--porcelain").stdout == b""  # (before `git add`, git's size check lists it)
    # and a notebook whose outputs really are in the commit still fails the check
    assert _git(repo, "-c", "filter.nbstripout.clean=cat", "add", "--renormalize", "nb.ipynb").returncode == 0
    assert any(stripping_problems(text) for text in stored_forms(repo / "nb.ipynb").values())


def test_typo_is_rejected_before_a_kernel_starts(tmp_path):
    with pytest.raises(ParameterError, match="did you mean 'epochs'"):
        execute_notebook("bird", {"epoch": 1, "run_dir": str(tmp_path / "r")})
    assert not (tmp_path / "r").exists()
    assert main(["run", "bird", "-p", "epochs", "ten", "--run-dir", str(tmp_path / "r2")]) == 2


def test_plain_papermill_with_unknown_parameter_fails_in_the_notebook(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter 'epoch'"):
        pm.execute_notebook(
            str(notebook_path("bird")),
            str(tmp_path / "out.ipynb"),
            parameters={"epoch": 1, "run_dir": str(tmp_path / "r")},
            kernel_name="python3",
            progress_bar=False,
        )

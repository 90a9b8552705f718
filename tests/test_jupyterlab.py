"""The notebooks in a live JupyterLab driven by a real browser (Debian's ``chromium``, headless, through
Playwright's Python package; no browser download), as ``make lab`` serves them.

One JupyterLab server (``python -m fgvc_lib.lab``, what ``make lab`` runs) on 127.0.0.1, a free port and a
token, over a temporary git repository holding a copy of each notebook whose ``parameters`` cell is edited to
tiny values (progress on), with the project's .gitattributes and the filter ``make git-filter`` installs. Per
notebook: open it, Run > Run All Cells from the menu, wait for every cell and an idle kernel, then check that
no cell shows an error, that the progress widget and the live learning curve (drawn again after each epoch)
appeared in the training cell, that every figure rendered, and that after File > Save (outputs included)
``git status`` is clean and ``git add`` stores exactly the committed form. Screenshots stay in pytest's temp
folder (``.../jupyterlab0/screenshots``).

Skipped when chromium or a package of the [dev] extra is missing, unless ``FGVC_BROWSER_TEST=required``
(``.ci/run`` sets it once chromium is installed), which turns the skip into a failure.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fgvc_lib.execution import notebook_path
from fgvc_lib.lab import refresh_git_index
from fgvc_lib.runs import project_root

NOTEBOOKS = ("bird", "cifar100", "inat_bbn", "multilabel")
ROOT = project_root(Path(__file__).parent)
# Inline PNG figures each notebook shows at least (the live curve included); all of them must render.
MIN_IMAGES = {"bird": 6, "cifar100": 6, "inat_bbn": 7, "multilabel": 5}
SERVER_START_S = 240
RUN_ALL_S = 540
ERROR_TEXT = re.compile(r"Traceback|Error|Exception")
# One test item includes the server's start and a notebook's Run All (its fixtures) when it comes first.
pytestmark = pytest.mark.timeout(SERVER_START_S + RUN_ALL_S + 120)


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    missing = [m for m in ("playwright", "jupyterlab", "ipywidgets", "nbstripout") if _absent(m)]
    if missing:
        return f"Python packages of the [dev] extra missing: {', '.join(missing)}"
    for tool, why in (
        ("chromium", "Debian's chromium (apt-get install chromium)"),
        ("git", "git"),
        ("make", "make"),
    ):
        if shutil.which(tool) is None:
            return f"{why} not found"
    return None


def _absent(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return True
    return False


def _require_browser_stack() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("FGVC_BROWSER_TEST") == "required":
        pytest.fail(f"FGVC_BROWSER_TEST=required but {reason}")
    pytest.skip(f"JupyterLab browser test: {reason}")


def tiny_lab_params(tiny_params: Any, name: str, run_dir: Path) -> dict[str, Any]:
    """The notebook's tiny parameters with what JupyterLab shows: progress bars and the live curve."""
    return tiny_params(name, progress=True, run_dir=str(run_dir))


def with_parameters(source: str, values: dict[str, Any]) -> str:
    """A ``parameters`` cell's source with each ``name: type = default  # help`` line's default replaced by
    ``repr(values[name])`` (comments and layout kept). Every name must be one of the cell's parameters."""
    lines = source.split("\n")
    todo = dict(values)
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in todo:
            value = node.value
            assert value is not None and value.lineno == value.end_lineno, node.target.id
            line = lines[value.lineno - 1]
            lines[value.lineno - 1] = (
                line[: value.col_offset] + repr(todo.pop(node.target.id)) + line[value.end_col_offset :]
            )
    assert not todo, f"not parameters of the notebook: {sorted(todo)}"
    return "\n".join(lines)


def _install_filter(repo: Path) -> None:
    """``make git-filter`` (the project's nbstripout filter) in the test repo ``repo``."""
    make = subprocess.run(
        ["make", "-s", "-C", str(repo), "-f", str(ROOT / "Makefile"), "git-filter", f"PY={sys.executable}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert make.returncode == 0, make.stderr


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab server over ``repo``."""

    url: str
    token: str
    repo: Path
    screenshots: Path
    log: Path
    epochs: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernel_state(self, name: str) -> str | None:
        for session in self.api("sessions"):
            if session["path"].endswith(f"{name}.ipynb"):
                return session["kernel"]["execution_state"]
        return None

    def shut_down_kernels(self, name: str) -> None:
        for session in self.api("sessions"):
            if session["path"].endswith(f"{name}.ipynb"):
                self.api(f"sessions/{session['id']}", method="DELETE")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_params):
    """JupyterLab as `make lab` serves it, over a git repository of tiny-parameter copies of the notebooks."""
    _require_browser_stack()
    base = tmp_path_factory.mktemp("jupyterlab")
    repo, screenshots = base / "repo", base / "screenshots"
    (repo / "notebooks").mkdir(parents=True)
    screenshots.mkdir()
    import nbformat

    epochs = {}
    for name in NOTEBOOKS:
        nb = nbformat.read(notebook_path(name), as_version=4)
        values = tiny_lab_params(tiny_params, name, base / "runs" / name)
        epochs[name] = values["epochs"]
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        cell.source = with_parameters(cell.source, values)
        nbformat.write(nb, repo / "notebooks" / f"{name}.ipynb")
    for dotfile in (".gitattributes", ".gitignore"):
        shutil.copy(ROOT / dotfile, repo / dotfile)
    assert _git(repo, "init", "-q").returncode == 0
    _install_filter(repo)
    assert _git(repo, "add", "-A").returncode == 0
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false")
    commit = _git(repo, *identity, "commit", "-q", "--no-verify", "-m", "tiny notebooks")
    assert commit.returncode == 0, commit.stderr
    assert _git(repo, "status", "--porcelain").stdout == ""

    # no "get notified about Jupyter news?" toast over the screenshots
    news = base / "jupyter/settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "FGVC_OUTPUTS": str(base / "outputs"),
        # nothing of the user's Jupyter setup (config, settings, workspaces, kernels), nothing written there
        "JUPYTER_CONFIG_DIR": str(base / "jupyter" / "config"),
        "JUPYTER_DATA_DIR": str(base / "jupyter" / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "jupyter" / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "jupyter" / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "jupyter" / "workspaces"),
    }
    command = [
        sys.executable,
        "-m",
        "fgvc_lib.lab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={repo}",
        "--ServerApp.allow_root=True",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = base / "jupyterlab.log"
    started = time.monotonic()
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    handle = Lab(f"http://127.0.0.1:{port}", token, repo, screenshots, log, epochs)
    try:
        while True:
            try:
                handle.api("status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() - started > SERVER_START_S:
                    pytest.fail(f"JupyterLab did not start (exit {server.poll()}):\n{handle.log_tail()}")
                time.sleep(0.5)
        handle.seconds["server start"] = time.monotonic() - started
        yield handle
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        (base / "seconds.json").write_text(json.dumps(handle.seconds, indent=1))


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=["--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


# In the page, within the notebook shown (one tab: the URL resets the workspace): what appeared while the
# cells ran (the progress bars are closed after each epoch, the live curve is replaced in place), by cell
# index.
NOTEBOOK = "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook')"
WATCH = """() => {
  const notebook = NOTEBOOK;
  const seen = window.__fgvcSeen = {progress: [], png: []};
  const cellIndex = (el) => [...notebook.querySelectorAll('.jp-Cell')].indexOf(el.closest('.jp-Cell'));
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      for (const node of (m.type === 'attributes' ? [m.target] : [...m.addedNodes])) {
        if (!(node instanceof Element)) continue;
        const bars = node.matches('.widget-hprogress')
          ? [node] : [...node.querySelectorAll('.widget-hprogress')];
        for (const bar of bars) seen.progress.push(cellIndex(bar));
        const imgs = node.tagName === 'IMG' ? [node] : [...node.querySelectorAll('img')];
        for (const img of imgs) {
          const src = img.getAttribute('src') || '';
          if (src.startsWith('data:image/png'))
            seen.png.push([cellIndex(img), src.length + ':' + src.slice(-48)]);
        }
      }
    }
  }).observe(notebook, {childList: true, subtree: true, attributes: true, attributeFilter: ['src']});
}""".replace("NOTEBOOK", NOTEBOOK)

STATE = """() => {
  const notebook = NOTEBOOK;
  const cells = [...notebook.querySelectorAll('.jp-Cell')];
  const outputs = (selector) => [...notebook.querySelectorAll(selector)].map(
    (el) => [cells.indexOf(el.closest('.jp-Cell')), el.textContent.slice(0, 2000)]);
  return {
    prompts: [...notebook.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(
      (el) => el.textContent.trim()),
    errors: outputs('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"], '
                    + '.jp-RenderedText[data-mime-type*="error"]'),
    stderr: outputs('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'),
    images: [...notebook.querySelectorAll('.jp-OutputArea-output[data-mime-type="image/png"] img')].map(
      (img) => [cells.indexOf(img.closest('.jp-Cell')),
                (img.getAttribute('src') || '').startsWith('data:image/png;base64,'),
                img.naturalWidth, img.naturalHeight]),
    widgetErrors: (notebook.textContent.match(/Error displaying widget[^\\n]{0,200}/g) || []),
  };
}""".replace("NOTEBOOK", NOTEBOOK)


@dataclass
class LabRun:
    """What one notebook showed in the browser and saved."""

    name: str
    seconds: float
    state: dict[str, Any]
    seen: dict[str, Any]
    saved: dict[str, Any]
    run_cell: int
    screenshots: Path


def _menu(page: Any, menu: str, command: str) -> None:
    """Click ``menu`` in the menu bar, then its item for the JupyterLab ``command``."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{menu}$")).click()
    page.locator(f'.lm-Menu-item[data-command="{command}"]').click()


@pytest.fixture(scope="module", params=NOTEBOOKS)
def ran(request, lab, browser) -> LabRun:
    """Open the notebook, Run All Cells from the Run menu, wait until done, save it; what the page showed."""
    name = request.param
    path = lab.repo / "notebooks" / f"{name}.ipynb"
    run_cell = next(
        i for i, c in enumerate(json.loads(path.read_text())["cells"]) if "exp.run()" in "".join(c["source"])
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    training_cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(run_cell)

    def shot(step: str, cell: bool = False) -> None:
        target = lab.screenshots / f"{name}-{step}.png"
        if cell:
            training_cell.scroll_into_view_if_needed()
            training_cell.screenshot(path=str(target))
        else:
            page.screenshot(path=str(target))

    started = time.monotonic()
    try:
        page.goto(f"{lab.url}/lab/tree/notebooks/{name}.ipynb?reset&token={lab.token}")
        page.wait_for_selector(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell", timeout=120_000
        )
        while lab.kernel_state(name) != "idle":
            assert time.monotonic() - started < 180, f"{name}: the kernel did not start\n{lab.log_tail()}"
            time.sleep(0.5)
        page.wait_for_timeout(500)  # the page's kernel connection follows the server's by a few messages
        shot("1-opened")
        page.evaluate(WATCH)
        _menu(page, "Run", "runmenu:run-all")
        idle_checks, progress_shot = 0, False
        while idle_checks < 3:  # three idle checks in a row, a second apart: Run All has finished
            page.wait_for_timeout(1000)
            state = page.evaluate(STATE)
            if not progress_shot and page.evaluate("() => window.__fgvcSeen.progress.length"):
                shot("2-training-cell", cell=True)
                progress_shot = True
            running = any(p == "[*]:" for p in state["prompts"])
            started_any = any(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"])
            quiet = started_any and not running and lab.kernel_state(name) == "idle"
            idle_checks = idle_checks + 1 if quiet else 0
            if time.monotonic() - started > RUN_ALL_S:
                shot("timeout")
                pytest.fail(f"{name}: Run All did not finish in {RUN_ALL_S} s: prompts {state['prompts']}")
        seconds = time.monotonic() - started
        seen = page.evaluate("() => window.__fgvcSeen")
        shot("3-finished")
        shot("3-training-cell", cell=True)
        _menu(page, "File", "docmanager:save")
        page.wait_for_selector(".lm-TabBar-tab.jp-mod-dirty", state="detached", timeout=60_000)
        page.wait_for_timeout(500)
        shot("4-saved")
    finally:
        try:
            lab.shut_down_kernels(name)
        finally:
            page.close()
    lab.seconds[name] = seconds
    saved = json.loads(path.read_text())
    return LabRun(name, seconds, state, seen, saved, run_cell, lab.screenshots)


def _where(run: LabRun) -> str:
    return f"{run.name} (screenshots: {run.screenshots})"


def test_run_all_cells_ends_without_error_output(ran):
    code = [c for c in ran.saved["cells"] if c["cell_type"] == "code"]
    assert len(ran.state["prompts"]) == len(code)
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in ran.state["prompts"]), (
        _where(ran),
        ran.state["prompts"],
    )
    assert not ran.state["errors"], (_where(ran), ran.state["errors"])
    assert not [t for _, t in ran.state["stderr"] if ERROR_TEXT.search(t)], (_where(ran), ran.state["stderr"])
    assert not ran.state["widgetErrors"], (_where(ran), ran.state["widgetErrors"])
    saved_errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not saved_errors, (_where(ran), saved_errors)


def test_progress_widget_and_live_learning_curve_appeared(ran, lab):
    # tqdm.auto's widget bar (ipywidgets) in the training cell, one per epoch, closed at its end
    assert ran.seen["progress"] and set(ran.seen["progress"]) == {ran.run_cell}, (_where(ran), ran.seen)
    # the live curve: one figure in the training cell, drawn after every epoch (displayed, then updated)
    curves = {fingerprint for cell, fingerprint in ran.seen["png"] if cell == ran.run_cell}
    assert len(curves) >= lab.epochs[ran.name], (_where(ran), ran.seen["png"])
    final = [img for img in ran.state["images"] if img[0] == ran.run_cell]
    assert len(final) == 1, (_where(ran), ran.state["images"])


def test_every_figure_rendered(ran):
    images = ran.state["images"]
    assert all(is_png and width > 0 and height > 0 for _, is_png, width, height in images), (
        _where(ran),
        images,
    )
    saved_pngs = sum(
        "image/png" in o.get("data", {})
        for c in ran.saved["cells"]
        if c["cell_type"] == "code"
        for o in c["outputs"]
    )
    assert len(images) == saved_pngs >= MIN_IMAGES[ran.name], (_where(ran), len(images), saved_pngs)


def test_saved_notebook_with_outputs_leaves_git_status_clean(ran, lab):
    assert any(c.get("outputs") for c in ran.saved["cells"]), (
        "JupyterLab saved no outputs: nothing was tested"
    )
    path = f"notebooks/{ran.name}.ipynb"
    assert _git(lab.repo, "status", "--porcelain").stdout == "", _git(lab.repo, "status").stdout
    assert _git(lab.repo, "add", "-A").returncode == 0
    assert _git(lab.repo, "diff", "--cached", "--quiet").returncode == 0  # `git add` stages nothing
    assert _git(lab.repo, "show", f":{path}").stdout == _git(lab.repo, "show", f"HEAD:{path}").stdout


def test_save_hook_refreshes_only_when_the_filtered_notebook_is_unchanged(tmp_path):
    """fgvc_lib.lab's post-save hook, without a browser: outputs only -> index refreshed, `git status` clean;
    an edited cell -> still modified, nothing staged."""
    if shutil.which("git") is None or shutil.which("make") is None or _absent("nbstripout"):
        pytest.skip("needs git, make and nbstripout")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    _install_filter(repo)
    committed = notebook_path("bird").read_text()
    (repo / "bird.ipynb").write_text(committed)
    _git(repo, "add", "-A")
    _git(
        repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--no-verify", "-m", "nb"
    )
    nb = json.loads(committed)
    code = next(
        c
        for c in nb["cells"]
        if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])
    )
    code["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["epoch 1/2\n"]}]
    code["execution_count"] = 1
    (repo / "bird.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    assert _git(repo, "status", "--porcelain").stdout.strip() == "M bird.ipynb"  # git's size check
    assert refresh_git_index(str(repo / "bird.ipynb"), {"type": "notebook"}) is True
    assert _git(repo, "status", "--porcelain").stdout == ""
    code["source"] = ["print('edited')"]
    (repo / "bird.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    assert refresh_git_index(str(repo / "bird.ipynb"), {"type": "notebook"}) is False
    assert _git(repo, "status", "--porcelain").stdout.strip() == "M bird.ipynb"
    assert _git(repo, "diff", "--cached", "--quiet").returncode == 0
    assert refresh_git_index(str(tmp_path / "untracked.ipynb"), {"type": "notebook"}) is False
    assert refresh_git_index(str(repo / "bird.ipynb"), {"type": "file"}) is False

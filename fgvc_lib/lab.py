"""``make lab``: JupyterLab on the workbook, saving notebooks without dirtying the checkout.

The nbstripout git filter (``make git-filter``; named for ``*.ipynb`` by .gitattributes) stores a notebook
without its outputs, so what JupyterLab saves after a run changes nothing git would commit. git still lists
such a file in ``git status`` (its size changed, and git does not run the filter to compare) until its index
entry is refreshed. :func:`refresh_git_index`, run by the server after every save, does that refresh, and only
when the saved file, filtered, equals the index (``git diff`` is empty); a real edit stays listed as modified
and nothing is ever staged.

``python -m fgvc_lib.lab [JupyterLab options] [path]`` starts JupyterLab with that hook.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

#: The JupyterLab options ``python -m fgvc_lib.lab`` adds to the caller's.
LAB_OPTIONS = ["--FileContentsManager.post_save_hook=fgvc_lib.lab.refresh_git_index"]


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=folder, capture_output=True, text=True, timeout=120, check=False
    )


def refresh_git_index(os_path: str, model: dict[str, Any], contents_manager: Any = None, **_: Any) -> bool:
    """Jupyter post-save hook: refresh the index entry of a saved tracked notebook whose filtered content is
    what the index holds, so ``git status`` does not list it. Returns whether it refreshed; never raises."""
    if model.get("type") != "notebook":
        return False
    path = Path(os_path)
    try:
        if _git(path.parent, "ls-files", "--error-unmatch", "--", path.name).returncode != 0:
            return False  # not in a git checkout, or not tracked
        if _git(path.parent, "ls-files", "--unmerged", "--", path.name).stdout.strip():
            return False  # a merge conflict: `git add` would mark it resolved
        same = _git(path.parent, "diff", "--quiet", "--no-textconv", "--no-ext-diff", "--", path.name)
        if same.returncode != 0:
            return False  # the notebook itself changed (or the filter is not installed): it is modified
        return _git(path.parent, "add", "--", path.name).returncode == 0
    except (OSError, subprocess.SubprocessError) as error:
        log = getattr(contents_manager, "log", None)
        if log is not None:
            log.warning("fgvc_lib.lab: could not refresh git's index entry of %s: %s", path, error)
        return False


def main(argv: list[str] | None = None) -> None:
    """Start JupyterLab (``jupyter lab`` with :data:`LAB_OPTIONS` before ``argv``)."""
    from jupyterlab.labapp import LabApp

    LabApp.launch_instance(argv=[*LAB_OPTIONS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

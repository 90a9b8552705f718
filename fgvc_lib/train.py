"""Run a notebook's experiment without the notebook: for ``torchrun`` (multi-GPU / multi-node DDP) and scripts.

    python -m fgvc_lib.train bird -f parameters/bird.yaml -p epochs 3
    torchrun --nproc_per_node=4 -m fgvc_lib.train bird -f parameters/bird_report.yaml -p device cuda

The run folder, metrics.json, checkpoints and figures are the ones the notebook writes (rank 0 writes them);
only the executed notebook / HTML report is missing. ``fgvc run`` stays the way to get the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .catalog import get_notebook, notebook_names
from .config import ParameterError, params_class
from .execution import load_values, prepare_values


def experiment_class(notebook: str) -> type:
    """The experiment class of a notebook (declared in ``fgvc_lib.catalog``)."""
    return get_notebook(notebook).experiment_class()


def train(notebook: str, values: dict[str, Any]) -> Any:
    """Build and run the experiment in this process; returns its ``ExperimentResult``. Relative paths are the
    working folder's; ``resume`` continues with the run's own ``params.yaml`` (a changed parameter is refused,
    :mod:`fgvc_lib.resume`); the run folder is locked while it runs."""
    params = params_class(notebook).from_dict(prepare_values(notebook, values))
    return experiment_class(notebook)(params).run()


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that say what is wrong in their message (one line on the console, no traceback)."""
    from .data.datasets import DataError
    from .engine import CheckpointError, TrainingDiverged
    from .fileio import OutputWriteError
    from .models.pretrained import PretrainedWeightsUnavailable
    from .runs import RunDirError

    return (ParameterError, FileNotFoundError, DataError, CheckpointError, TrainingDiverged, OutputWriteError,
            PretrainedWeightsUnavailable, RunDirError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fgvc_lib.train", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help=" | ".join(notebook_names()))
    parser.add_argument("-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)")
    parser.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    args = parser.parse_args(argv)
    try:
        result = train(args.notebook, load_values(args.file, args.param, notebook=args.notebook))
    except _known_errors() as exc:
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    from .distributed import is_main_process, shutdown_distributed

    if is_main_process():
        print(json.dumps({"run_dir": str(result.run_dir), **result.metrics}, default=str))
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())

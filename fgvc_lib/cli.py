"""``fgvc`` command line: ``synth`` (write embedded data sets), ``run`` (execute a notebook into a run folder),
``params`` (list a notebook's parameters)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import ParameterError, params_class
from .runs import prepare_run_dir, project_root


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb`` of the checkout this package lives in (or of the current project)."""
    for base in (Path(__file__).resolve().parent.parent, project_root()):
        path = base / "notebooks" / f"{name}.ipynb"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"notebook notebooks/{name}.ipynb not found next to fgvc_lib or in {project_root()}"
    )


def _overrides(pairs: list[list[str]] | None) -> dict[str, Any]:
    """``-p key value`` pairs; values are parsed as YAML scalars (3 -> int, true -> bool, 1e-3 -> float)."""
    values: dict[str, Any] = {}
    for key, raw in pairs or []:
        try:
            values[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            values[key] = raw
    return values


def execute_notebook(
    notebook: str,
    values: dict[str, Any],
    *,
    progress: bool = False,
    html: bool = True,
    log_output: bool = False,
) -> Path:
    """Validate ``values`` against the notebook's parameter class, make the run folder and execute the
    notebook there with papermill (executed ``.ipynb`` + ``.html`` land in the run folder). Returns it."""
    import papermill as pm

    cls = params_class(notebook)
    params = cls.from_dict(values)  # fail before a kernel starts
    run_dir = prepare_run_dir(notebook, params.run_dir, resume=params.resume)
    injected = {k: params.to_dict()[k] for k in values}
    injected["run_dir"] = str(run_dir)
    injected.setdefault("progress", progress)
    output = run_dir / f"{notebook}.ipynb"
    try:
        pm.execute_notebook(
            str(notebook_path(notebook)),
            str(output),
            parameters=injected,
            kernel_name="python3",
            progress_bar=progress,
            log_output=log_output,
            cwd=str(run_dir),
        )
    finally:
        if html and output.exists():
            export_html(output)
    return run_dir


def export_html(notebook_file: str | Path) -> Path:
    """Render an executed notebook to HTML next to it."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook_file = Path(notebook_file)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_file, as_version=4))
    out = notebook_file.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.dataset == "bird":
        from .data.synthetic import write_cub

        root = write_cub(
            args.out, classes=args.classes, per_class=args.per_class, size=args.size, seed=args.seed
        )
        print(f"wrote a synthetic CUB-200-2011 tree to {root}")
        return 0
    raise SystemExit(f"unknown data set {args.dataset!r}")


def _cmd_run(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    for file in args.file or []:
        data = yaml.safe_load(Path(file).read_text()) or {}
        if not isinstance(data, dict):
            raise ParameterError(f"parameter file {file}: expected a mapping of name: value")
        values.update(data)
    values.update(_overrides(args.param))
    if args.run_dir:
        values["run_dir"] = args.run_dir
    run_dir = execute_notebook(args.notebook, values, progress=args.progress, log_output=args.log_output)
    print(f"run finished: {run_dir}")
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    cls = params_class(args.notebook)
    defaults = cls().to_dict()
    for name, help_text in cls.help().items():
        print(f"{name:18s} = {defaults[name]!r:28s} # {help_text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgvc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a deterministic synthetic data set in a real on-disk format")
    synth.add_argument("dataset", choices=["bird"], help="bird: CUB-200-2011 layout")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--classes", type=int, default=10)
    synth.add_argument("--per-class", type=int, default=30)
    synth.add_argument("--size", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)

    run = sub.add_parser(
        "run", help="execute a notebook with papermill into outputs/runs/<notebook>/<run-id>/"
    )
    run.add_argument("notebook", help="bird")
    run.add_argument("-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)")
    run.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="override a parameter"
    )
    run.add_argument("--run-dir", default="", help="explicit run folder (default: a new run id)")
    run.add_argument("--progress", action="store_true", help="show progress bars")
    run.add_argument("--log-output", action="store_true", help="echo the notebook's output while it runs")
    run.set_defaults(func=_cmd_run)

    params = sub.add_parser("params", help="list a notebook's parameters with defaults and help")
    params.add_argument("notebook")
    params.set_defaults(func=_cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParameterError, FileNotFoundError, ValueError, RuntimeError) as exc:
        name = type(exc).__name__
        print(f"fgvc {args.command}: {name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

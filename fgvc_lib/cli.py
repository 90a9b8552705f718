"""``fgvc`` command line: ``synth`` (write embedded data sets), ``run`` (execute a notebook into a run folder),
``params`` (list a notebook's parameters), ``train`` (the experiment without the notebook, e.g. under
torchrun), ``grid`` (run a parameter grid), ``report`` (summarise one)."""

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
    if args.per_class is None:
        args.per_class = 30 if args.dataset == "bird" else 20
    if args.classes is None:
        args.classes = 10 if args.dataset == "bird" else 30
    if args.size is None:
        args.size = 96 if args.dataset == "inat" else 128
    if args.dataset == "bird":
        from .data.synthetic import write_cub

        root = write_cub(
            args.out, classes=args.classes, per_class=args.per_class, size=args.size, seed=args.seed
        )
        print(f"wrote a synthetic CUB-200-2011 tree to {root}")
        return 0
    if args.dataset == "cifar100":
        from .data.cifar import write_cifar100

        root = write_cifar100(
            args.out, train_per_class=args.per_class, test_per_class=args.test_per_class, seed=args.seed
        )
        print(f"wrote synthetic CIFAR-100 python files to {root / 'cifar-100-python'}")
        return 0
    if args.dataset == "inat":
        from .data.inat import write_inat

        root = write_inat(
            args.out,
            classes=args.classes,
            max_per_class=args.max_per_class,
            imbalance=args.imbalance,
            val_per_class=args.val_per_class,
            size=args.size,
            seed=args.seed,
        )
        print(f"wrote a synthetic iNat-2019 set (train2019.json, val2019.json, images) to {root}")
        return 0
    if args.dataset == "multilabel":
        from .data.multilabel import write_multilabel

        root = write_multilabel(args.out, images=args.images, size=args.size, seed=args.seed)
        print(f"wrote a synthetic multi-label set (images/, annotations/) to {root}")
        return 0
    raise SystemExit(f"unknown data set {args.dataset!r}")


def load_values(files: list[str] | None, pairs: list[list[str]] | None) -> dict[str, Any]:
    """Parameter files (later wins), then ``-p key value`` overrides: what ``fgvc run`` and ``fgvc train`` pass on."""
    values: dict[str, Any] = {}
    for file in files or []:
        path = Path(file)
        if not path.is_file():
            raise ParameterError(f"parameter file {file}: does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ParameterError(f"parameter file {file}: expected a mapping of name: value")
        values.update(data)
    values.update(_overrides(pairs))
    return values


def _cmd_run(args: argparse.Namespace) -> int:
    values = load_values(args.file, args.param)
    if args.run_dir:
        values["run_dir"] = args.run_dir
    run_dir = execute_notebook(args.notebook, values, progress=args.progress, log_output=args.log_output)
    print(f"run finished: {run_dir}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import main as train_main

    argv = [args.notebook]
    for file in args.file or []:
        argv += ["-f", file]
    for key, value in args.param or []:
        argv += ["-p", key, value]
    return train_main(argv)


def _cmd_params(args: argparse.Namespace) -> int:
    cls = params_class(args.notebook)
    defaults = cls().to_dict()
    for name, help_text in cls.help().items():
        print(f"{name:18s} = {defaults[name]!r:28s} # {help_text}")
    return 0


def _parse_gpus(text: str | None) -> list[int] | None:
    """``--gpus 0,1`` -> [0, 1]; ``none`` or empty -> [] (no pinning); absent -> None (all visible)."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none", "cpu"):
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--gpus: expected GPU indexes like 0,1 (or none), got {text!r}") from None


def _parse_slurm_args(pairs: list[str] | None) -> dict[str, Any] | None:
    """``--slurm-arg key=value`` (repeatable) -> {key: value}; values parsed as YAML scalars (true -> a flag)."""
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-arg: expected key=value (an sbatch option), got {pair!r}")
        out[key.strip()] = _overrides([[key, raw]])[key]
    return out


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``fgvc grid`` options that override the grid file's ``executor:`` block (None: not given)."""
    return {
        "kind": args.executor,
        "partition": args.partition,
        "gpus_per_job": args.gpus_per_job,
        "cpus_per_job": args.cpus_per_job,
        "time_min": args.time,
        "mem_gb": args.mem_gb,
        "array_parallelism": args.array_parallelism,
        "slurm": _parse_slurm_args(args.slurm_arg),
    }


def _cmd_grid(args: argparse.Namespace) -> int:
    from collections import Counter

    from .grid import format_plan, grid_folder, load_grid, run_grid

    spec = load_grid(args.file)
    records = run_grid(
        spec,
        preset=args.preset,
        jobs=args.jobs,
        dry_run=args.dry_run,
        retry_failed=args.retry_failed,
        gpus=_parse_gpus(args.gpus),
        progress=not args.no_progress,
        executor=_executor_options(args),
        wait=not args.no_wait,
    )
    counts = Counter(r.status for r in records)
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    if args.dry_run:
        print(format_plan(records))
        print(f"{len(records)} runs ({status}) -> {grid_folder(spec)}")
        return 0
    submitted = [r for r in records if r.status == "submitted"]
    if submitted:
        print("\n".join(f"{r.job_id}  {r.run_id}" for r in submitted))
        print(f"{len(records)} runs: {status}")
        print(f"build the report once the jobs are done: fgvc report {grid_folder(spec)}")
        return 0
    print(f"summary: {grid_folder(spec) / 'summary.md'}")
    print(f"{len(records)} runs: {status}")
    earlier = [r for r in records if r.status == "skipped" and r.error]
    if earlier:
        print(f"{len(earlier)} skipped run(s) failed earlier; --retry-failed runs them again")
    return 1 if counts.get("failed") else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .grid import grid_folder, grid_record, load_grid, write_report

    target = Path(args.grid)
    if target.is_dir():
        grid_dir = target
        spec = grid_record(target).get("spec") or {}
        compare, metric = spec.get("compare"), spec.get("metric") or "val_acc"
    else:
        loaded = load_grid(target)
        grid_dir, compare, metric = grid_folder(loaded), loaded.compare, loaded.metric
    paths = write_report(grid_dir, compare=compare, metric=args.metric or metric)
    print(paths["summary_md"].read_text(), end="")
    for key, path in paths.items():
        if key.startswith("compare_"):
            print(f"figure: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgvc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a deterministic synthetic data set in a real on-disk format")
    synth.add_argument(
        "dataset",
        choices=["bird", "cifar100", "inat", "multilabel"],
        help="bird: CUB-200-2011 layout; cifar100: cifar-100-python/; inat: iNat-2019 JSON; "
        "multilabel: images/ + annotations/<label>.txt",
    )
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--classes", type=int, default=None, help="bird / inat: number of classes")
    synth.add_argument("--per-class", type=int, default=None, help="images per class (cifar100: training)")
    synth.add_argument("--test-per-class", type=int, default=5, help="cifar100: test images per class")
    synth.add_argument("--size", type=int, default=None, help="bird / inat / multilabel: image side")
    synth.add_argument("--max-per-class", type=int, default=60, help="inat: images of the largest class")
    synth.add_argument("--imbalance", type=float, default=20.0, help="inat: imbalance ratio n_max / n_min")
    synth.add_argument("--val-per-class", type=int, default=3, help="inat: validation images per class")
    synth.add_argument("--images", type=int, default=2000, help="multilabel: number of images")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)

    run = sub.add_parser(
        "run", help="execute a notebook with papermill into outputs/runs/<notebook>/<run-id>/"
    )
    run.add_argument("notebook", help="bird | cifar100 | inat_bbn | multilabel")
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

    grid = sub.add_parser("grid", help="run a YAML parameter grid (outputs/runs/<name>/<run-id>/ + summary)")
    grid.add_argument("file", help="grid YAML (see fgvc_lib/grid.py for the format)")
    grid.add_argument("--jobs", type=int, default=1, help="runs at once (worker processes)")
    grid.add_argument("--dry-run", action="store_true", help="validate and print the planned runs only")
    grid.add_argument("--preset", default=None, help="apply a preset of the grid file (e.g. tiny)")
    grid.add_argument("--retry-failed", action="store_true", help="run failed runs again (old folder kept)")
    grid.add_argument(
        "--gpus", default=None, help="GPU indexes for the workers, e.g. 0,1 (default: all; none)"
    )
    grid.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = grid.add_argument_group(
        "executor", "where the runs execute; overrides the grid file's executor: block (docs/cluster.md)"
    )
    cluster.add_argument(
        "--executor",
        choices=["local", "slurm", "submitit-local"],
        default=None,
        help="local: worker processes (default); slurm: one SLURM job array through submitit, one run per "
        "job; submitit-local: submitit jobs as local subprocesses",
    )
    cluster.add_argument("--partition", default=None, help="slurm: partition")
    cluster.add_argument(
        "--gpus-per-job", type=int, default=None, metavar="N", help="GPUs per job (slurm: 1)"
    )
    cluster.add_argument("--cpus-per-job", type=int, default=None, metavar="N", help="slurm: CPUs per job")
    cluster.add_argument(
        "--time", type=int, default=None, metavar="MIN", help="time limit per job in minutes (default 240)"
    )
    cluster.add_argument("--mem-gb", type=float, default=None, metavar="G", help="slurm: memory per job")
    cluster.add_argument(
        "--array-parallelism",
        type=int,
        default=None,
        metavar="N",
        help="jobs running at once (slurm: the array's %%N; submitit-local: default --jobs)",
    )
    cluster.add_argument(
        "--slurm-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra sbatch setting, e.g. account=myproj (repeatable; slurm_additional_parameters)",
    )
    cluster.add_argument(
        "--no-wait",
        action="store_true",
        help="slurm: submit, print the job ids and exit; `fgvc report <grid folder>` builds the report later",
    )
    grid.set_defaults(func=_cmd_grid)

    train = sub.add_parser(
        "train",
        help="run a notebook's experiment in this process, no notebook (for torchrun / DDP and scripts)",
    )
    train.add_argument("notebook", help="bird | cifar100 | inat_bbn | multilabel")
    train.add_argument("-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)")
    train.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    train.set_defaults(func=_cmd_train)

    report = sub.add_parser("report", help="summary.csv/.md and comparison figures of a grid")
    report.add_argument("grid", help="a grid YAML or an outputs/runs/<name> folder")
    report.add_argument("--metric", default=None, help="history.csv column for the figures (default: grid's)")
    report.set_defaults(func=_cmd_report)
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

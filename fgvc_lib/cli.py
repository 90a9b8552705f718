"""``fgvc`` command line: ``synth`` (write embedded data sets), ``run`` (execute a notebook into a run folder),
``runs`` (a table of runs and their headline metrics), ``params`` (list a notebook's parameters), ``train`` (the
experiment without the notebook, e.g. under torchrun), ``grid`` (run a parameter grid), ``report`` (summarise
one)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .catalog import Synth, notebook_names, synth_commands
from .config import ParameterError, check_command_line, params_class

#: Type and help of the ``fgvc synth`` options of the declared data sets (``fgvc_lib.catalog.Synth.options``);
#: an option a plugin's writer adds is read as a YAML scalar. Each help lists [the data sets taking it, defaults].
SYNTH_OPTIONS: dict[str, tuple[Any, str]] = {
    "classes": (int, "number of classes"),
    "per_class": (int, "images per class (cifar100: training images)"),
    "test_per_class": (int, "test images per class"),
    "size": (int, "image side"),
    "max_per_class": (int, "images of the largest class"),
    "imbalance": (float, "imbalance ratio n_max / n_min"),
    "val_per_class": (int, "validation images per class"),
    "images": (int, "number of images"),
    "seed": (int, "random seed (default 0)"),
}


def _yaml_scalar(text: str) -> Any:
    from .config import parse_overrides as _overrides

    return _overrides([["value", text]])["value"]


def _synth_options(synths: dict[str, Synth]) -> dict[str, tuple[Any, str]]:
    """Every option of the declared data sets -> (type, help naming the data sets that take it, with their
    defaults), in the order of :data:`SYNTH_OPTIONS`, then the order declared."""
    names = [n for n in SYNTH_OPTIONS if any(n in s.options for s in synths.values())]
    names += [n for s in synths.values() for n in s.options if n not in names]
    out = {}
    for name in dict.fromkeys(names):
        type_, text = SYNTH_OPTIONS.get(name, (_yaml_scalar, name.replace("_", " ")))
        takers = [
            f"{d} {s.defaults[name]}" if name in s.defaults else d
            for d, s in synths.items()
            if name in s.options
        ]
        out[name] = (type_, f"{text} [{', '.join(takers)}]")
    return out


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth.output import write_owned

    synth = synth_commands()[args.dataset]
    given = {name: getattr(args, name) for name in _synth_options(synth_commands())}
    root = write_owned(synth, args.out, given, overwrite=args.overwrite)
    print(synth.wrote.format(root=root))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .execution import (
        NotebookFailed,
        RunInterrupted,
        execute_notebook,
        interrupt_once,
        load_values,
        papermill_log_to_stderr,
        print_line,
    )
    from .param_paths import resolve_path
    from .run_summary import run_summary

    if args.log_output:
        papermill_log_to_stderr()
    echo = None if args.quiet or args.log_output else print_line  # display only: the same notebook executes
    try:
        with interrupt_once():
            check_command_line(args.notebook, args.file, args.param)  # before any kernel or run folder
            values = load_values(args.file, args.param, notebook=args.notebook)
            if args.run_dir:
                values["run_dir"] = resolve_path(args.run_dir, Path.cwd())
            run_dir = execute_notebook(args.notebook, values, progress=args.progress, log_output=args.log_output,
                                       echo=echo)
    except NotebookFailed as exc:  # one line: the error, the log with the traceback, the notebook
        print(f"fgvc run: {exc}", file=sys.stderr)
        return 1
    except RunInterrupted as stop:  # one line: what was kept, the command that resumes
        print(f"fgvc run: {stop.summary(_program())}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("fgvc run: interrupted before the notebook started", file=sys.stderr)
        return 130
    if not args.quiet:
        print("\n".join(run_summary(run_dir, args.notebook)))
    print(f"run finished: {run_dir}")
    return 0


def _program() -> str:
    """How this command was called, for the commands it suggests: ``.venv/bin/fgvc`` as typed, else ``fgvc``."""
    return sys.argv[0] if Path(sys.argv[0]).name == "fgvc" else "fgvc"


def _cmd_runs(args: argparse.Namespace) -> int:
    from .run_summary import runs_command

    return runs_command(args)


def _cmd_train(args: argparse.Namespace) -> int:
    check_command_line(args.notebook, args.file, args.param)  # before anything is built or written
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
        out[key.strip()] = _yaml_scalar(raw)
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

    from .grid import GridInterrupted, format_plan, grid_folder, load_grid, run_grid

    spec = load_grid(args.file)
    try:
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
    except GridInterrupted as stop:
        print(f"fgvc grid: {stop.summary(grid_folder(spec), _resume_command(args))}", file=sys.stderr)
        return 130
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


def _resume_command(args: argparse.Namespace) -> str:
    """The ``fgvc grid`` command that continues this grid (same file, preset and where it runs)."""
    import shlex

    words = ["fgvc", "grid", args.file]
    options = {"--preset": args.preset, "--jobs": args.jobs if args.jobs != 1 else None, "--gpus": args.gpus,
               "--executor": args.executor}
    for flag, value in options.items():
        words += [flag, str(value)] if value is not None else []
    words += ["--retry-failed"] if args.retry_failed else []
    return shlex.join(words)


def _cmd_report(args: argparse.Namespace) -> int:
    from .grid import grid_folder, grid_record, load_grid, write_report

    target = Path(args.grid)
    if target.is_dir():
        grid_dir = target
        spec = grid_record(target).get("spec") or {}
        compare, metric = spec.get("compare"), spec.get("metric") or "val_acc"
    elif target.is_file():
        loaded = load_grid(target)
        grid_dir, compare, metric = grid_folder(loaded), loaded.compare, loaded.metric
    else:
        raise FileNotFoundError(
            f"{target} does not exist; expected a grid YAML, a grid folder (outputs/runs/<name>) or a folder of "
            f"runs (outputs/runs/<notebook> or outputs/runs)"
        )
    paths = write_report(grid_dir, compare=compare, metric=args.metric or metric, require_metric=bool(args.metric))
    print(paths["summary_md"].read_text(), end="")
    for key, path in paths.items():
        if not key.startswith("summary_"):
            print(f"figure: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgvc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    notebooks = " | ".join(notebook_names())

    synths = synth_commands()
    synth = sub.add_parser("synth", help="write a deterministic synthetic data set in a real on-disk format")
    synth.add_argument(
        "dataset",
        choices=list(synths),
        help="; ".join(f"{name}: {s.help}" if s.help else name for name, s in synths.items()),
    )
    synth.add_argument("--out", required=True, help="output folder (empty, new, or an earlier synth output)")
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds other files: replaces the files synth writes (and removes the "
        "ones an earlier synth run wrote there), never other files",
    )
    for name, (type_, help_text) in _synth_options(synths).items():  # default None: "not given"
        synth.add_argument("--" + name.replace("_", "-"), type=type_, default=None, help=help_text)
    synth.set_defaults(func=_cmd_synth)

    run = sub.add_parser(
        "run", help="execute a notebook with papermill into outputs/runs/<notebook>/<run-id>/"
    )
    run.add_argument("notebook", help=notebooks)
    run.add_argument("-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)")
    run.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="override a parameter"
    )
    run.add_argument(
        "--run-dir", default="", help="explicit run folder (default: a new run id); with -p resume true: the run "
        "to continue, with its own parameters"
    )
    run.add_argument("--progress", action="store_true", help="progress bars in the executed notebook and papermill's "
                     "cell bar")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="print only the run folder at the end (not the notebook's lines nor the summary)")
    run.add_argument("--log-output", action="store_true",
                     help="papermill's own log on stderr instead of the notebook's lines: each cell, stdout, stderr")
    run.set_defaults(func=_cmd_run)

    runs = sub.add_parser("runs", help="table of runs: headline metric, baseline, seconds, run folder")
    runs.add_argument("targets", nargs="*", metavar="NOTEBOOK|RUN_DIR",
                      help=f"notebooks ({notebooks}; default: all) or run folders")
    runs.add_argument("--latest", action="store_true", help="only the latest run of each notebook")
    runs.set_defaults(func=_cmd_runs)

    params = sub.add_parser("params", help="list a notebook's parameters with defaults and help")
    params.add_argument("notebook", help=notebooks)
    params.set_defaults(func=_cmd_params)

    grid = sub.add_parser("grid", help="run a YAML parameter grid (outputs/runs/<name>/<run-id>/ + summary)")
    grid.add_argument("file", help="grid YAML (see fgvc_lib/grid/spec.py for the format)")
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
    train.add_argument("notebook", help=notebooks)
    train.add_argument("-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)")
    train.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    train.set_defaults(func=_cmd_train)

    report = sub.add_parser(
        "report", help="summary.csv/.md and figures of a grid, or of a folder of runs (one table per notebook)"
    )
    report.add_argument(
        "grid", help="a grid YAML, a grid folder (outputs/runs/<name>) or a folder of runs (outputs/runs/...)"
    )
    report.add_argument(
        "--metric", default=None, help="history.csv column for the figures (default: grid's; unknown: an error)"
    )
    report.set_defaults(func=_cmd_report)
    _add_trained_run_parsers(sub, notebooks)
    return parser


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_command

    return predict_command(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_command

    return export_command(args)


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from .lr_finder import lr_find_command

    return lr_find_command(args)


def _add_trained_run_parsers(sub: Any, notebooks: str) -> None:
    """``predict`` / ``export`` (use a trained run: fgvc_lib.predict, fgvc_lib.export) and ``lr-find`` (an LR range
    test before training: fgvc_lib.lr_finder)."""
    predict = sub.add_parser("predict", help="classify new images with a trained run -> CSV (+ CAM overlays)")
    predict.add_argument("run_dir", help="a run folder (outputs/runs/<notebook>/<run-id>)")
    predict.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    predict.add_argument("--topk", type=int, default=5, help="classes per image (single-label; default 5)")
    predict.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    predict.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    predict.add_argument("--cam", action="store_true", help="also write CAM overlays of the predicted class")
    predict.add_argument("--cam-dir", default="", help="folder of the CAM overlays (default <out stem>_cams/)")
    predict.add_argument("--threshold", default=None,
                         help="multi-label: global | per_label (searched by the run) | a number (default global)")
    predict.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.set_defaults(func=_cmd_predict)

    export = sub.add_parser("export", help="a run's network as TorchScript or ONNX, checked against the checkpoint")
    export.add_argument("run_dir", help="a run folder (outputs/runs/<notebook>/<run-id>)")
    export.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript", dest="fmt")
    export.add_argument("--out", default="", help="output file (default RUN_DIR/export/model.pt | model.onnx)")
    export.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    export.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the logit check (1e-4)")
    export.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of the logit check (1e-5)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (17)")
    export.set_defaults(func=_cmd_export)

    lr_find = sub.add_parser("lr-find", help="LR range test of a notebook's experiment: plot + suggested LRs")
    lr_find.add_argument("notebook", help=notebooks)
    lr_find.add_argument("-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)")
    lr_find.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                         help="override a parameter")
    lr_find.add_argument("--out", default="",
                         help="folder for lr_find.png / lr_find.json (default outputs/lr_find/<notebook>-<time>/)")
    lr_find.add_argument("--start-lr", type=float, default=1e-7)
    lr_find.add_argument("--end-lr", type=float, default=10.0)
    lr_find.add_argument("--num-iter", type=int, default=100)
    lr_find.add_argument("--suggest", default="valley,steep", help="comma-separated: valley, steep, minimum")
    lr_find.set_defaults(func=_cmd_lr_find)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # reads the catalog: FGVC_NOTEBOOKS modules are imported here
    except ImportError as exc:
        print(f"fgvc: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fgvc: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # a command without its own Ctrl-C handling: one line, no traceback
        print(f"fgvc {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ParameterError, FileNotFoundError, ValueError, RuntimeError) as exc:
        name = type(exc).__name__
        print(f"fgvc {args.command}: {name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the benchmarks: argument parsing, interleaved timing, machine facts, the JSON result."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def bird_values(**overrides: Any) -> dict[str, Any]:
    """``parameters/bird.yaml`` (the embedded demo's parameters) with ``overrides``."""
    import yaml

    values = yaml.safe_load((ROOT / "parameters" / "bird.yaml").read_text()) or {}
    values.update(overrides)
    return values


PYTHON = ".venv/bin/python"

RESULT_KEYS = ("name", "goal", "ratio", "figures", "settings", "machine", "command", "date")


# ---------------------------------------------------------------------------------------------- arguments
def bench_args(
    name: str,
    doc: str | None,
    argv: list[str] | None = None,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """``--quick`` (tiny settings, for the smoke test) and ``--out DIR`` (where ``<name>.json`` goes);
    ``more`` adds a benchmark's own options."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=(doc or "").strip())
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds; for the smoke test)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"folder for {name}.json (default: benchmarks/results)"
    )
    if more is not None:
        more(parser)
    return parser.parse_args(argv)


def entry_point(
    name: str,
    doc: str | None,
    run: Callable[..., Any],
    more: Callable[[argparse.ArgumentParser], None] | None = None,
    options: tuple[str, ...] = (),
) -> Callable[[list[str] | None], int]:
    """A benchmark's ``main(argv=None)``: ``bench_args`` (``--quick``, ``--out`` and ``more``'s options), then
    ``run(quick, out, **{option: value})`` for the ``options`` named; exit status 0."""

    def main(argv: list[str] | None = None) -> int:
        args = bench_args(name, doc, argv, more)
        run(args.quick, args.out, **{key: getattr(args, key) for key in options})
        return 0

    return main


def command_for(name: str, quick: bool) -> str:
    """The command that regenerates a result (and the results table) from the checkout's root."""
    return f"{PYTHON} -m benchmarks.run_all{' --quick' if quick else ''} {name}"


# ---------------------------------------------------------------------------------------------- timing
def interleave(
    fns: Mapping[str, Callable[[], float | None]], reps: int, *, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each callable ``warmup`` times (discarded), then ``reps`` rounds, interleaved: the order is
    A, B in even rounds and B, A in odd ones, so a slow drift of the machine hits both sides alike.

    A callable may return its own elapsed seconds (to leave setup out); if it returns None it is timed
    whole with ``time.perf_counter``. Returns the seconds of every round per name.
    """
    names = list(fns)

    def once(key: str) -> float:
        start = time.perf_counter()
        value = fns[key]()
        return float(value) if value is not None else time.perf_counter() - start

    for _ in range(warmup):
        for key in names:
            once(key)
    times: dict[str, list[float]] = {key: [] for key in names}
    for i in range(reps):
        for key in names if i % 2 == 0 else names[::-1]:
            times[key].append(once(key))
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float]) -> float:
    """Relative spread (max - min) / median of a list of timings: how noisy the machine was."""
    m = median(values)
    return float((max(values) - min(values)) / m) if m > 0 else float("nan")


def throughput(
    times: Mapping[str, list[float]], items: int, seconds_key: str | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Rates of the sides timed by ``interleave``: (``{side: items / median seconds}``, figures) with figures
    ``<side>_images_per_s``, then ``<side>_<seconds_key>`` (the median seconds, if a key is given), then
    ``<side>_spread``."""
    ips = {key: items / median(values) for key, values in times.items()}
    figures: dict[str, float] = {f"{key}_images_per_s": value for key, value in ips.items()}
    if seconds_key is not None:
        figures |= {f"{key}_{seconds_key}": median(values) for key, values in times.items()}
    return ips, figures | spreads(times)


def spreads(times: Mapping[str, list[float]], *sides: str) -> dict[str, float]:
    """``{<side>_spread: spread(seconds)}`` of the ``sides`` named (default: every side), in that order."""
    return {f"{key}_spread": spread(times[key]) for key in sides or times}


def worst_ratio(ratios: Mapping[Any, float], label: str) -> tuple[float, str]:
    """The smallest of a benchmark's ratios (one per size, batch ...) and a summary naming each one:
    ``worst_ratio({224: 3.1, 380: 2.9}, "{} px")`` -> ``(2.9, "3.1x (224 px), 2.9x (380 px)")``."""
    summary = ", ".join(f"{value:.3g}x ({label.format(key)})" for key, value in ratios.items())
    return min(ratios.values()), summary


def fit_one_epoch(model: Any, optimizer: Any, batches: Any, device: Any = "cpu", **options: Any) -> None:
    """One epoch of a fresh ``Trainer`` (cross-entropy, no progress bar, no log; ``options`` such as ``amp``,
    ``channels_last``, ``batch_transform`` go to it) over ``batches``: the Trainer side the benchmarks time,
    construction included (it is cheap)."""
    import torch

    from fgvc_lib.engine import Trainer

    Trainer(
        model, optimizer, torch.nn.CrossEntropyLoss(), epochs=1, device=device, progress=False, log=None, **options
    ).fit(batches)


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats to ``digits`` significant digits (recursively), so the JSON stays readable."""
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return value
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- machine
def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_support() -> dict[str, bool]:
    """Whether the CPU has bfloat16 units: AMX tiles (``amx_bf16``) or AVX-512 BF16 dot products."""
    flags = cpu_flags()
    return {"amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


def machine_info() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "torch_version": torch.__version__,
        "cuda_device": cuda,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------- outputs
@contextlib.contextmanager
def temp_outputs(prefix: str) -> Iterator[Path]:
    """A temporary folder set as ``FGVC_OUTPUTS`` (run folders and embedded data go there), removed after."""
    old = os.environ.get("FGVC_OUTPUTS")
    with tempfile.TemporaryDirectory(prefix=f"fgvc-bench-{prefix}-") as tmp:
        os.environ["FGVC_OUTPUTS"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("FGVC_OUTPUTS", None)
            else:
                os.environ["FGVC_OUTPUTS"] = old


def result_writer(name: str, goal: str, compared: str) -> Callable[..., dict[str, Any]]:
    """``write_result`` with one benchmark's fixed facts filled in (its name, its goal, what it compares):
    ``write(out, ratio=..., figures=..., settings=..., quick=..., summary=..., **extra)``."""
    return functools.partial(write_result, name=name, goal=goal, compared=compared)


def write_result(
    out: str | Path,
    *,
    name: str,
    goal: str,
    ratio: float | None,
    figures: Mapping[str, Any],
    settings: Mapping[str, Any],
    quick: bool,
    compared: str,
    summary: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``<out>/<name>.json`` (written to a temp file, then renamed) and return the record.

    ``compared`` says what is compared (the table's second column); ``summary`` is the table's figure cell
    (default: the ratio). ``extra`` keys (``skipped``, ``notes`` ...) are stored as given.
    """
    record: dict[str, Any] = {
        "name": name,
        "goal": goal,
        "ratio": None if ratio is None else rounded(float(ratio)),
        "figures": rounded(dict(figures)),
        "settings": dict(settings, quick=quick),
        "machine": machine_info(),
        "command": command_for(name, quick),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "compared": compared,
        "summary": summary if summary is not None else (f"{ratio:.3g}x" if ratio is not None else "n/a"),
        **extra,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)
    print(f"{name}: {record['summary']}  (goal {goal})  -> {path}", flush=True)
    return record

"""Run the benchmarks (all, or those named) and write the results table ``<out>/README.md``.

    python -m benchmarks.run_all                 # everything (``make bench``)
    python -m benchmarks.run_all ohem step       # only these; the table still lists every result present
    python -m benchmarks.run_all --quick --out /tmp/b   # tiny settings, results elsewhere (the smoke test)

Each benchmark runs in a process of its own (``python -m benchmarks.<name>``), so none inherits another's
memory, threads or worker processes. One that fails gets a result with ``"error"`` and ``"ratio": null``;
the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import BENCHMARKS
from .common import RESULTS_DIR, command_for, machine_info, write_result

ROOT = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings (for the smoke test)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="results folder (default: benchmarks/results)"
    )
    return parser


def run_one(name: str, quick: bool, out: Path) -> tuple[bool, float]:
    """Run one benchmark in a child process; record its wall time (or its failure) in ``<name>.json``."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", "--out", str(out)] + (["--quick"] if quick else [])
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "")
    path = out / f"{name}.json"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit status {proc.returncode}"
        write_result(
            out,
            name=name,
            goal="",
            ratio=None,
            figures={},
            settings={},
            quick=quick,
            compared="",
            summary=f"FAILED: {error}",
            error=error,
            stderr_tail=proc.stderr[-4000:],
        )
    record = json.loads(path.read_text())
    record["wall_s"] = round(seconds, 1)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"== {name}: {'ok' if proc.returncode == 0 else 'FAILED'} in {seconds:.0f} s", flush=True)
    return proc.returncode == 0, seconds


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def load_results(out: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(out.glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except ValueError:
            continue
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    return sorted(records, key=lambda r: (order.get(r.get("name"), len(order)), str(r.get("name"))))


def write_table(out: Path) -> Path:
    """``<out>/README.md``: one row per result JSON in ``out``."""
    records = load_results(out)
    machine = records[0]["machine"] if records else machine_info()
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks.run_all` (`make bench`) from the JSON files in this folder;",
        "what each benchmark measures and how: `benchmarks/README.md`. Every ratio compares two things",
        "measured side by side in one process (rounds interleaved, medians), so it means more than either",
        "raw figure on a shared machine. Raw figures, settings and the machine are in each `<name>.json`.",
        "",
        "| benchmark | what is compared | goal | measured ratio / figure | command |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        cells = [
            r.get("name"),
            r.get("compared", ""),
            r.get("goal", ""),
            r.get("summary", ""),
            f"`{r.get('command', '')}`",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('cpus_usable')} usable CPU cores, "
        f"torch {machine.get('torch_version')}, CUDA device: {machine.get('cuda_device') or 'none'}.",
        "",
        "Wall time per benchmark (s): "
        + ", ".join(
            f"{r.get('name')} {r.get('wall_s', '?')} ({str(r.get('date', ''))[:10]})" for r in records
        )
        + ".",
        "",
    ]
    path = out / "README.md"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; expected some of {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    failed = []
    for name in names:
        ok, _ = run_one(name, args.quick, out)
        if not ok:
            failed.append(name)
    table = write_table(out)
    total = time.perf_counter() - start
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"\n{table.read_text()}", flush=True)
    print(f"{len(names)} benchmark(s) in {total:.0f} s ({stamp}); table: {table}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)} (see their JSON 'error')", file=sys.stderr)
        print(f"rerun one: {command_for(failed[0], args.quick)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

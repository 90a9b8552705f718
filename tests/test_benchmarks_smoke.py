"""Smoke test of benchmarks/: every benchmark runs with --quick into a temp folder and writes a well-formed
result. No timing is asserted (the figures of a --quick run mean nothing): only that they exist and are
finite and positive where a time or a rate must be."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAMES = ("data", "step", "ohem", "papermill", "memory", "gpu")
KEYS = ("name", "goal", "ratio", "figures", "settings", "machine", "command", "date")
MACHINE_KEYS = ("cpu_count", "torch_version", "cuda_device", "torch_threads")

# figures that are times, rates or sizes: finite and > 0 in any run
POSITIVE = {
    "data": [
        "{s}px.pil_images_per_s",
        "{s}px.cache_batched_images_per_s",
        "{s}px.ratio",
        "{s}px.cache_build_s",
        "{s}px.cold_ratio",
    ],
    "step": [
        "bare_images_per_s",
        "trainer_images_per_s",
        "trainer_vs_bare",
        "bare_s_per_epoch",
        "trainer_s_per_epoch",
    ],
    "ohem": ["batch{b}.loop_ms_per_call", "batch{b}.ohem_loss_ms_per_call", "batch{b}.ratio"],
    "papermill": ["notebook_s", "direct_s", "html_export_s", "ratio"],
    "memory": ["peak_rss_mb", "peak_total_rss_sampled_mb", "rss_epoch2_mb", "rss_last_mb", "run_seconds"],
    "gpu": ["fp32_images_per_s", "bf16_cl_images_per_s", "bf16_cl_vs_fp32"],
}


def _run(*args: str, timeout: int = 540) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*")} if folder.is_dir() else {}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    before = _snapshot(RESULTS)
    proc = _run("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _snapshot(RESULTS) == before, "a --out run must not touch benchmarks/results"
    return out


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def _get(figures: dict, dotted: str) -> object:
    value: object = figures
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"missing figure {dotted}"
        value = value[part]
    return value


@pytest.mark.parametrize("name", NAMES)
def test_result_is_well_formed(results: Path, name: str) -> None:
    record = json.loads((results / f"{name}.json").read_text())
    for key in KEYS:
        assert key in record, key
    assert record["name"] == name
    assert record["goal"] and isinstance(record["goal"], str)
    assert "error" not in record, record.get("error")
    assert record["settings"]["quick"] is True
    assert f"benchmarks.run_all --quick {name}" in record["command"]
    datetime.fromisoformat(record["date"])
    for key in MACHINE_KEYS:
        assert key in record["machine"], key
    assert record["machine"]["cpu_count"] >= 1 and record["machine"]["torch_threads"] >= 1

    if name == "gpu" and record["machine"]["cuda_device"] is None:
        assert record["ratio"] is None and record["skipped"] == "no CUDA device"
        return
    assert _positive(record["ratio"]), record["ratio"]
    figures = record["figures"]
    settings = record["settings"]
    for pattern in POSITIVE[name]:
        if "{s}" in pattern:
            paths = [pattern.format(s=s) for s in settings["sizes"]]
        elif "{b}" in pattern:
            paths = [pattern.format(b=b) for b in settings["batches"]]
        else:
            paths = [pattern]
        for path in paths:
            value = _get(figures, path)
            assert _positive(value), f"{name}: {path} = {value!r}"


def test_extra_checks_of_single_benchmarks(results: Path) -> None:
    ohem = json.loads((results / "ohem.json").read_text())
    for b in ohem["settings"]["batches"]:
        assert ohem["figures"][f"batch{b}"]["grad_max_abs_diff"] < 1e-5  # both forms agree
    memory = json.loads((results / "memory.json").read_text())
    rows = memory["figures"]["per_epoch"]
    assert [r["epoch"] for r in rows] == list(range(1, memory["settings"]["values"]["epochs"] + 1))
    assert all(_positive(r["rss_mb"]) for r in rows)
    for key in ("growth_epoch2_to_last_mb", "growth_epoch2_to_last_pct"):
        assert math.isfinite(memory["figures"][key])
    step = json.loads((results / "step.json").read_text())
    assert "amx_bf16" in step["settings"]["cpu_bf16"]


def test_table_lists_every_benchmark(results: Path) -> None:
    table = (results / "README.md").read_text()
    assert "| benchmark | what is compared | goal | measured ratio / figure | command |" in table
    for name in NAMES:
        assert f"| {name} |" in table


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    proc = _run("nosuch", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "nosuch" in proc.stderr
    assert not list(tmp_path.iterdir())

"""Memory of the embedded bird demo: peak RSS and RSS after every epoch.

The run (``parameters/bird.yaml``, progress bars off) happens in a child process of its own, so nothing
another benchmark allocated is counted: ``BirdExperiment(params)`` is built, a callback is appended to its
Trainer's ``callbacks`` (called after each epoch) that records the RSS of the process and of its DataLoader
workers, then ``run()``. A thread samples the same sum (and the PSS sum) every 0.5 s for the peaks. The
embedded data set is generated before the child starts (in a temporary ``FGVC_OUTPUTS``), so its generation
is not measured.

Figures: peak RSS (the process's own ``ru_maxrss``, and the sampled peak of process + workers), the RSS per
epoch, and the growth from epoch 2 to the last epoch in MB and %. Ratio: RSS (process + workers) after the
last epoch / after epoch 2. Goal: does not grow (under 5 % after epoch 2). Worker RSS counts pages shared
with the parent again; the proportional set size (PSS, shared pages split) is recorded per epoch too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR, ROOT, bird_values, entry_point, result_writer, temp_outputs

NAME = "memory"
GOAL = "does not grow (< 5 % after epoch 2)"
write = result_writer(NAME, GOAL, "bird demo RSS after the last epoch vs after epoch 2 (process + workers)")
MB = 1024 * 1024
SAMPLE_S = 0.5  # reading PSS costs ~15 ms per process: sampling more often would slow the run itself

QUICK = {
    "synth_classes": 3,
    "synth_per_class": 8,
    "synth_size": 48,
    "img_size": 32,
    "batch_size": 4,
    "epochs": 3,
    "num_workers": 0,
    "cam_images": 0,
    "pretrained": False,
}


def demo_values(quick: bool) -> dict[str, Any]:
    return bird_values(progress=False, **(QUICK if quick else {}))


# ---------------------------------------------------------------------------------------------- child side
def _rss(proc: Any) -> tuple[float, float]:
    """(own RSS, summed RSS of the live children) in MB."""
    import psutil

    own = proc.memory_info().rss
    kids = 0
    for child in proc.children(recursive=True):
        try:
            kids += child.memory_info().rss
        except psutil.Error:  # a worker that just exited
            pass
    return own / MB, kids / MB


def _pss(proc: Any) -> float | None:
    """Proportional set size of the process and its children in MB (None where the OS does not say)."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.Error, AttributeError):
            return None
    return total / MB


def child_main(values_json: str, result_path: str) -> int:
    """Run the demo in this process and write the RSS record to ``result_path``."""
    import psutil

    from fgvc_lib.experiments.bird import BirdExperiment

    proc = psutil.Process()
    peak = {"total": 0.0, "pss": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                own, kids = _rss(proc)
                peak["total"] = max(peak["total"], own + kids)
                peak["pss"] = max(peak["pss"], _pss(proc) or 0.0)
            except psutil.Error:
                pass
            stop.wait(SAMPLE_S)

    start = time.perf_counter()
    built_rss = _rss(proc)
    exp = BirdExperiment(json.loads(values_json))
    epochs: list[dict[str, Any]] = []

    def record(trainer: Any, row: dict[str, float]) -> None:
        own, kids = _rss(proc)
        epochs.append(
            {
                "epoch": int(row["epoch"]),
                "rss_mb": own,
                "workers_rss_mb": kids,
                "total_rss_mb": own + kids,
                "pss_mb": _pss(proc),
                "seconds": time.perf_counter() - start,
            }
        )

    exp.trainer.add_callback(record)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        exp.run()
    finally:
        stop.set()
        sampler.join()
    record_out = {
        "epochs": epochs,
        "rss_before_build_mb": built_rss[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "peak_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "peak_total_rss_sampled_mb": peak["total"],
        "peak_total_pss_sampled_mb": peak["pss"] or None,
        "seconds": time.perf_counter() - start,
        "device": str(exp.device),
    }
    Path(result_path).write_text(json.dumps(record_out))
    return 0


# ---------------------------------------------------------------------------------------------- parent side
def _growth(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    first, last = rows[1][key], rows[-1][key]
    return last - first, 100.0 * (last - first) / first


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def run(quick: bool = False, out: str | Path = RESULTS_DIR) -> dict[str, Any]:
    from fgvc_lib.config import BirdParams
    from fgvc_lib.experiments.bird import embedded_bird_root

    values = demo_values(quick)
    params = BirdParams.from_dict(dict(values))  # the defaults for what the YAML file leaves out
    if params.epochs < 3:
        raise ValueError("the memory benchmark needs at least 3 epochs (growth is measured from epoch 2)")
    with temp_outputs(NAME) as tmp:
        start = time.perf_counter()
        embedded_bird_root(params.synth_classes, params.synth_per_class, params.synth_size)
        data_seconds = time.perf_counter() - start
        result_file = tmp / "memory-child.json"
        env = dict(os.environ, MPLBACKEND="Agg")
        cmd = [sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(values), str(result_file)]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        child = json.loads(result_file.read_text())
    rows = child["epochs"]
    growth_mb, growth_pct = _growth(rows, "rss_mb")
    total_mb, total_pct = _growth(rows, "total_rss_mb")
    ratio = rows[-1]["total_rss_mb"] / rows[1]["total_rss_mb"]
    figures = {
        "epochs": len(rows),
        "peak_rss_mb": child["peak_rss_mb"],
        "peak_total_rss_sampled_mb": child["peak_total_rss_sampled_mb"],
        "peak_total_pss_sampled_mb": child["peak_total_pss_sampled_mb"],
        "peak_single_worker_rss_mb": child["peak_worker_rss_mb"],
        "rss_epoch2_mb": rows[1]["rss_mb"],
        "rss_last_mb": rows[-1]["rss_mb"],
        "growth_epoch2_to_last_mb": growth_mb,
        "growth_epoch2_to_last_pct": growth_pct,
        "total_rss_epoch2_mb": rows[1]["total_rss_mb"],
        "total_rss_last_mb": rows[-1]["total_rss_mb"],
        "total_growth_epoch2_to_last_mb": total_mb,
        "total_growth_epoch2_to_last_pct": total_pct,
        "per_epoch": rows,
        "run_seconds": child["seconds"],
        "data_generation_seconds": data_seconds,
    }
    verdict = "does not grow" if abs(total_pct) < 5 else "GROWS"
    return write(
        out,
        ratio=ratio,
        figures=figures,
        settings={
            "values": values,
            "resolved": {
                k: getattr(params, k)
                for k in (
                    "model",
                    "img_size",
                    "batch_size",
                    "epochs",
                    "num_workers",
                    "synth_classes",
                    "synth_per_class",
                    "synth_size",
                    "cache",
                    "batch_augment",
                    "amp",
                    "channels_last",
                )
                if hasattr(params, k)
            },
            "device": child["device"],
            "sampling_interval_s": SAMPLE_S,
            "ratio_is": "RSS of process + DataLoader workers after the last epoch / after epoch 2",
        },
        quick=quick,
        summary=(
            f"peak RSS {child['peak_rss_mb']:.0f} MB (process), {_mb(child['peak_total_pss_sampled_mb'])} "
            f"PSS with workers; "
            f"epoch 2 -> {len(rows)}: {total_mb:+.0f} MB ({total_pct:+.1f} %), {verdict}"
        ),
    )


parent_main = entry_point(NAME, __doc__, run)


def main(argv: list[str] | None = None) -> int:
    """The benchmark (``--quick``, ``--out``), or with ``--child`` the measured run in this process."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        parser = argparse.ArgumentParser(prog="python -m benchmarks.memory --child")
        parser.add_argument("--child", nargs=2, metavar=("VALUES_JSON", "RESULT_JSON"), required=True)
        return child_main(*parser.parse_args(argv).child)
    return parent_main(argv)


if __name__ == "__main__":
    sys.exit(main())

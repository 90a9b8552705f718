"""The one-shot GPU check (``make gpu-check``): every GPU path of the workbook, measured in one command.

Made for a bare GPU machine that is lent for minutes at a time (README "Performance"): ``make gpu-wheels``
here, carry ``.gpu-wheels/`` there, then ``FGVC_GPU_CHECK_OUT=$OUT make gpu-check``. Four parts, each in a
process of its own with its own time limit, all within ``--budget`` seconds (default 8 minutes):

1. ``gpu.json``: ResNet-50 at 224 px training through the Trainer: fp32 (PyTorch defaults), bf16 +
   channels_last, fp16 + channels_last + GradScaler; images/s, ratio to fp32, share of the device's peak
   (``benchmarks/gpu.py``).
2. ``data_path.json``: the bird data path at 380 px: decode-once cache + batched augmentation on the device
   vs the per-sample PIL DataLoader with 16 workers (images/s of each, loader alone), an EfficientNet-B4
   training step at 380 px with bf16 + channels_last on batches already on the device, and one training
   epoch fed by each loader: the share of the epoch spent waiting on data (``1 - step time / epoch time``).
3. ``notebook.json``: ``notebooks/bird.ipynb`` end to end through papermill on the device, the embedded run
   (``parameters/bird.yaml``) with ``amp: bf16`` and ``channels_last: true``: wall time and metrics, next
   to the same run's CPU figures (``benchmarks/results/gpu_check_cpu/notebook.json``).
4. ``cuda_tests.json``: ``pytest -m cuda`` (the tests that skip without CUDA) and one short bird run with
   ``amp: fp16`` (GradScaler), ``channels_last`` and ``batch_augment``.

Plus ``gpu_check.log`` (everything printed) and ``summary.md`` (the table for README): at most 8 files.
``--device cpu`` runs the same code with tiny settings (the test suite does, so the check cannot rot while
no GPU is at hand); ``--full`` with ``--device cpu`` gives the CPU reference of part 3.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    ROOT,
    bird_values,
    fit_one_epoch,
    interleave,
    median,
    temp_outputs,
    throughput,
    write_result,
)

OUT_ENV = "FGVC_GPU_CHECK_OUT"
DEFAULT_OUT = ROOT / "outputs" / "gpu_check"
CPU_REFERENCE = ROOT / "benchmarks" / "results" / "gpu_check_cpu" / "notebook.json"
PARTS = ("gpu", "data_path", "notebook", "cuda_tests")
# Seconds each part may take at most (the whole check stops at --budget whatever these say).
PART_LIMITS = {"gpu": 90, "data_path": 130, "notebook": 150, "cuda_tests": 120}
COMMAND = "FGVC_GPU_CHECK_OUT=DIR make gpu-check"


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is available (use --device cpu for the tiny check)")
    return name


def _tiny(device: str, full: bool) -> bool:
    return device == "cpu" and not full


# ---------------------------------------------------------------------------------------------- part 2
def data_path(out: Path, device: str, full: bool) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from fgvc_lib.data.batch_transforms import build_batch_transform
    from fgvc_lib.data.cache import CachedImageDataset, build_image_cache
    from fgvc_lib.data.datasets import ImageListDataset, read_cub
    from fgvc_lib.data.synth.cub import write_cub
    from fgvc_lib.data.transforms import build_transform
    from fgvc_lib.models.factory import create_model

    if _tiny(device, full):
        s = dict(classes=2, per_class=8, source=64, size=48, batch=8, repeat=2, pil_workers=2, cache_workers=0,
                 reps=1, model="efficientnet-b0")
    else:
        s = dict(classes=8, per_class=32, source=448, size=380, batch=32, repeat=8, pil_workers=16,
                 cache_workers=4, reps=3, model="efficientnet-b4")
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size, batch = s["size"], s["batch"]
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fgvc-gpu-check-data-") as tmp:
        root = Path(tmp) / "cub"
        start = time.perf_counter()
        write_cub(root, classes=s["classes"], per_class=s["per_class"], size=s["source"], seed=0)
        figures["write_cub_s"] = time.perf_counter() - start
        items = read_cub(root).items()
        relpaths, labels = [r for r, _ in items], [label for _, label in items]
        epoch_items = items * s["repeat"]  # one epoch = every image `repeat` times (steadier timings)
        n = len(epoch_items)

        def loader(dataset: Any, workers: int) -> DataLoader:
            return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                              persistent_workers=workers > 0, pin_memory=dev.type == "cuda", drop_last=True,
                              generator=torch.Generator().manual_seed(0))

        pil = loader(ImageListDataset(root, epoch_items, build_transform("bird", size, train=True)),
                     s["pil_workers"])
        start = time.perf_counter()
        cache = build_image_cache(root, relpaths, size, name="gpu-check-cub", cache_dir=Path(tmp) / "cache",
                                  workers=max(1, s["pil_workers"]))
        figures["cache_build_s"] = time.perf_counter() - start
        tiled = [i for _ in range(s["repeat"]) for i in range(len(relpaths))]
        cached = loader(CachedImageDataset(cache, [labels[i] for i in tiled], indices=tiled), s["cache_workers"])
        transform = build_batch_transform("bird", size, train=True).to(dev)
        steps = n // batch
        images = steps * batch

        def loader_only(data: DataLoader, batch_transform: Any) -> Any:
            def run() -> float:
                start = time.perf_counter()
                count = 0
                for x, _y in data:
                    x = x.to(dev, non_blocking=dev.type == "cuda")
                    if batch_transform is not None:
                        x = batch_transform(x)
                    count += x.shape[0]
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if count != images:
                    raise AssertionError(f"loader gave {count} images, expected {images}")
                return time.perf_counter() - start

            return run

        torch.manual_seed(0)
        model = create_model(s["model"], s["classes"], pretrained=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=1e-5)
        first = next(iter(cached))[0].to(dev)
        on_device = [(transform(first), torch.randint(0, s["classes"], (batch,), device=dev))] * steps

        def fit(data: Any, batch_transform: Any) -> Any:
            def run() -> float:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                start = time.perf_counter()
                fit_one_epoch(model, optimizer, data, dev, amp="bf16", channels_last=True,
                              batch_transform=batch_transform)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                return time.perf_counter() - start

            return run

        times = interleave(
            {
                "pil_loader": loader_only(pil, None),
                "cache_batched_loader": loader_only(cached, transform),
                "step": fit(on_device, None),
                "fit_pil": fit(pil, None),
                "fit_cache_batched": fit(cached, transform),
            },
            s["reps"],
        )
        del pil, cached  # shut the persistent workers down
    ips, rates = throughput(times, images)
    figures |= rates
    step_s = median(times["step"])
    verdicts = {}
    for side in ("pil", "cache_batched"):
        wait = max(0.0, 1.0 - step_s / median(times[f"fit_{side}"]))
        figures[f"fit_{side}_data_wait_share"] = wait
        figures[f"{side}_loader_vs_step"] = ips[f"{side}_loader"] / ips["step"]
        verdicts[side] = "keeps the step fed" if ips[f"{side}_loader"] >= ips["step"] else "step waits on data"
    figures["verdicts"] = verdicts
    ratio = ips["cache_batched_loader"] / ips["pil_loader"]
    summary = (f"loaders at {size} px: cache+batched {ips['cache_batched_loader']:.0f} img/s, PIL "
               f"({s['pil_workers']} workers) {ips['pil_loader']:.0f} img/s ({ratio:.3g}x); {s['model']} bf16 "
               f"step {ips['step']:.0f} img/s; data wait per epoch: cache+batched "
               f"{100 * figures['fit_cache_batched_data_wait_share']:.0f} %, PIL "
               f"{100 * figures['fit_pil_data_wait_share']:.0f} %")
    return write_result(
        out, name="data_path", goal="cache+batched loader >= the EfficientNet-B4 step's images/s", ratio=ratio,
        figures=figures, settings=dict(s, images_per_epoch=images, device=device, amp="bf16",
                                       channels_last=True, preset="bird"),
        quick=_tiny(device, full), summary=summary, command=COMMAND,
        compared="bird data path: decode-once cache + batched augmentation on the device vs per-sample PIL "
                 "DataLoader; EfficientNet-B4 bf16 step fed by each",
    )


# ---------------------------------------------------------------------------------------------- part 3
def _epoch_seconds(run_dir: Path) -> list[float]:
    with open(run_dir / "history.csv", newline="") as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)]


def notebook(out: Path, device: str, full: bool) -> dict[str, Any]:
    from fgvc_lib.execution import execute_notebook

    values = bird_values(amp="bf16", channels_last=True, device=device)
    if _tiny(device, full):
        values |= dict(synth_classes=3, synth_per_class=12, synth_size=48, img_size=32, batch_size=8, epochs=1,
                       num_workers=0, cam_images=2, amp="off", channels_last=False)
    with temp_outputs("gpu-check-notebook") as tmp:
        values["run_dir"] = str(tmp / "runs" / "bird")
        start = time.perf_counter()
        run_dir = execute_notebook("bird", values)
        wall = time.perf_counter() - start
        metrics = json.loads((run_dir / "metrics.json").read_text())
        epochs = _epoch_seconds(run_dir)
    keys = ("status", "seconds", "epochs_run", "top1_acc", "top5_acc", "val_top1_acc", "val_loss", "chance_acc",
            "pointing_game")
    figures = {"wall_s": wall, "epoch_s_total": sum(epochs), "epoch_s_first": epochs[0],
               "epoch_s_median_after_first": median(epochs[1:]) if len(epochs) > 1 else epochs[0]}
    figures |= {f"metric_{k}": metrics.get(k) for k in keys}
    extra: dict[str, Any] = {}
    summary = (f"bird notebook ({values['epochs']} epochs, amp {values['amp']}): {wall:.0f} s wall, "
               f"test top-1 {metrics.get('top1_acc', float('nan')):.3f}")
    if device != "cpu" and CPU_REFERENCE.is_file():
        cpu = json.loads(CPU_REFERENCE.read_text())
        extra["cpu_reference"] = {"figures": cpu["figures"], "machine": cpu["machine"], "date": cpu["date"]}
        ratio = cpu["figures"]["wall_s"] / wall
        figures["cpu_wall_s"] = cpu["figures"]["wall_s"]
        figures["wall_speedup_vs_cpu"] = ratio
        figures["epoch_speedup_vs_cpu"] = cpu["figures"]["epoch_s_median_after_first"] / figures[
            "epoch_s_median_after_first"]
        summary += (f"; CPU ({cpu['machine']['cpus_usable']} cores) {cpu['figures']['wall_s']:.0f} s, test "
                    f"top-1 {cpu['figures']['metric_top1_acc']:.3f}: {ratio:.2g}x wall, "
                    f"{figures['epoch_speedup_vs_cpu']:.2g}x per epoch")
    else:
        ratio = None
    return write_result(
        out, name="notebook", goal="report (GPU vs CPU wall time, same metrics keys)", ratio=ratio,
        figures=figures, settings={k: v for k, v in values.items() if k != "run_dir"},
        quick=_tiny(device, full), summary=summary, command=COMMAND,
        compared="notebooks/bird.ipynb through papermill, embedded run with amp bf16 + channels_last",
        **extra,
    )


# ---------------------------------------------------------------------------------------------- part 4
def cuda_tests(out: Path, device: str, full: bool) -> dict[str, Any]:
    import math

    from fgvc_lib.experiments.bird import BirdExperiment

    tiny = _tiny(device, full)
    selection = ["tests/test_cuda.py"] if tiny else ["tests"]
    junit = Path(tempfile.mkdtemp(prefix="fgvc-gpu-check-junit-")) / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs",
           "--continue-on-collection-errors", f"--junitxml={junit}", *selection]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    tests_s = time.perf_counter() - start
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n", flush=True)
    counts = _junit_counts(junit)
    amp = "fp16" if device.startswith("cuda") else "bf16"  # fp16 autocast needs CUDA
    values = dict(synth_classes=5, synth_per_class=40, synth_size=96, img_size=64, batch_size=16, epochs=3,
                  num_workers=2, cam_images=2, progress=False, amp=amp, channels_last=True,
                  batch_augment=True, device=device, model="resnet18", pretrained=False, lr=0.05)
    if tiny:
        values |= dict(synth_classes=3, synth_per_class=12, synth_size=48, img_size=32, batch_size=8, epochs=1,
                       num_workers=0)
    with temp_outputs("gpu-check-fp16") as tmp:
        values["run_dir"] = str(tmp / "runs" / "bird-fp16")
        start = time.perf_counter()
        experiment = BirdExperiment(values)
        result = experiment.run()
        run_s = time.perf_counter() - start
        scaler = getattr(experiment.trainer, "scaler", None)
        metrics = json.loads((Path(values["run_dir"]) / "metrics.json").read_text())
    losses = [row["train_loss"] for row in result.history]
    fp16 = {
        "amp": amp,
        "seconds": run_s,
        "status": metrics.get("status"),
        "epochs_run": metrics.get("epochs_run"),
        "train_loss": losses,
        "losses_finite": all(math.isfinite(v) for v in losses),
        "top1_acc": metrics.get("top1_acc"),
        "chance_acc": metrics.get("chance_acc"),
        "grad_scaler_scale": float(scaler.get_scale()) if scaler is not None else None,
    }
    passed = counts.get("passed", 0)
    summary = (f"pytest -m cuda: {passed} passed, {counts.get('failed', 0)} failed, {counts.get('errors', 0)} "
               f"errors, {counts.get('skipped', 0)} skipped ({tests_s:.0f} s); {amp} bird run: "
               f"{fp16['status']}, losses {'finite' if fp16['losses_finite'] else 'NOT finite'}"
               + (f", GradScaler scale {fp16['grad_scaler_scale']:g}" if fp16["grad_scaler_scale"] else ""))
    return write_result(
        out, name="cuda_tests", goal="all CUDA tests pass; fp16 run finishes with finite losses", ratio=None,
        figures={"pytest": counts, "pytest_s": tests_s, "pytest_exit": proc.returncode, "fp16_run": fp16},
        settings={"pytest": " ".join(cmd[1:-len(selection)] + selection), "fp16_run": {
            k: v for k, v in values.items() if k != "run_dir"}},
        quick=tiny, summary=summary, command=COMMAND,
        compared="the tests that skip without CUDA; one short fp16 + channels_last + batch_augment run",
    )


def _junit_counts(path: Path) -> dict[str, int]:
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return {"errors": 1}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    total["failed"] = total.pop("failures")
    total["passed"] = total["tests"] - total["failed"] - total["errors"] - total["skipped"]
    return total


# ---------------------------------------------------------------------------------------------- driver
def run_part(name: str, out: Path, device: str, full: bool) -> dict[str, Any]:
    if name == "gpu":
        from . import gpu

        record = gpu.run(quick=_tiny(device, full), out=out, device=device)
        return record
    return {"data_path": data_path, "notebook": notebook, "cuda_tests": cuda_tests}[name](out, device, full)


def _run_child(name: str, out: Path, device: str, full: bool, limit: float, log: Any) -> tuple[bool, float]:
    """One part in its own process (own process group: a timeout kills its workers too)."""
    cmd = [sys.executable, "-u", "-m", "benchmarks.gpu_check", "--part", name, "--out", str(out),
           "--device", device] + (["--full"] if full else [])
    line = f"== {name} (limit {limit:.0f} s): {' '.join(cmd[2:])}"
    print(line, flush=True)
    log.write(line + "\n")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    timed_out = False

    def kill(*_: Any) -> None:
        nonlocal timed_out
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)

    import threading

    timer = threading.Timer(limit, kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for text in proc.stdout:
            sys.stdout.write(text)
            log.write(text)
        proc.wait()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        reason = f"stopped after its {limit:.0f} s limit" if timed_out else f"exit status {proc.returncode}"
        write_result(out, name=name, goal="", ratio=None, figures={}, settings={"device": device}, quick=False,
                     compared=name, summary=f"failed: {reason}", error=reason, seconds=seconds, command=COMMAND)
        return False, seconds
    record = json.loads((out / f"{name}.json").read_text())
    record["seconds"] = round(seconds, 1)
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return True, seconds


def write_summary(out: Path, parts: list[str]) -> Path:
    """``summary.md``: one table row per part (the README's Performance table takes these rows)."""
    rows = ["| part | result | seconds |", "|---|---|---|"]
    machine: dict[str, Any] = {}
    date = ""
    for name in parts:
        path = out / f"{name}.json"
        if not path.is_file():
            rows.append(f"| {name} | not run (out of budget) | |")
            continue
        record = json.loads(path.read_text())
        machine, date = record.get("machine", machine), record.get("date", date)
        rows.append(f"| {name} | {record.get('summary', '')} | {record.get('seconds', '')} |")
    head = (f"GPU check, {date[:10]}: {machine.get('cuda_device') or 'no CUDA device (CPU mode)'}, "
            f"torch {machine.get('torch_version', '?')}, {machine.get('cpus_usable', '?')} CPU cores\n\n")
    path = out / "summary.md"
    path.write_text(head + "\n".join(rows) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results folder (default: ${OUT_ENV}, else {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else the tiny CPU check), cuda, cpu")
    parser.add_argument("--full", action="store_true", help="full settings on the CPU too (CPU reference)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all parts (default 480)")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one part, in this process
    args = parser.parse_args(argv)
    out = (args.out or Path(os.environ.get(OUT_ENV) or DEFAULT_OUT)).resolve()
    device = _device(args.device)
    if args.part:
        run_part(args.part, out, device, args.full)
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; expected names from {', '.join(PARTS)}")
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget
    ok = True
    with open(out / "gpu_check.log", "a", encoding="utf-8") as log:
        log.write(f"# gpu_check {time.strftime('%Y-%m-%d %H:%M:%S')} device={device} full={args.full}\n")
        for name in parts:
            left = deadline - time.perf_counter()
            if left < 20:
                msg = f"== {name}: skipped, {left:.0f} s of the {args.budget:.0f} s budget left"
                print(msg, flush=True)
                log.write(msg + "\n")
                ok = False
                continue
            done, _ = _run_child(name, out, device, args.full, min(PART_LIMITS[name] * (1 if device != "cpu" or
                                                                                         not args.full else 4), left), log)
            ok &= done
    summary = write_summary(out, parts)
    print(summary.read_text(), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

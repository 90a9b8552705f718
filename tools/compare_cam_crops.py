"""CAM-guided crops of a finished inat_bbn run under other CAM methods, box thresholds and margins.

    PYTHONPATH=. .venv/bin/python tools/compare_cam_crops.py outputs/runs/inat_bbn/<run-id> \
        --methods layercam segeigencam --thresholds 0.2 0.35 0.5 --margins 0 0.1 0.25

The run's own parameters (``params.yaml``) and weights (``checkpoints/best.pt``, else ``last.pt``) are used; the
crops are evaluated exactly as the notebook does (``InatBBNExperiment._cam_crops``: the CAM of the predicted
class, the box around its peak region, cut out of the original file), into a temporary run folder that is
removed afterwards. Prints one Markdown row per setting: crop top-1, uncropped top-1 on the same images, box
IoU with the recorded object boxes. The evidence of docs/cam_crops.md was measured with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shutil
import tempfile
from pathlib import Path

import torch
import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished inat_bbn run folder")
    parser.add_argument("--methods", nargs="+", default=["layercam", "segeigencam"])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.2, 0.35, 0.5])
    parser.add_argument("--margins", nargs="+", type=float, default=[0.0, 0.1, 0.25])
    args = parser.parse_args(argv)

    from fgvc_lib.config import params_class
    from fgvc_lib.experiments.inat_bbn import InatBBNExperiment

    values = yaml.safe_load((args.run_dir / "params.yaml").read_text())
    checkpoint = next(
        (p for p in (args.run_dir / "checkpoints" / n for n in ("best.pt", "last.pt")) if p.is_file()), None
    )
    if checkpoint is None:
        parser.error(f"{args.run_dir}/checkpoints: no best.pt or last.pt")
    scratch = Path(tempfile.mkdtemp(prefix="compare-cam-crops-"))
    try:
        values.update(run_dir=str(scratch / "run"), resume=False, progress=False)
        exp = InatBBNExperiment(params_class("inat_bbn").from_dict(values))
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        exp.model.load_state_dict(state["model"])
        print(f"{args.run_dir} ({checkpoint.name}), img_size {exp.params.img_size}, synth_size "
              f"{exp.params.synth_size}\n")
        print("| method | threshold | margin | crop top-1 | uncropped top-1 | box IoU |\n"
              "|---|---:|---:|---:|---:|---:|")
        for method, threshold, margin in itertools.product(args.methods, args.thresholds, args.margins):
            exp.params = dataclasses.replace(
                exp.params, cam_method=method, crop_threshold=threshold, crop_margin=margin
            )
            out = exp._cam_crops()
            print(f"| {method} | {threshold:g} | {margin:g} | {out['crop_top1_acc']:.3f} | "
                  f"{out['uncropped_top1_acc_same_images']:.3f} | {out.get('crop_iou', float('nan')):.3f} |",
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

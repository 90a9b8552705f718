"""Which CNN layer should Grad-CAM hook? The last feature map (stride 32) vs the stride-16 stage vs a fusion.

Evidence for ``fgvc_lib.models.wrappers.default_cam_layer_name`` (docs/cam_layers.md): a small trained model
(default: ``tf_efficientnet_lite0`` with its offline ImageNet weights, fine-tuned a few epochs on synthetic
birds at the bird notebook's 96 px), the same held-out images and true-class targets, and these CAM targets:

* ``last``: ``feature_tap``, the last feature map (stride 32: 3x3 at 96 px), the former default;
* ``stride16``: the last stage at stride 16 (``model.cam_layer_name``: ``net.blocks.4`` for EfficientNet);
* ``stride8``: the last stage at stride 8 (timm ``feature_info``), to see whether finer still helps;
* ``fuse_mean``: ``stride16`` and ``last`` together, each CAM upsampled and scaled to [0, 1], then averaged
  (pytorch_grad_cam's multi-layer aggregation, i.e. ``cam_layer: net.blocks.4,feature_tap``);
* ``fuse_prod``: the same two maps multiplied pixel-wise and rescaled (the coarse map gates the fine one);
* baselines ``random`` (a uniform random map: a random peak) and ``centre`` (a Gaussian at the image centre).

Scores on held-out images: ``pg_wing`` = CAM peak within ``radius`` x side of the "left wing" part (the bird
experiment's pointing game, default 0.15); ``pg_box`` = peak inside the bird's box; ``energy_box`` = share of
the CAM's mass inside the box (energy-based pointing game); ``degenerate`` = share of constant maps.

Data: ``fgvc_lib.data.synth.render.render_bird`` with ``image_rng(seed, class, k)``, the renderer and seeds
``fgvc_lib.data.synth.cub.write_cub`` uses, with its box and part annotations; classes ``0, step, 2*step, ...``
(``--class-step 1``: the embedded bird set's first classes, as the notebook uses them).

Run: ``PYTHONPATH=. .venv/bin/python tools/compare_cam_layers.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fgvc_lib.cam import compute_cams  # noqa: E402
from fgvc_lib.engine import seed_everything  # noqa: E402
from fgvc_lib.models import create_model  # noqa: E402
from tools.cam_eval import add_common_args, native_grid, render_set, report, scores, train  # noqa: E402


def _rescale(cams):
    lo = cams.reshape(len(cams), -1).min(axis=1)[:, None, None]
    hi = cams.reshape(len(cams), -1).max(axis=1)[:, None, None]
    return (cams - lo) / np.maximum(hi - lo, 1e-7)


def candidate_layers(model):
    """name -> dotted module paths (a list: fused)."""
    layers = {"last": ["feature_tap"], "stride16": [model.cam_layer_name]}
    info = getattr(model.net, "feature_info", None) or []
    eight = [d["module"] for d in info if isinstance(d, dict) and d.get("reduction") == 8]
    if eight:
        layers["stride8"] = [f"net.{eight[-1]}"]
    layers["fuse_mean"] = [model.cam_layer_name, "feature_tap"]
    return layers


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--class-step", type=int, default=1, help="classes 0, step, 2*step, ... (25: colour classes)")
    add_common_args(ap, size=96, train_per_class=40, test_per_class=20, patch_scale=1.5, epochs=6, lr=1e-3,
                    methods=("gradcam", "layercam"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    class_ids = [args.class_step * i for i in range(args.classes)]
    radius = args.radius * args.size
    rows = []
    for seed in args.seeds:
        t0 = time.time()
        data = render_set(class_ids, args.train_per_class, args.test_per_class, args.size, seed, args.patch_scale)
        xtr, ytr, _, _ = data["train"]
        xte, yte, boxes, points = data["test"]
        seed_everything(seed)
        model = create_model(args.model, len(class_ids), pretrained=args.pretrained)
        print(f"seed {seed}: {args.model} on {len(xtr)} images ({len(class_ids)} classes, {args.size} px)", flush=True)
        train(model, xtr, ytr, args.epochs, args.batch_size, args.lr, seed)
        with torch.no_grad():
            acc = float((model(xte).argmax(1) == yte).float().mean())
        print(f"seed {seed}: test accuracy {acc:.3f} ({time.time() - t0:.0f} s)", flush=True)
        targets = yte.tolist()
        size = args.size
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size] + 0.5
        centre = np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 4) ** 2))
        for name, cams in {"random": rng.random((len(xte), size, size)),
                           "centre": np.repeat(centre[None], len(xte), axis=0)}.items():
            rows.append({"seed": seed, "acc": acc, "method": "-", "layer": name, "grid": "-",
                         **scores(cams, boxes, points, radius)})
        layers = candidate_layers(model)
        for method in args.methods:
            maps = {}
            for name, paths in layers.items():
                modules = [model.get_submodule(p) for p in paths]
                maps[name] = np.concatenate([
                    compute_cams(model, xte[i : i + 50], targets[i : i + 50], layer=modules, method=method)
                    for i in range(0, len(xte), 50)
                ])
                grid = "+".join(native_grid(model, m, xte) for m in modules)
                rows.append({"seed": seed, "acc": acc, "method": method, "layer": name, "grid": grid,
                             "path": ",".join(paths), **scores(maps[name], boxes, points, radius)})
            prod = _rescale(maps["stride16"] * maps["last"])
            rows.append({"seed": seed, "acc": acc, "method": method, "layer": "fuse_prod",
                         "grid": rows[-1]["grid"], "path": "stride16 x last", **scores(prod, boxes, points, radius)})
    report(rows, args.seeds, args.json, args)

if __name__ == "__main__":
    main()

"""Which Swin layer should Grad-CAM hook? Evidence on a small Swin trained from scratch on synthetic birds.

Candidates (same trained model, same CAM method, same held-out images, true-class targets):

* ``final_norm``: the output of the final ``norm`` (what ``Classifier.forward_features`` returns, the map the
  head pools);
* ``last_norm1``: ``model.layers[-1].blocks[-1].norm1`` (the layer pytorch-grad-cam's Swin tutorial uses);
* ``random``: a uniform random map (chance level), and ``centre``: a Gaussian at the image centre (a
  location prior that knows nothing about the image).

Scores per image, averaged over the test set:

* ``pg_box``: the CAM peak lies inside the bird's bounding box (pointing game, Zhang et al. 2016);
* ``pg_wing``: the CAM peak lies within ``radius`` (share of the side, the bird experiment's default 0.15) of
  the discriminative part, the wing patch that alone carries the class ("left wing" of the CUB part list);
* ``energy_box``: share of the CAM's mass inside the bounding box (energy-based pointing game, Wang et al.
  2020, Score-CAM);
* ``degenerate``: share of maps that are constant (all zero: no positive evidence anywhere).

Data: ``fgvc_lib.data.synth.render.render_bird`` (the renderer ``write_cub`` uses, with its per-image
``image_rng(seed, class, k)`` and its box / part annotations), on classes whose wing patches differ in colour
(indices 0, 25, 50, ...: the first ``write_cub`` classes share one colour and differ only in the patch's
shape and pattern, which a from-scratch Swin does not learn in a CPU budget).

Run: ``.venv/bin/python tools/compare_swin_cam_layers.py`` (about 2.5 minutes per seed on 2 CPU cores).
See docs/swin_cam_layer.md for the result and the decision.
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
from fgvc_lib.models import create_model  # noqa: E402
from tools.cam_eval import add_common_args, native_grid, render_set, report, scores, train  # noqa: E402


def build_model(num_classes, size, window):
    """A small Swin through fgvc_lib's own factory (timm Swin, channels-last, wrapped in ``Classifier``)."""
    return create_model(
        "swin_tiny_patch4_window7_224",
        num_classes,
        img_size=size,
        window_size=window,
        embed_dim=48,
        depths=(2, 2, 2),
        num_heads=(3, 6, 12),
        drop_path_rate=0.0,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=4, help="Swin window (final grid: size / 16)")
    ap.add_argument("--classes", type=int, default=8, help="colour classes 0, 25, 50, ... (at most 8)")
    ap.add_argument("--log-every", type=int, default=5, help="print the training loss every N epochs")
    add_common_args(ap, size=64, train_per_class=60, test_per_class=25, patch_scale=2.5, epochs=25, lr=3e-3,
                    methods=("gradcam", "hirescam", "layercam"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    class_ids = [25 * i for i in range(min(args.classes, 8))]
    radius = args.radius * args.size
    rows = []
    for seed in args.seeds:
        t0 = time.time()
        data = render_set(
            class_ids, args.train_per_class, args.test_per_class, args.size, seed, args.patch_scale
        )
        xtr, ytr, _, _ = data["train"]
        xte, yte, boxes, points = data["test"]
        torch.manual_seed(seed)
        model = build_model(len(class_ids), args.size, args.window)
        print(f"seed {seed}: training on {len(xtr)} images ({len(class_ids)} classes, {args.size} px)", flush=True)
        train(model, xtr, ytr, args.epochs, args.batch_size, args.lr, seed, weight_decay=0.05, pct_start=0.15,
              label_smoothing=0.1, log_every=args.log_every)
        with torch.no_grad():
            acc = float((model(xte).argmax(1) == yte).float().mean())
        print(f"seed {seed}: test accuracy {acc:.3f} ({time.time() - t0:.0f} s)", flush=True)
        layers = {
            "final_norm": model.feature_tap,  # the output of net.norm: the map the head pools
            "last_norm1": model.net.layers[-1].blocks[-1].norm1,
        }
        targets = yte.tolist()
        size = args.size
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size] + 0.5
        centre = np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 4) ** 2))
        baselines = {
            "random": rng.random((len(xte), size, size)),
            "centre": np.repeat(centre[None], len(xte), axis=0),
        }
        for name, cams in baselines.items():
            rows.append({"seed": seed, "acc": acc, "method": "-", "layer": name, "grid": "-",
                         **scores(cams, boxes, points, radius)})
        for method in args.methods:
            for name, layer in layers.items():
                cams = np.concatenate([
                    compute_cams(model, xte[i : i + 50], targets[i : i + 50], layer=layer, method=method,
                                 reshape_transform=model.to_nchw)
                    for i in range(0, len(xte), 50)
                ])
                rows.append({"seed": seed, "acc": acc, "method": method, "layer": name,
                             "grid": native_grid(model, layer, xte, channels_last=True), **scores(cams, boxes, points, radius)})
    report(rows, args.seeds, args.json, args)

if __name__ == "__main__":
    main()

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
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fgvc_lib.cam import compute_cams, pointing_game  # noqa: E402
from fgvc_lib.data.synth.render import DISCRIMINATIVE_PART, image_rng, render_bird  # noqa: E402
from fgvc_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from fgvc_lib.engine import seed_everything  # noqa: E402
from fgvc_lib.models import create_model  # noqa: E402


def render_set(class_ids, n_train, n_test, size, seed, patch_scale):
    """Train/test tensors (normalised) plus test annotations: boxes (x, y, w, h) and wing points."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    splits = {"train": ([], [], [], []), "test": ([], [], [], [])}
    for label, c in enumerate(class_ids):
        for k in range(n_train + n_test):
            image, ann = render_bird(image_rng(seed, c, k), c, size, patch_scale=patch_scale)
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
            xs, ys, boxes, points = splits["train" if k < n_train else "test"]
            xs.append((x - mean) / std)
            ys.append(label)
            boxes.append(ann.bbox)
            points.append(ann.parts[DISCRIMINATIVE_PART])
    return {
        name: (torch.stack(xs), torch.tensor(ys), boxes, points)
        for name, (xs, ys, boxes, points) in splits.items()
    }


def train(model, xs, ys, epochs, batch_size, lr, seed, log=True):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xs) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        total = 0.0
        for i in range(0, len(xs), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue
            x = xs[idx]
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            loss = F.cross_entropy(model(x), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if log:
            print(f"  epoch {epoch + 1}/{epochs} loss {total / len(xs):.3f}", flush=True)
    model.eval()
    return model


def box_mask(box, size):
    x, y, w, h = box
    cols, rows = np.arange(size) + 0.5, (np.arange(size) + 0.5)[:, None]
    return (cols >= x) & (cols <= x + w) & (rows >= y) & (rows <= y + h)


def scores(cams, boxes, points, radius):
    size = cams.shape[-1]
    masks = np.stack([box_mask(b, size) for b in boxes])
    flat = cams.reshape(len(cams), -1)
    peaks = flat.argmax(axis=1)
    in_box = masks.reshape(len(cams), -1)[np.arange(len(cams)), peaks]
    mass = flat.sum(axis=1)
    energy = np.where(mass > 0, (cams * masks).reshape(len(cams), -1).sum(axis=1) / np.maximum(mass, 1e-12), 0)
    return {
        "pg_wing": pointing_game(cams, points, radius),
        "pg_box": float(in_box.mean()),
        "energy_box": float(energy.mean()),
        "degenerate": float((np.ptp(flat, axis=1) < 1e-6).mean()),
    }


def native_grid(model, layer, x):
    shapes = []
    handle = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    return "x".join(str(s) for s in shapes[0][2:4])


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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--class-step", type=int, default=1, help="classes 0, step, 2*step, ... (25: colour classes)")
    ap.add_argument("--train-per-class", type=int, default=40)
    ap.add_argument("--test-per-class", type=int, default=20)
    ap.add_argument("--patch-scale", type=float, default=1.5, help="wing patch size (render_bird)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--radius", type=float, default=0.15, help="pointing radius, share of the side")
    ap.add_argument("--methods", nargs="+", default=["gradcam", "layercam"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="", help="also write the results here")
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
    print()
    print("| seed | acc | method | layer | path | grid | pg_wing | pg_box | energy_box | degenerate |")
    print("|---:|---:|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['acc']:.3f} | {r['method']} | {r['layer']} | {r.get('path', '-')} | {r['grid']} "
              f"| {r['pg_wing']:.3f} | {r['pg_box']:.3f} | {r['energy_box']:.3f} | {r['degenerate']:.3f} |")
    if len(args.seeds) > 1:
        print("\nmean over seeds")
        keys = list(dict.fromkeys((r["method"], r["layer"]) for r in rows))
        for method, layer in keys:
            sel = [r for r in rows if r["method"] == method and r["layer"] == layer]
            m = {k: np.mean([r[k] for r in sel]) for k in ("pg_wing", "pg_box", "energy_box", "degenerate")}
            print(f"| {method} | {layer} | {m['pg_wing']:.3f} | {m['pg_box']:.3f} | {m['energy_box']:.3f} "
                  f"| {m['degenerate']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

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


def train(model, xs, ys, epochs, batch_size, lr, seed, log):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(xs) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        total = 0.0
        for i in range(0, len(xs), batch_size):
            idx = order[i : i + batch_size]
            x = xs[idx]
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            loss = F.cross_entropy(model(x), ys[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if log and (epoch + 1) % log == 0:
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
        "pg_box": float(in_box.mean()),
        "pg_wing": pointing_game(cams, points, radius),
        "energy_box": float(energy.mean()),
        "degenerate": float((np.ptp(flat, axis=1) < 1e-6).mean()),
    }


def native_grid(model, layer, x):
    shapes = []
    handle = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    return "x".join(str(s) for s in shapes[0][1:3])  # NHWC activations: (B, H, W, C)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=4, help="Swin window (final grid: size / 16)")
    ap.add_argument("--classes", type=int, default=8, help="colour classes 0, 25, 50, ... (at most 8)")
    ap.add_argument("--train-per-class", type=int, default=60)
    ap.add_argument("--test-per-class", type=int, default=25)
    ap.add_argument("--patch-scale", type=float, default=2.5, help="wing patch size (render_bird)")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--radius", type=float, default=0.15, help="pointing radius, share of the side")
    ap.add_argument("--methods", nargs="+", default=["gradcam", "hirescam", "layercam"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=5, help="print the training loss every N epochs")
    ap.add_argument("--json", default="", help="also write the results here")
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
        train(model, xtr, ytr, args.epochs, args.batch_size, args.lr, seed, log=args.log_every)
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
                             "grid": native_grid(model, layer, xte), **scores(cams, boxes, points, radius)})
    print()
    print(f"{'seed':>4} {'acc':>5} {'method':>9} {'layer':>11} {'grid':>5} "
          f"{'pg_box':>7} {'pg_wing':>7} {'energy_box':>10} {'degenerate':>10}")
    for r in rows:
        print(f"{r['seed']:>4} {r['acc']:>5.3f} {r['method']:>9} {r['layer']:>11} {r['grid']:>5} "
              f"{r['pg_box']:>7.3f} {r['pg_wing']:>7.3f} {r['energy_box']:>10.3f} {r['degenerate']:>10.3f}")
    if len(args.seeds) > 1:
        print("\nmean over seeds")
        keys = sorted({(r["method"], r["layer"]) for r in rows}, key=lambda k: (k[0] != "-", k))
        for method, layer in keys:
            sel = [r for r in rows if r["method"] == method and r["layer"] == layer]
            m = {k: np.mean([r[k] for r in sel]) for k in ("pg_box", "pg_wing", "energy_box", "degenerate")}
            print(f"{'':>4} {'':>5} {method:>9} {layer:>11} {'':>5} "
                  f"{m['pg_box']:>7.3f} {m['pg_wing']:>7.3f} {m['energy_box']:>10.3f} {m['degenerate']:>10.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

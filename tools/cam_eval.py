"""What the two CAM-layer comparisons share: the rendered bird sets, a short training loop and the scores.

Used by ``tools/compare_cam_layers.py`` (CNN families) and ``tools/compare_swin_cam_layers.py`` (Swin).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fgvc_lib.cam import pointing_game
from fgvc_lib.data.synth.render import DISCRIMINATIVE_PART, image_rng, render_bird
from fgvc_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD


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


def train(model, xs, ys, epochs, batch_size, lr, seed, *, weight_decay=1e-4, pct_start=0.2, label_smoothing=0.0,
          log_every=1):
    """AdamW + one-cycle, random horizontal flips; batches of one are skipped (BatchNorm)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(xs) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
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
            loss = F.cross_entropy(model(x), ys[idx], label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if log_every and (epoch + 1) % log_every == 0:
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


def native_grid(model, layer, x, *, channels_last=False):
    """``HxW`` of ``layer``'s output for one image (Swin's activations are NHWC, CNNs' NCHW)."""
    shapes = []
    handle = layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    hw = shapes[0][1:3] if channels_last else shapes[0][2:4]
    return "x".join(str(s) for s in hw)


SCORE_KEYS = ("pg_wing", "pg_box", "energy_box", "degenerate")


def report(rows, seeds, json_path=None, args=None):
    """The rows as a Markdown table (and the mean over seeds when there are several); optionally as JSON."""
    import json
    from pathlib import Path

    print()
    print("| seed | acc | method | layer | path | grid | " + " | ".join(SCORE_KEYS) + " |")
    print("|---:|---:|---|---|---|---|" + "---:|" * len(SCORE_KEYS))
    for r in rows:
        print(f"| {r['seed']} | {r['acc']:.3f} | {r['method']} | {r['layer']} | {r.get('path', '-')} | {r['grid']} | "
              + " | ".join(f"{r[k]:.3f}" for k in SCORE_KEYS) + " |")
    if len(seeds) > 1:
        print("\nmean over seeds")
        for method, layer in dict.fromkeys((r["method"], r["layer"]) for r in rows):
            sel = [r for r in rows if r["method"] == method and r["layer"] == layer]
            print(f"| {method} | {layer} | " + " | ".join(f"{np.mean([r[k] for r in sel]):.3f}" for k in SCORE_KEYS)
                  + " |")
    if json_path:
        Path(json_path).write_text(json.dumps({"args": vars(args) if args else {}, "rows": rows}, indent=1))


def add_common_args(ap, *, size, train_per_class, test_per_class, patch_scale, epochs, lr, methods):
    """The options both comparisons take (their defaults differ)."""
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--train-per-class", type=int, default=train_per_class)
    ap.add_argument("--test-per-class", type=int, default=test_per_class)
    ap.add_argument("--patch-scale", type=float, default=patch_scale, help="wing patch size (render_bird)")
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--radius", type=float, default=0.15, help="pointing radius, share of the side")
    ap.add_argument("--methods", nargs="+", default=list(methods))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="", help="also write the results here")

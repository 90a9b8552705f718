"""Input pipeline: the decode-once cache + batched augmentation against per-sample PIL decode + augment.

Data: the embedded synthetic CUB set (``write_cub``) written to a temporary folder, 256 JPEG images of
448 px (larger than the report's 380 px input). Both sides produce the ``bird`` preset's training tensors
(float, normalised, ``(32, 3, s, s)`` batches) for one whole epoch, at s = 224 and s = 380:

* baseline: ``ImageListDataset(root, items, build_transform("bird", s, train=True))`` in a
  ``DataLoader(batch_size=32, shuffle=True, num_workers=2, persistent_workers=True)``: every epoch decodes
  each JPEG and augments it with PIL / torchvision, one image at a time in the workers;
* new: ``build_image_cache(root, relpaths, s, name=...)`` once (timed separately: it happens once per data set
  and size), then ``CachedImageDataset(cache, labels)`` (uint8 CHW, no transform) in the same DataLoader, and
  ``build_batch_transform("bird", s, train=True)`` applied to each uint8 batch in the main process (on the CPU
  here; on the GPU, after a non-blocking copy, when CUDA is available; the baseline's batches are then copied
  too).

Epochs of the two sides alternate (the first of each is a warm-up); the figure is images/s over a whole epoch,
median over the rounds. Ratio: new / baseline, the smaller of the two sizes. ``cold_ratio`` also charges the
new side its cache build (one epoch with the build vs one baseline epoch). A third side, timed in the same
rounds, runs the batched augmentation alone over uint8 batches already in memory
(``transform_only_images_per_s``): the new side's ceiling, and where its time goes. A fourth side keeps the
per-sample PIL preset but reads the cache (``cache_pil``): what decoding once gives on its own.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .common import RESULTS_DIR, entry_point, interleave, median, result_writer, spreads, worst_ratio

NAME = "data"
GOAL = ">= 3x"
write = result_writer(
    NAME, GOAL, "decode-once cache + batched bird augmentation vs per-sample PIL DataLoader (2 workers)"
)


def _epoch(loader: Iterable, transform: Any, device: torch.device, size: int) -> Any:
    """A callable timing one epoch of ``loader`` (+ ``transform`` on each batch) until all tensors exist."""

    def run() -> float:
        start = time.perf_counter()
        n = 0
        for x, _y in loader:
            if device.type == "cuda":
                x = x.to(device, non_blocking=True)
            if transform is not None:
                x = transform(x)
            if x.dtype != torch.float32 or tuple(x.shape[1:]) != (3, size, size):
                raise AssertionError(
                    f"unexpected batch {x.dtype} {tuple(x.shape)}, expected float (B, 3, {size}, {size})"
                )
            n += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        expected = len(loader.dataset) if isinstance(loader, DataLoader) else n
        if n != expected:
            raise AssertionError(f"epoch produced {n} images, the data set has {expected}")
        return time.perf_counter() - start

    return run


def run(quick: bool = False, out: str | Path = RESULTS_DIR) -> dict[str, Any]:
    from fgvc_lib.data.batch_transforms import build_batch_transform
    from fgvc_lib.data.cache import CachedImageDataset, build_image_cache
    from fgvc_lib.data.datasets import ImageListDataset, read_cub
    from fgvc_lib.data.synth.cub import write_cub
    from fgvc_lib.data.transforms import build_transform

    if quick:
        classes, per_class, source, sizes, workers, batch, reps = 2, 8, 64, (32, 48), 1, 8, 1
    else:
        classes, per_class, source, sizes, workers, batch, reps = 8, 32, 448, (224, 380), 2, 32, 5
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures: dict[str, Any] = {}
    ratios: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="fgvc-bench-data-") as tmp:
        root = Path(tmp) / "cub"
        start = time.perf_counter()
        write_cub(root, classes=classes, per_class=per_class, size=source, seed=0)
        figures["write_cub_s"] = time.perf_counter() - start
        items = read_cub(root).items()
        relpaths, labels = [r for r, _ in items], [label for _, label in items]
        loader_options: dict[str, Any] = dict(
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
            drop_last=False,
        )
        for size in sizes:
            baseline = DataLoader(
                ImageListDataset(root, items, build_transform("bird", size, train=True)),
                generator=torch.Generator().manual_seed(0),
                **loader_options,
            )
            start = time.perf_counter()
            cache = build_image_cache(
                root, relpaths, size, name="bench-cub", cache_dir=Path(tmp) / "cache", workers=workers
            )
            build_s = time.perf_counter() - start
            cached = DataLoader(
                CachedImageDataset(cache, labels),
                generator=torch.Generator().manual_seed(0),
                **loader_options,
            )
            # decode-once alone: the per-sample PIL preset on cached pixels (the CPU recommendation)
            cached_pil = DataLoader(
                CachedImageDataset(cache, labels, build_transform("bird", size, train=True)),
                generator=torch.Generator().manual_seed(0),
                **loader_options,
            )
            transform = build_batch_transform("bird", size, train=True).to(device)
            # the batched augmentation alone, on uint8 batches already in memory (where the time goes)
            in_memory = [(x.to(device), y) for x, y in cached]
            times = interleave(
                {
                    "pil": _epoch(baseline, None, device, size),
                    "cache_batched": _epoch(cached, transform, device, size),
                    "cache_pil": _epoch(cached_pil, None, device, size),
                    "transform_only": _epoch(in_memory, transform, device, size),
                },
                reps,
            )
            del baseline, cached, cached_pil  # shut the persistent workers down before the next size
            n = len(items)
            pil_ips, new_ips = n / median(times["pil"]), n / median(times["cache_batched"])
            ratios[size] = new_ips / pil_ips
            figures[f"{size}px"] = {
                "pil_images_per_s": pil_ips,
                "cache_batched_images_per_s": new_ips,
                "ratio": ratios[size],
                "cache_pil_images_per_s": n / median(times["cache_pil"]),
                "cache_pil_ratio": median(times["pil"]) / median(times["cache_pil"]),
                "transform_only_images_per_s": n / median(times["transform_only"]),
                "cache_build_s": build_s,
                "cache_build_images_per_s": n / build_s,
                "cold_ratio": median(times["pil"]) / (median(times["cache_batched"]) + build_s),
                **spreads(times, "pil", "cache_batched", "transform_only"),
            }
    worst, summary = worst_ratio(ratios, "{} px")
    return write(
        out,
        ratio=worst,
        figures=figures,
        settings={
            "preset": "bird",
            "images": classes * per_class,
            "source_px": source,
            "sizes": list(sizes),
            "batch_size": batch,
            "num_workers": workers,
            "reps": reps,
            "augment_device": str(device),
            "cache_size": "img_size (the experiments' default cache_size)",
            "ratio_is": "images/s cache+batched / images/s per-sample PIL, whole epoch; smaller over sizes",
        },
        quick=quick,
        summary=summary,
    )


main = entry_point(NAME, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())

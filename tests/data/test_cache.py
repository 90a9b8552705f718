"""Tests for the decoded-pixel cache: keys, build/reuse/rebuild, crash safety, locking, the torch dataset."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc_lib.data import cache as cache_mod
from fgvc_lib.data.cache import CachedImageDataset, ImageCache, build_image_cache, cache_key
from fgvc_lib.data.datasets import DataError, load_rgb
from fgvc_lib.data.transforms import build_transform
from fgvc_lib.runs import outputs_root

S = 24


def _noise(rng: np.random.Generator, w: int, h: int, channels: int) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _write_images(root: Path) -> list[str]:
    """Small noisy images of every mode load_rgb converts (sizes differ so the stretch matters)."""
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    Image.fromarray(_noise(rng, 40, 30, 3)).save(root / "a" / "rgb.png")
    Image.fromarray(_noise(rng, 17, 33, 1)).convert("L").save(root / "a" / "gray.png")
    Image.fromarray(_noise(rng, 31, 29, 4)).save(root / "a" / "rgba.png")
    pal = Image.fromarray(_noise(rng, 26, 20, 3)).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(root / "b" / "palette.png", transparency=0)
    Image.fromarray(_noise(rng, 35, 35, 3)).convert("CMYK").save(root / "b" / "cmyk.jpg", quality=90)
    Image.fromarray(_noise(rng, 50, 40, 3)).save(root / "b" / "rgb photo.jpg", quality=90)
    Image.fromarray(_noise(rng, S, S, 3)).save(root / "b" / "exact.png")  # already S x S
    Image.fromarray(_noise(rng, 12, 14, 1).astype(np.uint16) * 257).save(root / "b" / "deep16.png")
    return [
        "a/rgb.png",
        "a/gray.png",
        "a/rgba.png",
        "b/palette.png",
        "b/cmyk.jpg",
        "b/rgb photo.jpg",
        "b/exact.png",
        "b/deep16.png",
    ]


def _expected(root: Path, rel: str, size: int = S) -> np.ndarray:
    return np.asarray(load_rgb(root / rel).resize((size, size), Image.BILINEAR))


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "imgs"
    return root, _write_images(root)


def _folders(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir()) if cache_dir.exists() else []


def _valid_folders(cache_dir: Path) -> list[Path]:
    return [p for p in _folders(cache_dir) if (p / "meta.json").is_file()]


# ---------------------------------------------------------------------------------------------- key
def test_cache_key_depends_on_name_size_order_and_file_stats(data):
    root, rels = data
    key = cache_key("toy", S, root, rels)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == cache_key("toy", S, str(root), list(rels))
    assert key != cache_key("toy2", S, root, rels)
    assert key != cache_key("toy", S + 1, root, rels)
    assert key != cache_key("toy", S, root, rels[::-1])
    assert key != cache_key("toy", S, root, rels[:-1])
    st = os.stat(root / rels[0])
    os.utime(root / rels[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert key != cache_key("toy", S, root, rels)
    with pytest.raises(DataError, match="a/missing.png"):
        cache_key("toy", S, root, [*rels, "a/missing.png"])


# ---------------------------------------------------------------------------------------------- build
def test_build_decodes_every_mode_exactly_like_load_rgb_resize(data, tmp_path):
    root, rels = data
    lines: list[str] = []
    cache = build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c", log=lines.append)
    key = cache_key("toy", S, root, rels)
    assert cache.key == key and cache.size == S and cache.relpaths == rels and cache.root == root
    assert cache.folder == tmp_path / "c" / f"toy-{S}px-{key[:16]}"
    assert isinstance(cache.images, np.memmap) and cache.images.mode == "r"
    assert cache.images.shape == (len(rels), S, S, 3) and cache.images.dtype == np.uint8
    assert len(cache) == len(rels)
    assert lines == [f"decoding {len(rels)} images of toy to {S} px into {cache.folder}"]
    for i, rel in enumerate(rels):
        want = _expected(root, rel)
        assert np.array_equal(cache[i], want), rel
        pil = cache.pil(i)
        assert pil.mode == "RGB" and pil.size == (S, S) and np.array_equal(np.asarray(pil), want)
    assert np.array_equal(cache[-1], cache[len(rels) - 1])
    with pytest.raises(IndexError):
        cache[len(rels)]
    meta = json.loads((cache.folder / "meta.json").read_text())
    assert meta["key"] == key and meta["name"] == "toy" and meta["size"] == S and meta["n"] == len(rels)
    assert meta["shape"] == [len(rels), S, S, 3] and meta["dtype"] == "uint8" and meta["relpaths"] == rels
    assert meta["created"]
    assert (cache.folder / "images.u8").stat().st_size == len(rels) * S * S * 3
    assert _folders(tmp_path / "c") == [cache.folder]  # no temp folder left
    reopened = ImageCache.open(cache.folder, root)
    assert np.array_equal(reopened.images, cache.images) and reopened.key == key


def test_thread_pool_decoding_gives_the_same_pixels(data, tmp_path):
    root, rels = data
    serial = build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c0")
    threaded = build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c2", workers=2)
    assert threaded.key == serial.key
    assert np.array_equal(np.asarray(threaded.images), np.asarray(serial.images))


def test_default_cache_dir_is_under_outputs(data):
    root, rels = data
    cache = build_image_cache(root, rels[:2], S, name="toy-default")
    assert cache.folder.parent == outputs_root() / "cache"


def test_second_build_reuses_without_rewriting(data, tmp_path, monkeypatch):
    root, rels = data
    first = build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c")
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (first.folder, first.folder / "images.u8")]

    def no_decode(path, size):
        raise AssertionError("a valid cache must not be decoded again")

    monkeypatch.setattr(cache_mod, "_decode", no_decode)
    lines: list[str] = []
    second = build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c", log=lines.append)
    assert second.folder == first.folder
    assert [
        (p.stat().st_ino, p.stat().st_mtime_ns) for p in (second.folder, second.folder / "images.u8")
    ] == before
    assert len(lines) == 1 and "reusing" in lines[0] and str(first.folder) in lines[0]
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))


def test_touched_or_rewritten_file_rebuilds_and_removes_stale_folder(data, tmp_path):
    root, rels = data
    cdir = tmp_path / "c"
    first = build_image_cache(root, rels, S, name="toy", cache_dir=cdir)
    other_size = build_image_cache(root, rels, S + 8, name="toy", cache_dir=cdir)
    other_name = build_image_cache(root, rels, S, name="toy2", cache_dir=cdir)

    st = os.stat(root / rels[0])  # same bytes, new mtime
    os.utime(root / rels[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    lines: list[str] = []
    second = build_image_cache(root, rels, S, name="toy", cache_dir=cdir, log=lines.append)
    assert second.key != first.key and second.folder != first.folder
    assert lines[0].startswith("decoding")
    assert not first.folder.exists()
    assert other_size.folder.exists() and other_name.folder.exists()  # other size / name untouched

    # new content of another size in one file
    Image.fromarray(np.full((9, 7, 3), 200, dtype=np.uint8)).save(root / rels[1])
    third = build_image_cache(root, rels, S, name="toy", cache_dir=cdir)
    assert third.key not in (first.key, second.key)
    assert not second.folder.exists()
    assert np.array_equal(third[1], np.full((S, S, 3), 200, dtype=np.uint8))
    assert sorted(_valid_folders(cdir)) == sorted([third.folder, other_size.folder, other_name.folder])
    # the old memmap stays readable after its folder was removed (Linux keeps the mapping)
    assert np.array_equal(first[2], third[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_raises_data_error_and_leaves_nothing(data, tmp_path, workers):
    root, rels = data
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    cdir = tmp_path / "c"
    with pytest.raises(DataError, match="broken.jpg"):
        build_image_cache(
            root, [*rels[:3], "b/broken.jpg", *rels[3:]], S, name="toy", cache_dir=cdir, workers=workers
        )
    assert _folders(cdir) == []


def test_failure_mid_build_leaves_no_valid_cache_and_next_build_succeeds(data, tmp_path, monkeypatch):
    root, rels = data
    cdir = tmp_path / "c"
    real = cache_mod._decode
    calls = []

    def failing(path, size):
        calls.append(path)
        if len(calls) > 3:
            raise KeyboardInterrupt  # like a Ctrl-C in the notebook
        return real(path, size)

    monkeypatch.setattr(cache_mod, "_decode", failing)
    with pytest.raises(KeyboardInterrupt):
        build_image_cache(root, rels, S, name="toy", cache_dir=cdir)
    assert _folders(cdir) == []
    monkeypatch.setattr(cache_mod, "_decode", real)
    cache = build_image_cache(root, rels, S, name="toy", cache_dir=cdir)
    assert all(np.array_equal(cache[i], _expected(root, r)) for i, r in enumerate(rels))


def _killed_build(root, rels, cdir):
    real = cache_mod._decode
    count = [0]

    def dying(path, size):
        count[0] += 1
        if count[0] > 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, size)

    cache_mod._decode = dying
    build_image_cache(root, rels, S, name="toy", cache_dir=cdir)


def test_killed_build_is_never_used_and_is_cleaned_up(data, tmp_path):
    root, rels = data
    cdir = tmp_path / "c"
    proc = mp.get_context("fork").Process(target=_killed_build, args=(root, rels, cdir))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    leftovers = _folders(cdir)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")  # the half-written build
    assert _valid_folders(cdir) == []
    lines: list[str] = []
    cache = build_image_cache(root, rels, S, name="toy", cache_dir=cdir, log=lines.append)
    assert lines[0].startswith("decoding")  # the half cache was not taken as valid
    assert _folders(cdir) == [cache.folder]  # and the leftover was removed
    assert all(np.array_equal(cache[i], _expected(root, r)) for i, r in enumerate(rels))


def test_two_threads_building_at_once_decode_once(data, tmp_path, monkeypatch):
    root, rels = data
    cdir = tmp_path / "c"
    real = cache_mod._decode
    calls = []

    def slow(path, size):
        calls.append(path)
        time.sleep(0.02)
        return real(path, size)

    monkeypatch.setattr(cache_mod, "_decode", slow)
    lines: list[str] = []
    results: list[ImageCache] = []
    start = threading.Barrier(2)

    def run():
        start.wait()
        results.append(build_image_cache(root, rels, S, name="toy", cache_dir=cdir, log=lines.append))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0].folder == results[1].folder
    assert len(calls) == len(rels)
    assert sorted(line.split()[0] for line in lines) == ["decoding", "reusing"]
    assert _folders(cdir) == [results[0].folder]


def _build_in_process(root, rels, cdir, log_path):
    real = cache_mod._decode

    def slow(path, size):
        time.sleep(0.02)
        return real(path, size)

    cache_mod._decode = slow
    cache = build_image_cache(
        root, rels, S, name="toy", cache_dir=cdir, log=lambda m: log_path.write_text(m, encoding="utf-8")
    )
    assert np.array_equal(cache[0], _expected(root, rels[0]))


def test_two_processes_building_at_once_end_with_one_cache(data, tmp_path):
    root, rels = data
    cdir = tmp_path / "c"
    ctx = mp.get_context("fork")
    logs = [tmp_path / "log0.txt", tmp_path / "log1.txt"]
    procs = [ctx.Process(target=_build_in_process, args=(root, rels, cdir, log)) for log in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    words = sorted(log.read_text().split()[0] for log in logs)
    assert words == ["decoding", "reusing"]
    assert len(_folders(cdir)) == 1 and _valid_folders(cdir) == _folders(cdir)
    cache = build_image_cache(root, rels, S, name="toy", cache_dir=cdir)
    assert cache.folder == _folders(cdir)[0]


def test_batch_reads_unsorted_indices_in_order(data, tmp_path):
    root, rels = data
    cache = build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c")
    order = [5, 0, 7, 2, 2, -1]
    out = cache.batch(order)
    assert out.shape == (len(order), S, S, 3) and out.dtype == np.uint8
    for j, i in enumerate(order):
        assert np.array_equal(out[j], cache[i])
    assert cache.batch([]).shape == (0, S, S, 3)
    with pytest.raises(IndexError):
        cache.batch([0, len(rels)])


def test_image_cache_pickles_without_its_pixels(data, tmp_path):
    root, rels = data
    cache = build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c")
    blob = pickle.dumps(cache)
    assert len(blob) < 2000  # the memmap is reopened, not copied
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap) and np.array_equal(
        np.asarray(back.images), np.asarray(cache.images)
    )


def test_bad_arguments(data, tmp_path):
    root, rels = data
    with pytest.raises(ValueError, match="name"):
        build_image_cache(root, rels, S, name="a/b", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="size"):
        build_image_cache(root, rels, 0, name="toy", cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="nope.png"):
        build_image_cache(root, [*rels, "nope.png"], S, name="toy", cache_dir=tmp_path / "c")


# ---------------------------------------------------------------------------------------------- dataset
@pytest.fixture()
def built(data, tmp_path) -> tuple[Path, list[str], ImageCache]:
    root, rels = data
    return root, rels, build_image_cache(root, rels, S, name="toy", cache_dir=tmp_path / "c")


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)


def test_dataset_items_are_uint8_chw_copies(built):
    root, rels, cache = built
    labels = list(range(10, 10 + len(rels)))
    ds = CachedImageDataset(cache, labels)
    assert len(ds) == len(rels) and ds.targets == labels
    x, y = ds[3]
    assert x.dtype == torch.uint8 and x.shape == (3, S, S) and y == 13 and isinstance(y, int)
    assert torch.equal(x, _chw(_expected(root, rels[3])))
    x.fill_(0)  # writing to the item must not touch (or fail on) the read-only memmap
    assert torch.equal(ds[3][0], _chw(cache[3]))


def test_getitems_keeps_the_order_of_unsorted_indices(built):
    _, rels, cache = built
    ds = CachedImageDataset(cache, np.arange(len(rels)) * 2)
    idx = [6, 1, 4, 4, 0]
    items = ds.__getitems__(idx)
    assert len(items) == len(idx)
    for (x, y), i in zip(items, idx, strict=True):
        assert y == 2 * i and torch.equal(x, ds[i][0])


def test_dataloader_reads_each_batch_with_one_memmap_read(built, monkeypatch):
    _, rels, cache = built
    calls = []
    real = cache.batch
    monkeypatch.setattr(cache, "batch", lambda rows: calls.append(list(rows)) or real(rows))
    ds = CachedImageDataset(cache, list(range(len(rels))))
    batches = list(torch.utils.data.DataLoader(ds, batch_size=3, sampler=[7, 1, 4, 0, 2]))
    assert calls == [[7, 1, 4], [0, 2]]
    assert [y.tolist() for _, y in batches] == [[7, 1, 4], [0, 2]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_batches_equal_the_cache(built, num_workers):
    _, rels, cache = built
    ds = CachedImageDataset(cache, torch.arange(len(rels)))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, num_workers=num_workers)
    seen = 0
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape == (len(y), 3, S, S)
        want = torch.from_numpy(np.array(cache.images[seen : seen + len(y)])).permute(0, 3, 1, 2)
        assert torch.equal(x, want) and y.tolist() == list(range(seen, seen + len(y)))
        seen += len(y)
    assert seen == len(rels)
    # shuffled (unsorted) batches still pair every image with its own label
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=num_workers)
    for x, y in loader:
        assert torch.equal(x, torch.from_numpy(cache.batch(y.numpy())).permute(0, 3, 1, 2))


@pytest.mark.parametrize(("preset", "train"), [("bird", False), ("bird", True), ("multilabel", True)])
def test_transform_path_matches_the_pil_path(built, preset, train):
    root, rels, cache = built
    tf = build_transform(preset, S, train=train)
    ds = CachedImageDataset(cache, [0] * len(rels), transform=tf)
    for i, rel in enumerate(rels):
        torch.manual_seed(i)
        got = ds[i][0]
        torch.manual_seed(i)
        want = tf(load_rgb(root / rel).resize((S, S), Image.BILINEAR))
        assert got.dtype == torch.float32 and torch.equal(got, want), rel
    items = ds.__getitems__([2, 0])
    assert [tuple(x.shape) for x, _ in items] == [(3, S, S)] * 2


def test_multilabel_targets_are_float_rows(built):
    _, rels, cache = built
    targets = (np.arange(len(rels) * 4).reshape(len(rels), 4) % 3 == 0).astype(np.int64)
    ds = CachedImageDataset(cache, targets)
    assert isinstance(ds.targets, np.ndarray) and ds.targets.dtype == np.float32
    _, y = ds[2]
    assert y.dtype == torch.float32 and torch.equal(y, torch.tensor(targets[2], dtype=torch.float32))
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert x.shape == (5, 3, S, S) and y.shape == (5, 4) and y.dtype == torch.float32
    assert torch.equal(y, torch.tensor(targets[:5], dtype=torch.float32))


def test_indices_select_a_subset_of_cache_rows(built):
    _, rels, cache = built
    rows = [6, 1, 3]
    ds = CachedImageDataset(cache, [60, 10, 30], indices=rows)
    assert len(ds) == 3 and ds.targets == [60, 10, 30]
    for i, r in enumerate(rows):
        x, y = ds[i]
        assert y == 10 * r and torch.equal(x, _chw(cache[r]))
    items = ds.__getitems__([2, 0])
    assert [y for _, y in items] == [30, 60] and torch.equal(items[0][0], _chw(cache[3]))
    with pytest.raises(ValueError, match="out of range"):
        CachedImageDataset(cache, [0], indices=[len(rels)])


def test_length_mismatch_names_both_lengths(built):
    _, rels, cache = built
    with pytest.raises(ValueError, match=f"targets has 3 entries but the dataset has {len(rels)} items"):
        CachedImageDataset(cache, [0, 1, 2])
    with pytest.raises(ValueError, match="targets has 4 entries but the dataset has 2 items"):
        CachedImageDataset(cache, [0, 1, 2, 3], indices=[0, 1])
    with pytest.raises(ValueError, match="integer"):
        CachedImageDataset(cache, [0.5] * len(rels))

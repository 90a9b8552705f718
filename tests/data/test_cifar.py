"""Tests for the CIFAR-100 python-format writer, reader, torchvision bridge and dataset."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms

from fgvc_lib.data import cifar
from fgvc_lib.data.cifar import (
    BASE_FOLDER,
    CifarArrays,
    CifarDataset,
    from_cifar_rows,
    is_official_cifar100,
    load_cifar100,
    read_cifar100,
    to_cifar_rows,
)
from fgvc_lib.data.datasets import DataError
from fgvc_lib.data.synth import cifar as synth_cifar
from fgvc_lib.data.synth.cifar import (
    COARSE_LABEL_NAMES,
    FINE_ATTRIBUTE_INDEX,
    FINE_LABEL_NAMES,
    render_cifar_image,
    write_cifar100,
)
from fgvc_lib.data.synth.render import class_attributes

TRAIN, TEST = 2, 1


def _load(path: Path, encoding: str = "latin1") -> Any:
    with open(path, "rb") as f:
        return pickle.load(f, encoding=encoding)


def _dump(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root folder holding a small synthetic cifar-100-python (2 train / 1 test image per class)."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar100(root, train_per_class=TRAIN, test_per_class=TEST, seed=3)
    return root


def _copy(small: Path, tmp_path: Path) -> Path:
    shutil.copytree(small / BASE_FOLDER, tmp_path / BASE_FOLDER)
    return tmp_path / BASE_FOLDER


# ------------------------------------------------------------------------------------------ class design


def test_class_design_names_and_coarse_groups() -> None:
    assert len(FINE_LABEL_NAMES) == len(set(FINE_LABEL_NAMES)) == 100
    assert len(COARSE_LABEL_NAMES) == len(set(COARSE_LABEL_NAMES)) == 20
    assert len(set(FINE_ATTRIBUTE_INDEX)) == 100
    assert FINE_LABEL_NAMES[0] == "crimson_disc_solid" and COARSE_LABEL_NAMES[0] == "crimson_disc_birds"
    colours = set()
    for fine, (name, attr) in enumerate(zip(FINE_LABEL_NAMES, FINE_ATTRIBUTE_INDEX, strict=True)):
        spec = class_attributes(attr)
        assert name == f"{spec.colour_name.lower()}_{spec.shape}_{spec.pattern}"
        coarse = COARSE_LABEL_NAMES[synth_cifar.coarse_of(fine)]
        assert coarse == f"{spec.colour_name.lower()}_{spec.shape}_birds"  # shared colour + shape
        assert spec.shape in ("disc", "triangle", "bar")
        colours.add(spec.colour_name)
    assert len(colours) == 8
    for coarse in range(20):  # the 5 fine classes of a coarse class are the 5 patterns
        patterns = {class_attributes(FINE_ATTRIBUTE_INDEX[coarse * 5 + j]).pattern for j in range(5)}
        assert len(patterns) == 5


def test_rows_layout_is_r_then_g_then_b_planes() -> None:
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, :, :, 0] = np.arange(1024).reshape(32, 32) % 251
    img[0, :, :, 1] = 7
    img[0, 5, 9, 2] = 200
    rows = to_cifar_rows(img)
    assert rows.shape == (1, 3072) and rows.dtype == np.uint8
    assert np.array_equal(rows[0, :1024], np.arange(1024) % 251)  # row-major R plane
    assert (rows[0, 1024:2048] == 7).all()
    assert rows[0, 2048 + 5 * 32 + 9] == 200 and rows[0, 2048:].sum() == 200
    assert np.array_equal(from_cifar_rows(rows), img)
    with pytest.raises(ValueError, match="images"):
        to_cifar_rows(np.zeros((2, 32, 32), np.uint8))


# ------------------------------------------------------------------------------------------ writer


def test_write_cifar100_official_structure(small: Path) -> None:
    base = small / BASE_FOLDER
    assert sorted(p.name for p in small.iterdir()) == [BASE_FOLDER]  # no temp folders left
    assert sorted(p.name for p in base.iterdir()) == ["meta", "test", "train"]
    for split, per_class in (("train", TRAIN), ("test", TEST)):
        d = _load(base / split)
        assert list(d) == ["filenames", "batch_label", "fine_labels", "coarse_labels", "data"]
        assert all(type(k) is str for k in d)
        n = 100 * per_class
        assert isinstance(d["batch_label"], str)
        assert isinstance(d["data"], np.ndarray) and d["data"].dtype == np.uint8
        assert d["data"].shape == (n, 3072)
        for key in ("filenames", "fine_labels", "coarse_labels"):
            assert isinstance(d[key], list) and len(d[key]) == n
        assert all(type(v) is int for v in d["fine_labels"] + d["coarse_labels"])
        assert sorted(d["fine_labels"]) == sorted(list(range(100)) * per_class)
        assert d["fine_labels"] != sorted(d["fine_labels"])  # shuffled, like the real files
        assert all(c == f // 5 for f, c in zip(d["fine_labels"], d["coarse_labels"], strict=True))
        assert all(isinstance(f, str) and f.endswith(".png") and "_s_" in f for f in d["filenames"])
        assert all(
            f.startswith(FINE_LABEL_NAMES[y]) for f, y in zip(d["filenames"], d["fine_labels"], strict=True)
        )
    names = _load(base / "train")["filenames"] + _load(base / "test")["filenames"]
    assert len(set(names)) == len(names)
    meta = _load(base / "meta")
    assert set(meta) == {"fine_label_names", "coarse_label_names"}
    assert meta["fine_label_names"] == FINE_LABEL_NAMES and meta["coarse_label_names"] == COARSE_LABEL_NAMES
    assert all(type(s) is str for s in meta["fine_label_names"] + meta["coarse_label_names"])


def test_written_rows_hold_the_rendered_image_plane_by_plane(small: Path) -> None:
    d = _load(small / BASE_FOLDER / "train")
    img = render_cifar_image(3, 42, "train", 1)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    hits = [i for i in range(len(d["data"])) if np.array_equal(d["data"][i, :1024], img[:, :, 0].ravel())]
    assert len(hits) == 1
    row = d["data"][hits[0]]
    assert np.array_equal(row[1024:2048], img[:, :, 1].ravel())
    assert np.array_equal(row[2048:], img[:, :, 2].ravel())
    assert d["fine_labels"][hits[0]] == 42


def test_write_cifar100_is_deterministic_and_seeded(small: Path, tmp_path: Path) -> None:
    again = write_cifar100(tmp_path / "a", train_per_class=TRAIN, test_per_class=TEST, seed=3) / BASE_FOLDER
    assert again == tmp_path / "a" / BASE_FOLDER
    for name in ("train", "test", "meta"):
        assert (again / name).read_bytes() == (small / BASE_FOLDER / name).read_bytes()
    other = write_cifar100(tmp_path / "b", train_per_class=TRAIN, test_per_class=TEST, seed=4) / BASE_FOLDER
    assert not np.array_equal(_load(other / "train")["data"], _load(again / "train")["data"])


def test_write_cifar100_replaces_atomically_and_survives_failure(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _copy(small, tmp_path)
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    calls = []

    def failing_dump(obj: Any, path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    monkeypatch.setattr(synth_cifar, "_dump", failing_dump)
    with pytest.raises(OSError, match="disk full"):
        write_cifar100(tmp_path, train_per_class=1, test_per_class=1, seed=9)
    assert calls[0].parent != base  # written elsewhere, never into the real folder
    assert {p.name: p.read_bytes() for p in base.iterdir()} == before  # previous set untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [BASE_FOLDER]  # temp folder removed
    monkeypatch.undo()
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1, seed=9)
    assert _load(base / "train")["data"].shape == (100, 3072)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BASE_FOLDER]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"train_per_class": 0}, "train_per_class"),
        ({"train_per_class": 1.5}, "train_per_class"),
        ({"test_per_class": 0}, "test_per_class"),
        ({"test_per_class": True}, "test_per_class"),
        ({"seed": -1}, "seed"),
    ],
)
def test_write_cifar100_validates_arguments(tmp_path: Path, kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        write_cifar100(tmp_path, **kwargs)
    assert not (tmp_path / BASE_FOLDER).exists()


def test_write_cifar100_out_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out"):
        write_cifar100(tmp_path / "file")


# ------------------------------------------------------------------------------------------ reader


def test_read_cifar100_round_trip(small: Path) -> None:
    base = small / BASE_FOLDER
    for split in ("train", "test"):
        d = _load(base / split)
        for root in (small, base, str(base)):  # the data root or the cifar-100-python folder itself
            arr = read_cifar100(root, split)
            assert isinstance(arr, CifarArrays) and len(arr) == len(d["data"])
            assert arr.images.dtype == np.uint8 and arr.images.shape == (len(d["data"]), 32, 32, 3)
            assert np.array_equal(arr.images, d["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            assert arr.fine_labels.dtype == np.int64 and arr.fine_labels.tolist() == d["fine_labels"]
            assert arr.coarse_labels is not None and arr.coarse_labels.dtype == np.int64
            assert arr.coarse_labels.tolist() == d["coarse_labels"]
            assert arr.filenames == d["filenames"]
            assert arr.fine_names == FINE_LABEL_NAMES and arr.coarse_names == COARSE_LABEL_NAMES


def _tiny_content(n: int = 4) -> tuple[np.ndarray, list[int], list[int], list[str], list[str], list[str]]:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    fine = [0, 99, 5, 42][:n]
    coarse = [0, 19, 1, 8][:n]
    files = [f"img_{i}.png" for i in range(n)]
    fine_names = [f"class_{i:02d}" for i in range(100)]
    coarse_names = [f"super_{i:02d}" for i in range(20)]
    return data, fine, coarse, files, fine_names, coarse_names


def test_read_cifar100_accepts_bytes_keys_and_names(tmp_path: Path) -> None:
    data, fine, coarse, files, fine_names, coarse_names = _tiny_content()
    str_base = tmp_path / "s" / BASE_FOLDER
    _dump(
        {"filenames": files, "batch_label": "b", "fine_labels": fine, "coarse_labels": coarse, "data": data},
        str_base / "train",
    )
    _dump({"fine_label_names": fine_names, "coarse_label_names": coarse_names}, str_base / "meta")
    bytes_base = tmp_path / "b" / BASE_FOLDER
    _dump(
        {
            b"filenames": [f.encode() for f in files],
            b"batch_label": b"b",
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": data,
        },
        bytes_base / "train",
    )
    _dump({b"fine_label_names": [s.encode() for s in fine_names]}, bytes_base / "meta")
    assert all(isinstance(k, bytes) for k in _load(bytes_base / "train"))  # bytes keys survive latin1
    a, b = read_cifar100(tmp_path / "s", "train"), read_cifar100(tmp_path / "b", "train")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.images, from_cifar_rows(data))
    assert a.fine_labels.tolist() == b.fine_labels.tolist() == fine
    assert a.coarse_labels is not None and b.coarse_labels is not None
    assert a.coarse_labels.tolist() == b.coarse_labels.tolist() == coarse
    assert a.filenames == b.filenames == files
    assert a.fine_names == b.fine_names == fine_names
    assert a.coarse_names == coarse_names and b.coarse_names == []  # absent in the bytes meta


def _broken(tmp_path: Path, split: Any = None, meta: Any = None) -> Path:
    """A cifar-100-python folder with the tiny content, its train/meta objects replaced when given."""
    data, fine, coarse, files, fine_names, coarse_names = _tiny_content()
    base = tmp_path / BASE_FOLDER
    good = {
        "filenames": files,
        "batch_label": "b",
        "fine_labels": fine,
        "coarse_labels": coarse,
        "data": data,
    }
    _dump(good if split is None else split, base / "train")
    _dump(
        {"fine_label_names": fine_names, "coarse_label_names": coarse_names} if meta is None else meta,
        base / "meta",
    )
    return base


def _good_split(**changes: Any) -> dict[str, Any]:
    data, fine, coarse, files, _, _ = _tiny_content()
    d = {"filenames": files, "batch_label": "b", "fine_labels": fine, "coarse_labels": coarse, "data": data}
    for key, value in changes.items():
        if value is None:
            del d[key]
        else:
            d[key] = value
    return d


def test_read_cifar100_missing_root_and_files(small: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere.*does not exist"):
        read_cifar100(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match=rf"'train' file is missing; expected it at .*{BASE_FOLDER}.train"):
        read_cifar100(tmp_path, "train")  # an empty folder
    base = _copy(small, tmp_path)
    (base / "test").unlink()
    with pytest.raises(DataError, match=r"'test' file is missing; expected it at .*test"):
        read_cifar100(tmp_path, "test")
    (base / "meta").unlink()
    with pytest.raises(DataError, match=r"meta.*'meta' file is missing"):
        read_cifar100(base, "train")
    with pytest.raises(ValueError, match="split"):
        read_cifar100(tmp_path, "val")


def test_read_cifar100_not_a_pickle_or_not_a_dict(tmp_path: Path) -> None:
    base = _broken(tmp_path)
    (base / "train").write_bytes(b"this is not a pickle")
    with pytest.raises(
        DataError, match=r"train: cannot read the CIFAR-100 'train' file .*expected a python pickle"
    ):
        read_cifar100(tmp_path, "train")
    _dump([1, 2, 3], base / "train")
    with pytest.raises(DataError, match=r"train: the CIFAR-100 'train' pickle holds a list; expected a dict"):
        read_cifar100(tmp_path, "train")
    _dump(_good_split(), base / "train")
    _dump("names", base / "meta")
    with pytest.raises(DataError, match=r"meta: the CIFAR-100 'meta' pickle holds a str"):
        read_cifar100(tmp_path, "train")


@pytest.mark.parametrize(
    ("split", "meta", "pattern"),
    [
        (_good_split(data=None), None, r"train: missing key 'data'"),
        (_good_split(fine_labels=None), None, r"train: missing key 'fine_labels'"),
        (_good_split(filenames=None), None, r"train: missing key 'filenames'"),
        (None, {"coarse_label_names": ["x"] * 20}, r"meta: missing key 'fine_label_names'"),
        (None, {"fine_label_names": ["x"] * 99}, r"meta: key 'fine_label_names' has 99 names; expected 100"),
        (_good_split(data=np.zeros((4, 3000), np.uint8)), None, r"train: key 'data' has shape \(4, 3000\)"),
        (_good_split(data=np.zeros((4, 32, 32, 3), np.uint8)), None, r"train: key 'data' .*N x 3072"),
        (_good_split(data=np.zeros((4, 3072), np.float32)), None, r"train: key 'data' .*dtype float32"),
        (_good_split(data=np.full((4, 3072), 300, np.int64)), None, r"train: key 'data' .*expected 0\.\.255"),
        (_good_split(data="pixels"), None, r"train: key 'data' has shape"),
        (_good_split(fine_labels=[0, 1, 2]), None, r"train: key 'fine_labels' has 3 labels but 'data' has 4"),
        (
            _good_split(coarse_labels=[0] * 5),
            None,
            r"train: key 'coarse_labels' has 5 labels but 'data' has 4",
        ),
        (_good_split(filenames=["a"] * 2), None, r"train: key 'filenames' has 2 names but 'data' has 4"),
        (
            _good_split(fine_labels=[0, 1, 100, 3]),
            None,
            r"train: key 'fine_labels' index 2: label 100 .*0\.\.99",
        ),
        (_good_split(fine_labels=[-1, 1, 2, 3]), None, r"train: key 'fine_labels' index 0: label -1"),
        (
            _good_split(coarse_labels=[0, 20, 1, 1]),
            None,
            r"train: key 'coarse_labels' index 1: label 20 .*0\.\.19",
        ),
        (
            _good_split(fine_labels=[0.5, 1, 2, 3]),
            None,
            r"train: key 'fine_labels' must be a list of integers",
        ),
    ],
)
def test_read_cifar100_bad_content_names_file_and_key(
    tmp_path: Path, split: Any, meta: Any, pattern: str
) -> None:
    _broken(tmp_path, split, meta)
    with pytest.raises(DataError, match=pattern) as info:
        read_cifar100(tmp_path, "train")
    assert str(tmp_path / BASE_FOLDER) in str(info.value)


def test_read_cifar100_coarse_labels_are_optional(tmp_path: Path) -> None:
    _broken(tmp_path, _good_split(coarse_labels=None), {"fine_label_names": [f"c{i}" for i in range(100)]})
    arr = read_cifar100(tmp_path, "train")
    assert arr.coarse_labels is None and arr.coarse_names == [] and arr.fine_labels.tolist() == [0, 99, 5, 42]


# ------------------------------------------------------------------------------------------ torchvision bridge


class _NoTorchvision(torchvision.datasets.CIFAR100):
    """Keeps torchvision's MD5 lists but fails if a data set is built (that could download)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("torchvision.datasets.CIFAR100 must not be called")


def test_synthetic_files_are_not_official_and_load_offline(
    small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not is_official_cifar100(small)
    assert not is_official_cifar100(small / BASE_FOLDER)
    assert not is_official_cifar100(small / "missing")
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _NoTorchvision)
    for split in ("train", "test"):
        got, want = load_cifar100(small, split), read_cifar100(small, split)
        assert np.array_equal(got.images, want.images)
        assert got.fine_labels.tolist() == want.fine_labels.tolist() and got.filenames == want.filenames
        assert got.fine_names == want.fine_names and got.coarse_names == want.coarse_names


def test_is_official_uses_torchvision_md5_list(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _copy(small, tmp_path)
    from torchvision.datasets.utils import calculate_md5

    sums = {name: calculate_md5(str(base / name)) for name in ("train", "test", "meta")}
    fake = type(
        "FakeCIFAR100",
        (),
        {
            "train_list": [["train", sums["train"]]],
            "test_list": [["test", sums["test"]]],
            "meta": {"filename": "meta", "key": "fine_label_names", "md5": sums["meta"]},
        },
    )
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake)
    assert is_official_cifar100(tmp_path) and is_official_cifar100(base)
    (base / "meta").write_bytes(b"changed")
    assert not is_official_cifar100(tmp_path)


class _FakeCIFAR100:
    calls: list[dict[str, Any]] = []

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        type(self).calls.append({"root": root, "train": train, "download": download})
        n = 3 if train else 2
        self.data = np.arange(n * 32 * 32 * 3, dtype=np.int64).reshape(n, 32, 32, 3) % 256
        self.targets = [7, 8, 9][:n]
        self.classes = [f"name{i}" for i in range(100)]


def test_load_cifar100_download_goes_through_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _FakeCIFAR100.calls = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _FakeCIFAR100)
    arr = load_cifar100(tmp_path, "test", download=True)
    assert _FakeCIFAR100.calls == [{"root": str(tmp_path), "train": False, "download": True}]
    assert arr.images.dtype == np.uint8 and arr.images.shape == (2, 32, 32, 3)
    assert arr.fine_labels.dtype == np.int64 and arr.fine_labels.tolist() == [7, 8]
    assert arr.fine_names == [f"name{i}" for i in range(100)]
    assert arr.coarse_labels is None and arr.coarse_names == [] and len(arr.filenames) == 2
    load_cifar100(
        tmp_path / BASE_FOLDER, "train", download=True
    )  # the folder itself: torchvision gets its parent
    assert _FakeCIFAR100.calls[-1] == {"root": str(tmp_path), "train": True, "download": True}


def test_load_cifar100_official_files_use_torchvision_and_pickled_coarse_labels(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _copy(small, tmp_path)
    want = read_cifar100(base, "test")

    class Fake:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            assert (root, train, download) == (str(tmp_path), False, False)
            self.data, self.targets, self.classes = want.images, want.fine_labels.tolist(), want.fine_names

    monkeypatch.setattr(cifar, "is_official_cifar100", lambda root: True)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Fake)
    got = load_cifar100(tmp_path, "test")
    assert np.array_equal(got.images, want.images) and got.fine_labels.tolist() == want.fine_labels.tolist()
    assert got.coarse_labels is not None and got.coarse_labels.tolist() == want.coarse_labels.tolist()  # type: ignore[union-attr]
    assert got.coarse_names == COARSE_LABEL_NAMES and got.filenames == want.filenames


def test_load_cifar100_wraps_torchvision_integrity_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupted(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Dataset not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", corrupted)
    with pytest.raises(DataError, match=rf"{BASE_FOLDER}: torchvision could not load CIFAR-100"):
        load_cifar100(tmp_path, "train", download=True)


# ------------------------------------------------------------------------------------------ dataset


def test_cifar_dataset_returns_tensor_and_label(small: Path) -> None:
    arr = read_cifar100(small, "test")
    ds = CifarDataset(arr, transforms.ToTensor())
    assert len(ds) == 100 * TEST and ds.targets == arr.fine_labels.tolist() and ds.classes == FINE_LABEL_NAMES
    x, y = ds[17]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y == int(arr.fine_labels[17]) and type(y) is int
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(arr.images[17]).permute(2, 0, 1))
    img, _ = CifarDataset(arr)[0]
    assert img.mode == "RGB" and img.size == (32, 32)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch[0].shape == (8, 3, 32, 32) and batch[1].tolist() == ds.targets[:8]


# ------------------------------------------------------------------------------------------ separability


def _colour_histograms(images: np.ndarray, bins: int = 6) -> np.ndarray:
    q = images.astype(np.int64) * bins // 256
    idx = ((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).reshape(len(images), -1)
    idx += (np.arange(len(images)) * bins**3)[:, None]
    counts = np.bincount(idx.ravel(), minlength=len(images) * bins**3).reshape(len(images), -1)
    return np.sqrt(counts / idx.shape[1])


def test_classes_are_separable_at_32px_by_nearest_class_mean(tmp_path: Path) -> None:
    """Nearest class mean of colour histograms over 20 train images/class beats 3x chance on the test split.

    Figure at the time of writing (seed 0): 5.8 % fine accuracy (chance 1 %), 22 % coarse accuracy (chance
    5 %); raw pixels give 4.0 % (the bird's pose and position are random).
    """
    write_cifar100(tmp_path, train_per_class=20, test_per_class=5, seed=0)
    train, test = read_cifar100(tmp_path, "train"), read_cifar100(tmp_path, "test")
    f_train, f_test = _colour_histograms(train.images), _colour_histograms(test.images)
    means = np.stack([f_train[train.fine_labels == c].mean(axis=0) for c in range(100)])
    pred = ((f_test[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    acc = float((pred == test.fine_labels).mean())
    print(f"nearest-class-mean colour-histogram accuracy: {acc:.3f} (chance 0.010)")
    assert acc > 0.03
    assert float((pred // 5 == test.coarse_labels).mean()) > 0.15


# ------------------------------------------------------------------------------------------ renderer options


def test_render_bird_size_options_make_the_patch_visible_at_32px() -> None:
    from fgvc_lib.data.synth.render import image_rng, render_bird

    default, _ = render_bird(image_rng(1, 2), 5, 48)
    explicit, _ = render_bird(
        image_rng(1, 2), 5, 48, length_range=(0.62, 0.9), patch_scale=1.5, max_tilt=35.0
    )
    assert np.array_equal(np.asarray(default), np.asarray(explicit))  # the documented defaults
    for k in range(20):
        img, ann = render_bird(
            image_rng(0, k),
            k,
            32,
            clutter=synth_cifar.RENDER_CLUTTER,
            length_range=synth_cifar.RENDER_LENGTH_RANGE,
            patch_scale=synth_cifar.RENDER_PATCH_SCALE,
            max_tilt=synth_cifar.RENDER_MAX_TILT,
        )
        assert img.size == (32, 32)
        assert 2 * ann.part_radius >= 5.0  # patch diameter in pixels
        assert max(ann.bbox[2], ann.bbox[3]) >= 0.6 * 32  # the bird fills most of the frame
    for kwargs, name in (
        ({"length_range": (0.5, 0.4)}, "length_range"),
        ({"length_range": (0.0, 0.5)}, "length_range"),
        ({"length_range": (0.5, 1.2)}, "length_range"),
        ({"length_range": 0.5}, "length_range"),
        ({"patch_scale": 0}, "patch_scale"),
        ({"patch_scale": "big"}, "patch_scale"),
    ):
        with pytest.raises(ValueError, match=name):
            render_bird(image_rng(0, 0), 0, 32, **kwargs)

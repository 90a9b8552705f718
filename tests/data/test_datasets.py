"""Tests for the on-disk data readers: CUB-200-2011, ImageFolder, image decoding and the list dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc_lib.data.datasets import (
    ClassificationData,
    DataError,
    ImageListDataset,
    is_cub_root,
    load_rgb,
    open_classification_data,
    read_cub,
    read_image_folder,
)
from fgvc_lib.data.synth.cub import write_cub

N_CLASSES, PER_CLASS, SIZE = 3, 4, 48


def _table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def synth_cub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cub(
        tmp_path_factory.mktemp("cub") / "synth", classes=N_CLASSES, per_class=PER_CLASS, size=SIZE, seed=3
    )


@pytest.fixture(scope="module")
def synth_data(synth_cub: Path) -> ClassificationData:
    return read_cub(synth_cub)


def _jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=95)


def _minimal_cub(root: Path) -> Path:
    """2 classes (names with spaces, non-contiguous ids), 3 images listed out of id order, a blank line."""
    _jpeg(root / "images" / "001.Black footed Albatross" / "bfa 1.jpg", (200, 0, 0))
    _jpeg(root / "images" / "001.Black footed Albatross" / "bfa_2.jpg", (0, 200, 0))
    _jpeg(root / "images" / "002.Laysan_Albatross" / "la_1.jpg", (0, 0, 200), size=(10, 4))
    (root / "classes.txt").write_text(
        "5 001.Black footed Albatross\n9 002.Laysan_Albatross  \n", encoding="utf-8"
    )
    (root / "images.txt").write_text(
        "30 002.Laysan_Albatross/la_1.jpg\n\n"
        "10 001.Black footed Albatross/bfa 1.jpg\n"
        "20 001.Black footed Albatross/bfa_2.jpg\n",
        encoding="utf-8",
    )
    (root / "image_class_labels.txt").write_text("10 5\n20 5\n30 9\n", encoding="utf-8")
    (root / "train_test_split.txt").write_text("10 1\n20 0\n30 1\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------------ CUB reader
def test_read_cub_synthetic_counts_and_labels(synth_cub: Path, synth_data: ClassificationData) -> None:
    data = synth_data
    assert data.format == "cub"
    assert data.root == synth_cub
    assert data.num_classes == N_CLASSES
    assert len(data.records) == N_CLASSES * PER_CLASS
    class_rows = _table(synth_cub / "classes.txt")
    assert data.classes == [row[1] for row in class_rows]
    for rec in data.records:
        assert rec.relpath.startswith("images/")
        assert (synth_cub / rec.relpath).is_file()
        folder = rec.relpath.split("/")[1]
        assert 0 <= rec.label < N_CLASSES
        assert data.classes[rec.label] == folder
        assert rec.label == int(folder.split(".")[0]) - 1  # folder NNN.Name has 1-based id NNN
    assert sorted({r.label for r in data.records}) == list(range(N_CLASSES))
    assert [sum(r.label == c for r in data.records) for c in range(N_CLASSES)] == [PER_CLASS] * N_CLASSES


def test_read_cub_synthetic_split_boxes_and_parts(synth_cub: Path, synth_data: ClassificationData) -> None:
    records = synth_data.records
    id_to_path = {int(r[0]): r[1] for r in _table(synth_cub / "images.txt")}
    ids = sorted(id_to_path)
    assert [r.relpath for r in records] == [f"images/{id_to_path[i]}" for i in ids]

    split = {int(r[0]): r[1] == "1" for r in _table(synth_cub / "train_test_split.txt")}
    assert [r.is_train for r in records] == [split[i] for i in ids]
    assert 0 < len(synth_data.split(True)) < len(records)
    assert len(synth_data.split(True)) + len(synth_data.split(False)) == len(records)

    boxes = {int(r[0]): tuple(float(v) for v in r[1:5]) for r in _table(synth_cub / "bounding_boxes.txt")}
    part_ids = {int(r[0]): " ".join(r[1:]) for r in _table(synth_cub / "parts" / "parts.txt")}
    wing_id = next(pid for pid, name in part_ids.items() if name == "left wing")
    wing = {
        int(r[0]): (float(r[2]), float(r[3]))
        for r in _table(synth_cub / "parts" / "part_locs.txt")
        if int(r[1]) == wing_id and float(r[4]) > 0
    }
    for image_id, rec in zip(ids, records, strict=True):
        assert rec.bbox == boxes[image_id]
        x, y, w, h = rec.bbox
        assert w > 0 and h > 0 and 0 <= x < SIZE and 0 <= y < SIZE
        assert rec.parts["left wing"] == wing[image_id]
        assert "left eye" in rec.parts  # part names with spaces are kept whole
    assert synth_data.items()[0] == (records[0].relpath, records[0].label)


def test_open_classification_data_detects_cub_and_nested_cub(synth_cub: Path, tmp_path: Path) -> None:
    assert is_cub_root(synth_cub)
    data = open_classification_data(synth_cub)
    assert data.format == "cub" and len(data.records) == N_CLASSES * PER_CLASS
    nested = tmp_path / "download" / "CUB_200_2011"
    shutil.copytree(synth_cub, nested)
    data = open_classification_data(tmp_path / "download")
    assert data.format == "cub" and data.root == nested
    assert [r.relpath for r in data.records] == [r.relpath for r in read_cub(synth_cub).records]


def test_read_cub_minimal_handwritten_tree(tmp_path: Path) -> None:
    root = _minimal_cub(tmp_path / "mini")
    data = read_cub(root)
    assert data.classes == ["001.Black footed Albatross", "002.Laysan_Albatross"]
    assert [(r.relpath, r.label, r.is_train) for r in data.records] == [
        ("images/001.Black footed Albatross/bfa 1.jpg", 0, True),
        ("images/001.Black footed Albatross/bfa_2.jpg", 0, False),
        ("images/002.Laysan_Albatross/la_1.jpg", 1, True),
    ]
    assert all(r.bbox is None and r.parts == {} for r in data.records)  # optional files absent
    assert [r.relpath for r in data.split(False)] == ["images/001.Black footed Albatross/bfa_2.jpg"]
    ds = ImageListDataset(root, data.items())
    img, label = ds[2]
    assert (img.mode, img.size, label) == ("RGB", (10, 4), 1)
    assert ds.targets == [0, 0, 1]


def test_image_list_dataset_on_synthetic_cub(synth_cub: Path, synth_data: ClassificationData) -> None:
    ds = ImageListDataset(synth_cub, synth_data.items(), transform=lambda im: np.asarray(im))
    assert len(ds) == N_CLASSES * PER_CLASS
    arr, label = ds[len(ds) - 1]
    assert arr.shape == (SIZE, SIZE, 3) and arr.dtype == np.uint8
    assert label == synth_data.records[-1].label == N_CLASSES - 1
    assert ds.targets == [r.label for r in synth_data.records]


# ------------------------------------------------------------------------------------------ bad input
def test_missing_data_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for reader in (open_classification_data, read_cub, read_image_folder):
        with pytest.raises(DataError, match="does not exist") as exc:
            reader(missing)
        assert str(missing) in str(exc.value)


def test_empty_data_root(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="is empty") as exc:
        open_classification_data(empty)
    assert str(empty) in str(exc.value)


def test_data_root_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "data.zip"
    file.write_bytes(b"PK")
    with pytest.raises(DataError, match="not a directory") as exc:
        open_classification_data(file)
    assert str(file) in str(exc.value)


def test_cub_missing_images_txt_is_still_detected_as_cub(synth_cub: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(synth_cub, root)
    (root / "images.txt").unlink()
    assert is_cub_root(root)  # image_class_labels.txt still marks it as CUB
    with pytest.raises(DataError, match="missing CUB-200-2011 list file") as exc:
        open_classification_data(root)
    assert str(root / "images.txt") in str(exc.value)


def test_cub_label_line_with_too_few_fields(tmp_path: Path) -> None:
    root = _minimal_cub(tmp_path / "mini")
    (root / "image_class_labels.txt").write_text("10 5\n20\n30 9\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected 2 fields") as exc:
        read_cub(root)
    assert f"{root / 'image_class_labels.txt'}:2:" in str(exc.value)
    assert "image_class_labels.txt:2" in str(exc.value)


def test_cub_class_id_refers_to_no_class(tmp_path: Path) -> None:
    root = _minimal_cub(tmp_path / "mini")
    (root / "image_class_labels.txt").write_text("10 5\n20 5\n30 7\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_cub(root)
    msg = str(exc.value)
    assert f"{root / 'image_class_labels.txt'}:3:" in msg
    assert "class_id 7" in msg and "class" in msg and "classes.txt" in msg


def test_cub_non_integer_class_id_names_key(tmp_path: Path) -> None:
    root = _minimal_cub(tmp_path / "mini")
    (root / "image_class_labels.txt").write_text("10 5\n20 five\n30 9\n", encoding="utf-8")
    with pytest.raises(DataError, match="integer class_id") as exc:
        read_cub(root)
    assert f"{root / 'image_class_labels.txt'}:2:" in str(exc.value) and "'five'" in str(exc.value)


def test_cub_listed_image_does_not_exist(tmp_path: Path) -> None:
    root = _minimal_cub(tmp_path / "mini")
    (root / "images" / "001.Black footed Albatross" / "bfa_2.jpg").unlink()
    with pytest.raises(DataError, match="does not exist") as exc:
        read_cub(root)
    msg = str(exc.value)
    assert f"{root / 'images.txt'}:4:" in msg  # line 2 is blank, still counted
    assert "images/001.Black footed Albatross/bfa_2.jpg" in msg
    assert len(read_cub(root, check_files=False).records) == 3


def test_cub_is_training_image_not_0_or_1(tmp_path: Path) -> None:
    root = _minimal_cub(tmp_path / "mini")
    (root / "train_test_split.txt").write_text("10 1\n20 0\n30 2\n", encoding="utf-8")
    with pytest.raises(DataError, match="is_training_image 0 or 1") as exc:
        read_cub(root)
    assert f"{root / 'train_test_split.txt'}:3:" in str(exc.value) and "'2'" in str(exc.value)


def test_cub_image_without_label(tmp_path: Path) -> None:
    root = _minimal_cub(tmp_path / "mini")
    (root / "image_class_labels.txt").write_text("10 5\n30 9\n", encoding="utf-8")
    with pytest.raises(DataError, match="no label for image_id 20") as exc:
        read_cub(root)
    assert str(root / "image_class_labels.txt") in str(exc.value)


@pytest.fixture
def broken_images(tmp_path: Path) -> tuple[Path, Path, Path]:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n", encoding="utf-8")
    return good, truncated, text


def test_load_rgb_rejects_truncated_and_non_images(broken_images: tuple[Path, Path, Path]) -> None:
    good, truncated, text = broken_images
    assert load_rgb(good).size == (64, 64)
    for bad in (truncated, text):
        with pytest.raises(DataError, match="cannot decode image") as exc:
            load_rgb(bad)
        assert str(bad) in str(exc.value)
    missing = good.with_name("missing.jpg")
    with pytest.raises(DataError, match="does not exist") as exc:
        load_rgb(missing)
    assert str(missing) in str(exc.value)


def test_image_list_dataset_getitem_raises_same_error(broken_images: tuple[Path, Path, Path]) -> None:
    good, truncated, text = broken_images
    ds = ImageListDataset(good.parent, [(good.name, 0), (truncated.name, 1), (text.name, 2)])
    assert ds[0][1] == 0
    for index, bad in ((1, truncated), (2, text)):
        with pytest.raises(DataError) as exc:
            ds[index]
        with pytest.raises(DataError) as direct:
            load_rgb(bad)
        assert str(exc.value) == str(direct.value)
        assert str(bad) in str(exc.value)


# ------------------------------------------------------------------------------------------ mode conversion
def test_grayscale_loads_as_rgb_with_value_preserved(tmp_path: Path) -> None:
    arr = np.arange(7 * 5, dtype=np.uint8).reshape(5, 7) * 7
    Image.fromarray(arr, "L").save(tmp_path / "g.png")
    img = load_rgb(tmp_path / "g.png")
    assert (img.mode, img.size) == ("RGB", (7, 5))
    out = np.asarray(img)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], arr)


def test_rgba_composites_on_white(tmp_path: Path) -> None:
    arr = np.zeros((4, 6, 4), dtype=np.uint8)
    arr[..., :3] = (10, 20, 30)
    arr[0, 0, 3] = 255  # opaque
    arr[1, 1, 3] = 0  # transparent
    arr[2, 2] = (0, 0, 0, 128)  # half transparent black
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    img = load_rgb(tmp_path / "a.png")
    assert (img.mode, img.size) == ("RGB", (6, 4))
    out = np.asarray(img).astype(int)
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[1, 1]) == (255, 255, 255)
    assert tuple(out[3, 5]) == (255, 255, 255)
    assert np.all(np.abs(out[2, 2] - 127) <= 1)


def test_palette_loads_as_rgb(tmp_path: Path) -> None:
    img = Image.new("P", (5, 3), 0)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putpixel((1, 0), 1)
    img.putpixel((2, 2), 2)
    img.save(tmp_path / "p.png")
    out = load_rgb(tmp_path / "p.png")
    assert (out.mode, out.size) == ("RGB", (5, 3))
    arr = np.asarray(out)
    assert (
        tuple(arr[0, 1]) == (255, 0, 0) and tuple(arr[2, 2]) == (0, 255, 0) and tuple(arr[0, 0]) == (0, 0, 0)
    )
    img.save(tmp_path / "pt.png", transparency=0)  # index 0 transparent -> white
    arr = np.asarray(load_rgb(tmp_path / "pt.png"))
    assert tuple(arr[0, 0]) == (255, 255, 255) and tuple(arr[0, 1]) == (255, 0, 0)


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (9, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    img = load_rgb(tmp_path / "c.jpg")
    assert (img.mode, img.size) == ("RGB", (9, 5))
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15  # C=0, M=Y=255, K=0 is red


def test_16bit_png_loads_as_rgb(tmp_path: Path) -> None:
    arr = (np.arange(12 * 10, dtype=np.uint16).reshape(10, 12) * 540).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    img = load_rgb(tmp_path / "d.png")
    assert (img.mode, img.size) == ("RGB", (12, 10))
    out = np.asarray(img).astype(int)
    assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 1] == out[..., 2])
    assert np.abs(out[..., 0] - arr / 256.0).max() <= 1.0  # 16 -> 8 bit scaling, not clipping
    assert out.max() > 200


# ------------------------------------------------------------------------------------------ ImageFolder
def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 5), (value, value, value)).save(path)


def test_image_folder_flat(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _png(root / "zebra" / "z1.png", 1)
    _png(root / "apple" / "a2.png", 2)
    _png(root / "apple" / "a1.png", 3)
    (root / "apple" / "notes.txt").write_text("ignored", encoding="utf-8")
    (root / ".hidden").mkdir()
    data = open_classification_data(root)
    assert data.format == "imagefolder"
    assert data.classes == ["apple", "zebra"]
    assert [(r.relpath, r.label, r.is_train) for r in data.records] == [
        ("apple/a1.png", 0, True),
        ("apple/a2.png", 0, True),
        ("zebra/z1.png", 1, True),
    ]
    assert data.split(False) == []


def test_image_folder_train_test(tmp_path: Path) -> None:
    root = tmp_path / "tt"
    _png(root / "train" / "b" / "1.png", 1)
    _png(root / "train" / "a" / "2.png", 2)
    _png(root / "test" / "b" / "3.png", 3)
    data = read_image_folder(root)
    assert data.classes == ["a", "b"]
    assert [(r.relpath, r.label, r.is_train) for r in data.records] == [
        ("train/a/2.png", 0, True),
        ("train/b/1.png", 1, True),
        ("test/b/3.png", 1, False),
    ]


def test_image_folder_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    _png(root / "x.png", 1)
    with pytest.raises(DataError, match="no class sub-folders") as exc:
        open_classification_data(root)
    assert str(root) in str(exc.value)


def test_image_folder_test_class_missing_from_train(tmp_path: Path) -> None:
    root = tmp_path / "tt"
    _png(root / "train" / "a" / "1.png", 1)
    _png(root / "test" / "zz" / "2.png", 2)
    with pytest.raises(DataError, match="class folder not present") as exc:
        read_image_folder(root)
    assert str(root / "test" / "zz") in str(exc.value)

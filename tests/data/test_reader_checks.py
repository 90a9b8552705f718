"""Readers check what they read (issue 14): every case with data written by hand in the real formats (never
the project's own generators), and the image verification pass that runs once before training."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Subset

from fgvc_lib.data.cifar import BASE_FOLDER, read_cifar100
from fgvc_lib.data.datasets import DataError, DataWarning, ImageListDataset, load_rgb, read_cub
from fgvc_lib.data.inat import read_inat
from fgvc_lib.data.multilabel import (
    LABELS,
    MultiLabelDataset,
    read_multilabel_csv,
    read_multilabel_folder,
)
from fgvc_lib.data.samplers import ReversedPairDataset
from fgvc_lib.data.verify import (
    CACHE_FOLDER,
    _converts_to_rgb,
    check_image,
    dataset_image_files,
    verify_images,
)


def _jpeg(path: Path, colour: tuple[int, int, int] = (90, 140, 60), size: tuple[int, int] = (24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=95)
    return path


def _noisy_jpeg(path: Path, seed: int = 0) -> Path:
    """A JPEG with enough entropy-coded data that cutting it in half loses real image data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    return path


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# ================================================================================================ CUB
def _cub(root: Path, **files: str) -> Path:
    """A hand-written CUB-200-2011 tree: 2 classes, 3 images; ``files`` replaces a list file's text
    (keys are file names with '.' written as '_', e.g. ``images_txt``)."""
    rels = ["001.Grebe/g1.jpg", "001.Grebe/g2.jpg", "002.Loon/l1.jpg"]
    for rel in rels:
        _jpeg(root / "images" / rel)
    text = {
        "classes.txt": "1 001.Grebe\n2 002.Loon\n",
        "images.txt": "".join(f"{i} {rel}\n" for i, rel in enumerate(rels, start=1)),
        "image_class_labels.txt": "1 1\n2 1\n3 2\n",
        "train_test_split.txt": "1 1\n2 0\n3 1\n",
    }
    text.update({name.replace("_txt", ".txt"): value for name, value in files.items()})
    for name, value in text.items():
        _write(root / name, value)
    return root


def test_cub_hand_written_tree_reads(tmp_path: Path) -> None:
    data = read_cub(_cub(tmp_path / "cub"))
    assert data.classes == ["001.Grebe", "002.Loon"]
    assert [(r.relpath, r.label, r.is_train) for r in data.records] == [
        ("images/001.Grebe/g1.jpg", 0, True),
        ("images/001.Grebe/g2.jpg", 0, False),
        ("images/002.Loon/l1.jpg", 1, True),
    ]


def test_cub_duplicated_ids_and_an_image_labelled_twice_are_listed_together(tmp_path: Path) -> None:
    root = _cub(
        tmp_path / "cub",
        classes_txt="1 001.Grebe\n2 002.Loon\n2 003.Tern\n",
        images_txt="1 001.Grebe/g1.jpg\n2 001.Grebe/g2.jpg\n3 002.Loon/l1.jpg\n2 002.Loon/l1.jpg\n",
        image_class_labels_txt="1 1\n2 1\n3 2\n1 2\n",
    )
    with pytest.raises(DataError) as exc:
        read_cub(root)
    msg = str(exc.value)
    assert msg.startswith(f"3 problems in the CUB-200-2011 lists of {root}:\n")
    assert (
        f"{root / 'classes.txt'}:3: class_id 2 is listed again with '003.Tern' "
        "(first at line 2 with '002.Loon'); expected unique class ids"
    ) in msg
    assert (
        f"{root / 'images.txt'}:4: image_id 2 is listed again with images/002.Loon/l1.jpg "
        "(first at line 2 with images/001.Grebe/g2.jpg)"
    ) in msg
    assert (
        f"{root / 'image_class_labels.txt'}:4: image_id 1 is listed again with class_id 2 "
        "(first at line 1 with class_id 1); expected one label per image"
    ) in msg


def test_cub_one_file_under_two_image_ids(tmp_path: Path) -> None:
    root = _cub(
        tmp_path / "cub",
        images_txt="1 001.Grebe/g1.jpg\n2 001.Grebe/g2.jpg\n3 001.Grebe/g1.jpg\n",
        image_class_labels_txt="1 1\n2 1\n3 2\n",
    )
    with pytest.raises(DataError) as exc:
        read_cub(root)
    msg = str(exc.value)
    assert msg == (
        f"{root / 'images.txt'}:3: image file images/001.Grebe/g1.jpg is listed again with image_id 3 "
        "(first at line 1 with image_id 1); expected each file under one image_id"
    )  # one problem, raised as itself: its label line is not reported a second time


def test_cub_ids_referenced_but_not_listed(tmp_path: Path) -> None:
    root = _cub(
        tmp_path / "cub",
        image_class_labels_txt="1 1\n2 1\n3 2\n9 1\n",
        train_test_split_txt="1 1\n2 0\n8 1\n",
        bounding_boxes_txt="1 0 0 5 5\n7 1 1 2 2\n1 2 2 3 3\n",
    )
    with pytest.raises(DataError) as exc:
        read_cub(root)
    msg = str(exc.value)
    assert msg.startswith("5 problems")
    for needle in (
        f"{root / 'image_class_labels.txt'}:4: image_id 9 is not listed in images.txt",
        f"{root / 'train_test_split.txt'}:3: image_id 8 is not listed in images.txt",
        f"{root / 'train_test_split.txt'}: no train/test flag for image_id 3 (002.Loon/l1.jpg)",
        f"{root / 'bounding_boxes.txt'}:2: image_id 7 is not listed in images.txt",
        f"{root / 'bounding_boxes.txt'}:3: image_id 1 is listed again",
    ):
        assert needle in msg


def test_cub_many_problems_show_ten_and_count_the_rest(tmp_path: Path) -> None:
    listed = "".join(f"{i} 001.Grebe/missing_{i}.jpg\n" for i in range(1, 16))
    root = _cub(
        tmp_path / "cub",
        images_txt=listed,
        image_class_labels_txt="".join(f"{i} 1\n" for i in range(1, 16)),
        train_test_split_txt="".join(f"{i} 1\n" for i in range(1, 16)),
    )
    with pytest.raises(DataError) as exc:
        read_cub(root)
    msg = str(exc.value)
    assert msg.startswith("15 problems")
    assert msg.count("does not exist under") == 10 and msg.endswith("  ... and 5 more")
    assert f"{root / 'images.txt'}:1: image file images/001.Grebe/missing_1.jpg does not exist" in msg


def test_cub_latin1_classes_txt_is_decoded_with_a_warning(tmp_path: Path) -> None:
    root = _cub(tmp_path / "cub")
    path = _write(root / "classes.txt", "1 001.Grünfink\n2 002.Mésange\n", encoding="latin-1")
    with pytest.warns(DataWarning) as caught:
        data = read_cub(root)
    assert data.classes == ["001.Grünfink", "002.Mésange"]  # not '001.Gr\ufffdnfink'
    (warning,) = [w for w in caught if issubclass(w.category, DataWarning)]
    text = str(warning.message)
    assert f"{path}:1: not UTF-8 text (byte 0xfc)" in text and "decoded as cp1252" in text


def test_cub_utf8_with_byte_order_mark_reads_without_a_warning(tmp_path: Path) -> None:
    root = _cub(tmp_path / "cub")
    _write(root / "classes.txt", "\ufeff1 001.Grünfink\n2 002.Loon\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert read_cub(root).classes == ["001.Grünfink", "002.Loon"]


# ================================================================================================ iNat
CATEGORIES = [  # listed out of id order on purpose
    {"id": 11, "name": "Genus eleven", "kingdom": "Animalia"},
    {"id": 3, "name": "Genus three", "kingdom": "Plantae"},
    {"id": 7, "name": "Genus seven", "kingdom": "Fungi"},
]


def _inat_split(root: Path, split: str, labels: list[int], categories: list[dict[str, Any]]) -> Path:
    """``root/{split}2019.json`` with one hand-drawn image per entry of ``labels`` (category ids)."""
    images, annotations = [], []
    offset = 0 if split == "train" else 100
    for i, cid in enumerate(labels):
        rel = f"train_val2019/Set/{cid}/{split}_{i}.jpg"
        _jpeg(root / rel, colour=(10 * i % 255, 40, 90))
        images.append({"id": offset + i, "file_name": rel, "width": 24, "height": 16})
        annotations.append({"id": 1000 + offset + i, "image_id": offset + i, "category_id": cid})
    obj = {"info": {"year": 2019}, "images": images, "annotations": annotations, "categories": categories}
    path = root / f"{split}2019.json"
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


def test_inat_validation_labels_are_matched_by_category_id(tmp_path: Path) -> None:
    full, partial = tmp_path / "full", tmp_path / "partial"
    val_ids = [11, 3, 11, 3]
    for root in (full, partial):
        _inat_split(root, "train", [3, 3, 7, 11, 11, 11], CATEGORIES)
    _inat_split(full, "val", val_ids, CATEGORIES)
    # the validation file lists only the categories it uses, in another order than training
    only_used = [CATEGORIES[0], CATEGORIES[1]][::-1]
    _inat_split(partial, "val", val_ids, only_used)

    train = read_inat(full, "train")
    assert train.category_ids == [3, 7, 11] and [r.label for r in train.records] == [0, 0, 1, 2, 2, 2]
    expected = [train.label_of(c) for c in val_ids]
    assert expected == [2, 0, 2, 0]
    for root in (full, partial):
        val = read_inat(root, "val")
        assert [r.label for r in val.records] == expected, root
        assert val.classes == train.classes and val.category_ids == [3, 7, 11]
    assert [r.label for r in read_inat(partial, "train").records] == [0, 0, 1, 2, 2, 2]  # unchanged


def test_inat_validation_category_unknown_to_training(tmp_path: Path) -> None:
    train = _inat_split(tmp_path, "train", [3, 7, 11], CATEGORIES)
    extra = {"id": 99, "name": "Genus ninety-nine"}
    val = _inat_split(tmp_path, "val", [3, 99, 99, 11], [*CATEGORIES, extra])
    with pytest.raises(DataError) as exc:
        read_inat(tmp_path, "val")
    msg = str(exc.value)
    assert f"{val}: category id 99 ('Genus ninety-nine', 2 images) is not a category of {train}" in msg
    assert "expected only categories the model is trained on (ids 3, 7, 11)" in msg


def test_inat_validation_category_named_differently(tmp_path: Path) -> None:
    train = _inat_split(tmp_path, "train", [3, 7, 11], CATEGORIES)
    renamed = [dict(c, name="Genus three (old)") if c["id"] == 3 else c for c in CATEGORIES]
    val = _inat_split(tmp_path, "val", [3, 11], renamed)
    with pytest.raises(DataError) as exc:
        read_inat(tmp_path, "val")
    assert f"{val}: category id 3 is named 'Genus three (old)' here but 'Genus three' in {train}" in str(
        exc.value
    )


def test_inat_validation_needs_the_training_file(tmp_path: Path) -> None:
    _inat_split(tmp_path, "val", [3, 11], CATEGORIES)
    with pytest.raises(DataError) as exc:
        read_inat(tmp_path, "val")
    assert f"{tmp_path / 'train2019.json'}: training annotation file is missing" in str(exc.value)
    explicit = read_inat(tmp_path, "val", categories=CATEGORIES)  # or given by the caller
    assert [r.label for r in explicit.records] == [0, 2]


def test_inat_duplicate_ids_and_unknown_images_are_listed_together(tmp_path: Path) -> None:
    path = _inat_split(tmp_path, "train", [3, 7, 11], CATEGORIES)
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj["categories"].append({"id": 7, "name": "Genus seven again"})
    obj["images"].append(dict(obj["images"][0]))  # image id 0 twice
    obj["annotations"].append({"id": 5000, "image_id": 42, "category_id": 3})
    obj["annotations"].append({"id": 5001, "image_id": 1, "category_id": 3})  # image 1 annotated twice
    path.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_inat(tmp_path, "train")
    msg = str(exc.value)
    assert msg.startswith(f"4 problems in {path}:")
    for needle in (
        "categories: id 7 is used twice (categories[2] 'Genus seven' and categories[3] 'Genus seven again')",
        "images[3]: id 0 is used twice",
        "annotation id 5000 (annotations[3]): image_id 42 is not an id in 'images'",
        "annotation id 5001 (annotations[4]): image_id 1 already has an annotation",
    ):
        assert needle in msg


# ================================================================================================ multilabel
def _multilabel_root(root: Path, texts: dict[str, str], images: int = 4) -> Path:
    for k in range(1, images + 1):
        _jpeg(root / "images" / f"im{k}.jpg", colour=(30 * k, 80, 120))
    for label in LABELS:
        _write(root / "annotations" / f"{label}.txt", texts.get(label, ""))
    return root


def test_multilabel_all_fourteen_label_files_empty(tmp_path: Path) -> None:
    root = _multilabel_root(tmp_path / "ml", {"bird": "\n\n"})
    with pytest.raises(DataError) as exc:
        read_multilabel_folder(root)
    msg = str(exc.value)
    assert f"{root / 'annotations'}: no annotation file lists any image (all 14 label files are empty)" in msg


def test_multilabel_repeated_image_in_a_label_file(tmp_path: Path) -> None:
    root = _multilabel_root(tmp_path / "ml", {"bird": "1\n3\n1\n", "car": "2\n9\n", "dog": "4\n"})
    with pytest.raises(DataError) as exc:
        read_multilabel_folder(root)
    msg = str(exc.value)
    assert msg.startswith(f"2 problems in the annotation files of {root / 'annotations'}:")
    bird, car = root / "annotations" / "bird.txt", root / "annotations" / "car.txt"
    assert f"{bird}:3: image number 1 is listed again (first at line 1)" in msg
    assert f"{car}:2: image number 9: images/im9.jpg does not exist" in msg


def test_multilabel_one_positive_is_enough(tmp_path: Path) -> None:
    data = read_multilabel_folder(_multilabel_root(tmp_path / "ml", {"tree": "2\n"}))
    assert data.targets.sum() == 1 and data.label_names(1) == ["tree"]


def test_multilabel_csv_without_any_label(tmp_path: Path) -> None:
    root = _multilabel_root(tmp_path / "ml", {})
    csv_path = _write(tmp_path / "labels.csv", "file,labels\nim1.jpg,\nim2.jpg, \n")
    with pytest.raises(DataError) as exc:
        read_multilabel_csv(csv_path, root / "images")
    assert f"{csv_path}: no row has any label (the 'labels' column is empty in all 2 rows)" in str(exc.value)


def test_multilabel_csv_problems_are_listed_together(tmp_path: Path) -> None:
    root = _multilabel_root(tmp_path / "ml", {})
    csv_path = _write(tmp_path / "labels.csv", "file,labels\nim1.jpg,bird\nim1.jpg,car\nim2.jpg,brid\n")
    with pytest.raises(DataError) as exc:
        read_multilabel_csv(csv_path, root / "images")
    msg = str(exc.value)
    assert f"{csv_path}:3: file im1.jpg is listed twice (first at line 2)" in msg
    assert f"{csv_path}:4: unknown label 'brid'" in msg


# ================================================================================================ CIFAR
def _cifar(root: Path, split: dict[str, Any], fine_names: list[str] | None = None) -> Path:
    base = root / BASE_FOLDER
    base.mkdir(parents=True)
    meta = {"fine_label_names": fine_names or [f"fine_{i}" for i in range(100)]}
    for name, obj in (("train", split), ("meta", meta)):
        with open(base / name, "wb") as fh:
            pickle.dump(obj, fh)
    return root


def _split(n: int, labels: list[int] | None = None) -> dict[str, Any]:
    return {
        "data": np.zeros((n, 3072), dtype=np.uint8),
        "fine_labels": labels if labels is not None else [0] * n,
        "filenames": [f"f{i}.png" for i in range(n)],
    }


def test_cifar_split_without_images(tmp_path: Path) -> None:
    root = _cifar(tmp_path, _split(0))
    with pytest.raises(DataError, match="key 'data' holds no images"):
        read_cifar100(root, "train")


def test_cifar_repeated_class_names(tmp_path: Path) -> None:
    names = [f"fine_{i}" for i in range(100)]
    names[42] = "fine_7"
    root = _cifar(tmp_path, _split(2), names)
    with pytest.raises(DataError) as exc:
        read_cifar100(root, "train")
    assert "key 'fine_label_names' repeats names: 'fine_7' (index 7 and 42)" in str(exc.value)


def test_cifar_labels_out_of_range_are_counted(tmp_path: Path) -> None:
    root = _cifar(tmp_path, _split(4, [0, 100, 5, -2]))
    with pytest.raises(DataError) as exc:
        read_cifar100(root, "train")
    assert "index 1: label 100 is outside the class list (2 labels outside, first shown)" in str(exc.value)


# ================================================================================================ image modes
def _tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values).save(path, format="TIFF")
    with Image.open(path) as img:
        assert img.mode == {np.float32: "F", np.int32: "I"}[values.dtype.type]
    return path


def test_float32_tiff_in_0_1_is_scaled_not_black(tmp_path: Path) -> None:
    gradient = np.linspace(0.0, 1.0, 5 * 8, dtype=np.float32).reshape(5, 8)
    img = load_rgb(_tiff(tmp_path / "gradient.tif", gradient))
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (5, 8, 3)
    expected = np.rint(gradient.astype(np.float64) * 255).astype(np.uint8)
    assert np.array_equal(arr[..., 0], expected) and np.array_equal(arr[..., 2], expected)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    half = load_rgb(_tiff(tmp_path / "half.tif", np.full((3, 3), 0.5, dtype=np.float32)))
    assert np.asarray(half)[1, 1].tolist() == [128, 128, 128]


def test_float32_tiff_outside_0_255_is_stretched_and_nan_is_zero(tmp_path: Path) -> None:
    values = np.array([[-1.0, 1.0], [3.0, np.nan]], dtype=np.float32)
    arr = np.asarray(load_rgb(_tiff(tmp_path / "wide.tif", values)))[..., 0]
    # range -1..3 -> 0..255; NaN counts as 0 (i.e. 0.25 of the way)
    assert arr.tolist() == [[0, 128], [255, 64]]
    in_8bit = np.array([[0.0, 17.0], [200.0, 255.0]], dtype=np.float32)
    assert np.asarray(load_rgb(_tiff(tmp_path / "8bit.tif", in_8bit)))[..., 0].tolist() == [
        [0, 17],
        [200, 255],
    ]


def test_int32_tiff_by_its_range(tmp_path: Path) -> None:
    as_16bit = np.array([[0, 40000], [65535, 256]], dtype=np.int32)
    assert np.asarray(load_rgb(_tiff(tmp_path / "i16.tif", as_16bit)))[..., 0].tolist() == [
        [0, 156],
        [255, 1],
    ]
    as_8bit = np.array([[0, 100], [255, 7]], dtype=np.int32)
    assert np.asarray(load_rgb(_tiff(tmp_path / "i8.tif", as_8bit)))[..., 0].tolist() == [[0, 100], [255, 7]]
    wide = np.array([[-100000, 0], [100000, 50000]], dtype=np.int32)
    assert np.asarray(load_rgb(_tiff(tmp_path / "wide.tif", wide)))[..., 0].tolist() == [[0, 128], [255, 191]]


# ================================================================================================ verification
def test_truncated_jpeg_is_caught_and_trailing_bytes_are_accepted(tmp_path: Path) -> None:
    good = _noisy_jpeg(tmp_path / "good.jpg")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    trailing = tmp_path / "trailing.jpg"
    trailing.write_bytes(data + b"camera maker notes")
    check_image(good)
    check_image(trailing)  # decodes fine (load_rgb agrees), so it is not rejected
    load_rgb(trailing)
    with pytest.raises(DataError, match=rf"{truncated}: unreadable image \(image file is truncated"):
        check_image(truncated)


def test_all_bad_images_are_reported_together(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(3):
        _noisy_jpeg(root / f"ok_{i}.jpg", seed=i)
    truncated = root / "cut.jpg"
    truncated.write_bytes(_noisy_jpeg(root / "src.jpg").read_bytes()[:700])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image\n", encoding="utf-8")
    png = root / "half.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:-40])
    rels = ["ok_0.jpg", "cut.jpg", "ok_1.jpg", "empty.jpg", "notes.png", "half.png", "gone.jpg", "ok_2.jpg"]
    with pytest.raises(DataError) as exc:
        verify_images([(root, r) for r in rels], cache_dir=tmp_path / "cache")
    msg = str(exc.value)
    assert msg.startswith("5 unreadable images (every image is opened once before training):\n")
    for needle in (
        f"{root / 'cut.jpg'} (image file is truncated",
        f"{root / 'empty.jpg'} (empty file (0 bytes))",
        f"{root / 'notes.png'} (cannot identify image file",
        f"{root / 'half.png'} (",
        f"{root / 'gone.jpg'} (file does not exist)",
    ):
        assert needle in msg
    assert "ok_" not in msg


def test_results_are_remembered_by_size_and_mtime(tmp_path: Path) -> None:
    root, cache = tmp_path / "data", tmp_path / "cache"
    files = [(root, f"im_{i}.jpg") for i in range(6)]
    for i, (_, rel) in enumerate(files):
        _jpeg(root / rel, colour=(i * 40, 10, 10))
    first = verify_images(files, cache_dir=cache, workers=3)
    assert (first.images, first.checked, first.remembered) == (6, 6, 0)
    (cache_file,) = first.cache_files
    stored = json.loads(cache_file.read_text(encoding="utf-8"))
    assert stored["root"] == str(root) and len(stored["files"]) == 6
    assert stored["files"]["im_0.jpg"] == [
        (root / "im_0.jpg").stat().st_size,
        (root / "im_0.jpg").stat().st_mtime_ns,
    ]

    second = verify_images(files, cache_dir=cache)
    assert (second.checked, second.remembered) == (0, 6)

    # a file replaced since (new size and mtime) is checked again: here it became unreadable
    (root / "im_2.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    os.utime(root / "im_4.jpg", ns=(1, 1))  # touched: same bytes, checked again, still fine
    with pytest.raises(DataError, match=r"(?s)1 unreadable image .*im_2\.jpg"):
        verify_images(files, cache_dir=cache)
    third = verify_images([f for f in files if f[1] != "im_2.jpg"], cache_dir=cache)
    assert (third.checked, third.remembered) == (
        0,
        5,
    )  # im_4 was re-checked (and remembered) by the failed run
    _jpeg(root / "im_2.jpg")  # repaired
    fourth = verify_images(files, cache_dir=cache)
    assert (fourth.checked, fourth.remembered) == (1, 5)


def test_cache_that_cannot_be_written_or_read_is_skipped_silently(tmp_path: Path) -> None:
    root = tmp_path / "data"
    files = [(root, "a.jpg"), (root, "b.jpg")]
    for _, rel in files:
        _jpeg(root / rel)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the cache folder would go\n", encoding="utf-8")
    report = verify_images(files, cache_dir=blocker / "cache")
    assert report.checked == 2 and report.cache_files == []
    cache = tmp_path / "cache"
    (cache_file,) = verify_images(files, cache_dir=cache).cache_files
    cache_file.write_text("{ truncated", encoding="utf-8")
    again = verify_images(files, cache_dir=cache)
    assert again.checked == 2 and json.loads(cache_file.read_text(encoding="utf-8"))["files"]


def test_the_default_cache_lives_under_the_outputs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FGVC_OUTPUTS", str(tmp_path / "outputs"))
    root = tmp_path / "readonly-data"
    _jpeg(root / "a.jpg")
    root.chmod(0o555)  # the data folder itself is never written to
    try:
        (cache_file,) = verify_images([(root, "a.jpg")]).cache_files
    finally:
        root.chmod(0o755)
    assert cache_file.parent == tmp_path / "outputs" / "cache" / CACHE_FOLDER
    assert sorted(p.name for p in root.iterdir()) == ["a.jpg"]


def test_modes_without_an_rgb_conversion_are_rejected_by_name() -> None:
    assert _converts_to_rgb("F") and _converts_to_rgb("I;16B") and _converts_to_rgb("CMYK")
    assert not _converts_to_rgb("La")


def test_dataset_image_files_follow_subsets_and_wrappers(tmp_path: Path) -> None:
    items = [("a.jpg", 0), ("b.jpg", 1), ("c.jpg", 0)]
    plain = ImageListDataset(tmp_path, items)
    assert dataset_image_files(plain) == [(tmp_path, "a.jpg"), (tmp_path, "b.jpg"), (tmp_path, "c.jpg")]
    assert dataset_image_files(Subset(plain, [2, 0])) == [(tmp_path, "c.jpg"), (tmp_path, "a.jpg")]
    pairs = ReversedPairDataset(plain, [0, 1, 0])
    assert dataset_image_files(pairs) == dataset_image_files(plain)
    root = _multilabel_root(tmp_path / "ml", {"bird": "1\n"}, images=2)
    ml = MultiLabelDataset(read_multilabel_folder(root))
    assert dataset_image_files(Subset(ml, [1])) == [(root, "images/im2.jpg")]
    assert dataset_image_files([1, 2, 3]) == []  # in-memory data: nothing to open


def test_experiment_checks_every_split_before_training(
    tmp_path: Path, tiny_params: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zero-byte test image and a truncated training image stop the run at construction, both named,
    with the failure recorded in metrics.json; no epoch runs first."""
    from fgvc_lib.experiments.bird import BirdExperiment

    root = tmp_path / "folder"
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("grebe", "loon"):
            for i in range(n):
                _noisy_jpeg(root / split / cls / f"{i}.jpg", seed=i)
    (root / "test" / "loon" / "1.jpg").write_bytes(b"")
    cut = root / "train" / "grebe" / "2.jpg"
    cut.write_bytes(cut.read_bytes()[:2000])  # past the headers: the image data is cut
    params = tiny_params(
        "bird",
        data_root=str(root),
        model="resnet18",
        pretrained=False,
        batch_size=2,
        epochs=1,
        cam_images=0,
        run_dir=str(tmp_path / "run"),
    )
    monkeypatch.setattr(BirdExperiment, "_run", lambda self: pytest.fail("training started"))
    with pytest.raises(DataError) as exc:
        BirdExperiment(params)
    msg = str(exc.value)
    assert msg.startswith("2 unreadable images")
    assert f"{root / 'test' / 'loon' / '1.jpg'} (empty file (0 bytes))" in msg
    assert f"{cut} (image file is truncated" in msg
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "failed" and "2 unreadable images" in metrics["error"]

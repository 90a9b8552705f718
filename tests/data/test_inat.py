"""Tests for the iNaturalist-2019 format: long-tail counts, writer, reader, class counts, histogram."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from fgvc_lib import plots
from fgvc_lib.data.datasets import DataError, ImageListDataset
from fgvc_lib.data.inat import InatData, class_counts, read_inat
from fgvc_lib.data.synth import inat as synth_inat
from fgvc_lib.data.synth.inat import attribute_indices, long_tail_counts, species_taxonomy, write_inat
from fgvc_lib.data.synth.render import class_attributes

SMALL = {"classes": 8, "max_per_class": 20, "imbalance": 10, "val_per_class": 2, "size": 48, "seed": 5}
TAXONOMY_KEYS = {"id", "name", "kingdom", "phylum", "class", "order", "family", "genus"}
FILE_NAME = re.compile(r"^train_val2019/Birds/(\d+)/[0-9a-f]{32}\.jpg$")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inat")
    assert write_inat(root, **SMALL) == root
    return root


def _json(root: Path, split: str) -> dict[str, Any]:
    return json.loads((root / f"{split}2019.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ class design


@pytest.mark.parametrize(
    ("args", "total", "head", "tail"),
    [
        ((10, 5000, 100), 12406, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], [50]),
        ((10, 5000, 50), 13996, [5000], [100]),
        ((100, 500, 100), 10847, [500, 477, 455], [5]),
        ((1, 7, 100), 7, [7], [7]),
        ((4, 6, 1), 24, [6, 6, 6, 6], [6]),
        ((5, 2, 100), 6, [2, 1, 1, 1, 1], [1]),  # at least one image per class
    ],
)
def test_long_tail_counts_match_the_cifar_lt_numbers(
    args: tuple[int, int, float], total: int, head: list[int], tail: list[int]
) -> None:
    counts = long_tail_counts(*args)
    assert len(counts) == args[0] and sum(counts) == total
    assert counts[: len(head)] == head and counts[-len(tail) :] == tail
    assert counts == sorted(counts, reverse=True) and all(type(n) is int for n in counts)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((0, 10, 2), "num_classes"),
        ((3, 0, 2), "max_per_class"),
        ((3, 2.5, 2), "max_per_class"),
        ((3, 10, 0.5), "imbalance"),
        ((3, 10, float("inf")), "imbalance"),
        ((3, 10, True), "imbalance"),
    ],
)
def test_long_tail_counts_validates(args: tuple[Any, Any, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        long_tail_counts(*args)


def test_classes_are_spread_and_named_by_taxonomy() -> None:
    for n in (1, 8, 30, 200):
        attrs = attribute_indices(n)
        assert len(set(attrs)) == n
        names = [species_taxonomy(a)["name"] for a in attrs]
        assert len(set(names)) == n
    eight = [class_attributes(a) for a in attribute_indices(8)]
    assert len({s.colour_name for s in eight}) == 8 and len({s.shape for s in eight}) == 5
    assert len({s.pattern for s in eight}) == 5
    assert sorted(attribute_indices(200)) == list(range(200))
    colours = [class_attributes(a).colour_name for a in attribute_indices(30)]
    assert all(a != b for a, b in zip(colours, colours[1:], strict=False))  # neighbours differ in colour
    tax = species_taxonomy(attribute_indices(30)[8])
    assert tax["genus"] == "Crimsonornis" and tax["family"] == "Crimsonidae" and tax["class"] == "Aves"
    assert tax["name"].startswith(tax["genus"] + " ")
    families = {species_taxonomy(a)["family"] for a in attribute_indices(30)}
    genera = {species_taxonomy(a)["genus"] for a in attribute_indices(30)}
    assert len(families) == 4 and len(genera) == 8


# ------------------------------------------------------------------------------------------ writer


def test_write_inat_json_structure(small: Path) -> None:
    assert sorted(p.name for p in small.iterdir()) == ["train2019.json", "train_val2019", "val2019.json"]
    all_ids: list[int] = []
    for split in ("train", "val"):
        d = _json(small, split)
        assert list(d) == ["info", "licenses", "images", "annotations", "categories"]
        assert {"year", "version", "description", "contributor", "url", "date_created"} <= set(d["info"])
        assert d["licenses"] and all(set(lic) == {"id", "name", "url"} for lic in d["licenses"])
        licence_ids = {lic["id"] for lic in d["licenses"]}
        cats = d["categories"]
        assert [c["id"] for c in cats] == list(range(SMALL["classes"]))
        assert all(
            set(c) == TAXONOMY_KEYS and all(isinstance(c[k], str) for k in TAXONOMY_KEYS - {"id"})
            for c in cats
        )
        assert len(d["images"]) == len(d["annotations"])
        for image, ann in zip(d["images"], d["annotations"], strict=True):
            assert set(image) == {"id", "file_name", "width", "height", "license", "rights_holder"}
            assert set(ann) == {"id", "image_id", "category_id", "bbox", "part_xy"}
            assert all(type(image[k]) is int for k in ("id", "width", "height", "license"))
            assert all(type(ann[k]) is int for k in ("id", "image_id", "category_id"))
            assert isinstance(image["rights_holder"], str) and image["license"] in licence_ids
            assert ann["image_id"] == image["id"]
            match = FILE_NAME.match(image["file_name"])
            assert match and int(match.group(1)) == ann["category_id"]
            with Image.open(small / image["file_name"]) as img:
                assert img.format == "JPEG" and img.mode == "RGB"
                assert img.size == (image["width"], image["height"]) == (SMALL["size"],) * 2
        all_ids += [image["id"] for image in d["images"]]
        assert len({a["id"] for a in d["annotations"]}) == len(d["annotations"])
    assert len(set(all_ids)) == len(all_ids)  # image ids are unique over both splits
    files = sorted(p.relative_to(small).as_posix() for p in (small / "train_val2019").rglob("*.jpg"))
    listed = [i["file_name"] for s in ("train", "val") for i in _json(small, s)["images"]]
    assert sorted(listed) == files


def test_write_inat_counts_long_tail_train_and_balanced_val(small: Path) -> None:
    train = [a["category_id"] for a in _json(small, "train")["annotations"]]
    val = [a["category_id"] for a in _json(small, "val")["annotations"]]
    expected = long_tail_counts(SMALL["classes"], SMALL["max_per_class"], SMALL["imbalance"])
    assert np.bincount(train).tolist() == expected == [20, 14, 10, 7, 5, 3, 2, 2]
    assert np.bincount(val).tolist() == [SMALL["val_per_class"]] * SMALL["classes"]
    assert train != sorted(train)  # seeded shuffle, not grouped by class


def test_write_inat_boxes_inside_image_and_part_inside_box(small: Path) -> None:
    for split in ("train", "val"):
        d = _json(small, split)
        for image, ann in zip(d["images"], d["annotations"], strict=True):
            x, y, w, h = ann["bbox"]
            px, py = ann["part_xy"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= image["width"] and y + h <= image["height"]
            assert x <= px <= x + w and y <= py <= y + h


def test_write_inat_is_deterministic_and_seeded(small: Path, tmp_path: Path) -> None:
    again = write_inat(tmp_path / "again", **SMALL)
    for name in ("train2019.json", "val2019.json"):
        assert (again / name).read_bytes() == (small / name).read_bytes()
    first = _json(small, "train")["images"][0]["file_name"]
    assert (again / first).read_bytes() == (small / first).read_bytes()
    other = write_inat(tmp_path / "other", **{**SMALL, "seed": 6})
    assert (other / "train2019.json").read_bytes() != (small / "train2019.json").read_bytes()


def test_write_inat_replaces_atomically_and_survives_failure(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = write_inat(tmp_path / "set", classes=2, max_per_class=2, val_per_class=1, size=32)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls: list[Path] = []
    original = synth_inat.save_jpeg

    def failing_save(image: Any, path: Path) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        original(image, path)

    monkeypatch.setattr(synth_inat, "save_jpeg", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_inat(out, classes=3, max_per_class=3, val_per_class=1, size=32, seed=1)
    assert all(out / "train_val2019" not in p.parents for p in calls)  # never written into the real tree
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    write_inat(out, classes=3, max_per_class=3, val_per_class=1, size=32, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["train2019.json", "train_val2019", "val2019.json"]
    assert read_inat(out).num_classes == 3
    n_files = sum(1 for _ in out.rglob("*.jpg"))
    assert n_files == len(read_inat(out).records) + len(read_inat(out, "val").records)  # old images gone


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"classes": 0}, "classes"),
        ({"classes": 201}, "classes"),
        ({"max_per_class": 0}, "max_per_class"),
        ({"imbalance": 0.9}, "imbalance"),
        ({"imbalance": "10"}, "imbalance"),
        ({"val_per_class": 0}, "val_per_class"),
        ({"size": 16}, "size"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_write_inat_validates_arguments(tmp_path: Path, kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:"):
        write_inat(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_write_inat_out_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out"):
        write_inat(tmp_path / "file")


# ------------------------------------------------------------------------------------------ reader


def test_read_inat_round_trip(small: Path) -> None:
    for split in ("train", "val"):
        d = _json(small, split)
        data = read_inat(small, split)
        assert isinstance(data, InatData) and data.format == "inat2019" and data.root == small
        assert data.classes == [c["name"] for c in d["categories"]]
        assert data.category_ids == list(range(SMALL["classes"])) and data.taxonomy == d["categories"]
        assert len(data.records) == len(d["images"])
        for record, image, ann in zip(data.records, d["images"], d["annotations"], strict=True):
            assert record.relpath == image["file_name"] and (small / record.relpath).is_file()
            assert record.label == data.label_of(ann["category_id"]) == ann["category_id"]
            assert record.is_train == (split == "train")
            assert record.bbox == tuple(ann["bbox"])
            assert record.parts == {"left wing": tuple(ann["part_xy"])}
    counts = class_counts(read_inat(small))
    assert counts.tolist() == long_tail_counts(8, 20, 10) and counts.dtype == np.int64
    assert class_counts(read_inat(small, "val")).tolist() == [2] * 8


def _minimal(root: Path) -> dict[str, Any]:
    """A hand-written iNat-2019 train file (no bbox / part_xy): 2 categories (ids 7, 3), 3 images."""
    images = []
    for i, (folder, colour, mode, ext) in enumerate(
        [
            ("Plants/7", (200, 10, 10), "RGB", "jpg"),
            ("Plants/7", 90, "L", "png"),
            ("Fungi/3", (0, 0, 255), "RGB", "jpg"),
        ]
    ):
        rel = f"train_val2019/{folder}/img{i}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, (20 + i, 10), colour).save(root / rel)
        images.append(
            {"id": i, "file_name": rel, "width": 20 + i, "height": 10, "license": 1, "rights_holder": "x"}
        )
    taxa = {"kingdom": "Plantae", "phylum": "P", "class": "C", "order": "O", "family": "F", "genus": "G"}
    obj = {
        "info": {"year": 2019},
        "licenses": [{"id": 1, "name": "CC BY", "url": ""}],
        "images": images,
        "annotations": [
            {"id": 10, "image_id": 0, "category_id": 7},
            {"id": 11, "image_id": 1, "category_id": 7},
            {"id": 12, "image_id": 2, "category_id": 3},
        ],
        "categories": [{"id": 7, "name": "Genus seven", **taxa}, {"id": 3, "name": "Genus three", **taxa}],
    }
    _write(root, obj)
    return obj


def _write(root: Path, obj: Any, split: str = "train") -> Path:
    path = root / f"{split}2019.json"
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_read_inat_real_file_without_boxes(tmp_path: Path) -> None:
    _minimal(tmp_path)
    data = read_inat(tmp_path)
    assert data.classes == ["Genus three", "Genus seven"] and data.category_ids == [3, 7]
    assert [r.label for r in data.records] == [1, 1, 0] and data.label_of(3) == 0
    assert [r.relpath for r in data.records][2] == "train_val2019/Fungi/3/img2.jpg"
    assert all(r.bbox is None and r.parts == {} and r.is_train for r in data.records)
    assert class_counts(data).tolist() == [1, 2]
    dataset = ImageListDataset(data.root, data.items())
    img, label = dataset[1]
    assert img.mode == "RGB" and img.size == (21, 10) and label == 1


def _drop_key(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        target = d
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return apply


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_drop_key("images"), "missing key 'images'"),
        (_drop_key("annotations"), "missing key 'annotations'"),
        (_drop_key("categories"), "missing key 'categories'"),
        (_set(("images",), {}), "key 'images' is a dict; expected a list"),
        (_set(("annotations", 2, "image_id"), 99), "annotation id 12 (annotations[2]): image_id 99"),
        (_set(("annotations", 1, "category_id"), 5), "annotation id 11 (annotations[1]): category_id 5"),
        (lambda d: d["annotations"].pop(1), "image id 1 (train_val2019/Plants/7/img1.png) has no annotation"),
        (_set(("annotations", 2, "image_id"), 0), "annotation id 12 (annotations[2]): image_id 0 already"),
        (_set(("annotations", 0, "category_id"), "7"), "annotations[0] (id 10): key 'category_id' is '7'"),
        (_set(("annotations", 1, "bbox"), [1, 2, 3]), "annotation id 11: key 'bbox'"),
        (_set(("annotations", 1, "part_xy"), ["a", 2]), "annotation id 11: key 'part_xy'"),
        (lambda d: d["images"][1].pop("file_name"), "images[1] (id 1): missing key 'file_name'"),
        (_set(("images", 1, "id"), 0), "images[1]: id 0 is used twice"),
        (_set(("categories", 1, "id"), 7), "categories: id 7 is used twice"),
        (_set(("categories", 0), "Genus seven"), "categories[0] is a str"),
        (
            _set(("images", 2, "file_name"), "train_val2019/Fungi/3/nope.jpg"),
            "file_name train_val2019/Fungi/3/nope.jpg does not exist",
        ),
    ],
)
def test_read_inat_bad_content_names_file_and_entry(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    obj = _minimal(tmp_path)
    mutate(obj)
    path = _write(tmp_path, obj)
    with pytest.raises(DataError) as info:
        read_inat(tmp_path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_read_inat_missing_file_invalid_json_and_wrong_top_level(tmp_path: Path) -> None:
    _minimal(tmp_path)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "val2019.json")) + ".*missing"):
        read_inat(tmp_path, "val")
    path = tmp_path / "train2019.json"
    path.write_text('{"images": [\n  {"id": 1,,}\n]}', encoding="utf-8")
    with pytest.raises(
        DataError, match=re.escape(str(path)) + r": invalid JSON at line 2 column 12 \(char 24\)"
    ):
        read_inat(tmp_path)
    path.write_bytes(b'{"images": "\xff"}')
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*UTF-8"):
        read_inat(tmp_path)
    _write(tmp_path, [1, 2])
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*JSON list; expected an object"):
        read_inat(tmp_path)
    with pytest.raises(ValueError, match="split"):
        read_inat(tmp_path, "test")


def test_read_inat_checks_every_image_file(small: Path, tmp_path: Path) -> None:
    d = _json(small, "val")
    for image in d["images"][:-1]:
        target = tmp_path / image["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((small / image["file_name"]).read_bytes())
    path = _write(tmp_path, d, "val")
    last = d["images"][-1]["file_name"]
    with pytest.raises(
        DataError, match=re.escape(str(path)) + f".*file_name {re.escape(last)} does not exist"
    ):
        read_inat(tmp_path, "val")


# ------------------------------------------------------------------------------------------ histogram


def test_class_histogram_sorted_descending_on_log_axis(small: Path) -> None:
    counts = np.array([3, 20, 1, 7, 7])
    fig = plots.class_histogram(counts, title="train")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "train" in ax.get_title()
    heights = [p.get_height() for p in ax.patches]
    assert heights == [20, 7, 7, 3, 1]
    assert [p.get_x() for p in ax.patches] == [0, 1, 2, 3, 4]
    lin = plots.class_histogram(class_counts(read_inat(small)), log=False).axes[0]
    assert lin.get_yscale() == "linear" and len(lin.patches) == SMALL["classes"]
    assert [p.get_height() for p in lin.patches] == long_tail_counts(8, 20, 10)
    for bad in ([], [[1, 2]], [1, -1], [1, float("nan")]):
        with pytest.raises(ValueError, match="counts"):
            plots.class_histogram(bad)

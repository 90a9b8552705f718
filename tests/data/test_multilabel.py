"""Tests for the multi-label set: label sampling, synthetic writer, folder / CSV readers, dataset, split."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from PIL import Image

from fgvc_lib.data.datasets import DataError, load_rgb
from fgvc_lib.data.multilabel import (
    LABELS,
    MultiLabelData,
    MultiLabelDataset,
    all_negative_share,
    frequency_table,
    iterative_split,
    label_frequencies,
    read_boxes,
    read_multilabel_csv,
    read_multilabel_folder,
)
from fgvc_lib.data.synth import scene
from fgvc_lib.data.synth.multilabel import (
    REPORT_EMPTY_SHARE,
    REPORT_FREQUENCIES,
    sample_label_sets,
    write_multilabel,
)
from fgvc_lib.data.synth.render import image_rng
from fgvc_lib.data.synth.scene import render_scene

SMALL = {"images": 40, "size": 64, "seed": 3, "grayscale_share": 0.1}
BIG = {"images": 2000, "size": 32, "seed": 0}
IMAGE_NAME = re.compile(r"^im([1-9]\d*)\.jpg$")
COL = {label: j for j, label in enumerate(LABELS)}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multilabel") / "small"
    assert write_multilabel(root, **SMALL) == root
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_multilabel(tmp_path_factory.mktemp("multilabel") / "big", **BIG)


@pytest.fixture(scope="module")
def big_data(big: Path) -> MultiLabelData:
    return read_multilabel_folder(big)


def _mode(path: Path) -> str:
    with Image.open(path) as img:
        return img.mode


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ label sets


def test_constants_are_the_reports() -> None:
    assert (
        " ".join(LABELS) == "baby bird car clouds dog female flower male night people portrait river sea tree"
    )
    assert len(REPORT_FREQUENCIES) == len(LABELS) == 14
    assert REPORT_FREQUENCIES[COL["people"]] == 0.320125 and REPORT_FREQUENCIES[COL["baby"]] == 0.0046875
    assert REPORT_EMPTY_SHARE == pytest.approx(0.4912)


def test_sample_label_sets_has_exact_counts_and_implications() -> None:
    y = sample_label_sets(2000, seed=0)
    assert y.shape == (2000, 14) and y.dtype == np.uint8 and set(np.unique(y)) <= {0, 1}
    expected = np.floor(np.asarray(REPORT_FREQUENCIES) * 2000 + 0.5)
    np.testing.assert_array_equal(y.sum(axis=0), expected)
    assert all_negative_share(y) == pytest.approx(982 / 2000)
    people = y[:, COL["people"]] == 1
    for label in ("female", "male", "portrait"):
        assert people[y[:, COL[label]] == 1].all(), f"{label} without people"
    portrait = y[:, COL["portrait"]] == 1
    assert not (portrait & (y[:, COL["female"]] == 1) & (y[:, COL["male"]] == 1)).any()
    scene = [COL[s] for s in LABELS if s not in ("people", "female", "male", "portrait")]
    assert y[portrait][:, scene].sum() == 0  # a portrait fills the frame
    assert not ((y[:, COL["sea"]] == 1) & (y[:, COL["river"]] == 1)).any()
    assert not ((y[:, COL["night"]] == 1) & (y[:, COL["clouds"]] == 1)).any()
    both = (y[:, COL["female"]] == 1) & (y[:, COL["male"]] == 1)
    assert 0 < both.sum() < 60  # mostly exclusive, a few images show both
    assert ((y[:, COL["people"]] == 1) & (y[:, scene].sum(axis=1) > 0)).sum() > 10  # dog + people, ...


def test_sample_label_sets_is_deterministic_and_handles_small_sets() -> None:
    np.testing.assert_array_equal(sample_label_sets(300, 4), sample_label_sets(300, 4))
    assert not np.array_equal(sample_label_sets(300, 4), sample_label_sets(300, 5))
    for n in (1, 2, 5, 13, 57):
        y = sample_label_sets(n, seed=1)
        assert y.shape == (n, 14)
        assert (y[:, COL["people"]] >= y[:, [COL["female"], COL["male"], COL["portrait"]]].max(axis=1)).all()
    with pytest.raises(ValueError, match="images"):
        sample_label_sets(0)


# ------------------------------------------------------------------------------------------ writer


def test_writer_layout_is_exact(small: Path) -> None:
    n = SMALL["images"]
    assert sorted(p.name for p in small.iterdir()) == ["annotations", "boxes.json", "images"]
    assert sorted(p.name for p in (small / "images").iterdir()) == sorted(
        f"im{k}.jpg" for k in range(1, n + 1)
    )
    assert sorted(p.name for p in (small / "annotations").iterdir()) == sorted(f"{lb}.txt" for lb in LABELS)
    for path in (small / "annotations").iterdir():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        assert text == "".join(f"{line}\n" for line in lines)
        assert all(re.fullmatch(r"[1-9]\d*", line) for line in lines), path
        numbers = [int(line) for line in lines]
        assert numbers == sorted(set(numbers)) and all(1 <= k <= n for k in numbers)
    with Image.open(small / "images" / "im1.jpg") as img:
        assert img.format == "JPEG" and img.size == (SMALL["size"], SMALL["size"])
    assert not list(small.glob(".multilabel*"))


def test_writer_is_deterministic_and_replaces_an_old_set(small: Path, tmp_path: Path) -> None:
    again = write_multilabel(tmp_path / "again", **SMALL)
    assert _files(again) == _files(small)
    other = write_multilabel(tmp_path / "other", **{**SMALL, "seed": 4})
    assert _files(other) != _files(small)
    write_multilabel(again, images=5, size=32, seed=0)  # fewer images: the old ones are gone
    assert len(list((again / "images").iterdir())) == 5
    assert len(read_multilabel_folder(again)) == 5 and not list(again.glob(".multilabel*"))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"images": 0}, "images"),
        ({"images": 2.5}, "images"),
        ({"size": 16}, "size"),
        ({"size": True}, "size"),
        ({"seed": -1}, "seed"),
        ({"grayscale_share": 1.5}, "grayscale_share"),
        ({"grayscale_share": "0.1"}, "grayscale_share"),
    ],
)
def test_writer_validates_arguments(tmp_path: Path, kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}:"):
        write_multilabel(tmp_path / "x", **{"images": 3, "size": 32, **kwargs})
    assert not (tmp_path / "x" / "images").exists()


def test_writer_rejects_a_file_as_output(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out"):
        write_multilabel(tmp_path / "file", images=2, size=32)


def test_frequencies_and_empty_share_follow_the_report(big_data: MultiLabelData) -> None:
    assert len(big_data) == 2000
    freqs = label_frequencies(big_data.targets)
    np.testing.assert_allclose(freqs, REPORT_FREQUENCIES, atol=0.01)
    assert 0.45 <= all_negative_share(big_data.targets) <= 0.53
    np.testing.assert_array_equal(big_data.targets, sample_label_sets(2000, seed=0))


def test_some_images_are_grayscale_and_load_as_rgb(big: Path, small: Path) -> None:
    modes = [_mode(big / "images" / f"im{k}.jpg") for k in range(1, 201)]
    assert set(modes) == {"RGB", "L"} and 2 <= modes.count("L") <= 25
    gray = next(k for k, m in enumerate(modes, start=1) if m == "L")
    assert load_rgb(big / "images" / f"im{gray}.jpg").mode == "RGB"
    small_modes = [_mode(p) for p in sorted((small / "images").iterdir())]
    assert small_modes.count("L") == 4  # round(0.1 * 40)


def test_boxes_json_has_one_box_per_label_inside_the_image(big: Path, big_data: MultiLabelData) -> None:
    raw = json.loads((big / "boxes.json").read_text(encoding="utf-8"))
    boxes = read_boxes(big)
    assert set(raw) == set(boxes) == {Path(f).name for f in big_data.files}
    size = BIG["size"]
    for i, file in enumerate(big_data.files):
        entry = boxes[Path(file).name]
        assert set(entry) == set(big_data.label_names(i)), file
        for label, (x, y, w, h) in entry.items():
            assert 0 <= x and 0 <= y and w > 0 and h > 0, (file, label)
            assert x + w <= size + 0.05 and y + h <= size + 0.05, (file, label)


def test_labels_are_visible_where_their_boxes_are(big: Path, big_data: MultiLabelData) -> None:
    """Global labels: night skies are dark, sea and river boxes blue, clouds bright, in RGB images."""
    boxes = read_boxes(big)
    seen = dict.fromkeys(("night", "sea", "river", "clouds"), 0)
    for i, file in enumerate(big_data.files):
        names = set(big_data.label_names(i)) & set(seen)
        if not names:
            continue
        with Image.open(big / file) as img:
            if img.mode != "RGB":
                continue
            arr = np.asarray(img, dtype=np.float64)
        for label in names:
            x, y, w, h = boxes[Path(file).name][label]
            region = arr[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))].reshape(-1, 3)
            if label == "night":
                assert region.mean() < 70, file
            elif label == "sea":
                assert region[:, 2].mean() > region[:, 0].mean() + 30, file
            elif label == "river":
                assert (region[:, 2] > region[:, 0] + 40).mean() > 0.1, file
            else:
                assert (region.min(axis=1) > 200).mean() > 0.15, file
            seen[label] += 1
    assert all(count >= 5 for count in seen.values()), seen


def test_render_scene_boxes_and_bird_cut_out() -> None:
    image, boxes = render_scene(image_rng(0, 1), ["bird", "dog", "people", "female", "male"], 96)
    assert image.mode == "RGB" and image.size == (96, 96)
    assert list(boxes) == ["bird", "dog", "female", "male", "people"]
    fx, fy, fw, fh = boxes["female"]
    px, py, pw, ph = boxes["people"]
    assert px <= fx and py <= fy and fx + fw <= px + pw + 1e-6 and fy + fh <= py + ph + 1e-6
    empty, none = render_scene(image_rng(0, 2), [], 64)
    assert none == {} and np.asarray(empty).std() > 5  # cluttered background
    with pytest.raises(ValueError, match="labels"):
        render_scene(image_rng(0, 3), ["cat"], 64)
    sprite, mask, (x, y, w, h) = scene._bird_sprite(image_rng(0, 4), 64)
    m = np.asarray(mask) > 0
    yy, xx = np.nonzero(m)
    inside = (xx >= x - 2) & (xx <= x + w + 2) & (yy >= y - 2) & (yy <= y + h + 2)
    assert inside.mean() > 0.99 and m.sum() > 0.15 * w * h and sprite.size == mask.size == (64, 64)


# ------------------------------------------------------------------------------------------ folder reader


def test_folder_reader_round_trip(small: Path) -> None:
    data = read_multilabel_folder(small)
    n = SMALL["images"]
    assert data.root == small and data.labels == list(LABELS) and data.num_labels == 14
    assert data.files == [f"images/im{k}.jpg" for k in range(1, n + 1)]  # numeric order, not im1, im10, ...
    assert data.targets.shape == (n, 14) and data.targets.dtype == np.uint8
    np.testing.assert_array_equal(data.targets, sample_label_sets(n, SMALL["seed"]))
    for j, label in enumerate(LABELS):
        lines = (small / "annotations" / f"{label}.txt").read_text(encoding="utf-8").split()
        assert [int(v) for v in lines] == (np.flatnonzero(data.targets[:, j]) + 1).tolist()


def _folder(root: Path, images: int, annotations: dict[str, str] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for k in range(1, images + 1):
        Image.new("RGB", (8, 8), (k, 0, 0)).save(root / "images" / f"im{k}.jpg")
    for label in LABELS:
        (root / "annotations" / f"{label}.txt").write_text("")
    for name, text in (annotations or {}).items():
        (root / "annotations" / name).write_text(text)
    return root


def test_folder_reader_accepts_blank_lines_and_a_label_subset(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", 3, {"bird.txt": "3\n\n1\n"})
    data = read_multilabel_folder(root)
    assert data.label_names(0) == ["bird"] and data.label_names(1) == [] and data.label_names(2) == ["bird"]
    for label in LABELS[2:]:
        (root / "annotations" / f"{label}.txt").unlink()
    sub = read_multilabel_folder(root, labels=["baby", "bird"])
    assert sub.labels == ["baby", "bird"] and sub.targets[:, 1].tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="labels"):
        read_multilabel_folder(root, labels=["bird", "bird"])


def test_folder_reader_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        read_multilabel_folder(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(err.value)

    (tmp_path / "noimages").mkdir()
    with pytest.raises(DataError, match="image folder does not exist") as err:
        read_multilabel_folder(tmp_path / "noimages")
    assert str(tmp_path / "noimages" / "images") in str(err.value)

    empty = _folder(tmp_path / "empty", 0)
    with pytest.raises(DataError, match="no images") as err:
        read_multilabel_folder(empty)
    assert str(empty / "images") in str(err.value)

    root = _folder(tmp_path / "bad_number", 2, {"dog.txt": "1\n7\n"})
    path = root / "annotations" / "dog.txt"
    with pytest.raises(DataError, match=re.escape(f"{path}:2: image number 7")):
        read_multilabel_folder(root)

    root = _folder(tmp_path / "not_int", 2, {"sea.txt": "2\nim1.jpg\n"})
    path = root / "annotations" / "sea.txt"
    with pytest.raises(DataError, match=re.escape(f"{path}:2: expected an image number")) as err:
        read_multilabel_folder(root)
    assert "'im1.jpg'" in str(err.value)

    root = _folder(tmp_path / "unknown", 2, {"cat.txt": "1\n"})
    with pytest.raises(DataError, match=re.escape(str(root / "annotations" / "cat.txt"))) as err:
        read_multilabel_folder(root)
    assert "'cat'" in str(err.value) and ", ".join(LABELS) in str(err.value)

    root = _folder(tmp_path / "missing_label", 1)
    (root / "annotations" / "tree.txt").unlink()
    with pytest.raises(DataError, match=re.escape(f"{root / 'annotations' / 'tree.txt'}: annotation file")):
        read_multilabel_folder(root)

    root = _folder(tmp_path / "stray", 1)
    Image.new("RGB", (8, 8)).save(root / "images" / "photo.jpg")
    with pytest.raises(DataError, match=re.escape(f"{root / 'images' / 'photo.jpg'}: image file name")):
        read_multilabel_folder(root)


# ------------------------------------------------------------------------------------------ CSV reader


def _write_csv(path: Path, rows: list[tuple[str, str]], header: str = "file,labels") -> Path:
    lines = [header] + [f"{f},{labels}" for f, labels in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_reader_round_trip(small: Path, tmp_path: Path) -> None:
    data = read_multilabel_folder(small)
    path = tmp_path / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "labels"])
        for i, file in enumerate(data.files):
            writer.writerow([Path(file).name, " ".join(data.label_names(i))])
    assert any(line.endswith(",") for line in path.read_text(encoding="utf-8").splitlines())  # empty labels
    read = read_multilabel_csv(path, small / "images")
    assert read.root == small / "images" and read.labels == list(LABELS)
    assert read.files == [Path(f).name for f in data.files]
    np.testing.assert_array_equal(read.targets, data.targets)
    assert read.targets.dtype == np.uint8


def test_csv_reader_column_order_and_extra_columns(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", 2)
    path = _write_csv(
        tmp_path / "c.csv", [("x,im2.jpg", "dog people"), ("y,im1.jpg", "")], "note,file,labels"
    )
    data = read_multilabel_csv(path, root / "images")
    assert data.files == ["im2.jpg", "im1.jpg"] and data.label_names(0) == ["dog", "people"]
    assert data.targets[1].sum() == 0


def test_csv_reader_errors_name_file_and_line(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", 2)
    images = root / "images"

    path = _write_csv(tmp_path / "no_column.csv", [("im1.jpg", "dog")], "file,tags")
    with pytest.raises(DataError, match=re.escape(f"{path}:1: header has no column 'labels'")):
        read_multilabel_csv(path, images)
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=re.escape(f"{path}:1: missing header")):
        read_multilabel_csv(path, images)

    path = _write_csv(tmp_path / "unknown.csv", [("im1.jpg", "dog"), ("im2.jpg", "people flowr")])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: unknown label 'flowr'")) as err:
        read_multilabel_csv(path, images)
    assert "did you mean 'flower'?" in str(err.value)

    path = _write_csv(tmp_path / "missing.csv", [("im9.jpg", "dog")])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: image file im9.jpg does not exist")):
        read_multilabel_csv(path, images)

    path = _write_csv(tmp_path / "twice.csv", [("im1.jpg", ""), ("im1.jpg", "dog")])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: file im1.jpg is listed twice")):
        read_multilabel_csv(path, images)

    path = _write_csv(tmp_path / "header_only.csv", [])
    with pytest.raises(DataError, match="no images"):
        read_multilabel_csv(path, images)
    with pytest.raises(DataError, match="does not exist"):
        read_multilabel_csv(tmp_path / "nope.csv", images)


# ------------------------------------------------------------------------------------------ dataset


def test_dataset_returns_rgb_images_and_float_targets(small: Path) -> None:
    data = read_multilabel_folder(small)
    gray = next(i for i, f in enumerate(data.files) if _mode(small / f) == "L")
    ds = MultiLabelDataset(data, lambda img: torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    assert len(ds) == SMALL["images"] and ds.targets is data.targets
    for index in (0, gray):
        x, target = ds[index]
        assert x.shape == (3, SMALL["size"], SMALL["size"])
        assert target.dtype == torch.float32 and target.shape == (14,)
        assert target.tolist() == data.targets[index].astype(float).tolist()
    image, _ = MultiLabelDataset(data)[gray]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 3, SMALL["size"], SMALL["size"]) and batch[1].shape == (4, 14)


# ------------------------------------------------------------------------------------------ split


def test_iterative_split_balances_every_label(big_data: MultiLabelData) -> None:
    train, val = iterative_split(big_data.targets, test_size=0.2, seed=0)
    assert abs(len(train) - 1600) <= 1 and abs(len(val) - 400) <= 1
    assert np.intersect1d(train, val).size == 0 and np.union1d(train, val).tolist() == list(range(2000))
    diff = label_frequencies(big_data.targets[train]) - label_frequencies(big_data.targets[val])
    assert np.abs(diff).max() < 0.01, dict(zip(LABELS, diff.round(4), strict=True))
    again = iterative_split(big_data.targets, test_size=0.2, seed=0)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(iterative_split(big_data.targets, 0.2, seed=1)[1], val)

    table = frequency_table(big_data, train, val)
    assert isinstance(table, pd.DataFrame) and len(table) == 14
    assert list(table.columns) == ["label", "train_share", "val_share", "difference_pp"]
    assert table["label"].tolist() == list(LABELS)
    np.testing.assert_allclose(table["difference_pp"], 100 * diff)
    assert table["difference_pp"].abs().max() < 1.0


def test_iterstrat_docstring_example_is_pinned() -> None:
    X = np.zeros(8)
    y = np.array([[0, 0], [0, 0], [0, 1], [0, 1], [1, 1], [1, 1], [1, 0], [1, 0]])
    splitter = MultilabelStratifiedShuffleSplit(n_splits=3, test_size=0.5, random_state=0)
    tests = [test.tolist() for _, test in splitter.split(X, y)]
    assert tests == [[0, 3, 4, 6], [0, 1, 4, 5], [0, 3, 4, 7]]
    assert iterative_split(y, test_size=0.5, seed=0)[1].tolist() == [0, 3, 4, 6]


def test_iterative_split_validates() -> None:
    y = np.eye(4, dtype=np.uint8)
    with pytest.raises(ValueError, match="targets"):
        iterative_split(np.array([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="targets"):
        iterative_split(np.full((4, 2), 2))
    for bad in (0.0, 1.0, True, "0.2"):
        with pytest.raises(ValueError, match="test_size"):
            iterative_split(y, test_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targets"):
        iterative_split(y[:1])


def test_frequencies_and_all_negative_share_by_hand() -> None:
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(label_frequencies(y), [0.5, 0.25, 0.0])
    assert all_negative_share(y) == 0.5
    assert all_negative_share(np.ones((3, 2))) == 0.0

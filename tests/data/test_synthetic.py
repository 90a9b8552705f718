"""Tests for the shared synthetic renderer (birds, class design) and the CUB-200-2011 writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc_lib.data.synth import cub as synth_cub
from fgvc_lib.data.synth.cub import COMPLETE_MARKER, CUB_PART_NAMES, class_name, is_complete, write_cub
from fgvc_lib.data.synth.render import (
    DISCRIMINATIVE_PART,
    NUM_CLASSES,
    PART_COLOURS,
    BirdAnnotation,
    PartSpec,
    check_int,
    class_attributes,
    image_rng,
    render_bird,
)

CUB_FILES = (
    "images.txt",
    "classes.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
)
REQUIRED_PARTS = ("beak", "crown", "left eye", "tail", "belly", "back", "left wing")


def _rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cub(tmp_path_factory.mktemp("cub") / "synth", classes=3, per_class=5, size=64, seed=7)


# ------------------------------------------------------------------------------------------ class design


def test_class_attributes_are_distinct_and_shape_or_pattern_varies_first() -> None:
    specs = [class_attributes(i) for i in range(NUM_CLASSES)]
    assert all(isinstance(s, PartSpec) for s in specs)
    assert len({(s.colour_name, s.shape, s.pattern) for s in specs}) == NUM_CLASSES
    for a, b in zip(specs, specs[1:], strict=False):
        assert (a.shape, a.pattern) != (b.shape, b.pattern)
    assert len({s.colour_name for s in specs[:25]}) == 1  # colour changes last
    assert len({(s.shape, s.pattern) for s in specs[:25]}) == 25
    assert specs[0].rgb == PART_COLOURS[specs[0].colour_name]
    with pytest.raises(AttributeError):
        specs[0].shape = "x"  # type: ignore[misc]


def test_class_names() -> None:
    names = [class_name(i) for i in range(NUM_CLASSES)]
    assert len(set(names)) == NUM_CLASSES
    assert names[0] == "Crimson_Disc_Solid_Synthbird"
    assert all(n.endswith("_Synthbird") and " " not in n for n in names)


@pytest.mark.parametrize("bad", [200, 1000, -1])
def test_class_index_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="200"):
        class_attributes(bad)
    with pytest.raises(ValueError, match="200"):
        class_name(bad)


def test_part_ids_and_visibility_follow_the_real_cub_files(cub_root: Path) -> None:
    # parts/parts.txt of the real CUB-200-2011: 15 parts, ids 1..15 in alphabetical order; a few ids
    # checked by hand against the official file.
    ids = {" ".join(r[1:]): int(r[0]) for r in _rows(cub_root / "parts" / "parts.txt")}
    assert list(ids.values()) == list(range(1, 16)) and list(ids) == sorted(ids)
    known = {"back": 1, "beak": 2, "left eye": 7, "left wing": 9, "tail": 14, "throat": 15}
    assert {name: ids[name] for name in known} == known
    assert ids[DISCRIMINATIVE_PART] == 9
    # The bird is drawn in left profile without legs: every image marks exactly the legs, the right eye
    # and the right wing (ids 8, 11, 12, 13) as not visible, with CUB's "0.0 0.0 0" row.
    hidden: dict[int, set[int]] = {}
    for image_id, part_id, x, y, visible in _rows(cub_root / "parts" / "part_locs.txt"):
        if visible == "0":
            assert (x, y) == ("0.0", "0.0")
            hidden.setdefault(int(image_id), set()).add(int(part_id))
    assert hidden == {i: {8, 11, 12, 13} for i in range(1, 16)}


def test_recorded_wing_location_lies_on_the_class_patch_in_the_written_jpeg(cub_root: Path) -> None:
    # Class 0 is a solid crimson disc (200, 20, 45): around the "left wing" location of part_locs.txt the
    # saved JPEG shows that colour, elsewhere on the bird it does not.
    assert (class_attributes(0).pattern, class_attributes(0).rgb) == ("solid", (200, 20, 45))
    images = dict(_rows(cub_root / "images.txt"))
    labels = dict(_rows(cub_root / "image_class_labels.txt"))
    locs = _rows(cub_root / "parts" / "part_locs.txt")
    wing = {r[0]: (float(r[2]), float(r[3])) for r in locs if r[1] == "9"}
    beak = {r[0]: (float(r[2]), float(r[3])) for r in locs if r[1] == "2"}
    crimson = np.array([200.0, 20.0, 45.0])
    checked = 0
    for image_id, rel in images.items():
        if labels[image_id] != "1":
            continue
        arr = np.asarray(Image.open(cub_root / "images" / rel).convert("RGB"), dtype=np.float64)
        for (px, py), on_patch in ((wing[image_id], True), (beak[image_id], False)):
            x, y = int(round(px)), int(round(py))
            mean = arr[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(axis=0)
            assert bool(np.abs(mean - crimson).max() < 45) is on_patch, (rel, on_patch, mean)
        checked += 1
    assert checked == 5


def test_check_int_accepts_integers_in_range_and_names_the_argument() -> None:
    assert check_int("n", np.int64(5), 1, 5) == 5 and type(check_int("n", np.int64(5), 1, 5)) is int
    with pytest.raises(ValueError, match=r"^n: expected an integer in 1\.\.5, got 6$"):
        check_int("n", 6, 1, 5)
    with pytest.raises(ValueError, match=r"^k: expected an integer >= 0, got True$"):
        check_int("k", True, 0)
    with pytest.raises(ValueError, match=r"^size: expected pixels, got 2\.0$"):
        check_int("size", 2.0, 1, None, "pixels")


# ------------------------------------------------------------------------------------------ renderer


def test_render_returns_rgb_image_and_annotation() -> None:
    img, ann = render_bird(image_rng(0, 1), 3, 80)
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (80, 80)
    assert isinstance(ann, BirdAnnotation)
    assert set(REQUIRED_PARTS) <= set(ann.parts) <= set(CUB_PART_NAMES)


def test_same_rng_state_gives_same_image() -> None:
    a, ann_a = render_bird(image_rng(4, 2), 5, 64)
    b, ann_b = render_bird(image_rng(4, 2), 5, 64)
    assert a.tobytes() == b.tobytes() and ann_a == ann_b


def test_geometry_bbox_inside_image_and_parts_inside_bbox() -> None:
    size, tol = 64, 1.5
    for i in range(40):
        _, ann = render_bird(image_rng(11, i), i % NUM_CLASSES, size, clutter=2)
        x, y, w, h = ann.bbox
        assert w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= size and y + h <= size
        for name, (px, py) in ann.parts.items():
            assert x - tol <= px <= x + w + tol and y - tol <= py <= y + h + tol, name


def test_pose_varies_across_images() -> None:
    size = 64
    centres, lengths, angles = [], [], []
    for i in range(50):
        _, ann = render_bird(image_rng(3, i), 0, size, clutter=0)
        x, y, w, h = ann.bbox
        centres.append((x + w / 2, y + h / 2))
        (bx, by), (tx, ty) = ann.parts["beak"], ann.parts["tail"]
        lengths.append(np.hypot(bx - tx, by - ty) / size)
        angles.append(np.arctan2(by - ty, bx - tx))
    centres_arr = np.asarray(centres)
    # The bird fills most of the frame (beak-tail distance = 0.82 of the object length, 62-90% of the
    # side), so its centre moves little along its length and more across it.
    assert centres_arr.std(axis=0).min() > 0.04 * size
    assert np.ptp(centres_arr[:, 0]) > 0.15 * size and np.ptp(centres_arr[:, 1]) > 0.3 * size
    assert 0.45 < min(lengths) and max(lengths) < 0.8 and max(lengths) - min(lengths) > 0.12
    # pose: roughly upright (tilt within the default 35 degrees; the tail->beak line is ~6 degrees off the
    # body axis), facing right and left
    headings = np.degrees(np.asarray(angles))
    right = np.abs(headings) <= 42.0
    left = np.abs(np.abs(headings) - 180.0) <= 42.0
    assert np.all(right | left) and 10 < right.sum() < 40
    assert np.ptp(headings[right]) > 40  # the tilt varies
    # max_tilt=180: any rotation, beak->tail directions fall in all four quadrants
    any_angle = []
    for i in range(50):
        _, ann = render_bird(image_rng(3, i), 0, size, clutter=0, max_tilt=180.0)
        (bx, by), (tx, ty) = ann.parts["beak"], ann.parts["tail"]
        any_angle.append(np.arctan2(by - ty, bx - tx))
    quadrants = {int((a + np.pi) // (np.pi / 2)) % 4 for a in any_angle}
    assert quadrants == {0, 1, 2, 3}


def test_pose_keeps_the_bird_upright() -> None:
    # The head is above the belly in every default image (no upside-down birds), in left and right profile.
    for i in range(30):
        _, ann = render_bird(image_rng(8, i), 2, 64, clutter=0)
        assert ann.parts["crown"][1] < ann.parts["belly"][1], i


@pytest.mark.parametrize(("class_a", "class_b"), [(0, 1), (3, 4), (0, 25), (12, 187)])
def test_classes_differ_only_near_the_wing_patch(class_a: int, class_b: int) -> None:
    size = 96
    for seed in range(3):
        img_a, ann_a = render_bird(image_rng(seed, 99), class_a, size)
        img_b, ann_b = render_bird(image_rng(seed, 99), class_b, size)
        assert ann_a == ann_b
        a = np.asarray(img_a, dtype=np.int16)
        b = np.asarray(img_b, dtype=np.int16)
        diff = np.abs(a - b).max(axis=2)
        px, py = ann_a.parts[DISCRIMINATIVE_PART]
        yy, xx = np.mgrid[0:size, 0:size]
        far = np.hypot(xx - px, yy - py) > 0.25 * size
        assert diff[far].max() <= 2
        near = np.hypot(xx - px, yy - py) <= ann_a.part_radius
        assert diff[near].mean() > 10  # the classes really differ at the part


def test_consecutive_classes_differ_in_grayscale() -> None:
    size = 96
    for c in range(0, 24):
        ga = np.asarray(render_bird(image_rng(5, 0), c, size)[0].convert("L"), dtype=np.int16)
        img_b, ann = render_bird(image_rng(5, 0), c + 1, size)
        gb = np.asarray(img_b.convert("L"), dtype=np.int16)
        px, py = ann.parts[DISCRIMINATIVE_PART]
        yy, xx = np.mgrid[0:size, 0:size]
        near = np.hypot(xx - px, yy - py) <= ann.part_radius
        assert np.abs(ga - gb)[near].mean() > 5, c


def _window_mean(img: Image.Image, ann: BirdAnnotation, half: int = 2) -> np.ndarray:
    px, py = (int(round(v)) for v in ann.parts[DISCRIMINATIVE_PART])
    arr = np.asarray(img, dtype=np.float64)
    return arr[py - half : py + half + 1, px - half : px + half + 1].reshape(-1, 3).mean(axis=0)


def test_wing_patch_colour_differs_between_colour_classes() -> None:
    size = 96
    colour_classes = [25 * k for k in range(8)]  # same shape/pattern (solid disc), different colour
    assert len({class_attributes(c).colour_name for c in colour_classes}) == 8
    for seed in range(3):
        means = []
        for c in colour_classes:
            img, ann = render_bird(image_rng(seed, 42), c, size)
            mean = _window_mean(img, ann)
            assert np.abs(mean - np.asarray(class_attributes(c).rgb)).max() < 40
            means.append(mean)
        for i in range(8):
            for j in range(i + 1, 8):
                assert np.abs(means[i] - means[j]).max() > 40


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": 8}, "size"),
        ({"size": 32.0}, "size"),
        ({"clutter": -1}, "clutter"),
        ({"class_index": 200}, "200"),
        ({"max_tilt": -1.0}, "max_tilt"),
        ({"max_tilt": 200}, "max_tilt"),
        ({"max_tilt": True}, "max_tilt"),
    ],
)
def test_render_bad_arguments(kwargs: dict, param: str) -> None:
    args = {"class_index": 0, "size": 64} | kwargs
    with pytest.raises(ValueError, match=param):
        render_bird(image_rng(0), args.pop("class_index"), args.pop("size"), **args)


# ------------------------------------------------------------------------------------------ CUB writer


def test_write_cub_layout(cub_root: Path) -> None:
    classes, per_class, size = 3, 5, 64
    for rel in CUB_FILES:
        assert (cub_root / rel).is_file(), rel
    assert is_complete(cub_root) and (cub_root / COMPLETE_MARKER).is_file()
    assert not list(cub_root.glob(".tmp-*"))

    class_rows = _rows(cub_root / "classes.txt")
    assert [int(r[0]) for r in class_rows] == [1, 2, 3]
    assert [r[1] for r in class_rows] == [f"{c + 1:03d}.{class_name(c)}" for c in range(classes)]

    images = _rows(cub_root / "images.txt")
    n = classes * per_class
    assert [int(r[0]) for r in images] == list(range(1, n + 1))
    assert len(list((cub_root / "images").glob("*/*.jpg"))) == n
    labels = {int(i): int(c) for i, c in _rows(cub_root / "image_class_labels.txt")}
    assert sorted(labels) == list(range(1, n + 1)) and set(labels.values()) == {1, 2, 3}
    folders = {int(r[0]): r[1] for r in class_rows}
    for image_id, rel in images:
        folder, fname = rel.split("/")
        assert folder == folders[labels[int(image_id)]]
        assert fname.startswith(folder.split(".", 1)[1] + "_") and fname.endswith(".jpg")
        with Image.open(cub_root / "images" / rel) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (size, size)

    split = {int(i): int(f) for i, f in _rows(cub_root / "train_test_split.txt")}
    assert sorted(split) == list(range(1, n + 1)) and set(split.values()) <= {0, 1}
    for c in range(1, classes + 1):
        flags = [split[i] for i in labels if labels[i] == c]
        assert sum(flags) == round(per_class * 0.5) and len(flags) == per_class

    boxes = _rows(cub_root / "bounding_boxes.txt")
    assert len(boxes) == n
    for row in boxes:
        assert len(row) == 5 and all("." in v and len(v.split(".")[1]) == 1 for v in row[1:])
        x, y, w, h = map(float, row[1:])
        assert 0 <= x and 0 <= y and x + w <= size and y + h <= size and w > 0 and h > 0

    parts = _rows(cub_root / "parts" / "parts.txt")
    assert [(int(p[0]), " ".join(p[1:])) for p in parts] == list(enumerate(CUB_PART_NAMES, start=1))

    locs = _rows(cub_root / "parts" / "part_locs.txt")
    assert len(locs) == 15 * n
    by_image: dict[int, list[list[str]]] = {}
    for row in locs:
        assert len(row) == 5 and row[4] in {"0", "1"}
        by_image.setdefault(int(row[0]), []).append(row)
    wing_id = CUB_PART_NAMES.index(DISCRIMINATIVE_PART) + 1
    for image_id, rows in by_image.items():
        assert [int(r[1]) for r in rows] == list(range(1, 16))
        x, y, w, h = map(float, boxes[image_id - 1][1:])
        for r in rows:
            px, py = float(r[2]), float(r[3])
            if r[4] == "0":
                assert r[2:4] == ["0.0", "0.0"]
            else:
                assert x - 1.5 <= px <= x + w + 1.5 and y - 1.5 <= py <= y + h + 1.5
        assert rows[wing_id - 1][4] == "1"


def test_write_cub_is_deterministic_and_seed_dependent(tmp_path: Path, cub_root: Path) -> None:
    again = write_cub(tmp_path / "again", classes=3, per_class=5, size=64, seed=7)
    other = write_cub(tmp_path / "other", classes=3, per_class=5, size=64, seed=8)
    for rel in CUB_FILES:
        assert (again / rel).read_bytes() == (cub_root / rel).read_bytes(), rel
    first = _rows(cub_root / "images.txt")[0][1]
    assert (again / "images" / first).read_bytes() == (cub_root / "images" / first).read_bytes()
    assert (other / "images.txt").read_bytes() == (cub_root / "images.txt").read_bytes()
    changed = [
        (other / "images" / r[1]).read_bytes() != (cub_root / "images" / r[1]).read_bytes()
        for r in _rows(cub_root / "images.txt")
    ]
    assert all(changed)
    assert (other / "parts/part_locs.txt").read_bytes() != (cub_root / "parts/part_locs.txt").read_bytes()


def test_write_cub_overwrites_previous_data_set(tmp_path: Path) -> None:
    out = write_cub(tmp_path / "d", classes=2, per_class=3, size=32, seed=0)
    write_cub(out, classes=1, per_class=2, size=32, seed=0)
    assert is_complete(out)
    assert len(_rows(out / "images.txt")) == 2
    assert len(list((out / "images").glob("*/*.jpg"))) == 2
    assert not list(out.glob(".tmp-*"))


@pytest.mark.parametrize(
    ("per_class", "fraction", "expected"),
    [(1, 0.5, None), (2, 0.5, 1), (2, 0.0, 1), (2, 1.0, 1), (4, 0.75, 3), (6, 0.5, 3)],
)
def test_train_test_split_counts(
    tmp_path: Path, per_class: int, fraction: float, expected: int | None
) -> None:
    out = write_cub(tmp_path / "s", classes=2, per_class=per_class, size=32, train_fraction=fraction)
    split = [int(f) for _, f in _rows(out / "train_test_split.txt")]
    labels = [int(c) for _, c in _rows(out / "image_class_labels.txt")]
    for c in (1, 2):
        n_train = sum(f for f, lab in zip(split, labels, strict=True) if lab == c)
        if expected is None:
            assert n_train in (0, 1)
        else:
            assert n_train == expected


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"classes": 0}, "classes"),
        ({"classes": 201}, "classes"),
        ({"classes": 2.5}, "classes"),
        ({"per_class": 0}, "per_class"),
        ({"size": 31}, "size"),
        ({"seed": -1}, "seed"),
        ({"train_fraction": 1.5}, "train_fraction"),
        ({"train_fraction": -0.1}, "train_fraction"),
    ],
)
def test_write_cub_bad_arguments(tmp_path: Path, kwargs: dict, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        write_cub(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_interrupted_write_is_not_marked_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = write_cub(tmp_path / "d", classes=1, per_class=2, size=32)
    calls = {"n": 0}
    real = synth_cub.render_bird

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth_cub, "render_bird", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_cub(out, classes=2, per_class=3, size=32)
    assert not is_complete(out)
    assert not list(out.glob(".tmp-*"))

"""Tests for seeded train/validation splits and ``relative/path label`` list files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgvc_lib.data.datasets import DataError
from fgvc_lib.data.splits import random_split, read_list_file, write_list_file, write_train_val_split

ITEMS = [(f"images/c{i % 7}/img_{i:03d}.jpg", i % 7) for i in range(100)]


# ------------------------------------------------------------------------------------------ random_split
def test_random_split_sizes_and_partition() -> None:
    train, val = random_split(ITEMS, 0.3, seed=0)
    assert (len(train), len(val)) == (70, 30)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(ITEMS)
    # both halves keep the input order
    assert train == [it for it in ITEMS if it in set(train)]
    assert val == [it for it in ITEMS if it in set(val)]


def test_random_split_is_seeded() -> None:
    a = random_split(ITEMS, 0.3, seed=11)
    b = random_split(ITEMS, 0.3, seed=11)
    c = random_split(ITEMS, 0.3, seed=12)
    assert a == b
    assert a[1] != c[1]
    assert a[1] != ITEMS[:30] and a[1] != ITEMS[70:]  # not a contiguous slice


@pytest.mark.parametrize(("fraction", "n_val"), [(0.0, 0), (0.1, 10), (0.25, 25), (0.999, 100)])
def test_random_split_rounds_val_count(fraction: float, n_val: int) -> None:
    train, val = random_split(ITEMS, fraction, seed=1)
    assert len(val) == n_val and len(train) == 100 - n_val


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_random_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"val_fraction: expected a value in \[0, 1\)") as exc:
        random_split(ITEMS, fraction, seed=0)
    assert str(fraction) in str(exc.value)


# ------------------------------------------------------------------------------------------ list files
def test_list_file_round_trip(tmp_path: Path) -> None:
    items = [("images/001.A/a_1.jpg", 0), ("images/002.B/b_1.jpg", 1), ("x.png", 12)]
    path = write_list_file(tmp_path / "nested" / "dir" / "train.txt", items)
    assert path == tmp_path / "nested" / "dir" / "train.txt"
    assert path.read_text(encoding="utf-8") == "images/001.A/a_1.jpg 0\nimages/002.B/b_1.jpg 1\nx.png 12\n"
    assert read_list_file(path) == items
    assert read_list_file(path, num_classes=13) == items
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.txt"]  # no temp file left


def test_write_list_file_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "val.txt"
    write_list_file(path, [("old.jpg", 3)])
    write_list_file(path, [("new.jpg", 4)])
    assert path.read_text(encoding="utf-8") == "new.jpg 4\n"
    assert [p.name for p in tmp_path.iterdir()] == ["val.txt"]


def test_write_list_file_rejects_line_breaks_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    write_list_file(path, [("keep.jpg", 0)])
    with pytest.raises(DataError, match="must not contain line breaks") as exc:
        write_list_file(path, [("ok.jpg", 1), ("bad\nname.jpg", 2)])
    assert "train.txt" in str(exc.value)
    assert path.read_text(encoding="utf-8") == "keep.jpg 0\n"  # target untouched by the failed write
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]  # no temp file left behind


def test_paths_with_spaces_round_trip(tmp_path: Path) -> None:
    path = write_list_file(tmp_path / "l.txt", [("images/with space.jpg", 2)])
    assert read_list_file(path) == [("images/with space.jpg", 2)]


def test_read_list_file_skips_blank_lines_and_allows_spaces_in_path(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("a/b.jpg 1\n\n   \nimages/with space.jpg 2\n", encoding="utf-8")
    assert read_list_file(path) == [("a/b.jpg", 1), ("images/with space.jpg", 2)]


def test_read_list_file_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="list file does not exist") as exc:
        read_list_file(tmp_path / "none.txt")
    assert str(tmp_path / "none.txt") in str(exc.value)


@pytest.mark.parametrize(
    ("content", "num_classes", "lineno", "fragment"),
    [
        ("a.jpg 0\nlonely_path.jpg\n", None, 2, "expected 2 fields"),
        ("a.jpg 0\n\nb.jpg zero\n", None, 3, "expected an integer label, got 'zero'"),
        ("a.jpg 0\nb.jpg 1.5\n", None, 2, "expected an integer label, got '1.5'"),
        ("a.jpg 0\nb.jpg 1\nc.jpg 5\n", 5, 3, "label 5 outside the class list (0..4)"),
        ("a.jpg -1\n", 5, 1, "expected a label >= 0, got -1"),
    ],
)
def test_read_list_file_errors_name_file_and_line(
    tmp_path: Path, content: str, num_classes: int | None, lineno: int, fragment: str
) -> None:
    path = tmp_path / "list.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_list_file(path, num_classes=num_classes)
    assert str(exc.value).startswith(f"{path}:{lineno}: ")
    assert fragment in str(exc.value)


def test_write_train_val_split(tmp_path: Path) -> None:
    train_path, val_path = write_train_val_split(ITEMS, tmp_path / "splits", 0.3, seed=5)
    assert (train_path.name, val_path.name) == ("train.txt", "val.txt")
    train, val = random_split(ITEMS, 0.3, seed=5)
    assert read_list_file(train_path, num_classes=7) == train
    assert read_list_file(val_path, num_classes=7) == val
    assert len(val_path.read_text(encoding="utf-8").splitlines()) == 30
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["train.txt", "val.txt"]

"""Bad input: clear errors, nothing lost.

One test per case of the issue, through the entry points a user hits (readers, ``load_rgb``, ``create_model``,
the parameter classes, ``prepare_run_dir``, the Trainer's checkpoints, a real experiment). Each asserts the
exception type and that the message names the offending file / key / value and what was expected; cases that
could touch earlier outputs also check those stay byte-identical. ``pytest -rP`` shows every message.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc_lib.config import BirdParams, Cifar100Params, InatBBNParams, ParameterError
from fgvc_lib.data.cifar import BASE_FOLDER, read_cifar100
from fgvc_lib.data.datasets import (
    DataError,
    ImageListDataset,
    load_rgb,
    open_classification_data,
    read_cub,
    read_image_folder,
)
from fgvc_lib.data.inat import read_inat
from fgvc_lib.data.multilabel import read_boxes, read_multilabel_csv, read_multilabel_folder
from fgvc_lib.data.splits import read_list_file
from fgvc_lib.data.synth.cub import write_cub
from fgvc_lib.engine import CheckpointError, Trainer
from fgvc_lib.experiments.bird import BirdExperiment
from fgvc_lib.models import create_model
from fgvc_lib.runs import RunDirError, prepare_run_dir, write_metrics, write_params

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# what the fixtures below return: factories of bird parameters, of Trainers and of finished run folders
BirdValues = Callable[..., dict[str, Any]]
MakeTrainer = Callable[[int, Path | None], Trainer]
MakeRun = Callable[..., Path]
ML_LABELS = ("car", "dog")


# ------------------------------------------------------------------------------------------ helpers
def _check(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    """Assert every needle is in the message; print it (``pytest -rP`` lists them all)."""
    msg = str(excinfo.value)
    missing = [n for n in needles if n not in msg]
    assert not missing, f"{type(excinfo.value).__name__} message lacks {missing}: {msg}"
    print(f"{type(excinfo.value).__name__}: {msg}")
    return msg


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``folder`` (to prove nothing was changed)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _jpeg(path: Path, colour: tuple[int, int, int] = (120, 60, 30), size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=95)
    return path


@pytest.fixture(scope="module")
def cub_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic CUB tree: 3 classes x 4 images (6 training images, 4 after the 70/30 split)."""
    return write_cub(tmp_path_factory.mktemp("cub") / "CUB", classes=3, per_class=4, size=48, seed=0)


@pytest.fixture
def cub(cub_source: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny CUB tree, free to break."""
    return Path(shutil.copytree(cub_source, tmp_path / "CUB"))


def _inat(root: Path, mutate: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A minimal iNat-2019 root: 2 categories, 2 images; ``mutate`` edits the JSON object first."""
    files = ["train_val2019/Aves/1/a.jpg", "train_val2019/Aves/2/b.jpg"]
    for name in files:
        _jpeg(root / name)
    obj: dict[str, Any] = {
        "info": {},
        "images": [{"id": i, "file_name": f} for i, f in enumerate(files)],
        "annotations": [{"id": 10 + i, "image_id": i, "category_id": 1 + i} for i in range(2)],
        "categories": [{"id": 1, "name": "Aves one"}, {"id": 2, "name": "Aves two"}],
    }
    if mutate is not None:
        mutate(obj)
    (root / "train2019.json").write_text(json.dumps(obj), encoding="utf-8")
    return root


def _multilabel(root: Path, annotations: dict[str, str] | None = None) -> Path:
    """images/im1.jpg, im2.jpg and annotations/{car,dog}.txt (``annotations`` overrides file contents)."""
    for k in (1, 2):
        _jpeg(root / "images" / f"im{k}.jpg")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    contents = {"car.txt": "1\n", "dog.txt": "2\n", **(annotations or {})}
    for name, text in contents.items():
        (root / "annotations" / name).write_text(text, encoding="utf-8")
    return root


def _cifar(root: Path, fine_labels: list[int]) -> Path:
    """A CIFAR-100 python-format root with one image per entry of ``fine_labels`` (train split + meta)."""
    base = root / BASE_FOLDER
    base.mkdir(parents=True)
    n = len(fine_labels)
    split = {
        "filenames": [f"img_{i}.png" for i in range(n)],
        "batch_label": "training batch 1 of 1",
        "fine_labels": fine_labels,
        "coarse_labels": [0] * n,
        "data": np.zeros((n, 3072), dtype=np.uint8),
    }
    meta = {
        "fine_label_names": [f"class_{i:02d}" for i in range(100)],
        "coarse_label_names": [f"super_{i:02d}" for i in range(20)],
    }
    for name, obj in (("train", split), ("meta", meta)):
        with open(base / name, "wb") as fh:
            pickle.dump(obj, fh)
    return root


@pytest.fixture
def resnet_trainer(tiny_trainer: Callable[..., Trainer]) -> MakeTrainer:
    """``resnet_trainer(num_classes, run_dir)``: conftest's tiny Trainer (SGD, cross-entropy, 1 epoch) of a
    resnet18 with ``num_classes`` outputs, whose checkpoints fit the bird experiment's model."""
    return lambda num_classes, run_dir: tiny_trainer(create_model("resnet18", num_classes), run_dir=run_dir)


@pytest.fixture
def earlier_run(resnet_trainer: MakeTrainer) -> MakeRun:
    """``earlier_run(folder, num_classes=5)``: a finished run folder: metrics.json, params.yaml and
    checkpoints/last.pt of a ``num_classes`` model."""

    def make(folder: Path, num_classes: int = 5) -> Path:
        run = prepare_run_dir("bird", folder)
        write_params(run, {"epochs": 1, "note": "earlier run"})
        write_metrics(
            run, notebook="bird", params={"epochs": 1}, status="finished", seconds=1.0, top1_acc=0.75
        )
        torch.save(resnet_trainer(num_classes, run).state_dict(), run / "checkpoints" / "last.pt")
        return run

    return make


@pytest.fixture
def bird(cub: Path, tiny_params: Callable[..., dict[str, Any]]) -> BirdValues:
    """``bird(run_dir, **extra)``: conftest's tiny bird parameters on the tiny CUB tree (``cub``), resnet18
    from scratch, 1 epoch, batches of 2, no CAMs."""
    fast = dict(data_root=str(cub), model="resnet18", pretrained=False, batch_size=2, epochs=1, cam_images=0)
    return lambda run_dir, **extra: tiny_params("bird", **{**fast, "run_dir": str(run_dir), **extra})


# --------------------------------------------------------------------------------------- 1. missing data root
@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        (open_classification_data, "expected a CUB-200-2011 or ImageFolder directory"),
        (read_cub, "expected a CUB-200-2011 or ImageFolder directory"),
        (read_image_folder, "expected a CUB-200-2011 or ImageFolder directory"),
        (read_inat, "expected an iNaturalist-2019 folder holding train2019.json"),
        (read_multilabel_folder, "expected images/ and annotations/"),
        (lambda root: read_cifar100(root, "train"), "expected a folder holding cifar-100-python/"),
    ],
    ids=["open_classification_data", "read_cub", "read_image_folder", "read_inat", "multilabel", "cifar100"],
)
def test_missing_data_root(tmp_path: Path, reader: Callable[[Path], Any], expected: str) -> None:
    missing = tmp_path / "no" / "such" / "root"
    with pytest.raises(DataError) as exc:
        reader(missing)
    _check(exc, str(missing), "does not exist", expected)
    assert not missing.exists()  # reading never creates the folder


# ----------------------------------------------------------------------------------------- 2. empty data root
@pytest.mark.parametrize(
    ("reader", "needles"),
    [
        (open_classification_data, ("is empty", "expected a CUB-200-2011 or ImageFolder directory")),
        (read_cub, ("is empty", "expected a CUB-200-2011 or ImageFolder directory")),
        (read_image_folder, ("is empty", "expected a CUB-200-2011 or ImageFolder directory")),
        (read_inat, ("train2019.json", "is missing", "expected train2019.json in")),
        (read_multilabel_folder, ("images", "does not exist", "expected images im<k>.jpg")),
        (lambda root: read_cifar100(root, "train"), ("'train' file is missing", "expected it at")),
    ],
    ids=["open_classification_data", "read_cub", "read_image_folder", "read_inat", "multilabel", "cifar100"],
)
def test_empty_data_root(tmp_path: Path, reader: Callable[[Path], Any], needles: tuple[str, ...]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        reader(empty)
    _check(exc, str(empty), *needles)
    assert list(empty.iterdir()) == []


# ---------------------------------------------------------------------------------- 3. CUB without images.txt
@pytest.mark.parametrize("also_missing", [(), ("image_class_labels.txt",)], ids=["images.txt", "+labels"])
@pytest.mark.parametrize("reader", [open_classification_data, read_cub], ids=["open", "read_cub"])
def test_cub_tree_missing_images_txt(
    cub: Path, reader: Callable[[Path], Any], also_missing: tuple[str, ...]
) -> None:
    """Also when image_class_labels.txt is gone too: still a CUB tree, never read as an ImageFolder."""
    for name in ("images.txt", *also_missing):
        (cub / name).unlink()
    with pytest.raises(DataError) as exc:
        reader(cub)
    _check(exc, str(cub / "images.txt"), "missing CUB-200-2011 list file", "expected images.txt")


# ------------------------------------------------------------------------------------------ 4. too few fields
def _list_file(tmp_path: Path) -> tuple[Callable[[], Any], Path, int, str]:
    path = tmp_path / "train.txt"
    path.write_text("images/a.jpg 0\nimages/b.jpg\n", encoding="utf-8")
    return lambda: read_list_file(path), path, 2, "expected 2 fields '<relative/path> <label>'"


def _cub_labels(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], Path, int, str]:
    path = cub / "image_class_labels.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].split()[0]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lambda: open_classification_data(cub), path, 3, "expected 2 fields (<image_id> <class_id>), got 1"


def _cub_images(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], Path, int, str]:
    path = cub / "images.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].split()[0]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lambda: read_cub(cub), path, 1, "expected 2 fields (<image_id> <image_name>), got 1"


def _csv(tmp_path: Path) -> tuple[Callable[[], Any], Path, int, str]:
    root = _multilabel(tmp_path / "ml")
    path = root / "labels.csv"
    path.write_text("file,labels\nim1.jpg,car\nim2.jpg\n", encoding="utf-8")
    return (
        lambda: read_multilabel_csv(path, root / "images", ML_LABELS),
        path,
        3,
        "expected 2 fields (file,labels), got 1",
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp, cub: _list_file(tmp),
        _cub_labels,
        _cub_images,
        lambda tmp, cub: _csv(tmp),
    ],
    ids=["split-list-file", "cub-image_class_labels", "cub-images", "multilabel-csv"],
)
def test_list_file_line_with_too_few_fields(tmp_path: Path, cub: Path, make: Callable) -> None:
    read, path, lineno, expected = make(tmp_path, cub)
    with pytest.raises(DataError) as exc:
        read()
    _check(exc, f"{path}:{lineno}:", expected)


# ----------------------------------------------------------------------------------- 5. label outside classes
def _label_list_file(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    path = tmp_path / "val.txt"
    path.write_text("images/a.jpg 0\nimages/b.jpg 7\n", encoding="utf-8")
    return lambda: read_list_file(path, num_classes=3), (
        f"{path}:2:",
        "label 7 outside the class list (0..2)",
        "expected a label below num_classes=3",
    )


def _label_cub(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    path = cub / "image_class_labels.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = f"{lines[1].split()[0]} 9"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lambda: read_cub(cub), (
        f"{path}:2:",
        "class_id 9 refers to no class in classes.txt",
        "expected one of 1..3",
    )


def _label_inat(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    root = _inat(tmp_path / "inat", lambda d: d["annotations"][1].update(category_id=7))
    return lambda: read_inat(root), (
        str(root / "train2019.json"),
        "annotation id 11 (annotations[1]): category_id 7 is not an id in 'categories'",
        "expected one of 1..2",
    )


def _label_csv(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    root = _multilabel(tmp_path / "ml")
    path = root / "labels.csv"
    path.write_text("file,labels\nim1.jpg,car\nim2.jpg,dgo\n", encoding="utf-8")
    return lambda: read_multilabel_csv(path, root / "images", ML_LABELS), (
        f"{path}:3:",
        "unknown label 'dgo'",
        "expected names from (car, dog)",
        "did you mean 'dog'?",
    )


def _label_annotation_file(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    root = _multilabel(tmp_path / "ml", {"cat.txt": "1\n"})
    return lambda: read_multilabel_folder(root, ML_LABELS), (
        str(root / "annotations" / "cat.txt"),
        "label 'cat', which is not in the label list (car, dog)",
        "did you mean 'car'?",
    )


def _label_cifar(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    root = _cifar(tmp_path / "cifar", [3, 100, 5])
    return lambda: read_cifar100(root, "train"), (
        str(root / BASE_FOLDER / "train"),
        "key 'fine_labels' index 1: label 100 is outside the class list",
        "expected 0..99",
    )


@pytest.mark.parametrize(
    "make",
    [_label_list_file, _label_cub, _label_inat, _label_csv, _label_annotation_file, _label_cifar],
    ids=["split-list-file", "cub", "inat", "multilabel-csv", "multilabel-annotation-file", "cifar100"],
)
def test_label_id_outside_the_class_list(tmp_path: Path, cub: Path, make: Callable) -> None:
    read, needles = make(tmp_path, cub)
    with pytest.raises(DataError) as exc:
        read()
    _check(exc, *needles)


# -------------------------------------------------------------------------------------- 6. broken image files
def _truncated_jpeg(path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[:600])


def _truncated_png(path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="PNG")
    path.write_bytes(path.read_bytes()[:2000])


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("truncated.jpg", _truncated_jpeg),
        ("truncated.png", _truncated_png),
        ("notes.jpg", lambda p: p.write_text("this is not an image\n", encoding="utf-8")),
        ("empty.png", lambda p: p.write_bytes(b"")),
    ],
    ids=["truncated-jpeg", "truncated-png", "text-file", "empty-file"],
)
@pytest.mark.parametrize("via", ["load_rgb", "ImageListDataset"])
def test_image_file_truncated_or_not_an_image(
    tmp_path: Path, name: str, write: Callable[[Path], None], via: str
) -> None:
    path = tmp_path / "images" / name
    path.parent.mkdir()
    write(path)
    before = path.read_bytes()
    with pytest.raises(DataError) as exc:
        if via == "load_rgb":
            load_rgb(path)
        else:
            ImageListDataset(tmp_path, [(f"images/{name}", 0)])[0]
    _check(exc, str(path), "cannot decode image", "expected a readable image file")
    assert path.read_bytes() == before


def test_image_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    with pytest.raises(DataError) as exc:
        load_rgb(path)
    _check(exc, str(path), "image file does not exist")


# ------------------------------------------------------------------------------------ 7. bad JSON annotations
@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (
            '{"images": [\n  {"id": 1,,}\n]}',
            (
                "invalid JSON at line 2 column 12",
                "expected an iNaturalist-2019 annotation file (a JSON object with 'images', 'annotations', "
                "'categories')",
            ),
        ),
        (
            '{"annotations": [], "categories": []}',
            (
                "missing key 'images' (keys found: 'annotations', 'categories')",
                "expected an iNaturalist-2019 annotation object with 'images', 'annotations', 'categories'",
            ),
        ),
        ('[{"id": 1}]', ("top level is a JSON list", "expected an object")),
        (
            '{"images": {}, "annotations": [], "categories": []}',
            ("key 'images' is a dict", "expected a list"),
        ),
        ('{"images": "\xff"}'.encode("latin-1"), ("not UTF-8 text", "expected a JSON file")),
    ],
    ids=["invalid-json", "no-images-key", "top-level-list", "images-not-a-list", "not-utf8"],
)
def test_json_annotation_invalid_or_without_images(
    tmp_path: Path, content: str | bytes, needles: tuple[str, ...]
) -> None:
    path = tmp_path / "train2019.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DataError) as exc:
        read_inat(tmp_path)
    _check(exc, str(path), *needles)


def test_json_box_file_invalid(tmp_path: Path) -> None:
    path = tmp_path / "boxes.json"
    path.write_text('{"im1.jpg": {"car": [1, 2, 3, 4]},}', encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_boxes(tmp_path)
    _check(exc, str(path), "not a JSON file", "expected an object image name -> {label: [x, y, w, h]}")


# ---------------------------------------------------------------------------------- 8. annotation -> no image
def _missing_inat(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    root = _inat(
        tmp_path / "inat", lambda d: d["images"][1].update(file_name="train_val2019/Aves/2/gone.jpg")
    )
    return lambda: read_inat(root), (
        str(root / "train2019.json"),
        "image id 1: file_name train_val2019/Aves/2/gone.jpg does not exist under",
        str(root),
    )


def _missing_cub(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    first = (cub / "images.txt").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)[1]
    (cub / "images" / first).unlink()
    return lambda: open_classification_data(cub), (
        f"{cub / 'images.txt'}:1:",
        f"image file images/{first} does not exist under {cub}",
    )


def _missing_annotation_line(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    root = _multilabel(tmp_path / "ml", {"dog.txt": "2\n9\n"})
    return lambda: read_multilabel_folder(root, ML_LABELS), (
        f"{root / 'annotations' / 'dog.txt'}:2:",
        "image number 9: images/im9.jpg does not exist",
    )


def _missing_csv_row(tmp_path: Path, cub: Path) -> tuple[Callable[[], Any], tuple[str, ...]]:
    root = _multilabel(tmp_path / "ml")
    path = root / "labels.csv"
    path.write_text("file,labels\nim1.jpg,car\nim7.jpg,dog\n", encoding="utf-8")
    return lambda: read_multilabel_csv(path, root / "images", ML_LABELS), (
        f"{path}:3:",
        f"image file im7.jpg does not exist in {root / 'images'}",
    )


@pytest.mark.parametrize(
    "make",
    [_missing_inat, _missing_cub, _missing_annotation_line, _missing_csv_row],
    ids=["inat-json", "cub-images.txt", "multilabel-annotation", "multilabel-csv"],
)
def test_annotation_pointing_to_a_missing_image(tmp_path: Path, cub: Path, make: Callable) -> None:
    read, needles = make(tmp_path, cub)
    with pytest.raises(DataError) as exc:
        read()
    _check(exc, *needles)


# ------------------------------------------------------------------------------------------ 9. unknown model
@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("resnet5O", "resnet50"),
        ("efficientnet-b9", "efficientnet-b8"),
        ("tf_efficientnet_lite", "tf_efficientnet_lite0"),
        ("small-cnn", "small_cnn"),
    ],
)
def test_unknown_model_name_suggests_the_closest(name: str, closest: str) -> None:
    with pytest.raises(ValueError) as exc:
        create_model(name, 3)
    msg = _check(exc, f"Unknown model '{name}'", "expected a timm name", "closest names: ")
    assert closest in msg.split("closest names: ", 1)[1].split(", ")


# ---------------------------------------------------------------------------------- 10. unknown parameter key
@pytest.mark.parametrize(
    ("params", "key", "closest"),
    [
        (BirdParams, "epoch", "epochs"),
        (Cifar100Params, "batchsize", "batch_size"),
        (InatBBNParams, "sampeler", "sampler"),
    ],
)
def test_unknown_parameter_key_suggests_the_closest(params: type, key: str, closest: str) -> None:
    with pytest.raises(ParameterError) as exc:
        params.from_dict({key: 3})
    _check(
        exc,
        f"unknown parameter '{key}' for notebook '{params.NOTEBOOK}'",
        f"did you mean '{closest}'?",
        "known: ",
    )


def test_unknown_parameter_key_in_a_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bird.yaml"
    path.write_text("epochs: 2\nnum_epochs: 3\n", encoding="utf-8")
    with pytest.raises(ParameterError) as exc:
        BirdParams.from_yaml(path)
    _check(exc, f"{path}: unknown parameter 'num_epochs'", "did you mean 'epochs'?")


# --------------------------------------------------------------------------------------- 11. wrong value type
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", "ten", "expected int, got 'ten' (str)"),
        ("epochs", 2.5, "expected int, got 2.5 (float)"),
        ("lr", "fast", "expected float, got 'fast' (str)"),
        ("pretrained", "maybe", "expected bool, got 'maybe' (str)"),
        ("loss", "ohme", "expected one of 'ce', 'ohem', got 'ohme' (str); did you mean 'ohem'?"),
        ("model", ["resnet18"], "expected str, got ['resnet18'] (list)"),
        ("batch_size", 0, "expected a value >= 1, got 0"),
    ],
)
def test_value_of_the_wrong_type(key: str, value: Any, expected: str) -> None:
    with pytest.raises(ParameterError) as exc:
        BirdParams.from_dict({key: value})
    _check(exc, f"parameter '{key}'", expected)


def test_value_of_the_wrong_type_in_a_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bird.yaml"
    path.write_text('epochs: "ten"\n', encoding="utf-8")
    with pytest.raises(ParameterError) as exc:
        BirdParams.from_yaml(path)
    _check(exc, f"{path}: parameter 'epochs': expected int, got 'ten' (str)")


# ----------------------------------------------------------------------------------- 12. batch > training set
def test_batch_size_larger_than_the_training_split(cub: Path, tmp_path: Path, bird: BirdValues) -> None:
    data_before = _snapshot(cub)
    run = tmp_path / "run"
    with pytest.raises(ParameterError) as exc:
        BirdExperiment(bird(run, batch_size=64))
    _check(
        exc,
        "parameter 'batch_size': 64 is larger than the training split (4 images)",
        "training drops the last incomplete batch",
    )
    metrics = json.loads((run / "metrics.json").read_text())  # the failure is recorded, not lost
    assert metrics["status"] == "failed" and "batch_size" in metrics["error"]
    assert _snapshot(cub) == data_before  # the data tree is never written to


# ------------------------------------------------------------------------------------- 13. checkpoint classes
@pytest.mark.parametrize("how", ["resume", "load_checkpoint"])
def test_checkpoint_class_count_differs_from_the_model(
    tmp_path: Path, how: str, resnet_trainer: MakeTrainer, earlier_run: MakeRun
) -> None:
    run = earlier_run(tmp_path / "run", num_classes=5)
    before = _snapshot(run)
    trainer = resnet_trainer(3, run)
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    last = run / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError) as exc:
        trainer.resume() if how == "resume" else trainer.load_checkpoint(last)
    _check(exc, str(last), "checkpoint has 5 classes", "the model has 3")
    assert _snapshot(run) == before  # last.pt, metrics.json, params.yaml byte-identical
    assert trainer.epoch == 0 and trainer.history == []  # nothing half-loaded
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in weights.items())


# ---------------------------------------------------------------------------------- 14. resume, no checkpoint
def test_resume_without_a_checkpoint_in_run_dir(tmp_path: Path, resnet_trainer: MakeTrainer) -> None:
    run = prepare_run_dir("bird", tmp_path / "run")
    with pytest.raises(CheckpointError) as exc:
        resnet_trainer(3, run).resume()
    _check(exc, "resume asked for", f"no checkpoint at {run / 'checkpoints' / 'last.pt'}")


def test_resume_without_a_run_dir(tmp_path: Path, resnet_trainer: MakeTrainer) -> None:
    with pytest.raises(CheckpointError) as exc:
        resnet_trainer(3, None).resume()
    _check(exc, "resume asked for", "the trainer has no run_dir")
    with pytest.raises(RunDirError) as exc:
        prepare_run_dir("bird", "", resume=True)
    _check(exc, "resume: true needs the `run_dir` of the run to continue")


def test_resume_without_a_checkpoint_through_the_experiment(tmp_path: Path, bird: BirdValues) -> None:
    run = tmp_path / "fresh"
    with pytest.raises(CheckpointError) as exc:
        BirdExperiment(bird(run, resume=True))
    _check(exc, "resume asked for", f"no checkpoint at {run / 'checkpoints' / 'last.pt'}")
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


# -------------------------------------------------------------------------------------- 15. unwritable output
@pytest.mark.skipif(IS_ROOT, reason="root ignores permissions; see the regular-file variants below")
def test_output_directory_not_writable_chmod(tmp_path: Path, earlier_run: MakeRun) -> None:
    run = earlier_run(tmp_path / "runs" / "old")
    before = _snapshot(run)
    parent = run.parent
    run.chmod(0o500)
    parent.chmod(0o500)
    try:
        with pytest.raises(RunDirError) as exc:
            prepare_run_dir("bird", run, resume=True)
        _check(exc, f"run_dir {run} is not writable", "expected a folder this user can write to")
        with pytest.raises(RunDirError) as exc:
            prepare_run_dir("bird", parent / "new")
        _check(exc, f"run_dir {parent / 'new'} cannot be created", "expected a writable folder path")
    finally:
        parent.chmod(0o700)
        run.chmod(0o700)
    assert _snapshot(run) == before
    assert sorted(p.name for p in parent.iterdir()) == ["old"]


@pytest.mark.skipif(IS_ROOT, reason="root ignores permissions; see the regular-file variants below")
def test_outputs_root_not_writable_chmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = tmp_path / "outputs"
    (outputs / "runs" / "bird").mkdir(parents=True)
    (outputs / "runs" / "bird").chmod(0o500)
    monkeypatch.setenv("FGVC_OUTPUTS", str(outputs))
    try:
        with pytest.raises(RunDirError) as exc:
            prepare_run_dir("bird")
    finally:
        (outputs / "runs" / "bird").chmod(0o700)
    _check(exc, f"outputs folder {outputs / 'runs' / 'bird'} is not writable", "set FGVC_OUTPUTS")


def test_output_directory_under_a_regular_file(tmp_path: Path, earlier_run: MakeRun) -> None:
    """The earlier run's metrics.json is in the way of the new run_dir: clear error, the run untouched."""
    run = earlier_run(tmp_path / "old")
    before = _snapshot(run)
    target = run / "metrics.json" / "new-run"
    with pytest.raises(RunDirError) as exc:
        prepare_run_dir("bird", target)
    _check(
        exc,
        f"run_dir {target} cannot be created",
        f"{run / 'metrics.json'} is a file",
        "expected a writable folder path",
    )
    assert _snapshot(run) == before


def test_outputs_root_under_a_regular_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "outputs"
    blocker.write_text("not a folder\n", encoding="utf-8")
    monkeypatch.setenv("FGVC_OUTPUTS", str(blocker))
    with pytest.raises(RunDirError) as exc:
        prepare_run_dir("bird")
    _check(
        exc,
        f"outputs folder {blocker / 'runs' / 'bird'} cannot be created",
        f"{blocker} is a file",
        "set FGVC_OUTPUTS to a writable folder",
    )
    assert blocker.read_text(encoding="utf-8") == "not a folder\n"


def test_output_directory_not_usable_through_the_experiment(
    cub: Path, tmp_path: Path, bird: BirdValues, earlier_run: MakeRun
) -> None:
    """The experiment fails before it writes anything (params.yaml, splits, metrics.json)."""
    run = earlier_run(tmp_path / "old")
    before, data_before = _snapshot(run), _snapshot(cub)
    target = run / "params.yaml" / "new-run"
    with pytest.raises(RunDirError) as exc:
        BirdExperiment(bird(target))
    _check(exc, f"run_dir {target} cannot be created", f"{run / 'params.yaml'} is a file")
    assert _snapshot(run) == before and _snapshot(cub) == data_before


# ----------------------------------------------------------------------------------- known gaps (engine/base)
@pytest.mark.parametrize("damage", ["truncated", "not-a-checkpoint"])
def test_corrupt_checkpoint_names_the_file(
    tmp_path: Path, damage: str, resnet_trainer: MakeTrainer, earlier_run: MakeRun
) -> None:
    run = earlier_run(tmp_path / "run", num_classes=3)
    last = run / "checkpoints" / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    else:
        last.write_text("not a checkpoint\n", encoding="utf-8")
    before = _snapshot(run)
    with pytest.raises(CheckpointError) as exc:
        resnet_trainer(3, run).resume()
    _check(exc, str(last))
    assert _snapshot(run) == before


def test_resume_with_a_mismatched_checkpoint_keeps_the_earlier_run(
    tmp_path: Path, bird: BirdValues, earlier_run: MakeRun
) -> None:
    run = earlier_run(tmp_path / "old", num_classes=5)  # the tiny CUB tree has 3 classes
    before = _snapshot(run)
    with pytest.raises(CheckpointError) as exc:
        BirdExperiment(bird(run, resume=True))
    _check(exc, str(run / "checkpoints" / "last.pt"), "checkpoint has 5 classes", "the model has 3")
    assert _snapshot(run)["checkpoints/last.pt"] == before["checkpoints/last.pt"]
    assert _snapshot(run) == before


# ---------------------------------------------------------------------------------------- modes are converted
def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (7, 5), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    return img


@pytest.mark.parametrize(
    ("name", "make", "pixel"),
    [
        ("L.png", lambda: Image.new("L", (7, 5), 100), (100, 100, 100)),
        ("1.png", lambda: Image.new("1", (7, 5), 1), (255, 255, 255)),
        ("LA.png", lambda: Image.new("LA", (7, 5), (0, 0)), (255, 255, 255)),  # transparent -> white
        ("RGBA.png", lambda: Image.new("RGBA", (7, 5), (10, 20, 30, 255)), (10, 20, 30)),
        ("P.png", _palette_with_transparency, (255, 255, 255)),  # index 0 is transparent
        ("CMYK.jpg", lambda: Image.new("CMYK", (7, 5), (0, 255, 255, 0)), (255, 0, 0)),
        ("I16.png", lambda: Image.fromarray(np.full((5, 7), 40000, dtype=np.uint16)), (156, 156, 156)),
        ("I16B.tif", lambda: Image.fromarray(np.full((5, 7), 40000, dtype=">u2")), (156, 156, 156)),
    ],
    ids=["L", "1", "LA", "RGBA", "P-transparency", "CMYK-jpeg", "I;16-png", "I;16B-tiff"],
)
def test_image_modes_are_converted_to_rgb(
    tmp_path: Path, name: str, make: Callable[[], Image.Image], pixel: tuple[int, int, int]
) -> None:
    path = tmp_path / name
    src = make()
    src.save(path)
    with Image.open(path) as check:
        saved_mode = check.mode
    assert saved_mode != "RGB"
    img = load_rgb(path)
    assert (img.mode, img.size) == ("RGB", (7, 5)), saved_mode
    assert np.abs(np.asarray(img)[0, 0].astype(int) - np.array(pixel)).max() <= 3, saved_mode

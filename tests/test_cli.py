import json

import pytest

from fgvc_lib.cli import main
from fgvc_lib.data.datasets import read_cub


def test_synth_bird_writes_a_readable_cub_tree(tmp_path, capsys):
    out = tmp_path / "cub"
    assert (
        main(
            [
                "synth",
                "bird",
                "--out",
                str(out),
                "--classes",
                "4",
                "--per-class",
                "3",
                "--size",
                "40",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    data = read_cub(out)
    assert data.num_classes == 4 and len(data.records) == 12
    assert all("left wing" in r.parts for r in data.records)
    assert str(out) in capsys.readouterr().out


def test_synth_bad_argument_is_a_clear_error(tmp_path, capsys):
    assert main(["synth", "bird", "--out", str(tmp_path / "x"), "--classes", "0"]) == 2
    assert "classes" in capsys.readouterr().err


def test_params_lists_every_parameter_with_help(capsys):
    assert main(["params", "bird"]) == 0
    out = capsys.readouterr().out
    for name in ("data_root", "model", "epochs", "ohem_schedule", "run_dir"):
        assert name in out
    assert "report: 380" in out


def test_unknown_notebook(capsys):
    assert main(["params", "birds"]) == 2
    assert "unknown notebook 'birds'" in capsys.readouterr().err


def test_synth_cifar100_writes_the_python_format(tmp_path, capsys):
    from fgvc_lib.data.cifar import read_cifar100

    assert (
        main(["synth", "cifar100", "--out", str(tmp_path), "--per-class", "1", "--test-per-class", "1"]) == 0
    )
    arrays = read_cifar100(tmp_path, "train")
    assert arrays.images.shape == (100, 32, 32, 3) and len(arrays.fine_names) == 100
    assert "cifar-100-python" in capsys.readouterr().out


def test_synth_inat_writes_a_long_tailed_json_set(tmp_path):
    from fgvc_lib.data.inat import class_counts, read_inat

    assert (
        main(
            [
                "synth",
                "inat",
                "--out",
                str(tmp_path),
                "--classes",
                "5",
                "--max-per-class",
                "16",
                "--imbalance",
                "8",
                "--size",
                "40",
            ]
        )
        == 0
    )
    counts = class_counts(read_inat(tmp_path, "train")).tolist()
    assert counts == [16, 9, 5, 3, 2]  # int(16 * (1/8)^(i/4))


def test_synth_multilabel_writes_the_report_layout(tmp_path):
    from fgvc_lib.data.multilabel import LABELS, read_multilabel_folder

    assert main(["synth", "multilabel", "--out", str(tmp_path), "--images", "40", "--size", "48"]) == 0
    data = read_multilabel_folder(tmp_path)
    assert data.targets.shape == (40, len(LABELS)) and (tmp_path / "images" / "im1.jpg").is_file()


def test_synth_option_the_data_set_does_not_take_is_an_error_naming_it(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["synth", "bird", "--out", str(out), "--imbalance", "3", "--images", "4"]) == 2
    err = capsys.readouterr().err
    assert "fgvc synth: ValueError:" in err and "--imbalance, --images does not apply" in err
    assert "--classes" in err and not out.exists()


def test_synth_choices_and_notebook_help_come_from_the_catalog(capsys):
    from fgvc_lib.catalog import notebook_names, synth_commands

    with pytest.raises(SystemExit):
        main(["synth", "nope", "--out", "x"])
    choices = ", ".join(f"'{name}'" for name in synth_commands())
    assert f"(choose from {choices})" in capsys.readouterr().err
    for command in ("run", "train", "params"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert " | ".join(notebook_names()) in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------------- synth never deletes what it did not write
def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SMALL_BIRD = ["--classes", "3", "--per-class", "2", "--size", "32"]


def test_synth_refuses_a_folder_holding_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "CUB_200_2011"
    (out / "images" / "001.Mine").mkdir(parents=True)
    (out / "images" / "001.Mine" / "mine.jpg").write_bytes(b"user image")
    (out / "images.txt").write_text("1 001.Mine/mine.jpg\n")
    before = _tree(out)
    assert main(["synth", "bird", "--out", str(out), *SMALL_BIRD]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {out} is not empty" in err[0]
    assert "pass --overwrite" in err[0] and "choose an empty folder" in err[0]
    assert _tree(out) == before


def test_synth_overwrite_replaces_only_its_own_files(tmp_path, capsys):
    out = tmp_path / "mixed"
    (out / "images").mkdir(parents=True)
    (out / "images" / "keep.jpg").write_bytes(b"user image")
    (out / "notes.md").write_text("mine\n")
    (out / "images.txt").write_text("the user's list\n")
    assert main(["synth", "bird", "--out", str(out), *SMALL_BIRD, "--overwrite"]) == 0
    assert (out / "images" / "keep.jpg").read_bytes() == b"user image" and (out / "notes.md").read_text() == "mine\n"
    assert len(read_cub(out).records) == 6  # images.txt is synth's now
    manifest = json.loads((out / ".fgvc-synth.json").read_text())
    assert manifest["complete"] and manifest["dataset"] == "bird" and "images.txt" in manifest["files"]
    assert "notes.md" not in manifest["files"] and not list(out.glob(".fgvc-synth-tmp-*"))


def test_synth_into_its_own_output_is_idempotent_and_other_options_need_overwrite(tmp_path, capsys):
    out = tmp_path / "own"
    assert main(["synth", "bird", "--out", str(out), *SMALL_BIRD]) == 0
    (out / "README.user").write_text("kept\n")
    first = _tree(out)
    assert main(["synth", "bird", "--out", str(out), *SMALL_BIRD]) == 0  # same data set and options
    assert _tree(out) == first
    capsys.readouterr()
    assert main(["synth", "bird", "--out", str(out), "--classes", "2", "--per-class", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "written with other options (--classes 3 -> 2)" in err and "--overwrite" in err
    assert _tree(out) == first
    assert main(["synth", "bird", "--out", str(out), "--classes", "2", "--per-class", "2", "--size", "32",
                 "--overwrite"]) == 0
    assert read_cub(out).num_classes == 2
    assert not list((out / "images").glob("003.*"))  # the third class's images and folder: removed
    assert (out / "README.user").read_text() == "kept\n"  # not synth's: kept


def test_synth_out_of_space_is_one_error_naming_the_folder(tmp_path, monkeypatch, capsys):
    import errno
    import os as _os

    real_replace = _os.replace

    def full(src, dst):
        if ".fgvc-synth-tmp-" in str(src) and str(dst).endswith(".jpg"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr("fgvc_lib.data.synth.output.os.replace", full)
    out = tmp_path / "full"
    assert main(["synth", "bird", "--out", str(out), *SMALL_BIRD]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free on that file system" in err and str(out) in err
    assert not list(out.glob(".fgvc-synth-tmp-*"))

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

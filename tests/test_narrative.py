"""Generated report texts: each number next to its baseline, in plain words, from hand-made metrics dicts."""

import math

import pytest

from fgvc_lib import narrative as _narrative
from fgvc_lib.narrative import random_peak_baseline


class _Plain:
    """The narrative module with Markdown bold markers removed from the texts (the tests read the words)."""

    def __getattr__(self, name):
        func = getattr(_narrative, name)
        return lambda *a, **k: (lambda r: r.replace("**", "") if isinstance(r, str) else r)(func(*a, **k))


narrative = _Plain()


def test_random_peak_baseline_by_hand():
    # 5 x 5 pixel positions, radius 1: the centre reaches itself and its 4 neighbours, a corner 3 pixels
    assert random_peak_baseline([(2, 2)], 1, 5) == pytest.approx(5 / 25)
    assert random_peak_baseline([(0, 0)], 1, 5) == pytest.approx(3 / 25)
    assert random_peak_baseline([(2, 2), (0, 0), None], 1, 5) == pytest.approx(4 / 25)  # mean, None skipped
    # a large image: about the disc's area over the image's
    assert random_peak_baseline([(50, 50)], 10, 100) == pytest.approx(math.pi * 100 / 100**2, rel=0.02)
    assert random_peak_baseline([(1, 1)], 0.5, 4, 2) == pytest.approx(1 / 8)  # width x height
    assert math.isnan(random_peak_baseline([None], 1, 5))


def test_verdict_words():
    assert "no better" in narrative.verdict(0.11, 0.10)
    assert "worse" in narrative.verdict(0.05, 0.10)
    assert "well above" in narrative.verdict(0.75, 0.10)
    assert "close to perfect" in narrative.verdict(0.99, 0.10)


def test_classification_against_chance_with_test_and_val():
    m = {"top1_acc": 0.83, "top5_acc": 0.97, "chance_acc": 0.1, "num_classes": 10, "eval_split": "test",
         "test_images": 300, "val_top1_acc": 0.85, "best_epoch": 7}
    text = narrative.classification(m)
    assert "Test top-1 0.83" in text and "chance is 0.10 with 10 classes" in text
    assert "well above the baseline" in text and "300 images" in text
    assert "Validation top-1 0.85" in text and "agree" in text
    assert narrative.classification({}) == "No accuracy was recorded."


def test_pointing_game_text():
    text = narrative.pointing_game({"pointing_game": 0.72}, baseline=0.07, radius=14.4, part="left wing")
    assert "Pointing game 0.72" in text and "a random peak scores 0.07" in text
    assert "within 14 px of the left wing" in text and "looks at the part" in text
    low = narrative.pointing_game({"pointing_game": 0.05}, baseline=0.07)
    assert "worse than the baseline" in low
    assert "No pointing-game" in narrative.pointing_game({"pointing_game": float("nan")}, baseline=0.07)


def test_cifar100_accuracy_and_calibration(monkeypatch):
    monkeypatch.setattr(_narrative, "TABLE1_SUMMARIES", ())  # no grid measured: the text says how to get one
    m = {"top1_acc": 0.6, "best_top1_acc": 0.62, "chance_acc": 0.01, "num_classes": 100, "eval_split": "test",
         "test_images": 1000, "ece": 0.034}
    text = narrative.cifar100_accuracy(m)
    assert "Test top-1 0.60" in text and "best epoch reached 0.62" in text and "labelled 'val' is this test split" in text
    cal = narrative.calibration(m, loss="focal", bins=15)
    assert "15-bin ECE 0.034 with the focal loss" in cal and "fairly well calibrated" in cal
    assert "summary.md" in cal
    assert "badly miscalibrated" in narrative.calibration({"ece": 0.3})
    assert "undertrained" in narrative.calibration({"ece": 0.01, "top1_acc": 0.05})


def test_calibration_names_the_best_calibrated_loss_of_the_table1_grid(tmp_path, monkeypatch):
    rows = [  # hand-made summary.csv: mean ECE ce 0.10, focal 0.03, flsd53 0.05; a failed run is ignored
        "run_id,status,loss,batch_size,top1_acc,ece",
        "a,finished,ce,32,0.50,0.12", "b,finished,ce,64,0.52,0.08", "c,finished,focal,32,0.48,0.03",
        "d,finished,flsd53,32,0.49,0.05", "e,failed,flsd53,64,,",
    ]
    csv = tmp_path / "summary.csv"
    csv.write_text("\n".join(rows) + "\n")
    text = narrative.loss_comparison([tmp_path / "missing.csv", csv])
    assert "the best calibrated loss is focal and the worst ce" in text and "4 finished runs" in text
    assert "focal 0.030 (top-1 0.48), flsd53 0.050 (top-1 0.49), ce 0.100 (top-1 0.51)" in text
    monkeypatch.setattr(_narrative, "TABLE1_SUMMARIES", (csv,))
    assert "best calibrated loss is focal" in narrative.calibration({"ece": 0.05, "top1_acc": 0.5})
    mixed = tmp_path / "mixed.csv"  # two models: the losses are compared on the one trained with most losses
    mixed.write_text("run_id,status,model,loss,ece\na,finished,eff,ce,0.10\nb,finished,eff,focal,0.08\n"
                     "c,finished,swin,focal,0.01\nd,finished,eff,mc,0.09\n")
    text = narrative.loss_comparison([mixed])
    assert "3 finished runs of the Table-1 grid with eff" in text and "best calibrated loss is focal" in text
    assert "focal 0.080" in text
    csv.write_text("run_id,status,loss,ece\na,finished,ce,0.1\n")  # one loss only: nothing to compare
    assert narrative.loss_comparison([csv]) == ""


def test_long_tail_and_crops():
    text = narrative.long_tail({"head_acc": 0.62, "medium_acc": 0.5, "tail_acc": 0.35, "chance_acc": 0.1,
                                "many_shot": 40, "few_shot": 10})
    assert "Tail accuracy 0.35; head 0.62" in text and "lags the head by 0.27" in text
    assert "fewer than 10" in text
    crops = narrative.cam_crops({"crop_top1_acc": 0.61, "uncropped_top1_acc_same_images": 0.48, "crop_iou": 0.55})
    assert "Crop top-1 0.61 vs 0.48 uncropped on the same images" in crops and "helps (+0.13)" in crops
    assert "finds the object" in crops
    assert "hurts" in narrative.cam_crops({"crop_top1_acc": 0.3, "uncropped_top1_acc_same_images": 0.48})
    assert "disabled" in narrative.cam_crops({}) or "No CAM" in narrative.cam_crops({})


def test_multilabel_texts():
    m = {"micro_f1": 0.78, "macro_f1": 0.6, "exact_match": 0.55, "baseline_all_negative_acc": 0.5,
         "val_images": 100, "untrained_micro_f1": 0.2, "untrained_exact_match": 0.0,
         "threshold_global": 0.35, "threshold_global_halves": [0.35, 0.4],
         "micro_f1_global_threshold": 0.80, "micro_f1_global_threshold_tuned_half": 0.82,
         "micro_f1_per_label_thresholds": 0.77, "micro_f1_per_label_thresholds_tuned_half": 0.84}
    text = narrative.multilabel_training(m)
    assert "Micro-F1 0.78 at 0.5" in text and "scores 0 micro-F1 and 0.50 exact match" in text
    assert "above the all-negative 0.50" in text and "Before training" in text and "rare labels" in text
    thr = narrative.multilabel_thresholds(m)
    assert "micro-F1 0.80 held out" in thr and "(0.82 on the half it was tuned on)" in thr
    assert "searching helps (+0.02)" in thr and "0.35 and 0.40" in thr
    assert "overfits its half by 0.07" in thr and "worse than the global threshold" in thr
    assert "No held-out" in narrative.multilabel_thresholds({"micro_f1": 0.5})
    assert "cannot tell" in narrative.multilabel_training({"micro_f1": 0.2, "exact_match": 0.5,
                                                           "baseline_all_negative_acc": 0.5})


def test_html_report_title_is_notebook_and_run_id(tmp_path):
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook

    from fgvc_lib.execution import export_html, report_title

    run = tmp_path / "20240101-120000-abc"
    run.mkdir()
    nbformat.write(new_notebook(cells=[new_markdown_cell("# hi")]), run / "bird.ipynb")
    assert report_title(run / "bird.ipynb") == "bird - 20240101-120000-abc"
    html = export_html(run / "bird.ipynb").read_text()
    assert "<title>bird - 20240101-120000-abc</title>" in html

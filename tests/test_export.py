"""fgvc_lib.export: TorchScript and ONNX files whose logits match the checkpoint's, with a meta sidecar."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from fgvc_lib import export as export_module
from fgvc_lib.cli import main
from fgvc_lib.experiments.bird import BirdExperiment
from fgvc_lib.export import ExportMismatch, export_run
from fgvc_lib.predict import Predictor


@pytest.fixture(scope="module")
def bird_run(tmp_path_factory, tiny_params):
    """A tiny bird run (best.pt) and a few of its test images."""
    exp = BirdExperiment(tiny_params("bird", run_dir=str(tmp_path_factory.mktemp("export") / "bird"),
                                     cam_images=0))
    exp.run()
    return exp.run_dir, [exp.data.root / r.relpath for r in exp.test_records[:5]]


def _check_sidecar(result, run_dir):
    side = json.loads(result.sidecar.read_text())
    meta = Predictor.from_run(run_dir).meta
    assert side["meta"]["classes"] == meta["classes"] and side["meta"]["preprocessing"] == meta["preprocessing"]
    assert side["input"]["shape"] == ["batch", *meta["preprocessing"]["input_size"]]
    assert side["check"]["max_abs_diff"] == result.max_abs_diff <= 1e-5
    assert side["check"]["shapes"][0][0] != side["check"]["shapes"][1][0]  # two batch sizes, neither the trace's
    return side


def test_torchscript_export_matches_the_checkpoint(bird_run, tmp_path):
    run_dir, files = bird_run
    result = export_run(run_dir, "torchscript", tmp_path / "bird.pt")
    assert result.path.is_file() and result.sidecar == tmp_path / "bird.pt.json"
    _check_sidecar(result, run_dir)
    predictor = Predictor.from_run(run_dir)
    x = predictor.preprocess(files)  # real images, a batch size the trace never saw
    with warnings.catch_warnings():  # torch >= 2.10 calls TorchScript deprecated
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(result.path))
    with torch.no_grad():
        assert torch.allclose(loaded(x), predictor.model(x), atol=1e-5, rtol=1e-4)


def test_onnx_export_matches_the_checkpoint(bird_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run_dir, files = bird_run
    result = export_run(run_dir, "onnx")  # default: RUN_DIR/export/model.onnx
    assert result.path == run_dir / "export" / "model.onnx"
    side = _check_sidecar(result, run_dir)
    assert side["opset"] == 17 and side["output"]["activation"] == "softmax"
    predictor = Predictor.from_run(run_dir)
    x = predictor.preprocess(files)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
    with torch.no_grad():
        assert torch.allclose(got, predictor.model(x), atol=1e-5, rtol=1e-4)


def test_a_mismatch_fails_loudly_and_leaves_no_file(bird_run, tmp_path, monkeypatch):
    run_dir, _ = bird_run
    real = export_module._runner
    monkeypatch.setattr(export_module, "_runner", lambda fmt, path: (lambda x: real(fmt, path)(x) + 1e-3))
    with pytest.raises(ExportMismatch, match="max abs diff 0.001"):
        export_run(run_dir, "torchscript", tmp_path / "bad.pt")
    assert list(tmp_path.iterdir()) == []


def test_fgvc_export_prints_the_measured_difference(bird_run, tmp_path, capsys):
    run_dir, _ = bird_run
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr().out
    assert "max abs diff" in out and str(tmp_path / "m.pt") in out
    assert main(["export", str(tmp_path), "--format", "torchscript"]) == 2  # no checkpoints there
    assert "no checkpoint" in capsys.readouterr().err


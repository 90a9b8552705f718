"""A trained run's eval network as a TorchScript or ONNX file, checked against the checkpoint.

``export_run(run_dir, "torchscript" | "onnx")`` rebuilds the network from the checkpoint (``fgvc_lib.predict``),
traces it on a dummy batch of ``input_size`` (``torch.jit.trace``), or exports it with ``torch.onnx.export`` and
a dynamic batch axis, then runs the exported file on a few seeded inputs of other batch sizes and compares its
logits with the checkpoint's: every logit must satisfy ``|exported - checkpoint| <= atol + rtol * |checkpoint|``
(default ``rtol=1e-4``, ``atol=1e-5``), else :class:`ExportMismatch` is raised and no file is left behind. A JSON
sidecar (``<file>.json``) holds the checkpoint's meta (class names, task, thresholds, preprocessing) and the
measured difference, so the file can be used without this package.

``fgvc export RUN_DIR --format torchscript|onnx [--out FILE]`` is :func:`export_command`.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .fileio import write_text_atomic
from .predict import Predictor

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportMismatch(RuntimeError):
    """The exported model's logits differ from the checkpoint's beyond the tolerance."""


@dataclass
class ExportResult:
    """What ``export_run`` wrote and measured."""

    path: Path
    sidecar: Path
    format: str
    max_abs_diff: float
    max_rel_diff: float
    checked_shapes: list[list[int]] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.format} -> {self.path} (sidecar {self.sidecar.name}); logits vs checkpoint on "
                f"{len(self.checked_shapes)} input batches: max abs diff {self.max_abs_diff:.3g}, "
                f"max rel diff {self.max_rel_diff:.3g}")


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"export format: expected one of ({', '.join(FORMATS)}), got {fmt!r}")
    return fmt


def check_inputs(input_size: tuple[int, int, int], batch_sizes: tuple[int, ...] = (3, 1), seed: int = 0
                 ) -> list[torch.Tensor]:
    """Seeded N(0, 1) batches (about what normalised images look like) of ``input_size``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, *input_size, generator=g) for b in batch_sizes]


def _export_torchscript(model: nn.Module, dummy: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():  # torch >= 2.10 calls TorchScript deprecated; asked for here
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, dummy, check_trace=False)
    traced.save(str(path))


def _export_onnx(model: nn.Module, dummy: torch.Tensor, path: Path, opset: int) -> None:
    options: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                                   dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 calls the TorchScript exporter legacy
        try:  # the TorchScript-based exporter needs only `onnx` (dynamo=True, the default, needs onnxscript too)
            torch.onnx.export(model, (dummy,), str(path), dynamo=False, **options)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(model, (dummy,), str(path), **options)


def _runner(fmt: str, path: Path) -> Any:
    """A function ``x -> logits`` running the exported file (TorchScript: torch.jit.load; ONNX: onnxruntime)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            loaded = torch.jit.load(str(path), map_location="cpu").eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return loaded(x).float()

        return run
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("checking an ONNX export needs onnxruntime: pip install 'fgvc-workbook[export]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]).float()


def compare(run: Any, model: nn.Module, inputs: list[torch.Tensor], rtol: float, atol: float
            ) -> tuple[float, float, bool]:
    """(max abs diff, max rel diff, within tolerance) of ``run(x)`` against ``model(x)`` over ``inputs``."""
    max_abs = max_rel = 0.0
    ok = True
    for x in inputs:
        with torch.no_grad():
            ref = model(x).float()
        got = run(x)
        if got.shape != ref.shape:
            raise ExportMismatch(f"exported model returned shape {tuple(got.shape)} for input {tuple(x.shape)}, "
                                 f"the checkpoint {tuple(ref.shape)}")
        diff = (got - ref).abs()
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / ref.abs().clamp_min(1e-12)).max()))
        ok = ok and bool((diff <= atol + rtol * ref.abs()).all())
    return max_abs, max_rel, ok


def export_run(run_dir: str | Path, fmt: str = "torchscript", out: str | Path | None = None, *,
               checkpoint: str = "best", rtol: float = 1e-4, atol: float = 1e-5, opset: int = 17,
               seed: int = 0) -> ExportResult:
    """Export the run's eval network (on the CPU, float32) and check it; see the module docstring.

    ``out`` defaults to ``run_dir/export/model.pt`` (TorchScript) or ``model.onnx``; the sidecar is ``out`` with
    ``.json`` appended."""
    fmt = _check_format(fmt)
    predictor = Predictor.from_run(run_dir, checkpoint, device="cpu")
    model = predictor.model.eval()
    out = Path(out) if out else Path(run_dir) / "export" / f"model{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    size = tuple(predictor.preprocessing.input_size)
    dummy = torch.zeros(2, *size)  # the checks use other batch sizes: the batch axis must not be baked in
    inputs = check_inputs(size, seed=seed)
    try:
        if fmt == "torchscript":
            _export_torchscript(model, dummy, tmp)
        else:
            _export_onnx(model, dummy, tmp, opset)
        max_abs, max_rel, ok = compare(_runner(fmt, tmp), model, inputs, rtol, atol)
        if not ok:
            raise ExportMismatch(
                f"{fmt} export of {predictor.source} does not reproduce the checkpoint's logits: max abs diff "
                f"{max_abs:.3g}, max rel diff {max_rel:.3g} (tolerance atol={atol:g} + rtol={rtol:g} * |logit|); "
                f"nothing written"
            )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    shapes = [list(x.shape) for x in inputs]
    sidecar = out.with_name(out.name + ".json")
    payload = {
        "format": fmt,
        "file": out.name,
        "input": {"name": INPUT_NAME, "shape": ["batch", *size], "dtype": "float32",
                  "note": "normalised RGB, as `preprocessing` describes (timm data-config keys)"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(predictor.classes)],
                   "activation": "sigmoid" if predictor.task == "multilabel" else "softmax"},
        "check": {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "rtol": rtol, "atol": atol, "shapes": shapes,
                  "seed": seed},
        "checkpoint": str(predictor.source),
        "torch": torch.__version__,
        **({"opset": opset} if fmt == "onnx" else {}),
        "meta": predictor.meta,
    }
    write_text_atomic(sidecar, json.dumps(payload, indent=1) + "\n")
    return ExportResult(out, sidecar, fmt, max_abs, max_rel, shapes)


# ---------------------------------------------------------------------------------------------- CLI
def export_command(args: argparse.Namespace) -> int:
    result = export_run(args.run_dir, args.fmt, args.out or None, checkpoint=args.checkpoint, rtol=args.rtol,
                        atol=args.atol, opset=args.opset)
    print(result)
    return 0


__all__ = ["ExportMismatch", "ExportResult", "export_run"]

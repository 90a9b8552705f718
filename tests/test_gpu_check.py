"""The GPU check's two halves that run here: the wheel folder for the bare GPU image (offline logic) and the
check itself in its tiny CPU mode (so it cannot rot while no GPU is at hand)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _load_gpu_wheels():
    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "tools" / "gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_wheels"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gw = _load_gpu_wheels()


def _wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def _manifest(folder: Path, *pins: str) -> None:
    (folder / gw.MANIFEST).write_text("# test\n" + "\n".join(pins) + "\n")


def test_check_follows_markers_versions_and_the_image(tmp_path):
    image = {"torch", "opencv-python-headless"}
    roots = [Requirement("alpha>=1"), Requirement("torch>=2")]
    _wheel(tmp_path, "alpha", "1.0", [
        "beta<2",
        "torch",
        "opencv-python",  # met by the image's headless build
        "gamma; python_version < '3.0'",  # not on the target
        "delta; extra == 'docs'",  # an extra nobody asked for
        "epsilon; sys_platform == 'linux'",  # needed on the target, and missing
    ])
    _wheel(tmp_path, "beta", "2.0")
    _manifest(tmp_path, "alpha==1.0", "beta==2.0")
    problems = gw.check(tmp_path, image, roots)
    assert problems == [
        f"alpha-1.0-py3-none-any.whl needs beta<2, but {tmp_path} holds beta 2.0",
        f"alpha-1.0-py3-none-any.whl needs epsilon; sys_platform == \"linux\": neither in {tmp_path} nor in "
        "the GPU image's package list",
    ]
    (tmp_path / "beta-2.0-py3-none-any.whl").unlink()
    _wheel(tmp_path, "beta", "1.5")
    _wheel(tmp_path, "epsilon", "0.1")
    _manifest(tmp_path, "alpha==1.0", "beta==1.5", "epsilon==0.1")
    assert gw.check(tmp_path, image, roots) == []


def test_check_names_manifest_drift_duplicates_and_image_copies(tmp_path):
    _wheel(tmp_path, "alpha", "1.0")
    _wheel(tmp_path, "torch", "2.0")
    assert gw.check(tmp_path, {"torch"}, [])[0].endswith(f"{gw.MANIFEST}: missing; expected the name==version "
                                                          "list written by `download`")
    _manifest(tmp_path, "alpha==0.9", "torch==2.0", "zeta==1")
    problems = gw.check(tmp_path, {"torch"}, [])
    assert f"{tmp_path / gw.MANIFEST}: expected a line alpha==1.0, got 'alpha==0.9'" in problems
    assert f"{tmp_path / gw.MANIFEST}: zeta==1 has no wheel in {tmp_path}" in problems
    assert f"{tmp_path}: torch is in the GPU image already; a second copy could shadow it" in problems
    _wheel(tmp_path, "alpha", "2.0")
    (problem,) = gw.check(tmp_path, {"torch"}, [])
    assert "two wheels of alpha" in problem and "one version per package" in problem
    assert gw.check(tmp_path / "nope", set(), []) == [
        f"{tmp_path / 'nope'}: no such folder; run `make gpu-wheels` (needs network) first"
    ]


def test_install_without_wheels_says_what_to_do(tmp_path):
    with pytest.raises(gw.WheelError, match="run `make gpu-wheels` where pip reaches PyPI"):
        gw.install(tmp_path / ".gpu-wheels", tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_download_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(gw.WheelError, match="holds files this tool did not write"):
        gw.download(tmp_path, image=set())
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_roots_and_image_list():
    roots = {r.name for r in gw.project_requirements()}
    assert {"papermill", "grad-cam", "torch", "pytest-timeout"} <= roots and "ruff" not in roots
    image = gw.image_packages()
    assert {"torch", "torchvision", "timm", "numpy", "pytest", "opencv-python-headless"} <= image
    assert not {"papermill", "grad-cam", "ipykernel", "efficientnet-pytorch", "iterative-stratification"} & image


def test_target_markers_are_cpython_312_linux():
    assert gw.applies(Requirement("x; python_version >= '3.12' and platform_machine == 'x86_64'"))
    assert not gw.applies(Requirement("x; sys_platform == 'win32'"))
    assert gw.applies(Requirement("x; extra == 'socks'"), ("", "socks"))


# ---------------------------------------------------------------------------------------------- the check
def _check(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)


def test_cpu_mode_writes_one_json_per_part_a_log_and_a_summary(tmp_path):
    proc = _check(tmp_path / "gc")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "gc").iterdir())
    assert files == ["cuda_tests.json", "data_path.json", "gpu.json", "gpu_check.log", "notebook.json", "summary.md"]
    records = {name: json.loads((tmp_path / "gc" / f"{name}.json").read_text())
               for name in ("gpu", "data_path", "notebook", "cuda_tests")}
    for name, record in records.items():
        assert record["name"] == name and record["seconds"] > 0 and record["settings"]["quick"] is True
    gpu = records["gpu"]["figures"]
    assert gpu["bf16_cl_vs_fp32"] == pytest.approx(gpu["bf16_cl_images_per_s"] / gpu["fp32_images_per_s"], rel=1e-3)
    data = records["data_path"]["figures"]
    assert data["pil_loader_images_per_s"] > 0 and data["step_images_per_s"] > 0
    assert 0 <= data["fit_pil_data_wait_share"] < 1 and set(data["verdicts"]) == {"pil", "cache_batched"}
    note = records["notebook"]["figures"]
    assert note["metric_status"] == "finished" and note["metric_epochs_run"] == 1 and note["wall_s"] > 0
    tests = records["cuda_tests"]["figures"]
    # every test of tests/test_cuda.py is collected and skipped here (no CUDA); none fails
    assert tests["pytest"]["skipped"] == tests["pytest"]["tests"] >= 8 and tests["pytest"]["failed"] == 0
    assert tests["fp16_run"]["status"] == "finished" and tests["fp16_run"]["amp"] == "bf16"
    assert tests["fp16_run"]["losses_finite"] is True
    summary = (tmp_path / "gc" / "summary.md").read_text()
    assert "no CUDA device (CPU mode)" in summary and summary.count("\n| ") == 5  # header + 4 parts
    log = (tmp_path / "gc" / "gpu_check.log").read_text()
    assert all(f"== {name} (limit" in log for name in records)


def test_budget_and_unknown_parts(tmp_path):
    proc = _check(tmp_path / "gc", "--budget", "5", "--parts", "gpu,notebook")
    assert proc.returncode == 1
    assert "== gpu: skipped, 5 s of the 5 s budget left" in proc.stdout
    assert "| notebook | not run (out of budget) | |" in (tmp_path / "gc" / "summary.md").read_text()
    proc = _check(tmp_path / "gc", "--parts", "gpu,notbook")
    assert proc.returncode == 2 and "--parts: unknown notbook; expected names from gpu, data_path" in proc.stderr

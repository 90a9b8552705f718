"""Parameter grids: expansion, presets, run ids and validation without kernels; one small grid (3 runs, then
1 retried) executed through papermill on the bird notebook with tiny parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import terminal_sigint

from fgvc_lib import execution
from fgvc_lib import grid as g
from fgvc_lib.cli import main
from fgvc_lib.config import ParameterError
from fgvc_lib.grid import plan as grid_plan
from fgvc_lib.runs import outputs_root

TINY = {
    "synth_classes": 3,
    "synth_per_class": 6,
    "synth_size": 48,
    "img_size": 32,
    "batch_size": 4,
    "epochs": 1,
    "num_workers": 0,
    "cam_images": 0,
}


def write_grid(folder: Path, data: dict, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spec_of(data: dict) -> g.GridSpec:
    return g.GridSpec.from_dict({"notebook": "bird", "name": "t", **data})


# ---------------------------------------------------------------------------------------------- expansion
def test_expansion_order_union_and_dedupe():
    spec = spec_of(
        {
            "base": {"epochs": 1},
            "axes": {"batch_size": [4, 8], "loss": ["ce", "ohem"]},
            "rows": [{"batch_size": 4, "loss": "ce"}, {"lr": 0.1}],  # the first duplicates an axes run
            "grids": [
                {"base": {"epochs": 2}, "axes": {"seed": [0, 1]}},
                {"rows": [{"model": "resnet18"}]},
                {"base": {"img_size": 64}},  # no axes, no rows: one run of its base
            ],
        }
    )
    assert g.expand_grid(spec) == [
        {"epochs": 1, "batch_size": 4, "loss": "ce"},
        {"epochs": 1, "batch_size": 4, "loss": "ohem"},
        {"epochs": 1, "batch_size": 8, "loss": "ce"},
        {"epochs": 1, "batch_size": 8, "loss": "ohem"},
        {"epochs": 1, "lr": 0.1},
        {"epochs": 2, "seed": 0},
        {"epochs": 2, "seed": 1},
        {"epochs": 1, "model": "resnet18"},
        {"epochs": 1, "img_size": 64},
    ]


def test_base_only_is_one_run_and_subgrids_only_skip_the_top_level():
    assert g.expand_grid(spec_of({"base": {"epochs": 3}})) == [{"epochs": 3}]
    assert g.expand_grid(spec_of({"base": {"epochs": 3}, "grids": [{"rows": [{"seed": 1}]}]})) == [
        {"epochs": 3, "seed": 1}
    ]


def test_presets_override_base_and_substitute_values():
    spec = spec_of(
        {
            "base": {"epochs": 100},
            "axes": {"lr": [0.1, 0.01]},
            "rows": [{"model": "resnet50", "lr": 0.5}, {"model": "tf_efficientnet_lite0", "lr": 0.5}],
            "presets": {
                "tiny": {
                    "base": {"epochs": 1, "img_size": 32},
                    "replace": {"model": {"resnet50": "resnet18"}},
                },
                "one_lr": {"base": {"lr": 0.1}},
            },
        }
    )
    assert g.expand_grid(spec, "tiny") == [
        {"epochs": 1, "lr": 0.1, "img_size": 32},
        {"epochs": 1, "lr": 0.01, "img_size": 32},
        {"epochs": 1, "model": "resnet18", "lr": 0.5, "img_size": 32},
        {"epochs": 1, "model": "tf_efficientnet_lite0", "lr": 0.5, "img_size": 32},
    ]
    # a preset that makes runs equal collapses them
    assert g.expand_grid(spec, "one_lr") == [
        {"epochs": 100, "lr": 0.1},
        {"epochs": 100, "model": "resnet50", "lr": 0.1},
        {"epochs": 100, "model": "tf_efficientnet_lite0", "lr": 0.1},
    ]
    with pytest.raises(ParameterError, match="unknown preset 'tiyn'; did you mean 'tiny'"):
        g.expand_grid(spec, "tiyn")


def test_duplicates_after_resolution_are_removed():
    spec = spec_of({"rows": [{}, {"epochs": 12}, {"device": "cpu"}, {"epochs": 2}]})  # 12 is the default
    resolved = g.validate_runs(spec, g.expand_grid(spec))
    assert [r["epochs"] for r in resolved] == [12, 2]
    assert resolved[0]["model"] == "tf_efficientnet_lite0" and resolved[0]["run_dir"] == ""


# ---------------------------------------------------------------------------------------------- run ids
def resolved(**values):
    spec = spec_of({"rows": [values]})
    return g.validate_runs(spec, g.expand_grid(spec))[0]


def test_run_id_is_stable_readable_and_ignores_excluded_keys():
    a = resolved(lr=0.001, loss="ohem", ohem_schedule="step")
    rid = g.run_id(a, ["lr", "loss"])
    assert rid == g.run_id(dict(reversed(list(a.items()))), ["lr", "loss"])
    assert rid.startswith("lr=0.001-loss=ohem-") and len(rid.rsplit("-", 1)[1]) == 8
    same = {**a, "run_dir": "/x", "progress": False, "resume": True, "device": "cuda:1", "num_workers": 7}
    assert g.run_id(same, ["lr", "loss"]) == rid
    assert g.run_id(a, ["lr", "loss", "device"]) == rid  # excluded keys never enter the readable part
    assert g.run_id(resolved(lr=0.002, loss="ohem", ohem_schedule="step"), ["lr", "loss"]) != rid
    assert (
        g.run_id(resolved(lr=0.001, loss="ohem", ohem_schedule="cyclical"), ["lr", "loss"]).split("-")[-1]
        != rid.split("-")[-1]
    )
    # the same id in another interpreter (other hash seed)
    code = "import json, sys; from fgvc_lib.grid import run_id; print(run_id(json.loads(sys.argv[1]), ['lr', 'loss']))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(a)], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == rid


def test_run_id_is_sanitised_and_drops_whole_values_only():
    p = resolved(data_root="/data/CUB 200 (v2)", weights="/w/" + "a" * 100)
    rid = g.run_id(p, ["data_root", "weights"])
    assert all(c.isalnum() or c in "._=-" for c in rid)
    assert rid == "data_root=data-CUB-200-v2-" + rid.rsplit("-", 1)[1]  # the 100-letter value is left out whole
    assert len(rid) <= g.READABLE_ID_MAX + 9
    assert g.run_id(p, []) == rid.rsplit("-", 1)[1]
    assert g.run_id(resolved(data_root="/x", weights="/w/b"), ["weights", "data_root"]).startswith(
        "weights=w-b-data_root=x-"
    )


def test_run_ids_of_the_cifar100_table_never_cut_a_value():
    """The table's ids used to end in ``upsample_size=3-<hash>`` (384 cut to fit): a part is whole or absent."""
    spec = g.load_grid(ROOT_DIR / "parameters" / "cifar100_table1.yaml")
    records, varying = g.plan_runs(spec)
    assert len({r.run_id for r in records}) == len(records) == 10
    for record in records:
        readable, digest = record.run_id.rsplit("-", 1)
        assert len(digest) == 8 and len(readable) <= g.READABLE_ID_MAX
        for key in varying:
            value = grid_plan._short_value(record.params[key])
            if f"{key}=" in readable:
                assert f"{key}={value}-" in readable + "-", (key, value, record.run_id)


# ---------------------------------------------------------------------------------------------- validation
BASE = {"notebook": "bird", "base": dict(TINY)}


@pytest.mark.parametrize(
    ("data", "preset", "expected"),
    [
        ({**BASE, "axis": {"seed": [0, 1]}}, None, "unknown top-level key 'axis'; did you mean 'axes'"),
        ({**BASE, "axes": {"lr": 0.1}}, None, "axis 'lr' must be a list"),
        ({**BASE, "axes": {"epoch": [1, 2]}}, None, "unknown parameter 'epoch'.*did you mean 'epochs'"),
        ({**BASE, "rows": [{"bogus": 1}]}, None, "unknown parameter 'bogus'"),
        ({**BASE, "base": {**TINY, "lrr": 0.1}}, None, "unknown parameter 'lrr'"),
        ({**BASE, "grids": [{"axes": {"nope": [1]}}]}, None, "unknown parameter 'nope'"),
        ({**BASE, "grids": [{"axis": {"seed": [1]}}]}, None, r"grids\[0\]: unknown key 'axis'"),
        ({**BASE, "base": {**TINY, "epochs": "ten"}}, None, "parameter 'epochs': expected int, got 'ten'"),
        ({**BASE, "axes": {"batch_size": [4, 0]}}, None, "parameter 'batch_size': expected a value >= 1"),
        ({**BASE, "axes": {"loss": ["ce", "focall"]}}, None, "parameter 'loss'"),
        ({**BASE, "rows": [{"run_dir": "/tmp/x"}]}, None, "parameter 'run_dir' is set by the grid runner"),
        ({**BASE, "compare": ["los"]}, None, "compare: unknown parameter 'los'"),
        (
            {**BASE, "presets": {"tiny": {"base": {"epoch": 1}}}},
            None,
            "preset 'tiny': unknown parameter 'epoch'",
        ),
        ({**BASE, "presets": {"tiny": {"bsae": {}}}}, None, "preset 'tiny': unknown key 'bsae'"),
        ({**BASE, "presets": {"tiny": {"base": {"epochs": 1}}}}, "huge", "unknown preset 'huge'"),
        ({"base": TINY}, None, "'notebook' is required"),
        ({**BASE, "notebook": "birds"}, None, "unknown notebook 'birds'"),
        ({**BASE, "name": "bird"}, None, "grid name 'bird' would share outputs/runs/bird/"),
    ],
)
def test_validation_errors_name_the_key_and_file_and_create_nothing(tmp_path, data, preset, expected):
    path = write_grid(tmp_path, data, "bad_grid.yaml")
    with pytest.raises(ParameterError, match=expected) as info:
        g.run_grid(path, preset=preset, progress=False, log=lambda _: None)
    assert "bad_grid.yaml" in str(info.value)
    assert not (outputs_root() / "runs" / "bad_grid").exists()


def test_names_missing_from_the_parameters_cell_are_errors(monkeypatch):
    names = g.notebook_parameter_names("bird")
    assert {"epochs", "lr", "run_dir"} <= names  # papermill.inspect_notebook of notebooks/bird.ipynb
    monkeypatch.setattr(grid_plan, "notebook_parameter_names", lambda nb: names - {"lr"})
    spec = spec_of({"axes": {"lr": [0.1, 0.2]}})
    with pytest.raises(ParameterError, match="parameter 'lr' is not in the parameters cell"):
        g.validate_runs(spec, g.expand_grid(spec))


def test_dry_run_plans_and_creates_nothing(tmp_path):
    path = write_grid(tmp_path, {**BASE, "name": "plan", "axes": {"seed": [0, 1], "lr": [0.1, 0.01]}})
    records = g.run_grid(path, dry_run=True, progress=False)
    assert [r.status for r in records] == ["planned"] * 4
    assert len({r.run_id for r in records}) == 4
    assert all(r.run_dir.parent == outputs_root() / "runs" / "plan" for r in records)
    assert records[0].params["epochs"] == 1 and records[0].params["run_dir"] == str(records[0].run_dir)
    assert not (outputs_root() / "runs" / "plan").exists()


def test_plan_finds_runs_by_hash_and_classifies_earlier_folders(tmp_path):
    path = write_grid(tmp_path, {**BASE, "name": "resume", "axes": {"seed": [0, 1, 2]}})
    first, second, third = g.run_grid(path, dry_run=True)
    grid_dir = outputs_root() / "runs" / "resume"
    # the grid gained a varying key since: the finished run is found by its hash, not its readable name
    renamed = grid_dir / ("old-name-" + first.run_id.rsplit("-", 1)[1])
    renamed.mkdir(parents=True)
    (renamed / "metrics.json").write_text(json.dumps({"status": "finished", "seconds": 1.0}))
    (grid_dir / second.run_id).mkdir()  # interrupted: no metrics.json -> runs again
    (grid_dir / third.run_id).mkdir()
    (grid_dir / third.run_id / "metrics.json").write_text(json.dumps({"status": "failed", "error": "E: x"}))
    plan = g.run_grid(path, dry_run=True)
    assert [r.status for r in plan] == ["skipped", "planned", "skipped"]
    assert plan[0].run_dir == renamed and plan[0].run_id == renamed.name and plan[2].error == "E: x"
    retry = g.run_grid(path, dry_run=True, retry_failed=True)
    assert [r.status for r in retry] == ["skipped", "planned", "planned"]
    moved = grid_plan._move_aside(grid_dir / second.run_id, "interrupted")
    assert moved.name.startswith(second.run_id + ".interrupted-") and not (grid_dir / second.run_id).exists()


def test_cli_dry_run_prints_the_run_ids(tmp_path, capsys):
    path = write_grid(tmp_path, {**BASE, "name": "cli_plan", "axes": {"seed": [0, 1]}})
    assert main(["grid", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for record in g.run_grid(path, dry_run=True):
        assert record.run_id in out
    assert "2 runs (2 planned)" in out
    assert (
        main(["grid", str(write_grid(tmp_path, {**BASE, "axes": {"epoch": [1]}}, "x.yaml")), "--dry-run"])
        == 2
    )
    assert "unknown parameter 'epoch'" in capsys.readouterr().err
    assert main(["grid", str(path), "--gpus", "zero"]) == 2
    assert "--gpus" in capsys.readouterr().err
    assert not (outputs_root() / "runs" / "cli_plan").exists()


# ---------------------------------------------------------------------------------------------- workers
def test_port_clash_is_retried_other_errors_are_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "ok"

    assert g.retry_port_clash(flaky, sleep=lambda s: None) == "ok" and len(calls) == 3

    def always_clash():
        calls.append(1)
        raise OSError("zmq.error.ZMQError: Address already in use")

    calls.clear()
    with pytest.raises(OSError):
        g.retry_port_clash(always_clash, sleep=lambda s: None)
    assert len(calls) == 4  # one try + 3 retries

    from papermill.exceptions import PapermillExecutionError

    def cell_error():
        calls.append(1)
        raise PapermillExecutionError(3, 3, "x", "OSError", "Address already in use", [])

    calls.clear()
    with pytest.raises(PapermillExecutionError):
        g.retry_port_clash(cell_error, sleep=lambda s: None)
    assert len(calls) == 1


def test_worker_records_a_failure_the_notebook_did_not_write(tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    def dies(notebook, values, progress=False):
        Path(values["run_dir"]).mkdir(parents=True)
        raise PapermillExecutionError(1, 1, "src", "ValueError", "boom", [])

    monkeypatch.setattr(execution, "execute_notebook", dies)
    run_dir = tmp_path / "r1"
    out = g.execute_run("bird", {"epochs": 1}, {"epochs": 1, "run_dir": str(run_dir)}, str(run_dir))
    assert out["status"] == "failed" and out["error"] == "ValueError: boom"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"] == "ValueError: boom"
    assert metrics["notebook"] == "bird" and metrics["params"]["epochs"] == 1 and "traceback" in metrics

    def fails_after_metrics(notebook, values, progress=False):
        folder = Path(values["run_dir"])
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(
            json.dumps({"status": "finished", "top1_acc": 0.5, "params": {}})
        )
        raise PapermillExecutionError(9, 9, "src", "KeyError", "'cam_grid'", [])

    monkeypatch.setattr(execution, "execute_notebook", fails_after_metrics)
    run_dir = tmp_path / "r2"
    out = g.execute_run("bird", {}, {"run_dir": str(run_dir)}, str(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert out["status"] == metrics["status"] == "failed" and metrics["top1_acc"] == 0.5
    assert metrics["error"] == "KeyError: 'cam_grid'"


def test_worker_leaves_a_folder_another_run_holds_untouched(tmp_path, monkeypatch):
    from fgvc_lib.runs import RunInUse

    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"status": "running-elsewhere"}')

    def busy(notebook, values, progress=False):
        raise RunInUse(f"run_dir {values['run_dir']} is in use by pid 4242")

    monkeypatch.setattr(execution, "execute_notebook", busy)
    out = g.execute_run("bird", {}, {"run_dir": str(run_dir)}, str(run_dir))
    assert out["status"] == "failed" and "in use by pid 4242" in out["error"]
    assert (run_dir / "metrics.json").read_text() == '{"status": "running-elsewhere"}'  # not marked failed


def test_workers_pin_their_gpu_before_running(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # indexes map into what this process sees
    assert g.cuda_visible_value(1) == "7"
    with pytest.raises(ValueError, match="index 2"):
        g.cuda_visible_value(2)
    with g.worker_pool(2, [1, 0]) as pool:
        seen = list(pool.map(os.getenv, ["CUDA_VISIBLE_DEVICES"] * 4))
    assert set(seen) <= {"7", "5"} and seen
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert g.cuda_visible_value(3) == "3"


# ---------------------------------------------------------------------------------------------- report
def fake_run(grid_dir: Path, rid: str, params: dict, status: str, history: list[float] | None, **metrics):
    folder = grid_dir / rid
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"notebook": "bird", "params": params, "status": status, "seconds": 3.0, **metrics}
    (folder / "metrics.json").write_text(json.dumps(payload))
    if history is not None:
        lines = ["epoch,train_loss,val_acc"] + [f"{i + 1},1.0,{v}" for i, v in enumerate(history)]
        (folder / "history.csv").write_text("\n".join(lines) + "\n")


def test_report_tables_and_figures_without_kernels(tmp_path):
    grid_dir = tmp_path / "runs" / "fake"
    grid_dir.mkdir(parents=True)
    (grid_dir / "grid.yaml").write_text(yaml.safe_dump({"spec": {"notebook": "bird"}, "runs": ["a", "b", "c"]}))
    common = {"epochs": 3, "run_dir": "x", "device": "cpu"}
    fake_run(grid_dir, "a", {**common, "loss": "ce", "lr": 0.1}, "finished", [0.2, 0.4, 0.5], top1_acc=0.5)
    fake_run(grid_dir, "b", {**common, "loss": "ohem", "lr": 0.1}, "finished", [0.3, 0.5, 0.6], top1_acc=0.6)
    fake_run(
        grid_dir, "c", {**common, "loss": "ce", "lr": 0.01, "device": "cuda"}, "failed", None, error="E|x"
    )
    fake_run(grid_dir, "c.failed-20250101-000000", {**common}, "failed", None, error="old")
    df = g.collect_runs(grid_dir)
    assert list(df["run_id"]) == ["a", "b", "c"]
    assert list(df.columns[:5]) == ["run_id", "status", "error", "loss", "lr"]  # device is not a real change
    assert "seconds" in df.columns and "top1_acc" in df.columns
    paths = g.write_report(grid_dir, compare=["loss", "lr"])
    md = paths["summary_md"].read_text()
    assert "3 runs: 2 finished, 1 failed" in md and "| c | ce | 0.01 | failed |" in md and "E\\|x" in md
    assert len(paths["summary_csv"].read_text().splitlines()) == 4
    for axis in ("loss", "lr"):
        assert paths[f"compare_{axis}"] == grid_dir / "figures" / f"compare_{axis}.png"
        assert paths[f"compare_{axis}"].stat().st_size > 1000
    # default: one figure per varying key; a metric no run logged draws nothing
    assert set(g.write_report(grid_dir)) == {"summary_csv", "summary_md", "compare_loss", "compare_lr"}
    assert set(g.write_report(grid_dir, metric="nope")) == {"summary_csv", "summary_md"}


# ---------------------------------------------------------------------------------------------- real kernels
class Executed:
    """The state of the tiny grid after its first execution."""

    def __init__(self, outputs: Path, path: Path, records: list[g.RunRecord], log: list[str]):
        self.outputs, self.path, self.records, self.log = outputs, path, records, log
        self.grid_dir = outputs / "runs" / "tiny_grid"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    from fgvc_lib.experiments.bird import embedded_bird_root

    root = tmp_path_factory.mktemp("grid")
    outputs = root / "outputs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FGVC_OUTPUTS", str(outputs))
        embedded_bird_root(3, 6, 48)  # generated once here, not by two kernels at the same time
        path = write_grid(
            root,
            {
                "notebook": "bird",
                "name": "tiny_grid",
                "base": TINY,
                "axes": {"seed": [0, 1]},
                "rows": [{"data_root": "/nonexistent/path"}],
                "compare": ["seed"],
            },
        )
        log: list[str] = []
        records = g.run_grid(path, jobs=2, progress=False, log=log.append, gpus=[])
    return Executed(outputs, path, records, log)


def test_grid_runs_in_parallel_and_records_the_failure(executed):
    statuses = [r.status for r in executed.records]
    assert statuses == ["finished", "finished", "failed"]
    failed = executed.records[2]
    assert "/nonexistent/path" in failed.error
    assert json.loads((failed.run_dir / "metrics.json").read_text())["status"] == "failed"
    for record in executed.records:
        assert record.run_dir.parent == executed.grid_dir
        assert (record.run_dir / "bird.ipynb").is_file()
    assert (executed.records[0].run_dir / "bird.html").is_file()
    assert sum(": finished in" in line for line in executed.log) == 2
    assert any(": failed in" in line and "/nonexistent/path" in line for line in executed.log)


def test_grid_report_lists_every_run(executed):
    grid_dir = executed.grid_dir
    csv = (grid_dir / "summary.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("run_id,status,error,")
    md = (grid_dir / "summary.md").read_text()
    assert "3 runs: 2 finished, 1 failed" in md
    assert all(r.run_id in md for r in executed.records)
    failed_line = next(line for line in md.splitlines() if executed.records[2].run_id in line)
    assert "| failed |" in failed_line and "/nonexistent/path" in failed_line
    assert (grid_dir / "figures" / "compare_seed.png").stat().st_size > 1000
    record = yaml.safe_load((grid_dir / "grid.yaml").read_text())
    assert record["spec"]["notebook"] == "bird" and record["runs"] == [r.run_id for r in executed.records]


def test_second_call_runs_nothing(executed, monkeypatch, capsys):
    monkeypatch.setenv("FGVC_OUTPUTS", str(executed.outputs))
    before = sorted(p.name for p in executed.grid_dir.iterdir())
    records = g.run_grid(executed.path, jobs=2, progress=False, log=lambda _: None, gpus=[])
    assert [r.status for r in records] == ["skipped"] * 3
    assert [r.run_id for r in records] == [r.run_id for r in executed.records]
    assert "/nonexistent/path" in records[2].error
    assert sorted(p.name for p in executed.grid_dir.iterdir()) == before
    assert json.loads((executed.records[2].run_dir / "metrics.json").read_text())["status"] == "failed"
    # the CLI: everything skipped -> exit 0, prints where the summary is
    assert main(["grid", str(executed.path), "--jobs", "2", "--gpus", "none", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "summary.md" in out and "3 skipped" in out
    assert main(["report", str(executed.grid_dir)]) == 0
    assert "3 runs: 2 finished, 1 failed" in capsys.readouterr().out


def test_retry_failed_reruns_and_keeps_the_earlier_folder(executed, monkeypatch):
    monkeypatch.setenv("FGVC_OUTPUTS", str(executed.outputs))
    failed_id = executed.records[2].run_id
    records = g.run_grid(executed.path, retry_failed=True, progress=False, log=lambda _: None, gpus=[])
    assert [r.status for r in records] == ["skipped", "skipped", "failed"]
    assert "/nonexistent/path" in records[2].error
    kept = [p for p in executed.grid_dir.iterdir() if p.name.startswith(failed_id + ".failed-")]
    assert len(kept) == 1 and (kept[0] / "metrics.json").is_file()
    assert (executed.grid_dir / failed_id / "metrics.json").is_file()
    assert len(g.collect_runs(executed.grid_dir)) == 3  # the renamed folder is not a run of the grid


ROOT_DIR = Path(__file__).resolve().parents[1]


def test_cifar100_table1_is_the_reports_ten_rows():
    spec = g.load_grid(ROOT_DIR / "parameters" / "cifar100_table1.yaml")
    runs = g.validate_runs(spec, g.expand_grid(spec))
    assert len(runs) == 10
    rows = [(r["model"], r["batch_size"], r["loss"], r["lr"], r["upsample_size"]) for r in runs]
    effnet = [r for r in rows if r[0] == "efficientnet-b4"]
    assert sorted((b, loss) for _, b, loss, _, _ in effnet) == sorted(
        (b, loss) for b in (32, 64) for loss in ("ce", "mc", "focal", "flsd53")
    )
    assert all(lr == 1e-3 and up == 224 for *_, lr, up in effnet)
    swin = [r for r in rows if r[0] == "swin_base_patch4_window12_384"]
    assert sorted(loss for _, _, loss, _, _ in swin) == ["flsd53", "focal"]
    assert all(b == 64 and lr == 3e-5 and up == 384 for _, b, _, lr, up in swin)
    assert all(r["epochs"] == 200 and r["weight_decay"] == 1e-4 and r["lr_decay"] == 0.8 for r in runs)


def test_cifar100_table1_tiny_preset_swaps_in_cpu_stand_ins():
    spec = g.load_grid(ROOT_DIR / "parameters" / "cifar100_table1.yaml")
    runs = g.validate_runs(spec, g.expand_grid(spec, preset="tiny"))
    assert len(runs) == 10
    models = {(r["model"], r["pretrained"]) for r in runs}
    assert models == {("tf_efficientnet_lite0", True), ("swin_tiny_patch4_window7_224", False)}
    assert all(r["data_root"] == "" and not r["download"] and r["epochs"] == 3 for r in runs)


# ---------------------------------------------------------------------------------------------- Ctrl-C
def test_worker_records_an_interrupted_run_and_starts_none_after_stop(tmp_path, monkeypatch):
    from fgvc_lib.grid import worker

    def interrupted(notebook, values, progress=False):
        folder = Path(values["run_dir"])
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "last.pt").write_bytes(b"x")
        (folder / "history.csv").write_text("epoch,train_loss\n1,0.5\n2,0.4\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(execution, "execute_notebook", interrupted)
    run_dir = tmp_path / "r1"
    out = g.execute_run("bird", {"epochs": 4}, {"epochs": 4, "run_dir": str(run_dir)}, str(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert out["status"] == metrics["status"] == "interrupted" and metrics["epochs_run"] == 2
    assert "last.pt kept after epoch 2" in metrics["error"] and metrics["params"]["epochs"] == 4
    assert grid_plan.is_resumable(run_dir)

    class Stopped:
        def is_set(self):
            return True

    monkeypatch.setattr(worker, "_STOP_EVENT", Stopped())
    run_dir = tmp_path / "r2"
    assert g.execute_run("bird", {}, {"run_dir": str(run_dir)}, str(run_dir))["status"] == "planned"
    assert not run_dir.exists()  # a run the grid was stopped before never starts


SLOW_MODULE = '''
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch.utils.data import DataLoader, TensorDataset

from fgvc_lib.catalog import Notebook, register_notebook
from fgvc_lib.config import ExperimentParams, param
from fgvc_lib.engine import Trainer
from fgvc_lib.experiments.base import Experiment


@dataclass
class SlowParams(ExperimentParams):
    NOTEBOOK: ClassVar[str] = "slow"
    NAME_FIELDS: ClassVar[dict] = {}

    pause: float = param(0.25, "seconds per training batch", min=0.0)


class SlowLinear(torch.nn.Linear):
    pause = 0.0

    def forward(self, x):
        if self.training:
            time.sleep(self.pause)
        return super().forward(x)


class SlowExperiment(Experiment):
    NOTEBOOK = "slow"
    PARAMS = SlowParams

    def _build(self):
        p = self.params
        g = torch.Generator().manual_seed(p.seed)
        x = torch.randn(32, 4, generator=g)
        y = (x[:, 0] > 0).long()
        self.train_loader = DataLoader(TensorDataset(x, y), batch_size=p.batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(p.seed))
        self.val_loader = DataLoader(TensorDataset(x, y), batch_size=32)
        self.model = SlowLinear(4, 2)
        self.model.pause = p.pause
        self.trainer = Trainer(self.model, torch.optim.SGD(self.model.parameters(), lr=p.lr),
                               torch.nn.CrossEntropyLoss(), epochs=p.epochs, device=self.device,
                               run_dir=self.run_dir, seed=p.seed, progress=False)
        if p.resume:
            self.trainer.resume()

    def _run(self):
        history = self.trainer.fit(self.train_loader, self.val_loader)
        return {"val_acc": history[-1]["val_acc"], "epochs_run": len(history)}


register_notebook(Notebook(name="slow", params="slow_nb:SlowParams", experiment="slow_nb:SlowExperiment",
                           path=str(Path(__file__).with_name("slow.ipynb")), description="slow toy"))
'''


@pytest.fixture(scope="module")
def slow_notebook(tmp_path_factory):
    """A plugin notebook (``FGVC_NOTEBOOKS``) whose runs take a few seconds: 4 batches of 0.25 s per epoch."""
    import nbformat

    from fgvc_lib.config import ExperimentParams

    root = tmp_path_factory.mktemp("slow")
    (root / "slow_nb.py").write_text(SLOW_MODULE)
    values = {**ExperimentParams().to_dict(), "pause": 0.25}
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()),
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from slow_nb import SlowExperiment, SlowParams\n"
            "result = SlowExperiment(SlowParams.from_namespace(globals())).run()"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "slow.ipynb")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p),
        "FGVC_NOTEBOOKS": "slow_nb",
        "FGVC_OUTPUTS": str(root / "outputs"),
    }
    grid = write_grid(root, {"notebook": "slow", "name": "slow_grid",
                             "base": {"epochs": 5, "batch_size": 8, "device": "cpu", "num_workers": 0},
                             "axes": {"seed": [0, 1]}})
    return root, env, grid


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    import time

    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            out, err = proc.communicate(timeout=60) if proc.poll() is None else proc.communicate()
            raise AssertionError(f"gave up waiting (rc {proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.2)


@pytest.mark.parametrize("target", ["process-group", "main-process"])
def test_ctrl_c_stops_the_queue_marks_interrupted_and_a_rerun_resumes(slow_notebook, target):
    """Ctrl-C in a terminal (SIGINT to the process group) or ``kill -INT`` of ``fgvc grid`` alone, during the
    first of two runs (one worker): the queued run never starts, the running one is ``interrupted`` with its
    checkpoint, one line says what was kept and how to resume; the same command then resumes it (checked
    once)."""
    import shutil
    import signal

    root, env, grid = slow_notebook
    grid_dir = root / "outputs" / "runs" / "slow_grid"
    shutil.rmtree(grid_dir, ignore_errors=True)
    command = [sys.executable, "-m", "fgvc_lib.cli", "grid", str(grid), "--gpus", "none", "--no-progress"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=terminal_sigint)
    try:
        _wait_for(lambda: any(grid_dir.glob("*/checkpoints/last.pt")), 240, proc)
        if target == "process-group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("fgvc grid: interrupted: 1 interrupted, 1 not started"), err[-3000:]
    assert f"resume with: fgvc grid {grid} --gpus none" in line and "Traceback" not in err
    runs = [p for p in grid_dir.iterdir() if p.is_dir() and (p / "metrics.json").exists()]
    assert len(runs) == 1  # the queued runs never started
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and (runs[0] / "checkpoints" / "last.pt").is_file()
    assert 1 <= metrics["epochs_run"] < 5
    if target == "main-process":
        return
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming 1 interrupted run(s) from their checkpoints: {runs[0].name}" in again.stdout
    assert "2 runs: 2 finished" in again.stdout
    resumed = json.loads((runs[0] / "metrics.json").read_text())
    assert resumed["status"] == "finished" and resumed["epochs_run"] == 5 and resumed["params"]["resume"] is True
    assert not [p for p in grid_dir.iterdir() if ".interrupted-" in p.name]  # resumed in place

"""Grid runs through submitit: the ``executor:`` block and its command-line overrides, the parameters handed
to submitit for SLURM (a fake AutoExecutor records them: no cluster needed), jobs that die without a result,
``--no-wait`` + ``fgvc report``, and one tiny grid (2 runs) executed end to end by submitit's local executor."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import submitit
import yaml
from submitit.core.utils import FailedJobError, UncompletedJobError

from fgvc_lib import grid as g
from fgvc_lib.cli import _executor_options, build_parser, main
from fgvc_lib.config import ParameterError
from fgvc_lib.grid import executors as grid_executors
from fgvc_lib.grid import worker as grid_worker
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
SLURM_BLOCK = {
    "kind": "slurm",
    "partition": "gpu",
    "gpus_per_job": 2,
    "cpus_per_job": 8,
    "time_min": 90,
    "mem_gb": 32,
    "array_parallelism": 4,
    "slurm": {"account": "myproj", "qos": "normal"},
}


def write_grid(folder: Path, data: dict, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def grid_data(name: str, executor: dict | None = None, **extra) -> dict:
    data = {"notebook": "bird", "name": name, "base": dict(TINY), "axes": {"seed": [0, 1]}, **extra}
    return {**data, "executor": executor} if executor is not None else data


# ---------------------------------------------------------------------------------------------- options
def test_executor_block_defaults_and_command_line_overrides(tmp_path):
    spec = g.load_grid(write_grid(tmp_path, grid_data("opts", SLURM_BLOCK)))
    assert spec.executor == SLURM_BLOCK and spec.to_dict()["executor"] == SLURM_BLOCK
    assert g.resolve_executor(spec) == g.ExecutorConfig(**SLURM_BLOCK)
    assert g.resolve_executor(g.load_grid(write_grid(tmp_path, grid_data("plain"), "p.yaml"))) == (
        g.ExecutorConfig(kind="local", time_min=g.DEFAULT_TIME_MIN)
    )
    args = build_parser().parse_args(
        ["grid", "x.yaml", "--executor", "submitit-local", "--time", "30", "--gpus-per-job", "0"]
        + ["--slurm-arg", "qos=high", "--slurm-arg", "exclusive=true", "--slurm-arg", "nice=10"]
    )
    overrides = _executor_options(args)
    assert overrides["partition"] is None and overrides["mem_gb"] is None  # not given: the file's value
    merged = g.resolve_executor(spec, overrides)
    assert merged.kind == "submitit-local" and merged.time_min == 30 and merged.gpus_per_job == 0
    assert merged.partition == "gpu" and merged.cpus_per_job == 8 and merged.array_parallelism == 4
    # --slurm-arg merges key by key over the file's mapping; values are YAML scalars
    assert merged.slurm == {"account": "myproj", "qos": "high", "exclusive": True, "nice": 10}
    assert g.resolve_executor(spec, {"kind": None, "slurm": None}) == g.resolve_executor(spec)
    assert g.ExecutorConfig(**SLURM_BLOCK).to_dict() == SLURM_BLOCK


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"partiton": "gpu"}, "executor: unknown key 'partiton'; did you mean 'partition'"),
        (
            {"kind": "slrum"},
            "executor: unknown kind 'slrum'; did you mean 'slurm'.*local, slurm, submitit-local",
        ),
        ({"gpus_per_job": "two"}, "executor: 'gpus_per_job' must be an integer >= 0, got 'two' \\(str\\)"),
        ({"gpus_per_job": True}, "'gpus_per_job' must be an integer >= 0, got True \\(bool\\)"),
        ({"time_min": 0}, "'time_min' must be an integer number of minutes >= 1, got 0"),
        ({"time_min": 1.5}, "'time_min' must be an integer number of minutes >= 1, got 1.5"),
        ({"mem_gb": 0}, "'mem_gb' must be a number of GB > 0"),
        ({"partition": 3}, "'partition' must be a partition name, got 3"),
        ({"array_parallelism": -1}, "'array_parallelism' must be an integer >= 1"),
        ({"slurm": ["account=x"]}, "'slurm' \\(extra sbatch settings\\) must be a mapping"),
        ({"slurm": {"account": ["a", "b"]}}, "slurm setting 'account' must be a name with a single value"),
        ("slurm", "executor must be a mapping of name: value, got str"),
    ],
)
def test_bad_executor_blocks_name_the_key_and_the_file(tmp_path, block, expected):
    path = write_grid(tmp_path, grid_data("bad_exec", block), "bad_exec.yaml")
    with pytest.raises(ParameterError, match=expected) as info:
        g.load_grid(path)
    assert "bad_exec.yaml" in str(info.value)


def test_bad_command_line_options_are_errors_before_anything_runs(tmp_path, capsys):
    path = write_grid(tmp_path, grid_data("cli_exec"))
    with pytest.raises(SystemExit):
        main(["grid", str(path), "--executor", "slrum"])
    assert "invalid choice: 'slrum'" in capsys.readouterr().err
    cases = [
        (["--time", "0"], "command line executor options: 'time_min' must be an integer number of minutes"),
        (["--slurm-arg", "account"], "--slurm-arg: expected key=value"),
        (["--no-wait"], "--no-wait is for the slurm executor (this grid runs with 'local')"),
        (["--executor", "slurm", "--gpus", "0"], "--gpus picks GPUs of this machine"),
    ]
    for extra, message in cases:
        assert main(["grid", str(path), "--dry-run", *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["grid", str(path), "--dry-run", "--executor", "slurm", "--partition", "gpu"]) == 0
    assert "2 runs (2 planned)" in capsys.readouterr().out
    assert not (outputs_root() / "runs" / "cli_exec").exists()


def test_slurm_parameters_are_valid_for_submitit():
    params = g.ExecutorConfig(**SLURM_BLOCK).submitit_parameters("fgvc-x")
    assert params == {
        "name": "fgvc-x",
        "timeout_min": 90,
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": 2,
        "slurm_partition": "gpu",
        "cpus_per_task": 8,
        "mem_gb": 32,
        "slurm_array_parallelism": 4,
        "slurm_additional_parameters": {"account": "myproj", "qos": "normal"},
    }
    assert g.ExecutorConfig(kind="slurm").submitit_parameters("n")["gpus_per_node"] == 1  # one GPU by default
    assert "gpus_per_node" not in g.ExecutorConfig(kind="slurm", gpus_per_job=0).submitit_parameters("n")
    assert g.ExecutorConfig(kind="submitit-local", time_min=5).submitit_parameters("n") == {
        "name": "n",
        "timeout_min": 5,
    }
    # submitit's own checks accept every name (the debug executor needs no cluster; slurm_* are checked)
    submitit.AutoExecutor(folder="unused", cluster="debug").update_parameters(**params)


def test_jobs_pin_their_gpu_and_threads_like_pool_workers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # indexes map into what this process sees
    slots = grid_executors._local_slots
    assert slots(3, [1, 0], None) == ["7", "5", "7"]  # round-robin, as the pool's workers
    assert slots(2, [0, 1], 2) == ["5,7", "5,7"]
    assert slots(2, [0, 1], 0) == slots(2, [], None) == ["", ""]  # "": no GPU
    seen = {}
    monkeypatch.setattr(
        grid_worker, "execute_run", lambda *args: seen.update(os.environ) or {"status": "finished"}
    )
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # run_job sets them here: restored afterwards
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert g.run_job("bird", {}, {}, "x", cuda_visible=None)["status"] == "finished"
    assert seen["OMP_NUM_THREADS"] == "6" and seen["CUDA_VISIBLE_DEVICES"] == "5,7"  # SLURM's GPU kept
    g.run_job("bird", {}, {}, "x", cuda_visible="", threads=2)
    assert seen["CUDA_VISIBLE_DEVICES"] == "" and seen["OMP_NUM_THREADS"] == "6"  # an explicit setting wins


# ---------------------------------------------------------------------------------------------- fake SLURM
class FakeJob:
    def __init__(self, job_id: str, folder: Path, outcome=None, state: str = "COMPLETED", done: bool = True):
        self.job_id, self.outcome, self._state, self._done = job_id, outcome, state, done
        self.paths = type("Paths", (), {"stderr": folder / f"{job_id}_0_log.err"})()

    @property
    def state(self) -> str:
        return self._state

    def done(self, force_check: bool = False) -> bool:
        return self._done

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome() if callable(self.outcome) else self.outcome


class FakeAutoExecutor:
    """Records what the runner hands to submitit; its jobs are 'done' at once with planned outcomes."""

    instances: list[FakeAutoExecutor] = []
    outcomes: list = []

    def __init__(self, folder, cluster=None):
        self.folder, self.cluster, self.parameters, self.arrays = Path(folder), cluster, {}, []
        FakeAutoExecutor.instances.append(self)

    def update_parameters(self, **kwargs):
        self.parameters.update(kwargs)

    def map_array(self, fn, *iterables):
        calls = list(zip(*iterables, strict=True))
        self.arrays.append((fn, calls))
        return [FakeJob(f"4242_{i}", self.folder, o) for i, o in enumerate(self.outcomes[: len(calls)])]

    def submit(self, fn, *args):
        raise AssertionError("SLURM runs are submitted as one array")


class RefusingAutoExecutor:
    def __init__(self, *args, **kwargs):
        raise AssertionError("nothing should be submitted")


@pytest.fixture
def fake_slurm(monkeypatch):
    FakeAutoExecutor.instances, FakeAutoExecutor.outcomes = [], []
    monkeypatch.setattr(submitit, "AutoExecutor", FakeAutoExecutor)
    return FakeAutoExecutor


def finished_run(run_dir: Path, top1: float = 0.5) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"notebook": "bird", "params": {}, "status": "finished", "seconds": 2.0, "top1_acc": top1}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return {"status": "finished", "error": None, "seconds": 2.0, "metrics": {"top1_acc": top1}}


def test_slurm_one_job_array_with_the_grid_parameters_and_a_dead_job(tmp_path, fake_slurm):
    path = write_grid(tmp_path, grid_data("slurm_fake", SLURM_BLOCK))
    plan = g.run_grid(path, dry_run=True)
    grid_dir = outputs_root() / "runs" / "slurm_fake"
    oom_log = grid_dir / "submitit" / "4242_1_0_log.err"
    dead = UncompletedJobError(
        "Job 4242_1 (task: 0) with path x\nhas not produced any output (state: OUT_OF_MEMORY)\n"
    )
    fake_slurm.outcomes = [lambda: finished_run(plan[0].run_dir, 0.75), dead]  # what the jobs did
    oom_log.parent.mkdir(parents=True)
    oom_log.write_text("srun: starting\nslurmstepd: error: Detected 1 oom_kill event in StepId=4242_1\n\n")
    log: list[str] = []
    records = g.run_grid(path, progress=False, log=log.append)

    (executor,) = fake_slurm.instances
    assert executor.cluster == "slurm" and executor.folder == grid_dir / "submitit"
    assert executor.parameters == g.ExecutorConfig(**SLURM_BLOCK).submitit_parameters("fgvc-slurm_fake")
    assert executor.parameters["slurm_partition"] == "gpu" and executor.parameters["gpus_per_node"] == 2
    (fn, calls) = executor.arrays[0]  # ONE array holding every pending run
    assert fn is g.run_job and len(executor.arrays) == 1
    assert [c[3] for c in calls] == [str(r.run_dir) for r in plan]
    assert [c[:3] for c in calls] == [("bird", r.overrides, r.params) for r in plan]
    assert [c[4:] for c in calls] == [(None, 8)] * 2  # SLURM pins the GPU; threads = cpus_per_job

    assert [r.status for r in records] == ["finished", "failed"]
    assert [r.job_id for r in records] == ["4242_0", "4242_1"]
    error = records[1].error
    assert error.startswith("submitit job 4242_1 ended without a result (state: OUT_OF_MEMORY)")
    assert "oom_kill event" in error and str(oom_log) in error
    metrics = json.loads((records[1].run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"] == error and metrics["notebook"] == "bird"
    assert metrics["params"]["seed"] == 1 and "OUT_OF_MEMORY" in metrics["traceback"]
    md = (grid_dir / "summary.md").read_text()
    assert "2 runs: 1 finished, 1 failed" in md and "0.75" in md
    assert any("[2/2]" in line for line in log) and any("slurm: partition gpu" in line for line in log)
    assert not (grid_dir / "submitit" / "jobs.json").exists()  # every job concluded


def test_no_wait_then_report_then_rerun(tmp_path, fake_slurm, monkeypatch, capsys):
    path = write_grid(tmp_path, grid_data("slurm_later"))
    plan = g.run_grid(path, dry_run=True)
    grid_dir = outputs_root() / "runs" / "slurm_later"
    fake_slurm.outcomes = [None, None]  # never asked for: the runner does not wait
    argv = ["grid", str(path), "--executor", "slurm", "--partition", "gpu", "--time", "60", "--no-progress"]
    assert main([*argv, "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert "4242_0" in out and "4242_1" in out and "2 submitted" in out
    assert f"fgvc report {grid_dir}" in out
    assert fake_slurm.instances[0].parameters["slurm_partition"] == "gpu"
    assert not (grid_dir / "summary.md").exists()
    jobs = json.loads((grid_dir / "submitit" / "jobs.json").read_text())["jobs"]
    assert {rid: j["job_id"] for rid, j in jobs.items()} == {
        plan[0].run_id: "4242_0",
        plan[1].run_id: "4242_1",
    }

    # later: the first job finished (it wrote metrics.json), the second still runs
    finished_run(plan[0].run_dir, 0.6)
    handles = {"4242_1": FakeJob("4242_1", grid_dir / "submitit", state="RUNNING", done=False)}
    monkeypatch.setattr(grid_executors, "_slurm_job", lambda folder, job_id: handles[job_id])
    assert main(["report", str(grid_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 1 finished, 1 submitted" in out and "still queued or running" in out
    # a rerun must not start a second copy of a run whose job is still running
    monkeypatch.setattr(submitit, "AutoExecutor", RefusingAutoExecutor)
    with pytest.raises(RuntimeError, match=r"still queued or running on SLURM .*4242_1 \(RUNNING\)"):
        g.run_grid(path, progress=False, log=lambda _: None)
    # the job then died inside run_job (its function raised): recorded failed by `fgvc report`
    trace = "Traceback (most recent call last):\n  File x\nImportError: no kernel\n"
    handles["4242_1"] = FakeJob(
        "4242_1",
        grid_dir / "submitit",
        FailedJobError(
            f"Job (task=0) failed during processing with trace:\n{'-' * 22}\n{trace}\n{'-' * 22}\n"
        ),
    )
    assert main(["report", str(grid_dir)]) == 0
    out = capsys.readouterr().out
    assert (
        "2 runs: 1 finished, 1 failed" in out and "submitit job 4242_1 failed: ImportError: no kernel" in out
    )
    assert not (grid_dir / "submitit" / "jobs.json").exists()
    # a rerun skips both (finished, failed) without submitting anything; --retry-failed would submit one
    records = g.run_grid(path, progress=False, log=lambda _: None)
    assert [r.status for r in records] == ["skipped", "skipped"]


def test_a_real_job_that_dies_is_recorded_failed_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)  # the result file is not coming
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(timeout_min=2)
    died, raised = executor.submit(os._exit, 3), executor.submit(int, "x")
    for job, name in ((died, "died"), (raised, "raised")):
        run_dir = tmp_path / name
        while not job.done():
            time.sleep(0.1)
        outcome = grid_executors._job_outcome("bird", {"seed": 3, "run_dir": str(run_dir)}, run_dir, job)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert outcome["status"] == metrics["status"] == "failed" and metrics["params"]["seed"] == 3
        assert metrics["error"] == outcome["error"] and str(job.paths.stderr) in outcome["error"]
        assert outcome["error"].startswith(f"submitit job {job.job_id} ")
    assert (
        "ended without a result (state: FINISHED)"
        in json.loads((tmp_path / "died/metrics.json").read_text())["error"]
    )
    raised_error = json.loads((tmp_path / "raised" / "metrics.json").read_text())["error"]
    assert "failed: ValueError: invalid literal for int()" in raised_error


# ---------------------------------------------------------------------------------------------- real jobs
@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    from fgvc_lib.experiments.bird import embedded_bird_root

    root = tmp_path_factory.mktemp("submitit_grid")
    outputs = root / "outputs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FGVC_OUTPUTS", str(outputs))
        embedded_bird_root(3, 6, 48)  # generated once here, not by two kernels at the same time
        path = write_grid(
            root,
            grid_data("submitit_grid", {"kind": "submitit-local", "time_min": 10}, compare=["seed"]),
        )
        log: list[str] = []
        records = g.run_grid(path, jobs=2, progress=False, log=log.append, gpus=[])
    return outputs, path, records, log


def test_submitit_local_grid_runs_both_jobs_and_reports(executed, monkeypatch):
    outputs, path, records, log = executed
    monkeypatch.setenv("FGVC_OUTPUTS", str(outputs))
    grid_dir = outputs / "runs" / "submitit_grid"
    assert [r.status for r in records] == ["finished", "finished"], [r.error for r in records]
    assert all(r.job_id for r in records) and len({r.job_id for r in records}) == 2
    for record in records:
        assert record.run_dir.parent == grid_dir
        metrics = json.loads((record.run_dir / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["params"]["seed"] in (0, 1)
        assert (record.run_dir / "bird.ipynb").is_file() and (record.run_dir / "bird.html").is_file()
        assert (grid_dir / "submitit" / f"{record.job_id}_0_log.out").is_file()
    md = (grid_dir / "summary.md").read_text()
    assert "2 runs: 2 finished" in md and all(r.run_id in md for r in records)
    assert len((grid_dir / "summary.csv").read_text().splitlines()) == 3
    assert (grid_dir / "figures" / "compare_seed.png").is_file()
    assert sum(": finished in" in line for line in log) == 2 and "submitit-local, 2 at a time" in log[0]
    record = yaml.safe_load((grid_dir / "grid.yaml").read_text())
    assert (
        record["runs"] == [r.run_id for r in records]
        and record["spec"]["executor"]["kind"] == "submitit-local"
    )
    # the same run ids and folders as the local executor would use
    plan = g.run_grid(path, dry_run=True, executor={"kind": "local"})
    assert [(r.run_id, r.run_dir) for r in plan] == [(r.run_id, r.run_dir) for r in records]


def test_rerun_skips_finished_runs_without_submitting(executed, monkeypatch, capsys):
    outputs, path, records, _ = executed
    monkeypatch.setenv("FGVC_OUTPUTS", str(outputs))
    monkeypatch.setattr(submitit, "AutoExecutor", RefusingAutoExecutor)
    again = g.run_grid(path, jobs=2, progress=False, log=lambda _: None, gpus=[])
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert [r.run_id for r in again] == [r.run_id for r in records]
    assert main(["grid", str(path), "--gpus", "none", "--no-progress"]) == 0
    assert "2 runs: 2 skipped" in capsys.readouterr().out

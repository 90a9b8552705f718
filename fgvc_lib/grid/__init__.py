"""Parameter grids over one notebook: expand a YAML grid, validate every run, execute the runs in worker
processes or as submitit / SLURM jobs with papermill (optionally one GPU per worker), resume, and report.

- :mod:`~fgvc_lib.grid.spec`: the grid file (format, parsing, the ``executor:`` block);
- :mod:`~fgvc_lib.grid.plan`: its runs checked against the notebook, run ids, folders, ``grid.yaml``;
- :mod:`~fgvc_lib.grid.worker`: one run in a worker process or job (papermill, outcome, GPU pinning);
- :mod:`~fgvc_lib.grid.executors`: where runs execute (:class:`Executor`: local pool, submitit / SLURM);
- :mod:`~fgvc_lib.grid.report`: ``summary.csv`` / ``summary.md`` and comparison figures;
- :mod:`~fgvc_lib.grid.runner`: :func:`run_grid`, all of the above in order (``fgvc grid``).
"""

from .executors import (
    POLL_SECONDS,
    Executor,
    LocalExecutor,
    SubmititExecutor,
    cuda_visible_value,
    default_gpus,
    job_error,
    make_executor,
    settle_submitted,
    submitit_folder,
    threads_per_job,
    worker_pool,
)
from .plan import (
    ID_EXCLUDED,
    READABLE_ID_MAX,
    READABLE_VALUE_MAX,
    STATUSES,
    RunRecord,
    apply_preset,
    expand_grid,
    format_plan,
    grid_folder,
    grid_record,
    notebook_parameter_names,
    plan_runs,
    run_id,
    validate_runs,
    varying_keys,
)
from .report import collect_runs, compare_figure, markdown_table, write_report
from .runner import run_grid
from .spec import (
    DEFAULT_TIME_MIN,
    EXECUTOR_KEYS,
    EXECUTOR_KINDS,
    PRESET_KEYS,
    SUBGRID_KEYS,
    TOP_KEYS,
    ExecutorConfig,
    GridSpec,
    check_executor,
    load_grid,
    resolve_executor,
)
from .worker import (
    PORT_CLASH_MARKERS,
    error_text,
    execute_run,
    is_port_clash,
    retry_port_clash,
    run_job,
    settle_run,
)

__all__ = [
    "DEFAULT_TIME_MIN",
    "EXECUTOR_KEYS",
    "EXECUTOR_KINDS",
    "ID_EXCLUDED",
    "POLL_SECONDS",
    "PORT_CLASH_MARKERS",
    "PRESET_KEYS",
    "READABLE_ID_MAX",
    "READABLE_VALUE_MAX",
    "STATUSES",
    "SUBGRID_KEYS",
    "TOP_KEYS",
    "Executor",
    "ExecutorConfig",
    "GridSpec",
    "LocalExecutor",
    "RunRecord",
    "SubmititExecutor",
    "apply_preset",
    "check_executor",
    "collect_runs",
    "compare_figure",
    "cuda_visible_value",
    "default_gpus",
    "error_text",
    "execute_run",
    "expand_grid",
    "format_plan",
    "grid_folder",
    "grid_record",
    "is_port_clash",
    "job_error",
    "load_grid",
    "make_executor",
    "markdown_table",
    "notebook_parameter_names",
    "plan_runs",
    "resolve_executor",
    "retry_port_clash",
    "run_grid",
    "run_id",
    "run_job",
    "settle_run",
    "settle_submitted",
    "submitit_folder",
    "threads_per_job",
    "validate_runs",
    "varying_keys",
    "worker_pool",
    "write_report",
]

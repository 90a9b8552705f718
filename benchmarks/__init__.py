"""Benchmarks of the workbook's fast paths against their plain baselines.

Every benchmark measures two things side by side in one process (repetitions interleaved A, B, A, B, ...,
medians taken) and reports their ratio, so noise from other jobs on a shared machine hits both sides alike.
Run them with ``python -m benchmarks.run_all [name ...]`` (``make bench``); see ``benchmarks/README.md``.
"""

BENCHMARKS: tuple[str, ...] = ("data", "step", "ohem", "papermill", "memory", "gpu")

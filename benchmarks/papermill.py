"""Notebook overhead: ``fgvc_lib.cli.execute_notebook("bird", ...)`` (papermill: a fresh kernel, the
notebook's cells, figures shown inline, HTML export, as ``fgvc run`` does) against
``BirdExperiment(params).run()`` called directly in this process, with the same tiny parameters
(``parameters/bird.yaml`` with one epoch on a small embedded set). Run folders and the embedded data go
to a temporary ``FGVC_OUTPUTS``; a first direct run, not timed, generates the data set and imports the
library, then the two sides alternate. Figures: median seconds of each side, the overhead (difference)
and the ratio notebook / direct; the HTML export is timed once more after each notebook run to show its
share of the notebook side. No goal: it is a report.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR, entry_point, interleave, median, result_writer, spread, temp_outputs
from .common import bird_values as common_bird_values

NAME = "papermill"
GOAL = "report overhead (no goal)"
write = result_writer(
    NAME, GOAL, "execute_notebook('bird') vs BirdExperiment(params).run(), tiny params, 1 epoch"
)

TINY = {
    "synth_classes": 3,
    "synth_per_class": 8,
    "synth_size": 48,
    "img_size": 32,
    "batch_size": 4,
    "epochs": 1,
    "num_workers": 0,
    "cam_images": 2,
    "progress": False,
}


def bird_values(quick: bool) -> dict[str, Any]:
    """``parameters/bird.yaml`` with the tiny overrides (the keys the notebook's parameters cell knows)."""
    values = common_bird_values(**TINY)
    if quick:
        values.update(synth_per_class=6, cam_images=0)
    return values


def run(quick: bool = False, out: str | Path = RESULTS_DIR) -> dict[str, Any]:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    from fgvc_lib.execution import execute_notebook, export_html
    from fgvc_lib.experiments.bird import BirdExperiment

    values = bird_values(quick)
    reps = 1 if quick else 3
    html_seconds: list[float] = []

    with temp_outputs(NAME) as tmp:

        def direct() -> None:
            BirdExperiment(dict(values)).run()
            plt.close("all")

        def notebook() -> None:
            run_dir = execute_notebook("bird", dict(values), progress=False, html=True)
            start = time.perf_counter()
            export_html(run_dir / "bird.ipynb")  # again, only to know its share of the notebook side
            html_seconds.append(time.perf_counter() - start)

        direct()  # untimed: generates the embedded data set, imports everything, warms the caches
        times = interleave({"notebook": notebook, "direct": direct}, reps, warmup=0 if quick else 1)
        runs = len(list((tmp / "runs" / "bird").iterdir()))

    t_nb, t_direct = median(times["notebook"]), median(times["direct"])
    ratio = t_nb / t_direct
    figures = {
        "notebook_s": t_nb,
        "direct_s": t_direct,
        "overhead_s": t_nb - t_direct,
        "html_export_s": median(html_seconds),
        "notebook_spread": spread(times["notebook"]),
        "direct_spread": spread(times["direct"]),
        "ratio": ratio,
    }
    return write(
        out,
        ratio=ratio,
        figures=figures,
        settings={
            "notebook": "bird",
            "values": values,
            "reps": reps,
            "run_folders_written": runs,
            "ratio_is": "notebook seconds / direct seconds (medians); overhead_s = their difference",
        },
        quick=quick,
        summary=f"+{t_nb - t_direct:.1f} s per run ({t_nb:.1f} s vs {t_direct:.1f} s, {ratio:.2f}x)",
    )


main = entry_point(NAME, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())

"""TensorBoard tracking: event files in every run folder, so ``tensorboard --logdir outputs/runs`` compares runs.

:class:`TensorBoardLogger` writes ``<run_dir>/tensorboard/events.out.tfevents.*`` with

- every numeric column of the epoch's history row (the values of ``history.csv``), as scalars at step =
  epoch (1-based): ``train_loss`` -> ``loss/train``, ``val_acc`` -> ``acc/val``, ``lr`` -> ``schedule/lr``
  (the LR of each epoch), ``ohem_ratio`` / ``bbn_alpha`` -> ``schedule/...`` (:func:`scalar_tag`);
- the run's figures (each ``figures/<name>.png`` the experiment saves, byte for byte) as images
  ``figures/<name>``, at step = the epochs completed when it was saved;
- the hyper-parameters (the resolved parameters and the notebook) for TensorBoard's HPARAMS tab, and at the
  end the numeric keys of ``metrics.json`` as scalars ``final/<key>``, which that tab shows as metric columns.

Each run writes its own hparams session (no experiment-wide summary), so TensorBoard builds the table from
all the runs under ``--logdir``, whatever their notebooks. Logging only reads: no random draws, no forward
pass, nothing the run computes changes. Only rank 0 of a DDP run writes. The writer opens on first use; if
the ``tensorboard`` package is missing or the folder cannot be written, the run goes on without event files
and says so once.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .callbacks import Callback, Trainer

TB_FOLDER = "tensorboard"
SCHEDULE_COLUMNS = ("lr", "ohem_ratio", "bbn_alpha", "momentum")
SPLITS = ("train", "val")
#: Parameters that say where or how a run executes, not what it is: left out of the hparams.
HPARAMS_LEFT_OUT = ("run_dir", "resume", "progress")
STATUSES = {"finished": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "interrupted": "STATUS_ABORTED"}


def scalar_tag(column: str) -> str:
    """The TensorBoard tag of a ``history.csv`` column: ``<metric>/<split>`` for ``train_*`` / ``val_*`` (so a
    metric's train and val charts sit together), ``schedule/<name>`` for the LR and the other schedules,
    ``time/epoch_seconds``, else ``epoch/<column>``."""
    for split in SPLITS:
        if column.startswith(split + "_") and len(column) > len(split) + 1:
            return f"{column[len(split) + 1:]}/{split}"
    if column in SCHEDULE_COLUMNS:
        return f"schedule/{column}"
    if column == "seconds":
        return "time/epoch_seconds"
    return f"epoch/{column}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def hparams_of(params: Mapping[str, Any], notebook: str = "") -> dict[str, bool | float | str]:
    """The hyper-parameters as TensorBoard takes them: bools, numbers and text (lists joined by commas, None
    as ``""``), without the run-management keys (``HPARAMS_LEFT_OUT``)."""
    out: dict[str, bool | float | str] = {"notebook": notebook} if notebook else {}
    for key, value in params.items():
        if key in HPARAMS_LEFT_OUT:
            continue
        if isinstance(value, bool) or isinstance(value, (int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(map(str, value))
        else:
            out[key] = "" if value is None else str(value)
    return out


def _png_header(data: bytes) -> tuple[int, int, int]:
    """(height, width, channels) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return height, width, {0: 1, 2: 3, 4: 2, 6: 4}.get(data[25], 4)


class TensorBoardLogger(Callback):
    """Trainer callback and figure sink writing one run's TensorBoard event files (module docstring).

    ``enabled`` False (a DDP rank other than 0) makes every method a no-op. ``hparams`` are written when the
    writer opens; :meth:`finish` adds the final metrics and the session's end, :meth:`close` flushes."""

    order = 55  # after the Checkpointer (50): an epoch reaches the event file once it is checkpointed

    def __init__(
        self,
        log_dir: str | Path,
        *,
        enabled: bool = True,
        hparams: Mapping[str, Any] | None = None,
        log: Callable[[str], Any] | None = print,
    ):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self.hparams = dict(hparams or {})
        self.log = log or (lambda _msg: None)
        self.step = 0  # epochs completed: the step of figures and final metrics
        self._writer: Any = None

    # ------------------------------------------------------------------ the writer
    @property
    def writer(self) -> Any:
        """The ``SummaryWriter`` (opened on first use), or None when tracking is off or impossible."""
        if self._writer is None and self.enabled:
            try:
                from tensorboard.plugins.hparams.summary_v2 import hparams_pb
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                return self._give_up(f"the tensorboard package is not installed ({exc}); pip install tensorboard")
            try:
                self._writer = SummaryWriter(str(self.log_dir))
                if self.hparams:
                    self._writer.file_writer.add_summary(hparams_pb(self.hparams, start_time_secs=time.time()))
            except OSError as exc:
                return self._give_up(f"{self.log_dir}: {exc.strerror or exc}")
        return self._writer

    def _give_up(self, why: str) -> None:
        self.enabled = False
        self.log(f"note: no TensorBoard event files for this run: {why}")
        return None

    def _write(self, action: Callable[[Any], Any]) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            action(writer)
        except OSError as exc:  # a full disk stops the tracking, never the run
            self._writer = None
            self._give_up(f"{self.log_dir}: {exc.strerror or exc}")

    # ------------------------------------------------------------------ Trainer events
    def before_fit(self, trainer: Trainer) -> None:
        self.step = trainer.epoch

    def after_epoch(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not trainer.dist.is_main:
            return
        epoch = int(row["epoch"])
        self.step = epoch

        def write(writer: Any) -> None:
            for column, value in row.items():
                number = _number(value)
                if column != "epoch" and number is not None:
                    writer.add_scalar(scalar_tag(column), number, epoch)
            writer.flush()  # `tensorboard` shows the run while it trains

        self._write(write)

    # ------------------------------------------------------------------ figures, results
    def add_figure_file(self, name: str, png: str | Path, step: int | None = None) -> None:
        """The figure ``png`` (as written to ``figures/``) as the image ``figures/<name>``."""
        if self.writer is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        try:
            data = Path(png).read_bytes()
            height, width, channels = _png_header(data)
        except (OSError, ValueError) as exc:  # the figure file stays what it is; the events skip it
            self.log(f"note: figure {name} not added to the TensorBoard events: {exc}")
            return
        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        summary = Summary(value=[Summary.Value(tag=f"figures/{name}", image=image)])
        self._write(lambda w: (w.file_writer.add_summary(summary, self.step if step is None else step), w.flush()))

    def finish(self, metrics: Mapping[str, Any] | None = None, status: str = "finished") -> None:
        """The numeric ``metrics`` as ``final/<key>`` scalars and the hparams session's end (``status``:
        finished / failed / interrupted); then :meth:`close`."""
        if (self._writer is None and not metrics) or self.writer is None:
            self.close()
            return
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        step = int(_number((metrics or {}).get("epochs_run")) or self.step)
        end = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(
            status=api_pb2.Status.Value(STATUSES.get(status, "STATUS_UNKNOWN")), end_time_secs=time.time()))
        end_summary = Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, tensor=metadata.NULL_TENSOR,
                                                   metadata=metadata.create_summary_metadata(end))])

        def write(writer: Any) -> None:
            for key, value in (metrics or {}).items():
                number = _number(value)
                if number is not None and math.isfinite(number):
                    writer.add_scalar(f"final/{key}", number, step)
            writer.file_writer.add_summary(end_summary, step)

        self._write(write)
        self.close()

    def close(self) -> None:
        """Flush and close the event file (a later event opens a new one)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except OSError:
                pass

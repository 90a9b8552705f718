"""Notebook execution: the papermill call, HTML export, parameter loading.

``fgvc run``, ``fgvc train`` and the grid's workers all come through here; the notebook file of a name is the
one its declaration in :mod:`fgvc_lib.catalog` gives (a declared ``path`` wins).

One execution is an *attempt* on a run folder, made while this process holds the folder's lock
(:func:`fgvc_lib.runs.prepare_run_dir`; the kernel shares it). The notebook executes into a hidden
``.<notebook>.attempt-<pid>.ipynb`` and is moved into place when it ends:

- finished: ``<notebook>.ipynb`` and ``.html`` (replacing an earlier attempt's);
- failed, and the folder has no ``<notebook>.ipynb`` yet: ``<notebook>.ipynb`` / ``.html`` and ``error.log``;
- failed, and an earlier attempt's ``<notebook>.ipynb`` is there (a resume): the earlier files stay as they
  are; this attempt's are kept as ``<notebook>.failed-<time>.ipynb`` / ``.html`` / ``.log``.

A failure gives one line (the error, the log file with the full traceback, the notebook); when the notebook
did not record it (a cell before ``exp.run()``), ``metrics.json`` is written with ``failed``, unless the
attempt did not get past the start of a resume (the earlier run's files are then left exactly as they were).

Ctrl-C (KeyboardInterrupt while the notebook executes) is not a failure: papermill shuts the kernel down, the
attempt's notebook is placed as a failed one's would be (``interrupted-<time>`` instead of ``failed-<time>``, no
HTML, no log), ``metrics.json`` says ``interrupted`` with the epochs done, and :class:`RunInterrupted` carries
the run folder and the checkpoint kept, for one line that says how to resume.

What the notebook prints can be followed while it runs: ``echo`` receives each line of its stdout
(:class:`LineEcho`: whole lines, a ``\r``-rewritten line in its last state, no colour codes); figures, HTML and
stderr (progress bars) stay in the executed notebook only. Echoing reads outputs and changes nothing executed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .catalog import get_notebook
from .config import ParameterError, params_class, read_yaml_file
from .config import parse_overrides as _overrides
from .fileio import OUTPUT_ERRNOS, OutputWriteError, describe_write_error, write_text_atomic
from .param_paths import path_params, resolve_param_paths
from .resume import resume_values
from .run_summary import shown_path
from .runs import (
    earlier_run_files,
    lock_shared_with_children,
    prepare_run_dir,
    project_root,
    read_metrics,
    release_run_dir,
    write_metrics,
)

#: Kernel options: the kernel's own log stays quiet. jupyter_client interrupts a kernel before shutting it
#: down, and an idle ipykernel logs that SIGINT as "ERROR | KeyboardInterrupt caught in kernel" on the
#: console of a run that finished fine; errors of the notebook's cells reach us through the messages.
QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]


def notebook_path(name: str) -> Path:
    """The notebook file of a declared notebook (:mod:`fgvc_lib.catalog`): its declared ``path``, else
    ``notebooks/<name>.ipynb`` of the checkout this package lives in, else of the current project."""
    declaration = get_notebook(name)
    path = declaration.notebook_path()
    if path.is_file():
        return path
    if declaration.path:
        raise FileNotFoundError(f"notebook {name!r}: its declared file {path} does not exist")
    fallback = project_root() / "notebooks" / f"{name}.ipynb"
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(
        f"notebook notebooks/{name}.ipynb not found next to fgvc_lib or in {project_root()}"
    )


def read_parameter_file(file: str | Path) -> dict[str, Any]:
    """A YAML parameter file as a mapping; ParameterError naming the file (and ``FILE:LINE:COLUMN`` of a syntax
    error, :func:`fgvc_lib.config.read_yaml_file`) when it is not one."""
    data = read_yaml_file(file) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"parameter file {file}: expected a mapping of name: value")
    return data


def load_values(
    files: list[str] | None, pairs: list[list[str]] | None, *, notebook: str | None = None
) -> dict[str, Any]:
    """Parameter files (later wins), then ``-p key value`` overrides: what ``fgvc run`` and ``fgvc train`` pass
    on. Relative paths (:mod:`fgvc_lib.param_paths`) are made absolute: a file's against its folder, an
    override's against the working folder."""
    names = path_params(params_class(notebook)) if notebook else None
    values: dict[str, Any] = {}
    for file in files or []:
        data = read_parameter_file(file)
        values.update(resolve_param_paths(data, Path(file).resolve().parent, names))
    values.update(resolve_param_paths(_overrides(pairs), Path.cwd(), names))
    return values


def prepare_values(notebook: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values a run starts from: relative paths against the working folder, and for ``resume`` the run's
    own ``params.yaml`` underneath (a changed parameter is refused, :mod:`fgvc_lib.resume`)."""
    cls = params_class(notebook)
    return resume_values(cls, resolve_param_paths(values, Path.cwd(), path_params(cls)))


class NotebookFailed(RuntimeError):
    """A cell of the notebook raised; the message is one line (the error, the log, the notebook). ``ename`` /
    ``evalue`` are the cell's exception, as papermill gives them."""

    def __init__(self, message: str, ename: str, evalue: str, log: Path | None, notebook: Path | None):
        super().__init__(message)
        self.ename, self.evalue, self.log, self.notebook = ename, evalue, log, notebook


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a notebook run; the run folder and what it kept are settled (``metrics.json`` says
    ``interrupted``). :meth:`summary` is the one line to show: what was kept and the command that resumes."""

    def __init__(self, notebook: str, run_dir: Path, *, started: bool = True, finished: bool = False):
        super().__init__(f"{notebook}: interrupted ({run_dir})")
        self.notebook, self.run_dir, self.started, self.finished = notebook, Path(run_dir), started, finished
        self.checkpoint = self.run_dir / "checkpoints" / "last.pt"
        try:
            self.epochs = int(read_metrics(self.run_dir).get("epochs_run") or 0) if started else 0
        except (OSError, ValueError, TypeError):
            self.epochs = 0

    def resume_command(self, program: str = "fgvc") -> str | None:
        """``fgvc run NOTEBOOK --run-dir FOLDER -p resume true`` (the rest comes from the run's ``params.yaml``);
        None without a checkpoint to resume from."""
        if not self.checkpoint.is_file():
            return None
        return shlex.join([*shlex.split(program), "run", self.notebook, "--run-dir", shown_path(self.run_dir),
                           "-p", "resume", "true"])

    def summary(self, program: str = "fgvc") -> str:
        """One line: ``interrupted after epoch N; kept checkpoints/last.pt in FOLDER; resume with: COMMAND``."""
        folder = shown_path(self.run_dir)
        if self.finished:
            return f"interrupted while writing the HTML report; the run itself finished: {folder}"
        if not self.started:
            return f"interrupted before the run started; {folder} is as it was"
        command = self.resume_command(program)
        if command is None:
            return (f"interrupted after epoch {self.epochs}, before the first checkpoint: nothing to resume "
                    f"(no checkpoints/last.pt); kept {folder}")
        return f"interrupted after epoch {self.epochs}; kept checkpoints/last.pt in {folder}; resume with: {command}"


#: Set by :func:`interrupt_once` on Ctrl-C: from then on :class:`_AfterCtrlC` drops the reports of the kernel
#: that papermill shut down.
_CTRL_C = threading.Event()


class _AfterCtrlC(logging.Filter):
    """After Ctrl-C, drops what papermill and asyncio report about the kernel papermill shut down: "Kernel died
    while waiting for execute reply" and the cell's task that ended with DeadKernelError ("Task exception was
    never retrieved", often printed as the process exits). The one line of :class:`RunInterrupted` says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _CTRL_C.is_set():
            return True
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Kernel died") or type(error).__name__ == "DeadKernelError")


@contextlib.contextmanager
def _headless_kernel() -> Iterator[None]:
    """The kernel papermill starts inherits ``FGVC_HEADLESS=1``: no progress bar is saved into the executed
    notebook (display only: nothing computed changes)."""
    previous = os.environ.get("FGVC_HEADLESS")
    os.environ["FGVC_HEADLESS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FGVC_HEADLESS", None)
        else:
            os.environ["FGVC_HEADLESS"] = previous


@contextlib.contextmanager
def interrupt_once() -> Iterator[None]:
    """While the block runs, the first SIGINT raises KeyboardInterrupt as usual and later ones are ignored, so
    a second Ctrl-C cannot break the settling of the first, and the kernel's shutdown is not reported as an
    error (:class:`_AfterCtrlC`); the previous handler is back afterwards. Outside the main thread, or where
    SIGINT is ignored: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    for name in ("papermill", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AfterCtrlC) for f in logger.filters):
            logger.addFilter(_AfterCtrlC())

    def first(signum: int, frame: Any) -> None:
        _CTRL_C.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    _CTRL_C.clear()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, `cmd &`): stays so
        yield
        return
    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LineEcho:
    """A file-like sink for papermill's ``stdout_file``: the text the notebook prints, passed on to
    ``write_line`` one whole line at a time; a line rewritten with ``\r`` (a text progress bar) shows its last
    state, colour codes are removed and empty lines dropped."""

    def __init__(self, write_line: Callable[[str], None]):
        self.write_line = write_line
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        line = _ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1]).rstrip()
        if line.strip():
            self.write_line(line)

    def flush(self) -> None:
        """Nothing to do: a line is passed on when it is complete (:meth:`close` passes on the rest)."""

    def close(self) -> None:
        pending, self._pending = self._pending, ""
        self._emit(pending)


def print_line(line: str) -> None:
    """The default ``echo``: the line on this process's stdout at once, above papermill's cell bar when one is
    shown (``--progress``) rather than through it."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def papermill_log_to_stderr() -> None:
    """Show papermill's own log (each cell as it starts, all the notebook's output) on stderr: papermill logs
    through :mod:`logging`, which nothing configures otherwise."""
    logger = logging.getLogger("papermill")
    if not any(getattr(h, "_fgvc", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._fgvc = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


class NotebookAttempt:
    """One execution of ``notebook`` in ``run_dir`` (the module docstring says where its files go)."""

    def __init__(self, run_dir: Path, notebook: str):
        self.run_dir, self.notebook = run_dir, notebook
        self.final = run_dir / f"{notebook}.ipynb"
        self.had_notebook = self.final.exists()
        self.earlier = bool(earlier_run_files(run_dir))
        self.params_stamp = _stamp(run_dir / "params.yaml")
        self.metrics_stamp = _stamp(run_dir / "metrics.json")
        for stale in run_dir.glob(f".{notebook}.attempt-*.ipynb"):  # a killed attempt's (we hold the lock)
            stale.unlink(missing_ok=True)
        self.path = run_dir / f".{notebook}.attempt-{os.getpid()}.ipynb"

    def started(self) -> bool:
        """Whether the attempt changed the run: a fresh folder always; a resume once the experiment accepted
        it (it rewrites ``params.yaml`` after the checkpoint loaded)."""
        return not self.earlier or _stamp(self.run_dir / "params.yaml") != self.params_stamp

    def finished(self, html: bool) -> Path:
        os.replace(self.path, self.final)
        if html:
            export_html(self.final)
        return self.final

    def _place_failed(self, html: bool, label: str = "failed") -> tuple[Path, Path]:
        """Move the failed (``label``: or interrupted) attempt's notebook where it belongs; returns (notebook,
        log file)."""
        if self.had_notebook:
            when = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            stem, n = f"{self.notebook}.{label}-{when}", 1
            while (self.run_dir / f"{stem}.ipynb").exists():
                n += 1
                stem = f"{self.notebook}.{label}-{when}-{n}"
            target, log = self.run_dir / f"{stem}.ipynb", self.run_dir / f"{stem}.log"
        else:
            target, log = self.final, self.run_dir / "error.log"
        if self.path.exists():
            os.replace(self.path, target)
            if html:
                try:
                    export_html(target)
                except Exception:  # the notebook itself is what matters; a broken one has no HTML
                    pass
        return target, log

    def failed(self, exc: BaseException, params: dict[str, Any], html: bool) -> BaseException:
        """Settle a failed attempt; returns the exception to raise (one line for a failing cell)."""
        if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:  # papermill could not save the notebook
            self.path.unlink(missing_ok=True)
            error = OutputWriteError(describe_write_error(self.path.with_name(self.final.name), exc),
                                     self.final, exc.errno)
            ours = f"OutputWriteError: {error}"
            recorded = self._record(ours, "", params)
            if recorded and recorded != ours:
                error.args = (f"{error}; the run recorded: {recorded}",)
            return error
        target, log = self._place_failed(html)
        from papermill.exceptions import PapermillExecutionError

        if isinstance(exc, PapermillExecutionError):
            ename, evalue = exc.ename, " ".join(str(exc.evalue).split())
            text = _ANSI.sub("", "\n".join(exc.traceback))
            header = f"{self.notebook}: cell In [{exc.exec_count}] raised {exc.ename}: {exc.evalue}\n\n"
        else:
            ename, evalue = type(exc).__name__, " ".join(str(exc).split())
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            header = f"{self.notebook}: the notebook could not be executed: {ename}: {evalue}\n\n"
        try:
            write_text_atomic(log, header + text + "\n")
        except (OSError, OutputWriteError):
            log = None
        kernel_ran = isinstance(exc, PapermillExecutionError) or _stamp(self.run_dir / "params.yaml") != (
            self.params_stamp
        )
        if kernel_ran:  # (a kernel that never started, e.g. a port clash, leaves the folder free for a retry)
            self._record(f"{ename}: {evalue}", text, params)
        if not isinstance(exc, PapermillExecutionError):
            return exc
        short = evalue if len(evalue) <= 600 else evalue[:600] + " ..."
        where = f"full traceback: {log}; " if log else ""
        return NotebookFailed(
            f"{ename}: {short} ({where}notebook: {target})", ename, str(exc.evalue), log, target
        )

    def interrupted(self, params: dict[str, Any]) -> RunInterrupted:
        """Settle an attempt stopped by Ctrl-C (the kernel is down). One that started: its notebook placed as a
        failed one's, no HTML, and ``metrics.json`` says ``interrupted`` (a run that had just finished stays
        finished). A resume stopped before it started leaves the folder as it was."""
        from .outcome import settle_interrupted

        if not self.started():
            self.path.unlink(missing_ok=True)
            return RunInterrupted(self.notebook, self.run_dir, started=False)
        try:
            self._place_failed(html=False, label="interrupted")
            settle_interrupted(self.notebook, params, self.run_dir, 0.0)
        except (OSError, OutputWriteError):  # best effort, as for a failure: the line still says what is there
            pass
        return RunInterrupted(self.notebook, self.run_dir)

    def _record(self, error: str, tb: str, params: dict[str, Any]) -> str:
        """Write ``failed`` to ``metrics.json`` when the attempt started and the notebook did not record its
        failure itself; returns the error the run recorded. Best effort: a full disk may refuse this too."""
        if not self.started():
            return ""
        try:
            metrics = read_metrics(self.run_dir)
        except (OSError, ValueError):
            metrics = {}
        if metrics.get("status") == "failed" and _stamp(self.run_dir / "metrics.json") != self.metrics_stamp:
            return str(metrics.get("error") or error)  # the notebook recorded it during this attempt
        kept = {k: v for k, v in metrics.items() if k not in ("notebook", "params", "status", "seconds", "error")}
        if tb and "traceback" not in kept:
            kept["traceback"] = tb
        try:
            write_metrics(self.run_dir, notebook=self.notebook, params=metrics.get("params") or params,
                          status="failed", seconds=float(metrics.get("seconds") or 0.0), error=error, **kept)
        except (OSError, OutputWriteError):
            pass
        return error


def execute_notebook(
    notebook: str,
    values: dict[str, Any],
    *,
    progress: bool = False,
    html: bool = True,
    log_output: bool = False,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Validate ``values`` against the notebook's parameter class (for ``resume``: against the run's own
    ``params.yaml``, which fills in what is not given), take the run folder and execute the notebook there with
    papermill (executed ``.ipynb`` + ``.html`` land in the run folder, as the module docstring says).
    ``echo`` receives each line the notebook prints on stdout as it comes (:class:`LineEcho`); ``log_output``
    turns on papermill's own logging. Neither changes what executes. Returns the run folder; Ctrl-C raises
    :class:`RunInterrupted`."""
    import papermill as pm

    cls = params_class(notebook)
    values = prepare_values(notebook, values)
    params = cls.from_dict(values)  # fail before a kernel starts
    source = notebook_path(notebook)
    run_dir = prepare_run_dir(notebook, params.run_dir, resume=params.resume)
    try:
        resolved = params.to_dict()
        injected = {k: resolved[k] for k in values}
        injected["run_dir"] = str(run_dir)
        injected.setdefault("progress", progress)
        attempt = NotebookAttempt(run_dir, notebook)
        stdout = LineEcho(echo) if echo is not None else None
        try:
            with lock_shared_with_children(run_dir), _headless_kernel():
                pm.execute_notebook(
                    str(source),
                    str(attempt.path),
                    parameters=injected,
                    kernel_name="python3",
                    progress_bar=progress,
                    log_output=log_output,
                    stdout_file=stdout,
                    cwd=str(run_dir),
                    extra_arguments=QUIET_KERNEL,
                )
        except KeyboardInterrupt:
            raise attempt.interrupted({**resolved, "run_dir": str(run_dir)}) from None
        except BaseException as exc:
            error = attempt.failed(exc, {**resolved, "run_dir": str(run_dir)}, html)
            if error is exc:
                raise
            raise error from exc
        finally:
            if stdout is not None:
                stdout.close()
        try:
            attempt.finished(html)
        except KeyboardInterrupt:
            raise RunInterrupted(notebook, run_dir, finished=True) from None
    finally:
        release_run_dir(run_dir)
    return run_dir


def report_title(notebook_file: str | Path) -> str:
    """``<notebook> - <run id>``: the notebook's name and its run folder's name (``bird - 20240101-120000``)."""
    notebook_file = Path(notebook_file)
    run_id = notebook_file.resolve().parent.name
    return f"{notebook_file.stem} - {run_id}" if run_id else notebook_file.stem


def export_html(notebook_file: str | Path, title: str | None = None) -> Path:
    """Render an executed notebook to HTML next to it, titled ``title`` (default :func:`report_title`)."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook_file = Path(notebook_file)
    resources = {"metadata": {"name": title or report_title(notebook_file)}}
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_file, as_version=4), resources=resources)
    return write_text_atomic(notebook_file.with_suffix(".html"), body)

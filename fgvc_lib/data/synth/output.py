"""``fgvc synth --out DIR``: write a data set into a folder without touching what is not ours.

The writer fills a hidden staging folder inside ``DIR`` (``.fgvc-synth-tmp-<pid>``); its files are then moved
into ``DIR`` one by one, and ``DIR/.fgvc-synth.json`` (the manifest) records the data set, its options and every
file written. So:

- a new or empty ``DIR`` is written;
- a ``DIR`` whose manifest names the same data set and options is written again (idempotent: same bytes);
- any other non-empty ``DIR`` is refused unless ``--overwrite``; then the files synth writes replace those of
  the same name, files an earlier synth run listed in the manifest and no longer writes are removed, and every
  other file stays where it is.

The manifest is written (as ``complete: false``, listing the old and new files) before the first file moves, so
an interrupted write is still recognised as synth's own and finished by the next run with the same options.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...fileio import OUTPUT_ERRNOS, OutputWriteError, output_error, write_text_atomic

MANIFEST = ".fgvc-synth.json"
STAGING_PREFIX = ".fgvc-synth-tmp-"
#: Moved last (the readers' completeness markers), in this order; then the manifest says ``complete``.
_LAST = ("images.txt", "train2019.json", ".complete")


class OutDirNotEmpty(ValueError):
    """``--out`` holds files synth did not write (or synth output with other options) and no ``--overwrite``."""


def effective_options(synth: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The options a write uses, by CLI name: the writer's own defaults, the declared defaults, then ``given``."""
    from ...catalog import import_object

    try:
        signature = inspect.signature(import_object(synth.writer))
        own = {
            cli: signature.parameters[kw].default
            for cli, kw in synth.options.items()
            if kw in signature.parameters and signature.parameters[kw].default is not inspect.Parameter.empty
        }
    except (ImportError, ValueError, TypeError):
        own = {}
    return {**own, **dict(synth.defaults), **{k: v for k, v in given.items() if v is not None}}


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of an earlier ``fgvc synth`` into ``out``; None when there is none (or it is unreadable)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return None
    return data


def _write_manifest(out: Path, dataset: str, options: dict[str, Any], files: list[str], complete: bool) -> None:
    payload = {"written_by": "fgvc synth", "dataset": dataset, "options": options, "complete": complete,
               "files": files}
    write_text_atomic(out / MANIFEST, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_staging(out: Path) -> None:
    """Staging folders of killed synth runs (their process is gone)."""
    for entry in out.glob(f"{STAGING_PREFIX}*"):
        pid = entry.name[len(STAGING_PREFIX):]
        if entry.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _check_refusal(out: Path, dataset: str, options: dict[str, Any], manifest: dict[str, Any] | None,
                   overwrite: bool) -> None:
    entries = [p for p in out.iterdir() if not p.name.startswith(STAGING_PREFIX)] if out.is_dir() else []
    if not entries or overwrite:
        return
    if manifest is not None and manifest.get("dataset") == dataset and manifest.get("options") == options:
        return
    if manifest is not None and manifest.get("dataset") == dataset:
        old = manifest.get("options") or {}
        diff = ", ".join(f"--{k.replace('_', '-')} {old.get(k)} -> {options.get(k)}"
                         for k in sorted(set(old) | set(options)) if old.get(k) != options.get(k))
        reason = f"holds `fgvc synth {dataset}` output written with other options ({diff})"
    elif manifest is not None:
        reason = f"holds `fgvc synth {manifest.get('dataset')}` output"
    else:
        reason = f"is not empty ({len(entries)} entries) and was not written by `fgvc synth`"
    raise OutDirNotEmpty(
        f"--out {out} {reason}; pass --overwrite to write there anyway (only the files synth writes are "
        f"replaced, other files are kept) or choose an empty folder"
    )


def _check_places(out: Path, files: list[str]) -> None:
    """Every file can go where it belongs: no folder of that name, no file where a parent folder goes."""
    for rel in files:
        dest = out / rel
        if dest.is_dir() and not dest.is_symlink():
            raise OutDirNotEmpty(f"--out {out}: {dest} is a folder where synth writes a file; move it away first")
        for parent in Path(rel).parents:
            if str(parent) != "." and (out / parent).exists() and not (out / parent).is_dir():
                raise OutDirNotEmpty(
                    f"--out {out}: {out / parent} is a file where synth writes a folder; move it away first"
                )


def _move_order(files: list[str]) -> list[str]:
    def key(rel: str) -> tuple[int, int, str]:
        top = "/" not in rel
        return (int(top), _LAST.index(rel) if rel in _LAST else -1, rel)

    return sorted(files, key=key)


def _prune_empty(out: Path, rel: str) -> None:
    for parent in Path(rel).parents:
        if str(parent) == ".":
            return
        try:
            (out / parent).rmdir()  # only when empty: a folder holding the user's files stays
        except OSError:
            return


def write_owned(synth: Any, out: str | Path, given: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``synth``'s data set (a :class:`fgvc_lib.catalog.Synth`) with the options ``given`` into ``out``
    as the module docstring says; returns the root the writer reports, inside ``out``."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a directory path, got the existing file {out}")
    options = effective_options(synth, given)
    manifest = read_manifest(out)
    _check_refusal(out, synth.name, options, manifest, overwrite)
    created = not out.exists()
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    failed = True
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(out)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        root = Path(synth.write(staging, given))
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        old_files = [f for f in (manifest or {}).get("files", []) if isinstance(f, str)]
        _check_places(out, files)
        _write_manifest(out, synth.name, options, sorted(set(files) | set(old_files)), complete=False)
        for rel in _move_order(files):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, out / rel)
        for rel in sorted(set(old_files) - set(files)):  # an earlier synth run's files that are no longer written
            if ".." not in Path(rel).parts and not Path(rel).is_absolute():
                (out / rel).unlink(missing_ok=True)
                _prune_empty(out, rel)
        _write_manifest(out, synth.name, options, files, complete=True)
        failed = False
    except OSError as exc:
        if exc.errno in OUTPUT_ERRNOS or exc.errno == errno.ENOTDIR:
            raise output_error(exc.filename or out, exc) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if failed and created:
            try:
                out.rmdir()  # only if nothing else is there
            except OSError:
                pass
    return out / root.relative_to(staging) if root.is_relative_to(staging) else root


__all__ = ["MANIFEST", "OutDirNotEmpty", "OutputWriteError", "read_manifest", "write_owned"]

"""The run folder: the contract between training, analysis and the report.

A run folder contains ``config.json`` (resolved config and provenance),
``status.json`` (running, finished or failed), ``metrics.csv`` (one row per
epoch) and ``checkpoints/epoch_NNNNNNN.safetensors``. Everything downstream
is computed from these files alone.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groklab.config import ConfigError, RunConfig, short_repr
from groklab.training.lock import folder_is_empty, is_lock_entry

METRIC_COLUMNS = [
    "epoch",
    "train/loss",
    "train/acc",
    "test/loss",
    "test/acc",
    "param_norm",
]


class RunFolderError(ValueError):
    """A run folder is missing, incomplete, corrupt or would be overwritten."""


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; results are shared files,
# so they get the permissions a plain open() would give them.
FILE_MODE = 0o666 & ~_process_umask()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed to ``path`` if the block succeeds.

    A crash or an exception inside the block leaves ``path`` as it was and
    removes the temporary file, so no reader ever sees a half-written file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def is_run_folder(path: Path) -> bool:
    """Return True when ``path`` looks like a folder written by groklab train.

    config.json alone makes a run folder, because a run whose status.json is
    missing can still be resumed from its checkpoints.
    """
    return (Path(path) / "config.json").is_file()


HEADER_FILES = {"config.json", "status.json"}


def is_partial_run_folder(path: Path) -> bool:
    """Return True for a run folder stopped while its header was written.

    Such a folder contains status.json without config.json, and otherwise
    only lock files and temporary files of groklab's atomic writes, so no
    epoch was trained in it. A folder with config.json is a run folder.
    """
    path = Path(path)
    if not path.is_dir() or is_run_folder(path):
        return False
    names = {
        entry.name for entry in path.iterdir()
        if not is_lock_entry(entry.name) and not entry.name.startswith(".tmp-")
    }
    return bool(names) and names <= HEADER_FILES


def check_run_dir(run_dir: Path, force: bool) -> None:
    """Raise RunFolderError unless ``run_dir`` may be (re)created; changes nothing.

    A new or empty folder is always fine, and a folder that contains only its
    lock file counts as empty. ``force`` replaces only an existing groklab run
    folder, and never the working folder or one that contains it.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file: choose another --out")
    if not run_dir.exists() or folder_is_empty(run_dir):
        return
    if not force:
        raise RunFolderError(
            f"run folder {run_dir} already exists: pass --force to replace it "
            "or choose another --out"
        )
    if not is_run_folder(run_dir) and not is_partial_run_folder(run_dir):
        raise RunFolderError(
            f"folder {run_dir} is not empty and not a groklab run folder, so --force "
            "does not replace it: choose a new or empty --out"
        )
    cwd = Path.cwd().resolve()
    if cwd == run_dir.resolve() or run_dir.resolve() in cwd.parents:
        raise RunFolderError(
            f"run folder {run_dir} contains the working folder: run from elsewhere "
            "or choose another --out"
        )


def prepare_run_dir(run_dir: Path, force: bool) -> Path:
    """Create an empty run folder after :func:`check_run_dir` allows it.

    Replacing a run folder deletes everything in it except its lock file,
    which the process that replaces the folder holds.
    """
    check_run_dir(run_dir, force)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for entry in run_dir.iterdir():
        if is_lock_entry(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return run_dir


def versions() -> dict[str, str]:
    """Return the versions of Python and the libraries that shape the results."""
    import matplotlib
    import safetensors
    import torch

    import groklab

    found = {
        "groklab": groklab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "matplotlib": matplotlib.__version__,
    }
    try:
        from importlib.metadata import version

        found["mcising"] = version("mcising")
    except Exception:  # noqa: BLE001 - the sampler is only needed for Ising
        found["mcising"] = "not installed"
    return found


@dataclass
class Run:
    """A run folder read back from disk."""

    path: Path
    config: RunConfig
    provenance: dict[str, Any]
    status: dict[str, Any]
    metrics: dict[str, np.ndarray]

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Return (epoch, path) of every checkpoint, sorted by epoch."""
        return list_checkpoints(self.path)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Return (epoch, path) of every checkpoint in ``run_dir``, sorted by epoch."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("epoch_*.safetensors"):
        match = re.fullmatch(r"epoch_(\d+)\.safetensors", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_run(
    run_dir: Path, *, allow_unfinished: bool = False, allow_failed: bool = False
) -> Run:
    """Read a run folder, raising RunFolderError with the fix if it is unusable.

    Only finished runs are read, unless ``allow_failed`` admits failed runs
    (their checkpoints end before the failure) or ``allow_unfinished`` admits
    runs in any state.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(
            f"{run_dir} is a file, not a run folder: pass a folder written by groklab train"
        )
    if not run_dir.is_dir():
        raise RunFolderError(
            f"run folder {run_dir} not found: pass a folder written by groklab train"
        )
    header, config, status = read_header(run_dir)
    state = status.get("state", "unknown")
    if not (allow_unfinished or state == "finished" or (allow_failed and state == "failed")):
        raise RunFolderError(unfinished_message(run_dir, status))
    metrics = read_metrics(run_dir / "metrics.csv")
    return Run(run_dir, config, header.get("provenance", {}), status, metrics)


def unfinished_message(run_dir: Path, status: dict[str, Any]) -> str:
    """Return why a run that is not finished cannot be analysed, and what to do."""
    state = status.get("state", "unknown")
    message = str(status.get("message") or "").strip()
    reason = f" ({message.splitlines()[0]})" if message else ""
    if state == "failed":
        fix = (
            "analyses skip failed runs; pass --allow-failed to analyse the checkpoints "
            "written before the failure, or fix the cause and train again with --force"
        )
    else:
        fix = f"continue it with groklab train --resume {run_dir}"
    return f"run {run_dir} is {state}, not finished{reason}: {fix}"


def read_config(run_dir: Path) -> tuple[dict[str, Any], RunConfig]:
    """Return ``config.json`` of a run folder and its parsed, validated config.

    Raises RunFolderError when the file is missing or invalid.
    """
    run_dir = Path(run_dir)
    header = _read_json(
        run_dir / "config.json",
        "restore it, or train the run again into this folder with --force",
    )
    try:
        config = RunConfig.from_dict(header["config"])
    except (KeyError, TypeError, ConfigError) as err:
        raise RunFolderError(
            f"run folder {run_dir} has an invalid config.json ({err}): re-run training"
        ) from None
    if not isinstance(header.get("provenance", {}), dict):
        raise RunFolderError(
            f"run folder {run_dir} has an invalid config.json (provenance is not a "
            "JSON object): re-run training"
        )
    return header, config


def read_header(run_dir: Path) -> tuple[dict[str, Any], RunConfig, dict[str, Any]]:
    """Return ``config.json``, its parsed config and ``status.json`` of a run folder.

    Raises RunFolderError when either file is missing or invalid.
    """
    run_dir = Path(run_dir)
    header, config = read_config(run_dir)
    status_path = run_dir / "status.json"
    if status_path.exists():
        status = _read_json(status_path, STATUS_FIX)
    else:
        status = {"state": "unknown", "message": "status.json not found"}
    # groklab writes each state as one lowercase word: running, finished, ...
    if not re.fullmatch(r"[a-z_]+", str(status.get("state"))):
        raise RunFolderError(
            f"run folder {run_dir} has an invalid status.json (state "
            f"{short_repr(status.get('state'))}): {STATUS_FIX}"
        )
    return header, config, status


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """Read ``metrics.csv`` into one float array per column."""
    if not path.is_file():
        raise RunFolderError(f"{path} not found: the run folder is incomplete")
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        columns = {c: np.array([float(r[c]) for r in rows]) for c in METRIC_COLUMNS}
    except (KeyError, ValueError, TypeError, csv.Error) as err:
        raise RunFolderError(
            f"{path} is corrupt ({type(err).__name__}: {_cut(str(err))}): re-run "
            "training"
        ) from None
    if len(rows) == 0:
        raise RunFolderError(f"{path} has no rows: re-run training")
    return columns


STATUS_FIX = (
    "delete it, and groklab train --resume continues the run from its checkpoints"
)
"""Advice for a damaged status.json: a run without one counts as unfinished."""


def _read_json(path: Path, fix: str = "") -> dict[str, Any]:
    """Return the JSON object in ``path``. ``fix`` is the repair advice for a bad file."""
    if not path.is_file():
        raise RunFolderError(
            f"{path} not found or not a file: pass a run folder written by groklab train"
        )
    fix = fix or "restore it, or run the command that wrote it again"
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError) as err:
        # ValueError covers invalid JSON, invalid UTF-8 and integers longer than
        # sys.get_int_max_str_digits(). RecursionError covers deep nesting.
        raise RunFolderError(f"{path} is corrupt ({err.__class__.__name__}): {fix}") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a JSON object: {fix}")
    return data


def _cut(text: str, limit: int = 120) -> str:
    """Return the first line of ``text``, cut to ``limit`` characters."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else f"{line[:limit - 3]}..."

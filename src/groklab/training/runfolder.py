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

from groklab.config import ConfigError, RunConfig

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
    """Return True when ``path`` looks like a folder written by groklab train."""
    return (Path(path) / "config.json").is_file() and (Path(path) / "status.json").is_file()


def check_run_dir(run_dir: Path, force: bool) -> None:
    """Raise RunFolderError unless ``run_dir`` may be (re)created; changes nothing.

    A new or empty folder is always fine. ``force`` replaces only an existing
    groklab run folder, and never the working folder or one that contains it.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file: choose another --out")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if not force:
        raise RunFolderError(
            f"run folder {run_dir} already exists: pass --force to replace it "
            "or choose another --out"
        )
    if not is_run_folder(run_dir):
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
    """Create an empty run folder after :func:`check_run_dir` allows it."""
    check_run_dir(run_dir, force)
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
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


def read_run(run_dir: Path, *, allow_unfinished: bool = False) -> Run:
    """Read a run folder, raising RunFolderError with the fix if it is unusable."""
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
    if status.get("state") != "finished" and not allow_unfinished:
        reason = f" ({status['message']})" if status.get("message") else ""
        raise RunFolderError(
            f"run {run_dir} is {status.get('state', 'unknown')}, not finished{reason}: "
            "re-run groklab train"
        )
    metrics = read_metrics(run_dir / "metrics.csv")
    return Run(run_dir, config, header.get("provenance", {}), status, metrics)


def read_header(run_dir: Path) -> tuple[dict[str, Any], RunConfig, dict[str, Any]]:
    """Return ``config.json``, its parsed config and ``status.json`` of a run folder.

    Raises RunFolderError when either file is missing or invalid.
    """
    run_dir = Path(run_dir)
    header = _read_json(run_dir / "config.json")
    try:
        config = RunConfig.from_dict(header["config"])
    except (KeyError, TypeError, ConfigError) as err:
        raise RunFolderError(
            f"run folder {run_dir} has an invalid config.json ({err}): re-run training"
        ) from None
    return header, config, _read_json(run_dir / "status.json")


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
            f"{path} is corrupt ({type(err).__name__}: {err}): re-run training"
        ) from None
    if len(rows) == 0:
        raise RunFolderError(f"{path} has no rows: re-run training")
    return columns


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunFolderError(
            f"{path} not found: pass a run folder written by groklab train"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path} is corrupt ({err.__class__.__name__}): re-run") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a JSON object: re-run")
    return data

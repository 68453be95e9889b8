"""``groklab sweep``: train a grid of runs as packed ensembles, analyse, tabulate.

Layout of a sweep folder::

    DIR/sweep.json     definition, resolved run configs, packing, backend, versions
    DIR/runs/NAME/     one run folder per grid point and seed
    DIR/results.csv    one row per run (results.parquet too with pandas + pyarrow)
    DIR/figures/       mean and spread over seeds against each grid variable
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from groklab.config import AnalysisConfig, ConfigError, RunConfig, Task
from groklab.sweep import jobs
from groklab.sweep.backends import SweepError, check_backend_options, make_backend
from groklab.sweep.grid import SweepPoint, SweepSpec
from groklab.sweep.table import current_analysis, run_row, sort_rows, write_csv, write_parquet
from groklab.training.lock import folder_is_empty, folder_lock
from groklab.training.runfolder import (
    RunFolderError,
    check_run_dir,
    prepare_run_dir,
    read_run,
    versions,
    write_json,
)

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.csv"


@dataclass
class SweepOptions:
    """How to run a sweep; none of these change its results."""

    backend: str = "local"
    address: str | None = None
    workers: int | None = None
    max_members: int = 10
    force: bool = False
    analysis: bool = True
    cache_dir: Path | None = None
    progress: bool = True


@dataclass
class SweepResult:
    """Output of a finished sweep: table, figures, rows, and the runs that fell short."""

    table: Path
    figures: list[Path]
    rows: list[dict[str, Any]]
    unfinished_runs: list[str] = field(default_factory=list)
    failed_analyses: list[str] = field(default_factory=list)


def run_sweep(
    spec: SweepSpec,
    analysis_config: AnalysisConfig,
    out: Path,
    options: SweepOptions,
) -> SweepResult:
    """Train, analyse and tabulate every point of ``spec`` into the folder ``out``.

    Everything is validated before anything is written: invalid grid values,
    a folder containing another sweep (without ``force``) or an unusable backend
    raise a ValueError and leave ``out`` as it was. The call holds the lock of
    ``out`` from its check to the end, and raises FolderLockedError when
    another process holds it. The workers lock the run folders they write.
    """
    out = Path(out)
    check_backend_options(options.backend, options.address, options.workers)
    points = spec.points()
    if options.max_members < 1:
        raise ConfigError(
            f"invalid --max-members {options.max_members}: use an integer >= 1"
        )
    from groklab.training.ensemble import pack_configs

    packs = pack_configs([p.config for p in points], options.max_members)
    record = _sweep_record(spec, analysis_config, points, packs, options)
    with folder_lock(out, "sweep folder"):
        _check_sweep_folder(out, record, options.force)
        stale = _stale_run_dirs(out, points, options.force)
        backend = make_backend(options.backend, options.address, options.workers)
        try:
            write_json(out / SWEEP_FILE, record)
            for run_dir in stale:
                with folder_lock(run_dir, "run folder"):
                    prepare_run_dir(run_dir, force=True)
            _prepare_datasets(points, options)
            _train(backend, points, packs, out, options)
            failed_analyses = _analyse(backend, points, out, analysis_config, options)
        except BaseException:
            backend.close(cancel=True)
            raise
        backend.close()
        return _tabulate(spec, points, out, analysis_config, failed_analyses)


def run_dir_of(out: Path, point: SweepPoint) -> Path:
    """Return the run folder of ``point`` inside the sweep folder ``out``."""
    return out / "runs" / point.name


def _sweep_record(spec, analysis_config, points, packs, options) -> dict[str, Any]:
    return {
        "definition": spec.to_dict(),
        "analysis_config": analysis_config.to_dict(),
        "runs": [{"name": p.name, "config": p.config.to_dict()} for p in points],
        "packs": [[points[i].name for i in pack] for pack in packs],
        "max_members": options.max_members,
        "backend": options.backend,
        "address": options.address,
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _check_sweep_folder(out: Path, record: dict[str, Any], force: bool) -> None:
    """Raise SweepError unless ``out`` is new, empty, or contains this same sweep.

    The same sweep means the same resolved run configs and analysis settings;
    the backend, workers and packing may differ. ``force`` accepts another
    sweep's folder (finished runs whose config matches are still reused), but
    never a non-empty folder without sweep.json.
    """
    if out.exists() and not out.is_dir():
        raise SweepError(f"sweep folder {out} is a file: choose another --out")
    if not out.exists() or folder_is_empty(out):
        return
    path = out / SWEEP_FILE
    if not path.is_file():
        raise SweepError(
            f"folder {out} is not empty and has no {SWEEP_FILE}, so it is not a sweep "
            "folder: choose a new or empty --out"
        )
    try:
        previous = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SweepError(
            f"{path} is corrupt ({type(err).__name__}): restore it or choose another --out"
        ) from None
    same = isinstance(previous, dict) and all(
        previous.get(key) == record[key] for key in ("runs", "analysis_config")
    )
    if not same and not force:
        raise SweepError(
            f"sweep folder {out} contains a sweep with other runs or analysis settings: "
            "pass --force to run this sweep there, or choose another --out"
        )


def _stale_run_dirs(out: Path, points: list[SweepPoint], force: bool) -> list[Path]:
    """Return the run folders that contain a run of another config; changes nothing.

    Training resumes or skips run folders of the same config, so only these
    need replacing, which needs ``force``. A non-empty folder that is not a
    groklab run folder is never replaced.
    """
    stale = []
    for point in points:
        run_dir = run_dir_of(out, point)
        if not run_dir.exists() or (run_dir.is_dir() and folder_is_empty(run_dir)):
            continue
        check_run_dir(run_dir, force=True)  # raises for files and foreign folders
        try:
            saved = _saved_config(run_dir)
        except (OSError, ValueError, KeyError, TypeError) as err:
            reason = f"its config.json is unreadable ({type(err).__name__}: {err})"
        else:
            differing = [k for k, v in point.config.to_dict().items() if saved.get(k) != v]
            if not differing:
                continue
            key = differing[0]
            reason = f"it was trained with {key}={saved.get(key)!r}, not " \
                f"{point.config.to_dict()[key]!r}"
        if not force:
            raise SweepError(
                f"run folder {run_dir} does not match the sweep: {reason}. Pass --force "
                "to replace it, or choose another --out"
            )
        stale.append(run_dir)
    return stale


def _saved_config(run_dir: Path) -> dict[str, Any]:
    """Return the resolved config stored in a run folder's config.json."""
    header = json.loads((run_dir / "config.json").read_text())
    return RunConfig.from_dict(header["config"]).to_dict()


def _prepare_datasets(points: list[SweepPoint], options: SweepOptions) -> None:
    """Build each distinct Ising dataset once, before parallel jobs race to write it."""
    from groklab.tasks.loader import load_task

    built: set[str] = set()
    for point in points:
        config = point.config
        if config.task is not Task.ISING or config.ising_data_file is not None:
            continue
        key = json.dumps(
            {k: v for k, v in config.to_dict().items()
             if k.startswith("ising_") or k == "data_seed"},
            sort_keys=True,
        )
        if key not in built:
            load_task(config, options.cache_dir, progress=options.progress)
            built.add(key)


def _train(backend, points, packs, out, options) -> None:
    """Train every pack with an unfinished member, printing each member that failed."""
    # Jobs get absolute paths: Ray workers do not share the driver's working folder.
    root = out.resolve()
    cache = str(options.cache_dir.resolve()) if options.cache_dir else None
    todo = [
        pack for pack in packs
        if not all(_is_finished(run_dir_of(out, points[i]), points[i].config) for i in pack)
    ]
    arguments = [
        (
            [points[i].config for i in pack],
            [str(run_dir_of(root, points[i])) for i in pack],
            cache,
        )
        for pack in todo
    ]
    results = backend.map(jobs.train_pack, arguments, "packs trained", options.progress)
    for pack, outcomes in zip(todo, results):
        for i, outcome in zip(pack, outcomes):
            if outcome["state"] == "failed":
                print(f"groklab sweep: run {points[i].name} failed: {outcome['message']}",
                      file=sys.stderr)


def _is_finished(run_dir: Path, config: RunConfig) -> bool:
    """Return True when ``run_dir`` contains a finished run of exactly ``config``."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
        return status.get("state") == "finished" and _saved_config(run_dir) == (
            config.to_dict())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _analyse(backend, points, out, analysis_config, options) -> list[str]:
    """Analyse finished runs whose analysis.json is missing or stale; return failures."""
    if not options.analysis:
        return []
    todo = []
    broken = []
    for point in points:
        run_dir = run_dir_of(out, point)
        try:
            read_run(run_dir)
        except RunFolderError as err:
            # A run marked finished whose files are missing or damaged cannot be
            # analysed, and must not pass as merely unanalysed.
            if _is_finished(run_dir, point.config):
                broken.append(point.name)
                print(f"groklab sweep: analysis of {point.name} failed: {err}",
                      file=sys.stderr)
            continue
        if current_analysis(run_dir, analysis_config) is None:
            todo.append(point)

    root = out.resolve()
    cache = str(options.cache_dir.resolve()) if options.cache_dir else None
    arguments = [(str(run_dir_of(root, p)), analysis_config, cache) for p in todo]
    results = backend.map(jobs.analyze, arguments, "runs analysed", options.progress)

    failed = broken
    for point, result in zip(todo, results):
        if not result["ok"]:
            failed.append(point.name)
            print(f"groklab sweep: analysis of {point.name} failed: {result['message']}",
                  file=sys.stderr)
    return failed


def _tabulate(spec, points, out, analysis_config, failed_analyses) -> SweepResult:
    """Write results.csv (and Parquet when possible) and the aggregate figures."""
    from groklab.report.sweep import write_sweep_figures

    rows = []
    for point in points:
        run_dir = run_dir_of(out, point)
        analysis = current_analysis(run_dir, analysis_config)
        if analysis is not None:
            state = "done"
        elif point.name in failed_analyses:
            state = "failed"
        else:
            state = "none"
        rows.append(run_row(point, out, run_dir, analysis, state))
    rows = sort_rows(rows, spec.keys)
    table = out / RESULTS_FILE
    write_csv(rows, table)
    write_parquet(rows, out / "results.parquet")
    figures = write_sweep_figures(rows, spec.keys, out / "figures")
    unfinished = [row["run"] for row in rows if row["state"] != "finished"]
    return SweepResult(table, figures, rows, unfinished, failed_analyses)

"""``groklab reproduce``: run the whole study and write its verdicts and report.

Layout of a study folder::

    DIR/study.json              scale, settings, versions and the sweeps it ran
    DIR/TASK/regimes/           sweep: seeds x {grok, steady} at the regime alphas
    DIR/TASK/alpha/             sweep: the extra alphas of the alpha sweep
    DIR/TASK/other_form/        pruning of the final models under the other Fisher form
    DIR/claims.json             one verdict per claim and task
    DIR/sensitivity.json        the pruning verdicts for every order and Fisher form
    DIR/trajectories.json       InPCA embedding of the trajectories, per task
    DIR/report.html, summary.json, figures/

Every stage reuses what an earlier, interrupted call finished: runs, analyses,
other-form pruning records. Re-running the same command resumes the study.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from groklab.analysis.claim_inputs import evaluate_claims
from groklab.config import AnalysisConfig, ConfigError, RunConfig, Task
from groklab.study.config import StudyConfig
from groklab.study.sensitivity import other_form_pruning, robustness, sensitivity_rows
from groklab.sweep import SweepOptions, SweepSpec, run_sweep
from groklab.sweep.backends import check_backend_options
from groklab.sweep.run import run_dir_of
from groklab.sweep.table import current_analysis
from groklab.training.lock import folder_is_empty, folder_lock
from groklab.training.runfolder import RunFolderError, versions, write_json

STUDY_FILE = "study.json"
REGIMES = ("grok", "steady")


@dataclass
class StudyOptions:
    """How to run a study; none of these change its results."""

    backend: str = "local"
    address: str | None = None
    workers: int | None = None
    max_members: int = 10
    force: bool = False
    cache_dir: Path | None = None
    progress: bool = True


@dataclass
class TaskRuns:
    """The finished, analysed runs of one task: regime runs and alpha-sweep runs."""

    task: str
    regime_runs: dict[str, list[Path]]
    alpha_runs: list[Path]
    analyses: dict[Path, dict[str, Any]]
    missing: list[str] = field(default_factory=list)


@dataclass
class StudyResult:
    """Outputs of a study: the report, the claims and the runs left out."""

    report: Path
    claims: list[dict[str, Any]]
    missing: list[str]


def alpha_analysis_config(config: AnalysisConfig) -> AnalysisConfig:
    """Return the settings of the alpha sweep: the final model only, no curve over time.

    The alpha figure needs the final compression factor, linear fit and
    grokking times; skipping the pruning through training halves the cost.
    """
    return AnalysisConfig(**{**config.to_dict(), "pruning_checkpoints": 0})


def regime_spec(study: StudyConfig, task: str) -> SweepSpec:
    """Return the sweep of ``seeds`` grokking and steady runs at the regime alphas."""
    return SweepSpec(
        task=task, regime=None, grid=[("regime", list(REGIMES))],
        seeds=list(range(study.seeds)),
        overrides=study.run_overrides(task),
    )


def alpha_spec(study: StudyConfig, task: str) -> SweepSpec | None:
    """Return the sweep of the extra alphas, or None when there are none.

    Alphas equal to a regime alpha are left out, since the regime runs have them.
    """
    regime_alphas = {RunConfig(task=task, regime=r).alpha for r in REGIMES}
    alphas = [a for a in study.sweep_alphas(task) if a not in regime_alphas]
    if not alphas:
        return None
    return SweepSpec(
        task=task, regime="grok", grid=[("alpha", alphas)],
        seeds=list(range(study.alpha_seeds)),
        overrides=study.run_overrides(task),
    )


def _members_per_pack(task: str, n_runs: int, workers: int, limit: int) -> int:
    """Pack runs so that every worker gets one ensemble.

    The Ising CNN trains full batch on 300 samples, where stacking members
    saves nothing on a CPU, so its runs train one per job.
    """
    if task == Task.ISING.value:
        return 1
    return max(1, min(limit, math.ceil(n_runs / workers)))


def _sweep(spec: SweepSpec, config: AnalysisConfig, out: Path, options: StudyOptions):
    workers = options.workers or len(os.sched_getaffinity(0))
    n_runs = len(spec.seeds) * math.prod(len(values) for _, values in spec.grid)
    sweep_options = SweepOptions(
        backend=options.backend, address=options.address, workers=options.workers,
        max_members=_members_per_pack(spec.task, n_runs, workers, options.max_members),
        force=options.force, cache_dir=options.cache_dir, progress=options.progress,
    )
    return run_sweep(spec, config, out, sweep_options)


def _log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.0f} s] {message}", file=sys.stderr, flush=True)


def run_task(
    study: StudyConfig, config: AnalysisConfig, task: str, out: Path,
    options: StudyOptions, start: float,
) -> TaskRuns:
    """Train and analyse one task's regime runs and alpha sweep; return their analyses."""
    _log(f"{task}: {study.seeds} seeds x grok and steady, {study.epochs(task)} epochs",
         start)
    spec = regime_spec(study, task)
    folder = out / task / "regimes"
    _sweep(spec, config, folder, options)
    runs = TaskRuns(task, {r: [] for r in REGIMES}, [], {})
    for point in spec.points():
        _collect(runs, run_dir_of(folder, point), config, point.config.regime.value)
    extra = alpha_spec(study, task)
    if extra is not None:
        alphas = ", ".join(f"{value:g}" for value in extra.grid[0][1])
        _log(f"{task}: alpha sweep at {alphas}, {study.alpha_seeds} seed(s) each", start)
        folder = out / task / "alpha"
        alpha_config = alpha_analysis_config(config)
        _sweep(extra, alpha_config, folder, options)
        for point in extra.points():
            _collect(runs, run_dir_of(folder, point), alpha_config, None)
    return runs


def _collect(runs: TaskRuns, run_dir: Path, config: AnalysisConfig, regime) -> None:
    """Add a run with an up-to-date analysis; list it as missing otherwise."""
    analysis = current_analysis(run_dir, config)
    if analysis is None:
        runs.missing.append(str(run_dir))
        return
    runs.analyses[run_dir] = analysis
    if regime is None:
        runs.alpha_runs.append(run_dir)
    else:
        runs.regime_runs[regime].append(run_dir)


def check_study_options(study: StudyConfig, options: StudyOptions) -> None:
    """Raise ConfigError for options or run configs that cannot work; writes nothing.

    Every run config of the study is built here, so an invalid run override
    fails before the first run trains.
    """
    check_backend_options(options.backend, options.address, options.workers)
    if options.max_members < 1:
        raise ConfigError(
            f"invalid --max-members {options.max_members}: use an integer >= 1"
        )
    for task in study.tasks:
        key = f"{task}_overrides"
        try:
            regime_spec(study, task).points()
            extra = alpha_spec(study, task)
            if extra is not None:
                extra.points()
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None


def check_study_folder(out: Path, record: dict[str, Any], force: bool) -> None:
    """Raise RunFolderError for a folder with a study of other settings, unless ``force``."""
    import json

    if out.exists() and not out.is_dir():
        raise RunFolderError(f"study folder {out} is a file: choose another --out")
    path = out / STUDY_FILE
    if not path.exists():
        if out.is_dir() and not folder_is_empty(out) and not force:
            raise RunFolderError(
                f"{out} is not empty and contains no {STUDY_FILE}: choose an empty --out "
                "or pass --force"
            )
        return
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            raise ValueError(f"expected a JSON object, got {type(stored).__name__}")
    except (OSError, ValueError) as err:
        if force:
            return
        raise RunFolderError(f"{path} is unreadable ({err}): pass --force to replace "
                             "it or choose another --out") from None
    for key in ("study_config", "analysis_config"):
        if stored.get(key) != record[key] and not force:
            raise RunFolderError(
                f"{path} contains a study with another {key.replace('_', ' ')}: resume "
                "it with its own settings, pass --force to replace it, or choose "
                "another --out"
            )


def reproduce(
    study: StudyConfig,
    config: AnalysisConfig,
    out: Path,
    options: StudyOptions | None = None,
) -> StudyResult:
    """Run the study into ``out`` and write claims.json and report.html.

    Finished runs, analyses and other-form pruning records in ``out`` are
    reused, so calling this again after an interruption resumes the study.
    The call holds the lock of ``out`` from its check to the end, and raises
    FolderLockedError when another process holds it.
    """
    from groklab.report.study import write_study_report

    options = options or StudyOptions()
    out = Path(out)
    check_study_options(study, options)
    record = {
        "study_config": study.to_dict(),
        "analysis_config": config.to_dict(),
        "versions": versions(),
        "backend": options.backend,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with folder_lock(out, "study folder"):
        check_study_folder(out, record, options.force)
        write_json(out / STUDY_FILE, record)
        start = time.perf_counter()
        tasks = [run_task(study, config, task, out, options, start) for task in study.tasks]
        _log("claims, sensitivity to pruning order and Fisher form", start)
        regime_analyses = [
            t.analyses[d] for t in tasks for r in REGIMES for d in t.regime_runs[r]
        ]
        claims = evaluate_claims(regime_analyses)
        other = {}
        for t in tasks:
            run_dirs = {t.analyses[d]["run"]: d for r in REGIMES for d in t.regime_runs[r]}
            other.update(other_form_pruning(
                run_dirs, {n: t.analyses[d] for n, d in run_dirs.items()}, config,
                out / t.task / "other_form", options.cache_dir,
            ))
        rows = sensitivity_rows(regime_analyses, other) if regime_analyses else []
        sensitivity = {"rows": rows, "robustness": robustness(rows)}
        _log("trajectories in information space and the report", start)
        report = write_study_report(out, study, config, tasks, claims, sensitivity,
                                    options, seconds=time.perf_counter() - start)
        missing = [m for t in tasks for m in t.missing]
        _log(f"report: {report}", start)
        return StudyResult(report, claims, missing)

"""``groklab demo``: both regimes on both tasks, analysed and compared, on quick defaults."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from groklab.config import AnalysisConfig, RunConfig
from groklab.report.compare import analysis_for, compare_runs
from groklab.tasks.loader import load_task
from groklab.training.lock import folder_is_empty
from groklab.training.runfolder import RunFolderError, read_run

# The task defaults already fit a laptop: modular addition groks within ~60 of its
# 100 epochs, and Ising alpha 10 generalises within its 20000 full-batch epochs.
DEMO_RUNS = [
    {"task": "modadd", "regime": "grok"},
    {"task": "modadd", "regime": "steady"},
    {"task": "ising", "regime": "grok"},
    {"task": "ising", "regime": "steady"},
]


def demo_configs() -> list[RunConfig]:
    """Return the four run configs of the demo."""
    return [RunConfig(**spec) for spec in DEMO_RUNS]


def is_finished_with(run_dir: Path, config: RunConfig) -> bool:
    """Return True when ``run_dir`` contains a finished run of exactly ``config``."""
    try:
        return read_run(run_dir).config.to_dict() == config.to_dict()
    except RunFolderError:
        return False


def _train_job(config: RunConfig, run_dir: Path, cache_dir, force, progress, position):
    from groklab.training.loop import train

    train(config, run_dir, cache_dir=cache_dir, force=force, progress=progress,
          position=position)
    return run_dir


def _analyze_job(run_dir: Path, progress: bool, cache_dir) -> Path:
    analysis_for(run_dir, AnalysisConfig(), progress, cache_dir)
    return run_dir


def run_demo(
    out: Path,
    *,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Train (or reuse), analyse and compare the demo runs; return report.html's path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"demo folder {out} is a file: choose another --out")
    configs = demo_configs()
    run_dirs = [out / "runs" / config.name for config in configs]
    pending = [
        (config, run_dir)
        for config, run_dir in zip(configs, run_dirs)
        if not is_finished_with(run_dir, config)
    ]
    for _, run_dir in pending:
        if run_dir.exists() and not folder_is_empty(run_dir) and not force:
            raise RunFolderError(
                f"run folder {run_dir} contains another or an unfinished run: pass --force "
                "to replace it or choose another --out"
            )
    if any(config.task.value == "ising" for config, _ in pending):
        # Build the shared Ising dataset once, before parallel runs race to write it.
        ising = next(c for c, _ in pending if c.task.value == "ising")
        load_task(ising, cache_dir, progress=progress)
    workers = workers or min(2, os.cpu_count() or 1)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    try:
        jobs = [
            pool.submit(_train_job, config, run_dir, cache_dir, True, progress, i)
            for i, (config, run_dir) in enumerate(pending)
        ]
        for job in jobs:
            job.result()
        for job in [pool.submit(_analyze_job, d, progress, cache_dir) for d in run_dirs]:
            job.result()
    except BaseException:
        # On Ctrl-C or a failed job, drop the queued runs instead of starting them.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return compare_runs(run_dirs, out, AnalysisConfig(), progress=progress, force=True,
                        cache_dir=cache_dir)

"""The two kinds of sweep job, run in worker processes by either backend.

Both are module-level functions with picklable arguments and results, so a
process pool and Ray can ship them. They return plain dicts, not objects
whose classes the driver would have to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groklab.config import AnalysisConfig, RunConfig


def train_pack(
    configs: list[RunConfig],
    run_dirs: list[str],
    cache_dir: str | None,
) -> list[dict[str, Any]]:
    """Train one pack as an ensemble, skipping finished members, resuming the rest.

    Never passes ``force``: the driver has already replaced run folders of
    another config, and ``force`` would retrain finished members too.
    """
    from groklab.training.ensemble import train_ensemble

    outcomes = train_ensemble(
        configs,
        [Path(d) for d in run_dirs],
        cache_dir=Path(cache_dir) if cache_dir else None,
        force=False,
        resume=True,
        progress=False,
    )
    return [
        {
            "run_dir": str(outcome.run_dir),
            "state": outcome.state,
            "epoch": outcome.epoch,
            "message": outcome.message,
        }
        for outcome in outcomes
    ]


def analyze(
    run_dir: str, config: AnalysisConfig, cache_dir: str | None
) -> dict[str, Any]:
    """Analyse one finished run; a run the analysis rejects is reported, not raised.

    Only ValueError (a corrupt or incomplete run folder, an invalid dataset) is
    caught, so that one bad run does not stop the others. Anything else is a
    bug and propagates.
    """
    from groklab.analysis.run import analyze_run

    try:
        analyze_run(
            Path(run_dir),
            config,
            progress=False,
            cache_dir=Path(cache_dir) if cache_dir else None,
            figures=False,
        )
    except ValueError as err:
        return {"run_dir": run_dir, "ok": False, "message": str(err)}
    return {"run_dir": run_dir, "ok": True, "message": ""}

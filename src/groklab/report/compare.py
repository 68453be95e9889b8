"""``groklab compare``: pair grokking and steady runs by task, write the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from groklab.analysis.run import ANALYSIS_FILE, analyze_run, load_analysis
from groklab.config import AnalysisConfig
from groklab.report.figures import RunView, save_figure, task_figures
from groklab.report.html import render_report
from groklab.report.summary import regime_summary, task_comparison
from groklab.training.runfolder import RunFolderError, read_run, versions, write_json, write_text


def pair_runs(run_dirs: list[Path]) -> dict[str, dict[str, Path]]:
    """Group run folders by task and regime; each task needs one grok and one steady run."""
    pairs: dict[str, dict[str, Path]] = {}
    for run_dir in run_dirs:
        run = read_run(run_dir)
        task, regime = run.config.task.value, run.config.regime.value
        slot = pairs.setdefault(task, {})
        if regime in slot:
            raise RunFolderError(
                f"two {task} {regime} runs given ({slot[regime]} and {run_dir}): "
                "pass one grok and one steady run per task"
            )
        slot[regime] = Path(run_dir)
    for task, slot in pairs.items():
        missing = {"grok", "steady"} - set(slot)
        if missing:
            raise RunFolderError(
                f"no {task} {missing.pop()} run given: pass one grok and one steady run "
                "per task"
            )
        _check_comparable(slot["grok"], slot["steady"])
    return pairs


# Fields that fix the data split and the architecture; a comparison of regimes
# is meaningful only when both runs share them.
SHARED_FIELDS = (
    "data_seed", "hidden", "p", "train_fraction", "ising_lattice", "ising_t_min",
    "ising_t_max", "ising_n_temperatures", "ising_samples_per_temperature",
    "ising_n_near_tc", "ising_near_tc_width", "ising_exclude_width", "ising_data_file",
    "ising_train", "ising_test",
)


def _check_comparable(grok_dir: Path, steady_dir: Path) -> None:
    grok, steady = read_run(grok_dir).config, read_run(steady_dir).config
    for name in SHARED_FIELDS:
        if getattr(grok, name) != getattr(steady, name):
            raise RunFolderError(
                f"runs {grok_dir} and {steady_dir} differ in {name} "
                f"({getattr(grok, name)} vs {getattr(steady, name)}): compare runs on "
                "the same data and architecture"
            )


def compare_runs(
    run_dirs: list[Path],
    out: Path,
    config: AnalysisConfig | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    cache_dir: Path | None = None,
) -> Path:
    """Analyse runs that lack an analysis, then write report.html and summary.json.

    An existing report in ``out`` is replaced only with ``force``.
    """
    config = config or AnalysisConfig()
    pairs = pair_runs(run_dirs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"report folder {out} is a file: choose another --out")
    existing = [n for n in ("report.html", "summary.json") if (out / n).exists()]
    if existing and not force:
        raise RunFolderError(
            f"{out / existing[0]} already exists: pass --force to replace it or choose "
            "another --out"
        )
    summary: dict[str, Any] = {"versions": versions(), "analysis_config": config.to_dict()}
    sections = []
    for task, slot in sorted(pairs.items()):
        views, task_summary = [], {}
        for regime in ("grok", "steady"):
            analysis = analysis_for(slot[regime], config, progress, cache_dir)
            views.append(RunView(regime, read_run(slot[regime]).metrics, analysis))
            task_summary[regime] = regime_summary(analysis)
        task_summary["comparison"] = task_comparison(task_summary["grok"], task_summary["steady"])
        summary[task] = task_summary
        figures = {
            name: save_figure(fig, out / "figures" / f"{task}_{name}")
            for name, fig in task_figures(views).items()
        }
        sections.append((task, task_summary, figures))
    write_json(out / "summary.json", summary)
    report = out / "report.html"
    write_text(report, render_report(sections, summary))
    return report


def analysis_for(
    run_dir: Path, config: AnalysisConfig, progress: bool, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Reuse analysis.json when it was made with the same settings, else analyse."""
    if (Path(run_dir) / ANALYSIS_FILE).is_file():
        try:
            existing = load_analysis(run_dir)
        except RunFolderError:
            existing = None
        if existing and existing.get("analysis_config") == config.to_dict():
            return existing
        print(f"groklab: re-analysing {run_dir}: its analysis.json used other settings",
              file=sys.stderr)
    return analyze_run(run_dir, config, progress=progress, cache_dir=cache_dir)

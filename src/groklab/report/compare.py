"""``groklab compare``: pair grokking and steady runs by task, write the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from groklab.analysis.claim_inputs import evaluate_claims
from groklab.analysis.run import ANALYSIS_FILE, analyze_run, load_analysis
from groklab.config import AnalysisConfig, RunConfig
from groklab.report.figures import RunView, save_figure, task_figures
from groklab.report.html import render_report, table_html
from groklab.report.summary import regime_summary, task_comparison
from groklab.training.lock import folder_lock
from groklab.training.runfolder import RunFolderError, read_run, versions, write_json, write_text


def pair_runs(
    run_dirs: list[Path], *, allow_failed: bool = False
) -> dict[str, dict[str, list[Path]]]:
    """Group run folders by task and regime, each list sorted by seed.

    Each task needs at least one grok and one steady run. Runs of one task and
    regime are seeds of one setting, so they may differ only in seed. Failed
    runs raise RunFolderError unless ``allow_failed`` is set.
    """
    configs = {
        Path(run_dir): read_run(run_dir, allow_failed=allow_failed).config
        for run_dir in run_dirs
    }
    runs: dict[str, dict[str, list[tuple[int, Path]]]] = {}
    for run_dir in run_dirs:
        config = configs[Path(run_dir)]
        task_runs = runs.setdefault(config.task.value, {})
        slot = task_runs.setdefault(config.regime.value, [])
        for seed, other in slot:
            if seed == config.seed:
                raise RunFolderError(
                    f"two {config.task.value} {config.regime.value} runs of seed "
                    f"{seed} given ({other} and {run_dir}): pass one run per seed"
                )
        slot.append((config.seed, Path(run_dir)))
    pairs: dict[str, dict[str, list[Path]]] = {}
    for task, regimes in runs.items():
        missing = [regime for regime in ("grok", "steady") if regime not in regimes]
        if missing:
            raise RunFolderError(
                f"no {task} {missing[0]} run given: pass at least one grok and one "
                "steady run per task"
            )
        pairs[task] = {regime: [d for _, d in sorted(regimes[regime])]
                       for regime in ("grok", "steady")}
        for regime_runs in pairs[task].values():
            _check_seeds_of_one_setting(regime_runs, configs)
        for other in pairs[task]["steady"]:
            _check_comparable(pairs[task]["grok"][0], other, configs)
        for other in pairs[task]["grok"][1:]:
            _check_comparable(pairs[task]["grok"][0], other, configs)
    return pairs


# Run config fields that may differ between seeds of one task and regime.
SEED_FIELDS = ("seed", "threads")


def _check_seeds_of_one_setting(
    run_dirs: list[Path], configs: dict[Path, RunConfig]
) -> None:
    first = configs[Path(run_dirs[0])].to_dict()
    for run_dir in run_dirs[1:]:
        config = configs[Path(run_dir)].to_dict()
        for name, value in first.items():
            if name not in SEED_FIELDS and config[name] != value:
                raise RunFolderError(
                    f"runs {run_dirs[0]} and {run_dir} differ in {name} ({value} vs "
                    f"{config[name]}): runs of one task and regime may differ only in "
                    "seed"
                )


# Fields that fix the data split and the architecture; a comparison of regimes
# is meaningful only when both runs share them.
SHARED_FIELDS = (
    "data_seed", "hidden", "p", "train_fraction", "ising_lattice", "ising_t_min",
    "ising_t_max", "ising_n_temperatures", "ising_samples_per_temperature",
    "ising_n_near_tc", "ising_near_tc_width", "ising_exclude_width", "ising_data_file",
    "ising_train", "ising_test",
)


def _check_comparable(
    grok_dir: Path, steady_dir: Path, configs: dict[Path, RunConfig]
) -> None:
    grok, steady = configs[Path(grok_dir)], configs[Path(steady_dir)]
    for name in SHARED_FIELDS:
        if getattr(grok, name) != getattr(steady, name):
            raise RunFolderError(
                f"runs {grok_dir} and {steady_dir} differ in {name} "
                f"({getattr(grok, name)} vs {getattr(steady, name)}): compare runs on "
                "the same data and architecture"
            )


REPORT_FILES = ("report.html", "summary.json", "claims.json")


def compare_runs(
    run_dirs: list[Path],
    out: Path,
    config: AnalysisConfig | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    cache_dir: Path | None = None,
    allow_failed: bool = False,
) -> Path:
    """Analyse runs that lack an analysis, then write the report, summary and claims.

    The figures and the summary table show the lowest seed of each task and
    regime, and claims.json tests the six claims on every seed. An existing
    report in ``out`` is replaced only with ``force``. The call holds the lock
    of ``out`` from its check to the end, and raises FolderLockedError when
    another process holds it. Failed runs raise RunFolderError unless
    ``allow_failed`` is set. Then they are analysed up to their last
    checkpoint, and the report lists them in a Failed runs section.
    """
    config = config or AnalysisConfig()
    pairs = pair_runs(run_dirs, allow_failed=allow_failed)
    out = Path(out)
    with folder_lock(out, "report folder"):
        _check_out(out, force)
        # Only the lowest seed of each regime is drawn in the report, so only those
        # runs get per-run figures when they are analysed here.
        analyses = {
            run_dir: analysis_for(run_dir, config, progress, cache_dir,
                                  figures=index == 0, allow_failed=allow_failed)
            for slot in pairs.values() for runs in slot.values()
            for index, run_dir in enumerate(runs)
        }
        claim_entries = evaluate_claims(list(analyses.values()))
        summary: dict[str, Any] = {"versions": versions(), "analysis_config": config.to_dict()}
        sections = []
        for task, slot in sorted(pairs.items()):
            section = task_section(task, slot, analyses, out, allow_failed=allow_failed)
            summary[task] = section[1]
            sections.append(section)
        failed = failed_runs(list(analyses.values()))
        extras = [failed_runs_section(failed)] if failed else []
        summary["failed_runs"] = failed
        write_text(out / "claims.json", claims_json(claim_entries))
        write_json(out / "summary.json", summary)
        report = out / "report.html"
        write_text(report, render_report(sections, summary, claim_entries, extras))
        return report


def task_section(
    task: str,
    slot: dict[str, list[Path]],
    analyses: dict[Path, dict[str, Any]],
    out: Path,
    *,
    allow_failed: bool = False,
) -> tuple[str, dict[str, Any], dict[str, Path]]:
    """Draw one task's figures into ``out/figures``; return its report section.

    ``slot`` maps each regime to its run folders sorted by seed; the figures
    and the summary show the lowest seed of each regime.
    """
    views, task_summary = [], {}
    for regime in ("grok", "steady"):
        lowest_seed_run = slot[regime][0]
        analysis = analyses[lowest_seed_run]
        run = read_run(lowest_seed_run, allow_failed=allow_failed)
        metrics = run.metrics
        if run.status.get("state") == "failed":
            # The rows after the last checkpoint may hold the values that failed.
            keep = metrics["epoch"] <= analysis["final_checkpoint_epoch"]
            metrics = {name: values[keep] for name, values in metrics.items()}
        views.append(RunView(regime, metrics, analysis))
        task_summary[regime] = regime_summary(analysis)
    task_summary["comparison"] = task_comparison(task_summary["grok"], task_summary["steady"])
    task_summary["claim_runs"] = {
        regime: [analyses[d]["run"] for d in slot[regime]] for regime in slot
    }
    figures = {
        name: save_figure(fig, out / "figures" / f"{task}_{name}")
        for name, fig in task_figures(views).items()
    }
    return task, task_summary, figures


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"report folder {out} is a file: choose another --out")
    existing = [n for n in REPORT_FILES if (out / n).exists()]
    if existing and not force:
        raise RunFolderError(
            f"{out / existing[0]} already exists: pass --force to replace it or choose "
            "another --out"
        )


def claims_json(entries: list[dict[str, Any]]) -> str:
    """Serialise claim entries as strict JSON.

    Raises ValueError on NaN or infinity, which strict JSON cannot hold.
    """
    return json.dumps(entries, indent=2, sort_keys=True, allow_nan=False) + "\n"


def analysis_for(
    run_dir: Path,
    config: AnalysisConfig,
    progress: bool,
    cache_dir: Path | None = None,
    *,
    figures: bool = True,
    allow_failed: bool = False,
) -> dict[str, Any]:
    """Reuse analysis.json when it was made with the same settings, else analyse.

    ``figures=False`` skips the per-run figures of a new analysis, and
    ``allow_failed`` admits failed runs as in :func:`analyze_run`.
    """
    if (Path(run_dir) / ANALYSIS_FILE).is_file():
        try:
            existing = load_analysis(run_dir)
        except RunFolderError:
            existing = None
        if existing and existing.get("analysis_config") == config.to_dict():
            return existing
        print(f"groklab: re-analysing {run_dir}: its analysis.json used other settings",
              file=sys.stderr)
    return analyze_run(
        run_dir, config, progress=progress, cache_dir=cache_dir, figures=figures,
        allow_failed=allow_failed,
    )


def failed_runs(analyses: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the status of each analysed run that failed, keyed by run name."""
    return {
        analysis["run"]: analysis["run_status"]
        for analysis in analyses
        if analysis.get("run_status", {}).get("state") == "failed"
    }


def failed_runs_section(failed: dict[str, dict[str, Any]]) -> tuple[str, str, str]:
    """Return the report section that lists failed runs included by --allow-failed."""
    rows = [
        [name, str(status.get("epoch", "")), str(status.get("message", ""))]
        for name, status in sorted(failed.items())
    ]
    body = (
        "<p>These runs failed before their last epoch and were included with "
        "--allow-failed. Their analyses end at the last checkpoint written before "
        "the failure, and the claims below count them like finished runs.</p>\n"
        + table_html("failed-runs", ["run", "failed at epoch", "message"], rows)
    )
    return "failed-runs", "Failed runs", body

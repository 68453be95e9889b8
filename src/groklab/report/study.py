"""The report of ``groklab reproduce``: claims, alpha sweep, trajectories, sensitivity."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from groklab.analysis.trajectories import embed_trajectories
from groklab.config import AnalysisConfig
from groklab.report.alpha_sweep import (
    alpha_point,
    alpha_table,
    compressive_onset,
    plot_alpha_sweep,
)
from groklab.report.compare import claims_json, task_section
from groklab.report.figures import save_figure
from groklab.report.html import figure_html, render_report, table_html
from groklab.report.trajectory_figure import plot_inpca_trajectories
from groklab.study.config import StudyConfig
from groklab.training.runfolder import versions, write_json, write_text

# Runs per regime drawn in the trajectory embedding: the lowest seeds.
TRAJECTORY_SEEDS = 2

# Extra figures that back each claim, beside the one its evaluator names.
CLAIM_FIGURES = {
    2: ["alpha_sweep"],
    3: ["alpha_sweep"],
    5: ["through_training"],
    4: ["trajectories"],
    6: ["through_training", "trajectories"],
}


def write_study_report(out, study, config, tasks, claims, sensitivity, options,
                       *, seconds: float) -> Path:
    """Write claims.json, sensitivity.json, trajectories.json, summary.json, report.html."""
    out = Path(out)
    summary: dict[str, Any] = {
        "versions": versions(), "analysis_config": config.to_dict(),
        "study_config": study.to_dict(), "seconds": round(seconds, 1),
    }
    sections, extras, trajectories = [], [], {}
    for runs in tasks:
        if not all(runs.regime_runs.values()):
            print(f"groklab reproduce: {runs.task} lacks a finished grok or steady run; "
                  "its figures are left out", file=sys.stderr)
            continue
        section = task_section(runs.task, runs.regime_runs, runs.analyses, out)
        summary[runs.task] = section[1]
        sections.append(section)
        points = [alpha_point(runs.analyses[d]) for d in runs.analyses]
        summary[runs.task]["alpha_sweep"] = _alpha_summary(points)
        extras.append(_alpha_section(out, runs.task, points))
        embedding = _trajectories(study, runs, options)
        trajectories[runs.task] = embedding
        extras.append(_trajectory_section(out, runs, embedding))
    extras.append(_sensitivity_section(sensitivity))
    extras.append(_settings_section(study, config, summary, tasks))
    claims = _annotate_claims(claims, summary, sensitivity, {s[0] for s in sections},
                              out / "figures")
    write_text(out / "claims.json", claims_json(claims))
    write_json(out / "sensitivity.json", {**sensitivity, "analysis_config": config.to_dict()})
    write_json(out / "trajectories.json", trajectories)
    write_json(out / "summary.json", summary)
    report = out / "report.html"
    write_text(report, render_report(sections, summary, claims, extras))
    return report


def _alpha_summary(points: list[dict[str, Any]]) -> dict[str, Any]:
    rows = alpha_table(points)
    return {"points": points, "per_alpha": rows, "compressive_up_to_alpha":
            compressive_onset(rows)}


def _alpha_section(out: Path, task: str, points) -> tuple[str, str, str]:
    png = save_figure(plot_alpha_sweep(task, points), out / "figures" / f"{task}_alpha_sweep")
    rows = alpha_table(points)
    header = ["alpha", "seeds", "share compressive", "compression factor (geo. mean)",
              "log10 factor SD", "median grokking delay", "runs with test fit"]
    cells = [[_fmt(r[k]) for k in ("alpha", "n_seeds", "compressive_fraction",
                                   "compression_factor_geomean", "log10_factor_std",
                                   "median_grokking_delay", "n_test_fit")] for r in rows]
    onset = compressive_onset(rows)
    where = ("no alpha of the sweep has a majority of compressive seeds" if onset is None
             else f"most seeds are compressive from the smallest alpha up to {onset:g}")
    caption = (f"Compression factor (top) and grokking delay (bottom) against alpha, one "
               f"dot per run; {where}. A run is compressive when its fit of test loss "
               "against pruned fraction has a positive slope and R^2 at or above the "
               "threshold.")
    body = figure_html(png, caption) + table_html(f"{task}-alpha", header, cells)
    return f"{task}-alpha-sweep", f"{task}: alpha sweep", body


def _trajectories(study: StudyConfig, runs, options) -> dict[str, Any]:
    run_dirs = [d for r in ("grok", "steady") for d in runs.regime_runs[r][:TRAJECTORY_SEEDS]]
    return embed_trajectories(
        run_dirs, n_inputs=study.trajectory_inputs,
        max_checkpoints=study.trajectory_checkpoints, cache_dir=options.cache_dir,
        progress=options.progress,
    )


def _trajectory_section(out: Path, runs, embedding) -> tuple[str, str, str]:
    timings = {
        runs.analyses[d]["run"]: runs.analyses[d]["timing"]
        for r in ("grok", "steady") for d in runs.regime_runs[r]
    }
    png = save_figure(plot_inpca_trajectories(embedding, timings),
                      out / "figures" / f"{runs.task}_trajectories")
    kinds = ", ".join(
        f"{i + 1}: {kind} ({share:.0%})" for i, (kind, share) in enumerate(
            zip(embedding["component_kinds"], embedding["explained_fraction"]))
    )
    caption = (
        "Training trajectories of both regimes in one intensive-PCA embedding of the "
        f"models' predicted distributions on {embedding['n_inputs']} fixed test inputs "
        "(Bhattacharyya distance, mean over inputs; Quinn et al. 2019). Components "
        f"{kinds}. Markers: train-fit and test-fit checkpoints."
    )
    return (f"{runs.task}-trajectories", f"{runs.task}: trajectories in information space",
            figure_html(png, caption))


def _sensitivity_section(sensitivity: dict[str, Any]) -> tuple[str, str, str]:
    header = ["claim", "task", "pruning order", "Fisher form", "verdict", "value",
              "spread", "seeds"]
    cells = [
        [f"{r['number']} {r['id']}", r["task"], r["pruning_order"], r["fisher_form"],
         r["verdict"].replace("_", " "), _fmt(r["value"]), _fmt(r["spread"]),
         _fmt(r["n_seeds"])]
        for r in sensitivity["rows"]
    ]
    stable = [
        [key, "yes" if entry["stable"] else "no",
         ", ".join(f"{v.replace('_', ' ')}: {n}" for v, n in entry["verdicts"].items())]
        for key, entry in sorted(sensitivity["robustness"].items())
    ]
    body = (
        "<p>The compressibility claims evaluated again for every pruning order and, "
        "for the final models, both Fisher forms (regression: Gauss-Newton; "
        "classification: the softmax model's Fisher). Magnitude pruning does not use "
        "the Fisher diagonal (form \"none\"). Claim 5 uses the curves through training, "
        "which exist for the analysis's own form only.</p>"
        + table_html("sensitivity-table", header, cells)
        + "<p>Does the verdict hold under every setting?</p>"
        + table_html("robustness", ["claim/task", "same verdict everywhere",
                                    "verdicts (settings)"], stable)
    )
    return "sensitivity", "Sensitivity to pruning order and Fisher form", body


def _settings_section(study, config: AnalysisConfig, summary, tasks) -> tuple[str, str, str]:
    rows = [[f"study: {k}", _fmt(v)] for k, v in study.to_dict().items()]
    rows += [[f"analysis: {k}", _fmt(v)] for k, v in config.to_dict().items()]
    rows.append(["wall time (s)", _fmt(summary["seconds"])])
    missing = [m for t in tasks for m in t.missing]
    note = ("" if not missing else "<p>Runs left out (not finished or not analysed): "
            + ", ".join(missing) + "</p>")
    body = (f"<p>Command: <code>groklab reproduce --scale {study.scale}</code> with the "
            "settings below.</p>" + table_html("settings-table", ["setting", "value"], rows)
            + note)
    return "settings", "Study settings", body


def _annotate_claims(claims, summary, sensitivity, tasks: set[str],
                     figures: Path) -> list[dict]:
    """Add the backing figures, the alpha sweep and the sensitivity to each claim.

    Only figures drawn in ``figures`` are named, so a claim across tasks in a
    one-task study does not name the other task's figures.
    """
    for entry in claims:
        stems = [s for s in entry["figure"].split(", ") if s]
        for_tasks = sorted(tasks) if entry["task"] == "all" else [entry["task"]]
        stems += [f"{t}_{name}" for name in CLAIM_FIGURES.get(entry["number"], [])
                  for t in for_tasks]
        drawn = [s for s in dict.fromkeys(stems)
                 if s.split("_")[0] in tasks and (figures / f"{s}.png").is_file()]
        entry["figure"] = ", ".join(drawn)
        if entry["number"] == 2 and entry["task"] in summary:
            entry["details"]["alpha_sweep"] = summary[entry["task"]]["alpha_sweep"][
                "per_alpha"]
        stability = sensitivity["robustness"].get(f"{entry['id']}/{entry['task']}")
        if stability is not None:
            entry["details"]["sensitivity"] = stability
    return claims


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    if value is None:
        return "n/a"
    return str(value)

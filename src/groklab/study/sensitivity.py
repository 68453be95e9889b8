"""Sensitivity of the compressibility verdicts to the pruning order and Fisher form.

Claims 2 and 3 (compressive regime, compression factors) rest on one pruning
curve per run, and claim 5 on the curves through training. This module
re-evaluates them for every pruning order and, for the final models, for both
Fisher forms. The analysis contains the curves of its own Fisher form only, so
the other form's curves are computed here once per run and kept in a cache folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from groklab.analysis.claim_inputs import evaluate_claims
from groklab.analysis.run import final_pruning
from groklab.config import AnalysisConfig
from groklab.training.runfolder import write_json

FISHER_FORMS = ("regression", "classification")
# Claims whose verdict depends on pruning; claim 5 only on the analysis's own form.
PRUNING_CLAIMS = (2, 3, 5)
# Magnitude pruning ignores the Fisher diagonal, so it is evaluated once.
NO_FISHER = "none"


def other_form_pruning(
    run_dirs: dict[str, Path],
    analyses: dict[str, dict[str, Any]],
    config: AnalysisConfig,
    cache: Path,
    cache_dir: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Return, per run name, the final model's pruning record under the other form.

    A cached record in ``cache`` is reused when it was made with the same
    settings for the same final metrics. Otherwise it is computed and saved.
    """
    other = next(f for f in FISHER_FORMS if f != config.fisher_form)
    other_config = AnalysisConfig(**{**config.to_dict(), "fisher_form": other})
    records = {}
    for name, run_dir in run_dirs.items():
        key = {"analysis_config": other_config.to_dict(), "final": analyses[name]["final"]}
        path = Path(cache) / f"{name}.{other}.json"
        record = _cached(path, key)
        if record is None:
            record = final_pruning(run_dir, other_config, cache_dir=cache_dir)
            write_json(path, {**key, "pruning": record})
        records[name] = record
    return records


def _cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or "pruning" not in stored:
        return None
    same = all(stored.get(name) == value for name, value in key.items())
    return stored["pruning"] if same else None


def sensitivity_rows(
    analyses: list[dict[str, Any]], other_form: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Evaluate the pruning claims for every pruning order and Fisher form.

    Returns one row per claim, task, Fisher form and pruning order, with the
    verdict, value, spread and seed counts. ``other_form`` maps run names to
    the pruning records of the Fisher form the analyses did not use.
    """
    primary = analyses[0]["analysis_config"]["fisher_form"]
    orders = analyses[0]["analysis_config"]["pruning_orders"]
    rows = []
    for order in orders:
        forms = [primary] if order == "magnitude" else [primary, *_others(primary)]
        for form in forms:
            variants = [_variant(a, form, order, other_form) for a in analyses]
            for entry in evaluate_claims(variants):
                if entry["number"] not in PRUNING_CLAIMS:
                    continue
                if entry["number"] == 5 and form != primary:
                    continue
                rows.append(_row(entry, NO_FISHER if order == "magnitude" else form,
                                 order))
    return sorted(rows, key=lambda r: (r["number"], r["task"], r["pruning_order"],
                                       r["fisher_form"]))


def _others(primary: str) -> list[str]:
    return [form for form in FISHER_FORMS if form != primary]


def _variant(
    analysis: dict[str, Any], form: str, order: str, other_form: dict[str, dict]
) -> dict[str, Any]:
    """Return a shallow copy of ``analysis`` that holds only ``order`` under ``form``."""
    same_form = form == analysis["analysis_config"]["fisher_form"]
    pruning = analysis["pruning"] if same_form else other_form[analysis["run"]]
    variant = {
        **analysis,
        "analysis_config": {**analysis["analysis_config"], "fisher_form": form},
        "pruning": {**pruning, "orders": {order: pruning["orders"][order]}},
    }
    over_time = analysis.get("pruning_over_time")
    if over_time is not None and same_form and order in over_time["orders"]:
        variant["pruning_over_time"] = {
            **over_time, "orders": {order: over_time["orders"][order]}
        }
    return variant


def _row(entry: dict[str, Any], form: str, order: str) -> dict[str, Any]:
    return {
        "id": entry["id"],
        "number": entry["number"],
        "task": entry["task"],
        "fisher_form": form,
        "pruning_order": order,
        "verdict": entry["verdict"],
        "value": entry["value"],
        "spread": entry["spread"],
        "n_seeds": entry["n_seeds"],
        "statistic": entry["statistic"],
    }


def robustness(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Summarise, per claim and task, whether every setting gives the same verdict."""
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['id']}/{row['task']}"
        entry = summary.setdefault(key, {"verdicts": {}, "settings": 0})
        entry["verdicts"][row["verdict"]] = entry["verdicts"].get(row["verdict"], 0) + 1
        entry["settings"] += 1
    for entry in summary.values():
        entry["stable"] = len(entry["verdicts"]) == 1
    return summary

"""The sweep's results table: one row per run, from its folder and analysis.json.

Cells hold only values computed from the run folders (no wall-clock times,
no absolute paths) and floats are written in their shortest exact form, so
the same runs give a byte-identical ``results.csv`` on any backend.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from groklab.analysis.run import ANALYSIS_FILE
from groklab.config import AnalysisConfig
from groklab.report.summary import feature_summary
from groklab.sweep.grid import SweepPoint
from groklab.training.runfolder import (
    RunFolderError,
    atomic_path,
    read_metrics,
    read_run,
    write_text,
)

# Config fields every row shows, unless a grid column already shows them.
CONFIG_COLUMNS = ("task", "regime", "alpha", "lr", "weight_decay", "epochs")
FINAL_COLUMNS = {
    "final_train_acc": "train/acc",
    "final_test_acc": "test/acc",
    "final_train_loss": "train/loss",
    "final_test_loss": "test/loss",
    "final_param_norm": "param_norm",
}


def current_analysis(run_dir: Path, config: AnalysisConfig) -> dict[str, Any] | None:
    """Return the run's analysis.json if it is up to date, else None.

    Up to date means: made with ``config``, for the run's current config and
    provenance, and after its last metrics row (a resumed or retrained run
    gets a new analysis).
    """
    path = Path(run_dir) / ANALYSIS_FILE
    if not path.is_file():
        return None
    try:
        analysis = json.loads(path.read_text())
        run = read_run(run_dir)
    except (json.JSONDecodeError, UnicodeDecodeError, RunFolderError):
        return None
    if not isinstance(analysis, dict):
        return None
    final = {key: float(values[-1]) for key, values in run.metrics.items()}
    checks = [
        analysis.get("analysis_config") == config.to_dict(),
        analysis.get("config") == run.config.to_dict(),
        analysis.get("provenance", {}).get("run_provenance") == _json_round_trip(
            run.provenance),
        analysis.get("final") == _json_round_trip(final),
    ]
    return analysis if all(checks) else None


def _json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def run_row(
    point: SweepPoint,
    sweep_dir: Path,
    run_dir: Path,
    analysis: dict[str, Any] | None,
    analysis_state: str,
) -> dict[str, Any]:
    """Collect one run's table row from its folder and (current) analysis."""
    row: dict[str, Any] = dict(point.values)
    row["seed"] = point.seed
    row["run"] = run_dir.relative_to(sweep_dir).as_posix()
    row.update(_status_columns(run_dir))
    config = point.config.to_dict()
    for key in CONFIG_COLUMNS:
        row.setdefault(key, config[key])
    row.update(_final_columns(run_dir))
    row["analysis"] = analysis_state
    if analysis is not None:
        row.update(analysis_columns(analysis))
    return row


def _status_columns(run_dir: Path) -> dict[str, Any]:
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {"state": "missing", "epoch": None}
    return {"state": status.get("state", "unknown"), "epoch": status.get("epoch")}


def _final_columns(run_dir: Path) -> dict[str, Any]:
    """Return the last metrics row, which is the final one for a finished run."""
    try:
        metrics = read_metrics(run_dir / "metrics.csv")
    except RunFolderError:
        return {}
    return {column: float(metrics[key][-1]) for column, key in FINAL_COLUMNS.items()}


def analysis_columns(analysis: dict[str, Any]) -> dict[str, Any]:
    """Flatten the headline numbers of one analysis.json, each with its settings."""
    timing = analysis["timing"]
    pruning = analysis["pruning"]
    out: dict[str, Any] = {
        "epoch_train_fit": timing["epoch_train_fit"],
        "epoch_test_fit": timing["epoch_test_fit"],
        "epoch_test_onset": timing["epoch_test_onset"],
        "grokking_delay": timing["delay"],
        "fisher_form": pruning["fisher_form"],
        "fisher_inputs": pruning["fisher_inputs"],
        "tolerance": pruning["tolerance"],
    }

    for order, entry in pruning["orders"].items():
        compression = entry["compression"]
        # JSON has no infinity: a factor stored as null with no parameter kept is
        # unbounded, because the whole model can be pruned within the tolerance.
        factor = compression["factor"]
        if factor is None and compression["n_kept"] == 0:
            factor = math.inf
        out[f"compression_factor_{order}"] = factor
        out[f"n_kept_{order}"] = compression["n_kept"]
        out[f"n_total_{order}"] = compression["n_total"]
        out[f"linear_fit_slope_{order}"] = entry["linear_fit"]["slope"]
        out[f"linear_fit_r2_{order}"] = entry["linear_fit"]["r2"]
        out[f"compressive_{order}"] = entry["compressive"]

    # Older analyses and pruning_checkpoints=0 have no pruning_over_time, so
    # these cells stay empty.
    peaks = analysis.get("pruning_over_time", {}).get("epoch_peak_compression", {})
    for order in pruning["orders"]:
        out[f"epoch_peak_compression_{order}"] = peaks.get(order)

    out["median_fisher_cosine"] = analysis["geometry"]["fisher_cosine_summary"]["median"]
    out.update(_feature_columns(analysis))
    return out


def _feature_columns(analysis: dict[str, Any]) -> dict[str, Any]:
    """Return the feature summary with the Ising correlations flattened into columns."""
    summary = feature_summary(analysis)
    correlations = summary.pop("feature_correlations", None)
    if correlations is None:
        return summary
    out = {}
    for layer, targets in correlations.items():
        for target, stats in targets.items():
            out[f"max_abs_corr_{target}_{layer}"] = stats["max_abs_corr"]
            out[f"probe_r2_{target}_{layer}"] = stats["probe_r2"]
    return out


def sort_rows(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Sort rows by their grid values in --grid order, then by seed."""

    def sort_key(row: dict[str, Any]) -> tuple:
        parts = []
        for key in [*keys, "seed"]:
            value = row[key]
            value = getattr(value, "value", value)  # enums sort by their text
            parts.append((value is None, value if value is not None else 0))
        return tuple(parts)

    return sorted(rows, key=sort_key)


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Return every column in order of first appearance across the rows."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def format_cell(value: Any) -> str:
    """Format one cell: empty for missing, shortest exact text for floats."""
    value = getattr(value, "value", value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return " ".join(format_cell(v) for v in value)
    return str(value)


def write_csv(rows: list[dict[str, Any]], path: Path) -> list[str]:
    """Write ``rows`` to ``path`` as CSV (atomically) and return the columns."""
    columns = table_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(column)) for column in columns])
    write_text(path, buffer.getvalue())
    return columns


def write_parquet(rows: list[dict[str, Any]], path: Path) -> bool:
    """Write ``rows`` as Parquet when pandas and pyarrow are installed; return whether.

    The CSV is the reference format; Parquet keeps the column types for
    dataframe users.
    """
    try:
        import pandas as pd
        import pyarrow  # noqa: F401 - the engine pandas needs for Parquet
    except ImportError:
        return False
    columns = table_columns(rows)
    frame = pd.DataFrame(
        [{c: _parquet_cell(row.get(c)) for c in columns} for row in rows], columns=columns
    )
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return True


def _parquet_cell(value: Any) -> Any:
    value = getattr(value, "value", value)
    if isinstance(value, (list, tuple)):
        return format_cell(value)
    return value

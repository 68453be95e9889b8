"""Analyse one finished run folder and write ``analysis.json``.

Every number in the output names the settings that produced it: the Fisher
form, the pruning order, the tolerance and the number of held-out inputs.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from groklab.analysis.features import fourier_features, ising_features, jaccard
from groklab.analysis.fisher import fisher_diagonal, fisher_diagonals
from groklab.analysis.ising_data import dataset_diagnostics
from groklab.analysis.geometry import summary_statistics, trajectory_measures
from groklab.analysis.pruning import (
    compression_factor,
    default_fractions,
    linear_fit,
    pruning_curve,
    saliency,
)
from groklab.analysis.timing import grokking_times
from groklab.config import AnalysisConfig, Task
from groklab.models import build_model
from groklab.tasks.loader import TaskData, load_task
from groklab.training.checkpoints import load_checkpoint, model_tensors
from groklab.training.lock import folder_lock
from groklab.training.runfolder import Run, RunFolderError, read_run, versions, write_json

ANALYSIS_FILE = "analysis.json"


def analyze_run(
    run_dir: Path,
    config: AnalysisConfig | None = None,
    *,
    progress: bool = True,
    cache_dir: Path | None = None,
    figures: bool = True,
    allow_failed: bool = False,
) -> dict[str, Any]:
    """Compute every analysis of ``run_dir``, write analysis.json and figures, return it.

    ``figures=False`` skips the per-run figures, which take most of the time of
    a small run's analysis; sweeps draw their own aggregate figures instead.
    A failed run raises RunFolderError unless ``allow_failed`` is set. Then its
    analysis ends at the last checkpoint written before the failure, and
    ``run_status`` in the result records the failure. The call holds the run
    folder's lock throughout, and raises FolderLockedError when another process
    holds it.
    """
    with folder_lock(run_dir, "run folder", create=False):
        return _analyze_locked(
            run_dir, config, progress=progress, cache_dir=cache_dir, figures=figures,
            allow_failed=allow_failed,
        )


def _analyze_locked(
    run_dir: Path,
    config: AnalysisConfig | None,
    *,
    progress: bool,
    cache_dir: Path | None,
    figures: bool,
    allow_failed: bool,
) -> dict[str, Any]:
    config = config or AnalysisConfig()
    run = read_run(run_dir, allow_failed=allow_failed)
    torch.set_num_threads(run.config.threads)
    data = _load_run_data(run, progress, cache_dir)
    model = build_model(run.config)
    checkpoints = _checked_checkpoints(run)
    # Geometry and features over time share one selection, loaded once. The
    # selection always ends with the final checkpoint.
    trajectory = [
        (epoch, _load_params(path, model))
        for epoch, path in _select(checkpoints, config.max_checkpoints)
    ]
    final_params = trajectory[-1][1]
    held_out = _held_out(data, config)
    steps = [
        ("timing", lambda: _timing(run, model)),
        ("features", lambda: _features(run, model, final_params, data, config)),
        ("pruning", lambda: _pruning(model, final_params, data, held_out, config)),
        ("geometry", lambda: _geometry(model, trajectory, held_out, config)),
        ("features_over_time", lambda: _features_over_time(
            run, model, trajectory, data, config)),
    ]
    if config.pruning_checkpoints > 0:
        # The lambda reads result["timing"] when it runs, after the timing step.
        steps.append(("pruning_over_time", lambda: _pruning_over_time(
            model, trajectory, data, held_out, result["timing"], config)))
    result: dict[str, Any] = {
        "run": run.config.name,
        "task": run.config.task.value,
        "regime": run.config.regime.value,
        "config": run.config.to_dict(),
        "analysis_config": config.to_dict(),
        "provenance": {
            "versions": versions(),
            "run_provenance": run.provenance,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "run_status": run.status,
        "final": _final_metrics(run),
        "final_checkpoint_epoch": checkpoints[-1][0],
    }
    bar = tqdm(steps, desc=f"analyse {run.config.name}", disable=None if progress else True)
    for name, step in bar:
        result[name] = step()
    result = _json_safe(result)
    if data.dataset is not None:
        result["dataset"] = _json_safe(dataset_diagnostics(data.dataset, *data.split))
    write_json(run.path / ANALYSIS_FILE, result)
    if figures:
        from groklab.report.figures import write_run_figures

        write_run_figures(run.path, result)
    return result


def _load_run_data(run: Run, progress: bool, cache_dir: Path | None) -> TaskData:
    """Load the run's data, checking an Ising dataset against its recorded hash.

    The Ising cache is ``cache_dir`` when given, else the folder the run was
    trained from if it still exists, else the default cache.
    """
    recorded = run.provenance.get("data", {})
    if cache_dir is None and "dataset" in recorded:
        trained_from = Path(recorded["dataset"]).parent
        cache_dir = trained_from if trained_from.is_dir() else None
    data = load_task(run.config, cache_dir, progress=progress)
    expected = recorded.get("dataset_content_sha256")
    if expected and data.provenance.get("dataset_content_sha256") != expected:
        raise RunFolderError(
            f"dataset {data.provenance.get('dataset')} differs from the one run "
            f"{run.path} was trained on (SHA-256 {expected[:12]}...): restore it or retrain"
        )
    return data


def _checked_checkpoints(run: Run) -> list[tuple[int, Path]]:
    """Return the run's checkpoints after checking that they cover the whole run.

    A failed run covers only the epochs up to its last checkpoint, so its
    metrics are cut there: the rows after it may hold the non-finite values
    that stopped the run.
    """
    checkpoints = run.checkpoints()
    last_row = int(run.metrics["epoch"][-1])
    if len(checkpoints) < 2:
        raise RunFolderError(
            f"run {run.path} has {len(checkpoints)} checkpoint(s): the dynamics need at "
            "least 2, so re-run training"
        )
    if run.status.get("state") == "failed":
        keep = run.metrics["epoch"] <= checkpoints[-1][0]
        run.metrics = {name: values[keep] for name, values in run.metrics.items()}
        return checkpoints
    if checkpoints[-1][0] != run.config.epochs or last_row != run.config.epochs:
        raise RunFolderError(
            f"run {run.path} is incomplete: its config expects {run.config.epochs} "
            f"epochs, but the last checkpoint is epoch {checkpoints[-1][0]} and "
            f"metrics.csv ends at epoch {last_row}. Re-run training"
        )
    return checkpoints


def _load_params(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Load a checkpoint's parameters, checking that they fit ``model``."""
    tensors, _ = load_checkpoint(path)
    params = model_tensors(tensors)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    found = {name: tuple(t.shape) for name, t in params.items()}
    if found != expected:
        raise RunFolderError(
            f"checkpoint {path} does not match the model of the run's config.json "
            "(parameter names or shapes differ): the folder mixes runs, so re-run training"
        )
    # A checkpoint file stores its tensors sorted by name. The fast pruning
    # evaluators accept only the module's own parameter order.
    return {name: params[name] for name in expected}


def _held_out(data: TaskData, config: AnalysisConfig) -> dict[str, torch.Tensor]:
    """Pick seeded held-out test inputs for the Fisher diagonals."""
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(data.test_inputs), generator=generator)
    return {
        "pruning": data.test_inputs[order[: config.fisher_inputs]],
        "geometry": data.test_inputs[order[: config.geometry_fisher_inputs]],
    }


def _timing(run: Run, model: nn.Module) -> dict[str, Any]:
    """Grokking times, with chance accuracy 1 / number of classes as the floor."""
    n_classes = list(model.parameters())[-1].shape[0]
    times = grokking_times(
        run.metrics["epoch"], run.metrics["train/acc"], run.metrics["test/acc"],
        chance=1 / n_classes,
    )
    return {**times.to_dict(), "chance_accuracy": 1 / n_classes}


def _final_metrics(run: Run) -> dict[str, float]:
    return {key: float(values[-1]) for key, values in run.metrics.items()}


def _features(run, model, params, data, config) -> dict[str, Any]:
    if run.config.task is Task.MODADD:
        weight = params["fc1.weight"].double().numpy()
        return fourier_features(weight, run.config.p, top_k=config.top_k)
    activations = _activations(model, params, data.test_inputs)
    return ising_features(
        activations,
        data.test_observables["energy"],
        data.test_observables["abs_magnetisation"],
    )


@torch.no_grad()
def _activations(model: nn.Module, params, inputs) -> dict[str, np.ndarray]:
    model.load_state_dict(params)
    return {k: v.double().numpy() for k, v in model.activations(inputs).items()}


def _pruning(model, params, data, held_out, config: AnalysisConfig) -> dict[str, Any]:
    fisher = fisher_diagonal(
        model, held_out["pruning"], config.fisher_form, params=params,
        chunk_size=config.fisher_chunk_size, memory_mb=config.memory_mb,
    )
    layers = sorted({name.split(".")[0] for name in params})
    out: dict[str, Any] = {
        "fisher_form": config.fisher_form,
        "fisher_inputs": len(held_out["pruning"]),
        "tolerance": config.tolerance,
        "n_fractions": config.n_fractions,
        "memory_mb": config.memory_mb,
        "orders": {},
    }
    for order in config.pruning_orders:
        scores = saliency(params, fisher, order)
        args = (model, params, scores, data.test_inputs, data.test_targets)
        options = {"n_points": config.n_fractions, "order": order,
                   "memory_mb": config.memory_mb}
        curve = pruning_curve(*args, **options)
        fit = linear_fit(curve.fractions, curve.loss,
                         max_fraction=config.linear_fit_max_fraction)
        out["orders"][order] = {
            "global": _curve_record(curve, config),
            "layers": {
                layer: _curve_record(pruning_curve(*args, scope=layer, **options), config)
                for layer in layers
            },
            "compression": _asdict(
                compression_factor(
                    *args, tolerance=config.tolerance, curve=curve, order=order,
                    memory_mb=config.memory_mb,
                )
            ),
            "linear_fit": _asdict(fit),
            "compressive": bool(fit.r2 >= config.compressive_r2 and fit.slope > 0),
        }
    return out


def _curve_record(curve, config: AnalysisConfig) -> dict[str, Any]:
    """Return the curve with the Fisher form and tolerance that go with it."""
    return {**curve.to_dict(), "fisher_form": config.fisher_form,
            "tolerance": config.tolerance}


def _select(checkpoints: list, limit: int) -> list:
    """Keep at most ``limit`` checkpoints, evenly spread, always the first and last."""
    if len(checkpoints) <= limit:
        return checkpoints
    picks = np.unique(np.round(np.linspace(0, len(checkpoints) - 1, limit)).astype(int))
    return [checkpoints[i] for i in picks]


def _pruning_over_time(
    model, trajectory, data, held_out, timing: dict[str, Any], config: AnalysisConfig
) -> dict[str, Any]:
    """Measure global compression factors and linear fits at chosen checkpoints.

    Each checkpoint gets its own Fisher diagonal on the held-out pruning
    inputs, so the saliency order follows the model as it trains. Factors are
    inf when every parameter can be pruned within the tolerance.
    ``base_accuracy`` is the unpruned test accuracy at each checkpoint.
    NOTE: where it is near chance, as before the test fit, the tolerance is
    easy to meet, so factors there are large or inf and mean little.
    """
    fit_epochs = [timing.get("epoch_test_fit"), timing.get("epoch_train_fit")]
    picks = select_pruning_checkpoints(
        [epoch for epoch, _ in trajectory], config.pruning_checkpoints, fit_epochs
    )
    fractions = default_fractions(config.pruning_over_time_fractions)
    columns = ("compression_factor", "n_kept", "linear_fit_r2", "linear_fit_slope")
    orders = {order: {key: [] for key in columns} for order in config.pruning_orders}
    base_accuracy = []
    for index in picks:
        params = trajectory[index][1]
        fisher = fisher_diagonal(
            model, held_out["pruning"], config.fisher_form, params=params,
            chunk_size=config.fisher_chunk_size, memory_mb=config.memory_mb,
        )
        for order in config.pruning_orders:
            record = _compressibility(model, params, fisher, order, data, fractions, config)
            for key in columns:
                orders[order][key].append(record[key])
        base_accuracy.append(record["base_accuracy"])
    epochs = [int(trajectory[index][0]) for index in picks]
    return {
        "epochs": epochs,
        "tolerance": config.tolerance,
        "fisher_form": config.fisher_form,
        "fisher_inputs": len(held_out["pruning"]),
        "n_fractions": len(fractions),
        "base_accuracy": base_accuracy,
        "orders": orders,
        "epoch_peak_compression": {
            order: _peak_epoch(epochs, values["compression_factor"])
            for order, values in orders.items()
        },
    }


def _compressibility(model, params, fisher, order, data, fractions, config) -> dict:
    """Return one checkpoint's compression factor and linear fit for ``order``."""
    scores = saliency(params, fisher, order)
    args = (model, params, scores, data.test_inputs, data.test_targets)
    curve = pruning_curve(*args, fractions, order=order, memory_mb=config.memory_mb)
    compression = compression_factor(
        *args, tolerance=config.tolerance, curve=curve, order=order,
        memory_mb=config.memory_mb,
    )
    fit = linear_fit(curve.fractions, curve.loss,
                     max_fraction=config.linear_fit_max_fraction)
    return {
        "compression_factor": float(compression.factor),
        "n_kept": int(compression.n_kept),
        "linear_fit_r2": float(fit.r2),
        "linear_fit_slope": float(fit.slope),
        "base_accuracy": float(compression.base_accuracy),
    }


def select_pruning_checkpoints(
    epochs: list[int], limit: int, fit_epochs: list[int | None]
) -> list[int]:
    """Return sorted indices of at most ``limit`` entries of ``epochs`` to prune at.

    The last entry comes first, then the entry nearest each defined epoch of
    ``fit_epochs`` in the order given. Evenly spread entries fill the rest,
    as many as fit without exceeding ``limit``.
    """
    if limit < 1:
        return []
    last = len(epochs) - 1
    required = [last]
    for target in fit_epochs:
        if target is not None:
            nearest = int(np.argmin([abs(epoch - target) for epoch in epochs]))
            if nearest not in required:
                required.append(nearest)
    required = required[:limit]
    chosen = set(required)
    for n_even in range(limit, 0, -1):
        spread = np.round(np.linspace(0, last, n_even)).astype(int).tolist()
        candidate = set(required) | set(spread)
        if len(candidate) <= limit:
            chosen = candidate
            break
    return sorted(chosen)


def _peak_epoch(epochs: list[int], factors: list[float]) -> int | None:
    """Return the epoch of the largest finite factor, the earliest on ties."""
    finite = [(factor, -epoch) for epoch, factor in zip(epochs, factors)
              if math.isfinite(factor)]
    return -max(finite)[1] if finite else None


def _geometry(model, trajectory, held_out, config: AnalysisConfig) -> dict:
    """Measure the path through ``trajectory``, a list of (epoch, parameters).

    The Fisher diagonals of all checkpoints are computed together, vectorised
    over checkpoints in chunks that fit ``config.memory_mb``.
    """
    names = [name for name, _ in model.named_parameters()]
    stacked = {
        name: torch.stack([params[name] for _, params in trajectory]) for name in names
    }
    fishers = fisher_diagonals(
        model, held_out["geometry"], config.fisher_form, stacked,
        chunk_size=config.fisher_chunk_size, memory_mb=config.memory_mb,
    )
    thetas = torch.cat([stacked[n].flatten(1).double() for n in names], 1).numpy()
    fisher_rows = torch.cat([fishers[n].flatten(1).double() for n in names], 1).numpy()
    epochs = np.array([epoch for epoch, _ in trajectory])
    measures = trajectory_measures(
        thetas, fisher_rows, epochs, sloppy_threshold=config.sloppy_threshold,
    )
    measures["epochs"] = epochs.tolist()
    measures["fisher_form"] = config.fisher_form
    measures["fisher_inputs"] = len(held_out["geometry"])
    cosines = measures["all"]["fisher_cosine"]
    measures["fisher_cosine_summary"] = summary_statistics(
        np.array([np.nan if c is None else c for c in cosines], dtype=float)
    )
    return measures


def _features_over_time(run, model, trajectory, data, config) -> dict[str, Any]:
    """Track feature measures at the checkpoints used for geometry.

    Modular-addition rows contain the key frequencies, their norm fraction and
    the inverse participation ratio (``ipr``) of the power summed over both
    token blocks. They also contain the Jaccard overlap of the key frequencies
    with those of the final checkpoint, the last of ``trajectory``. Ising rows
    contain, per layer and target, the best unit's max |correlation| and the
    held-out probe R^2.
    """
    rows = []
    for epoch, params in trajectory:
        feats = _features(run, model, params, data, config)
        if run.config.task is Task.MODADD:
            rows.append({"epoch": epoch, **_modadd_row(feats)})
        else:
            rows.append({"epoch": epoch, **_ising_row(feats)})
    if run.config.task is Task.MODADD:
        final = rows[-1]["key_frequencies"]
        for row in rows:
            row["jaccard_to_final"] = jaccard(row["key_frequencies"], final)
    return {"rows": rows}


def _modadd_row(feats: dict[str, Any]) -> dict[str, Any]:
    return {
        "top_k_norm_fraction": feats["top_k_norm_fraction"],
        "key_frequencies": feats["key_frequencies"],
        "ipr": _spectrum_ipr(feats["a"]["spectrum"], feats["b"]["spectrum"]),
    }


def _spectrum_ipr(spectrum_a: list[float], spectrum_b: list[float]) -> float | None:
    """Return the inverse participation ratio of the summed power per frequency.

    Frequency 0 counts. The ratio is 1 when all the power is at one frequency
    and 1 / (P//2 + 1) for a flat spectrum. It is ``None`` when all weights are 0.
    """
    total = np.asarray(spectrum_a) + np.asarray(spectrum_b)
    norm = total.sum()
    if norm == 0:
        return None
    return float(np.sum((total / norm) ** 2))


def _ising_row(feats: dict[str, Any]) -> dict[str, Any]:
    layers = feats["layers"]
    return {
        "max_abs_corr": {
            layer: {t: v["max_abs_corr"] for t, v in entry["correlations"].items()}
            for layer, entry in layers.items()
        },
        "probe_r2": {layer: dict(entry["probe_r2"]) for layer, entry in layers.items()},
    }


def _asdict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)


def _json_safe(value: Any) -> Any:
    """Convert numpy scalars and arrays to plain Python; NaN and inf become None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def load_analysis(run_dir: Path) -> dict[str, Any]:
    """Read a run's analysis.json, raising RunFolderError if it is missing or corrupt."""
    import json

    path = Path(run_dir) / ANALYSIS_FILE
    if not path.is_file():
        raise RunFolderError(f"{path} not found: run groklab analyze {run_dir}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is corrupt ({err}): run groklab analyze again") from None


def final_pruning(
    run_dir: Path, config: AnalysisConfig, *, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Return the pruning record of the run's final model under ``config`` alone.

    This is the ``pruning`` entry of analysis.json without the rest of the
    analysis, so a study can compare Fisher forms and pruning orders cheaply.
    """
    run = read_run(run_dir)
    torch.set_num_threads(run.config.threads)
    data = _load_run_data(run, False, cache_dir)
    model = build_model(run.config)
    params = _load_params(_checked_checkpoints(run)[-1][1], model)
    return _json_safe(_pruning(model, params, data, _held_out(data, config), config))

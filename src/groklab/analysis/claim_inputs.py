"""Feed the six claim evaluators of ``groklab.analysis.claims`` from analysis.json data.

``evaluate_claims`` groups analyses (the content of ``analysis.json``) by task
and regime, reads each evaluator's per-seed inputs and returns one result per
claim and task. Claims 1, 2, 3 and 5 are tested per task, claims 4 and 6 across
tasks (task ``"all"``). Every entry adds to ``ClaimResult.to_dict()``:

- ``number``: the claim's number in docs/claims.md (1 to 6);
- ``figure``: the file stem of the report figure that shows the evidence, or
  several stems separated by ", " for a claim across tasks;
- in ``details``: the runs and seeds used, and the pruning order and tolerance
  where the claim depends on them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from groklab.analysis import claims
from groklab.config import Task

REGIMES = ("grok", "steady")
TASKS = tuple(task.value for task in Task)

NO_PRUNING_OVER_TIME = (
    "analysis has no compressibility through training; re-run groklab analyze"
)

Analyses = dict[str, dict[str, list[dict[str, Any]]]]


def evaluate_claims(analyses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate the six claims on ``analyses``; return plain-JSON result entries.

    Analyses of one task and regime count as seeds of that regime. A group with
    fewer than two finite seeds makes its claim inconclusive. Raises ValueError
    when two analyses of one task and regime come from the same seed.
    """
    groups = group_analyses(analyses)
    entries = []
    for task in sorted(groups):
        regimes = groups[task]
        entries += [
            _same_features(task, regimes),
            _compressive_regime(task, regimes),
            _compression_factors(task, regimes),
            _peak_after_plateau(task, regimes),
        ]
    entries += [_task_dependence(groups), _straight_path(groups)]
    return sorted(entries, key=lambda entry: (entry["number"], entry["task"]))


def group_analyses(analyses: list[dict[str, Any]]) -> Analyses:
    """Group analyses by task, then regime, each list sorted by seed.

    Raises ValueError when a task and regime has two analyses of the same seed,
    because that seed would count twice.
    """
    groups: Analyses = {}
    for analysis in analyses:
        regimes = groups.setdefault(analysis["task"], {r: [] for r in REGIMES})
        regimes.setdefault(analysis["regime"], []).append(analysis)
    for task, regimes in groups.items():
        for regime, members in regimes.items():
            members.sort(key=_seed)
            seeds = [_seed(a) for a in members]
            repeated = sorted({s for s in seeds if seeds.count(s) > 1})
            if repeated:
                raise ValueError(
                    f"{task} {regime} has several analyses of seed {repeated[0]}: "
                    "pass one run per seed"
                )
    return groups


def _seed(analysis: dict[str, Any]) -> int:
    return int(analysis["config"]["seed"])


def _finish(
    result: claims.ClaimResult,
    number: int,
    figure: str,
    used: dict[str, list[dict[str, Any]]],
    **details: Any,
) -> dict[str, Any]:
    """Convert ``result`` to a dict and add the claim number, figure and runs used."""
    entry = result.to_dict()
    entry["number"] = number
    entry["figure"] = figure
    entry["details"].update(details)
    entry["details"]["runs"] = {
        group: [analysis["run"] for analysis in members]
        for group, members in used.items()
    }
    entry["details"]["seeds"] = {
        group: [_seed(analysis) for analysis in members]
        for group, members in used.items()
    }
    return entry


def _number(value: Any) -> float:
    """Return ``value`` as a float, with None (JSON for NaN or infinity) as NaN."""
    return math.nan if value is None else float(value)


# --- Claim 1: same features --------------------------------------------------


def _same_features(task: str, regimes: dict[str, list[dict]]) -> dict[str, Any]:
    grok, steady = regimes["grok"], regimes["steady"]
    if task == Task.MODADD.value:
        names = ["top_k_norm_fraction"]
        read_scores = _fourier_scores
        key_frequencies = {
            regime: [a["features"]["key_frequencies"] for a in regimes[regime]]
            for regime in REGIMES
        }
    else:
        names = _probe_targets(grok + steady)
        read_scores = _probe_scores
        key_frequencies = {"grok": None, "steady": None}
    scores = {
        regime: {
            name: [read_scores(a).get(name, math.nan) for a in regimes[regime]]
            for name in names
        }
        for regime in REGIMES
    }
    if not names:
        # Neither regime has a feature score, so the evaluator gets one
        # placeholder score with no seeds and returns inconclusive.
        scores = {regime: {"no feature scores": []} for regime in REGIMES}
    result = claims.same_features(
        task,
        scores["grok"],
        scores["steady"],
        grok_key_frequencies=key_frequencies["grok"],
        steady_key_frequencies=key_frequencies["steady"],
    )
    return _finish(result, 1, f"{task}_features", regimes)


def _fourier_scores(analysis: dict[str, Any]) -> dict[str, float]:
    return {"top_k_norm_fraction": _number(analysis["features"]["top_k_norm_fraction"])}


def _probe_targets(analyses: list[dict[str, Any]]) -> list[str]:
    names = set()
    for analysis in analyses:
        names.update(_probe_scores(analysis))
    return sorted(names)


def _probe_scores(analysis: dict[str, Any]) -> dict[str, float]:
    """Return, per target, the highest held-out probe R^2 over the CNN's layers.

    The best layer stands for how well the network as a whole encodes the
    target, so the score does not depend on where each regime encodes it.
    """
    best: dict[str, float] = {}
    for layer in analysis["features"]["layers"].values():
        for target, r2 in layer["probe_r2"].items():
            value = _number(r2)
            name = f"probe R^2 {target} (best layer)"
            if math.isnan(best.get(name, math.nan)) or value > best[name]:
                best[name] = value
    return best


# --- Claims 2 and 3: compressive regime, compression factors -----------------


def _headline_order(regimes: dict[str, list[dict]]) -> str | None:
    """Return the first pruning order of the first analysis, as the summary table does.

    Returns None when no analysis has a pruning order.
    """
    for regime in REGIMES:
        for analysis in regimes[regime]:
            orders = analysis["pruning"]["orders"]
            if orders:
                return next(iter(orders))
    return None


def _order_entry(analysis: dict[str, Any], order: str | None) -> dict[str, Any] | None:
    return analysis["pruning"]["orders"].get(order) if order else None


def _compressive_regime(task: str, regimes: dict[str, list[dict]]) -> dict[str, Any]:
    order = _headline_order(regimes)
    fits = {}
    for regime in REGIMES:
        entries = [_order_entry(a, order) for a in regimes[regime]]
        fits[regime] = {
            "slope": [_number(e["linear_fit"]["slope"]) if e else math.nan
                      for e in entries],
            "r2": [_number(e["linear_fit"]["r2"]) if e else math.nan for e in entries],
        }
    result = claims.compressive_regime(
        task,
        fits["grok"]["slope"],
        fits["grok"]["r2"],
        fits["steady"]["slope"],
        fits["steady"]["r2"],
    )
    return _finish(
        result, 2, f"{task}_pruning", regimes,
        pruning_order=order,
        linear_fit_max_fraction=_shared_setting(regimes, "linear_fit_max_fraction"),
    )


def _compression_factors(task: str, regimes: dict[str, list[dict]]) -> dict[str, Any]:
    order = _headline_order(regimes)
    factors = {}
    for regime in REGIMES:
        entries = [_order_entry(a, order) for a in regimes[regime]]
        factors[regime] = [
            _number(e["compression"]["factor"]) if e else math.nan for e in entries
        ]
    result = claims.compression_factors(
        task,
        factors["grok"],
        factors["steady"],
        pruning_order=order or "none",
        tolerance=_number(_shared_setting(regimes, "tolerance")),
    )
    return _finish(result, 3, f"{task}_pruning", regimes,
                   fisher_form=_shared_setting(regimes, "fisher_form"))


def _shared_setting(regimes: dict[str, list[dict]], name: str) -> Any:
    """Return an analysis setting shared by every analysis, or None if they differ."""
    values = [a["analysis_config"].get(name) for r in REGIMES for a in regimes[r]]
    if not values or any(value != values[0] for value in values):
        return None
    return values[0]


# --- Claim 5: peak compressibility after the plateau -------------------------


def _peak_after_plateau(task: str, regimes: dict[str, list[dict]]) -> dict[str, Any]:
    grok = regimes["grok"]
    missing = [a["run"] for a in grok if "pruning_over_time" not in a]
    figure = f"{task}_compressibility_over_time"
    if missing or not grok:
        # Without the curve over training no seed has a peak epoch, so every
        # grok seed goes in as NaN and the evaluator returns inconclusive.
        empty = [math.nan] * len(grok)
        result = claims.peak_after_plateau(task, empty, empty, empty)
        entry = _finish(result, 5, figure, {"grok": grok})
        if missing:
            entry["details"]["reason"] = NO_PRUNING_OVER_TIME
            entry["details"]["runs_without_pruning_over_time"] = missing
        return entry
    order = _headline_order({"grok": grok, "steady": []})
    peaks = [_peak(a["pruning_over_time"], order) for a in grok]
    result = claims.peak_after_plateau(
        task,
        [_number(peak["epoch"]) for peak in peaks],
        [_number(a["timing"]["epoch_train_fit"]) for a in grok],
        [_number(a["timing"]["epoch_test_fit"]) for a in grok],
    )
    tolerances = [a["pruning_over_time"].get("tolerance") for a in grok]
    return _finish(
        result, 5, figure, {"grok": grok},
        pruning_order=order,
        tolerance=tolerances[0] if len(set(tolerances)) == 1 else None,
        peaks=peaks,
    )


def _peak(over_time: dict[str, Any], order: str | None) -> dict[str, Any]:
    """Find the epoch of the largest finite compression factor in one run's curve.

    Factors stored as None (unbounded, or undefined) are skipped: early in
    training every parameter can often be pruned without losing chance
    accuracy, and that unbounded factor does not measure compressibility.
    """
    # NOTE: a run whose best factor is unbounded at a trained checkpoint gets
    # its peak from the finite factors only; n_unbounded counts the skipped ones.
    epochs = over_time["epochs"]
    entry = over_time["orders"].get(order) if order else None
    if entry is None:
        return {"epoch": None, "factor": None, "n_unbounded": 0}
    factors = np.array([_number(f) for f in entry["compression_factor"]])
    finite = np.isfinite(factors)
    if not finite.any():
        return {"epoch": None, "factor": None, "n_unbounded": int(factors.size)}
    best = int(np.argmax(np.where(finite, factors, -np.inf)))
    return {
        "epoch": float(epochs[best]),
        "factor": float(factors[best]),
        "n_unbounded": int((~finite).sum()),
    }


# --- Claims 4 and 6: plateau dynamics across tasks ---------------------------


def plateau_cosines(analysis: dict[str, Any]) -> list[float]:
    """Return the Fisher cosines of consecutive steps that turn on the plateau.

    A cosine belongs to the checkpoint shared by its two steps
    (``geometry["turn_epochs"]``). It lies on the plateau when that epoch is in
    [epoch_train_fit, epoch_test_fit]. A run without both epochs has no plateau
    and gets an empty list.
    """
    start = analysis["timing"]["epoch_train_fit"]
    end = analysis["timing"]["epoch_test_fit"]
    if start is None or end is None:
        return []
    geometry = analysis["geometry"]
    turns = geometry["turn_epochs"]
    cosines = geometry["all"]["fisher_cosine"]
    if len(turns) != len(cosines):
        raise ValueError(
            f"analysis of {analysis['run']} has {len(turns)} turn epochs but "
            f"{len(cosines)} Fisher cosines: re-run groklab analyze"
        )
    return [_number(c) for e, c in zip(turns, cosines) if start <= e <= end]


def _plateau_median(analysis: dict[str, Any]) -> float:
    values = np.array(plateau_cosines(analysis))
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def _grok_by_task(groups: Analyses) -> dict[str, list[dict[str, Any]]]:
    """Return the grok analyses of every task in ``Task``, empty where none were given.

    Absent tasks stay in, with no seeds, so that a verdict across tasks never
    rests on one task alone.
    """
    return {task: groups.get(task, {}).get("grok", []) for task in TASKS}


def _figures(stem: str) -> str:
    return ", ".join(f"{task}_{stem}" for task in TASKS)


def _task_dependence(groups: Analyses) -> dict[str, Any]:
    grok = _grok_by_task(groups)
    result = claims.task_dependence(
        {task: [_plateau_median(a) for a in members] for task, members in grok.items()}
    )
    entry = _finish(result, 4, _figures("geometry"), grok, compared_tasks=result.task)
    return _all_tasks(entry)


def _straight_path(groups: Analyses) -> dict[str, Any]:
    grok = _grok_by_task(groups)
    result = claims.straight_path(
        {task: [plateau_cosines(a) for a in members] for task, members in grok.items()}
    )
    entry = _finish(result, 6, _figures("geometry"), grok, compared_tasks=result.task)
    return _all_tasks(entry)


def _all_tasks(entry: dict[str, Any]) -> dict[str, Any]:
    """Label a claim tested across tasks with task "all"; details keep the tasks."""
    entry["task"] = "all"
    return entry

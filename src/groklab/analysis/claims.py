"""Verdicts on six claims about grokking, computed from per-seed measurements.

Each public function tests one claim on plain numbers (one value or one array
per seed), so it can be checked on synthetic inputs with known results. It
returns a ``ClaimResult`` with the verdict ``supported``, ``not_supported`` or
``inconclusive``, the statistic, the threshold, the value and its spread, the
number of seeds used, and the inputs and settings in ``details``.

The statistics and thresholds below were fixed before any groklab result was
compared against them. Rules shared by every claim:

- A group (a regime or a task) needs at least ``MIN_SEEDS`` finite values, or
  the verdict is ``inconclusive`` and ``details["reason"]`` names the group that
  fell short.
- NaN and infinite inputs (``None`` counts as NaN) are dropped and counted in
  ``details["n_dropped"]``.
- Standard deviations are sample standard deviations (``ddof=1``). Where the
  value is a median, the spread is the interquartile range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from groklab.analysis.features import jaccard

SUPPORTED = "supported"
NOT_SUPPORTED = "not_supported"
INCONCLUSIVE = "inconclusive"

# Minimum number of finite per-seed values in each group, because a spread needs two.
MIN_SEEDS = 2

# Claim 1, same features. Mean Jaccard overlap of the key-frequency sets over
# all (grok seed, steady seed) pairs: at or above this the sets agree ...
JACCARD_SAME = 0.5
# ... and at or below this they clearly differ (at most 1 of 5 frequencies
# shared on average when both sets contain 5).
JACCARD_DIFFERENT = 0.25
# A feature score (Fourier concentration, probe R^2) agrees between regimes when
# |mean_grok - mean_steady| <= this many times the larger per-regime std ...
SCORE_SAME_STDS = 2.0
# ... and clearly differs when the gap exceeds this many times that std.
SCORE_DIFFERENT_STDS = 4.0

# Claim 2, compressive regime. A seed's loss-vs-pruned-fraction curve is
# compressive when its linear fit has slope > 0 and R^2 >= this (the default
# of AnalysisConfig.compressive_r2).
COMPRESSIVE_R2 = 0.9
# Supported when at least this fraction of steady seeds is compressive ...
STEADY_FRACTION_MIN = 0.8
# ... and at most this fraction of grok seeds. Not supported when the steady
# fraction is at most GROK_FRACTION_MAX or does not exceed the grok fraction.
GROK_FRACTION_MAX = 0.2

# Claim 3, compression factors. The claimed geometric-mean factors.
EXPECTED_STEADY_FACTOR = 25.0
EXPECTED_GROK_FACTOR = 5.0
# A geometric mean matches its claimed factor when within this factor of it.
FACTOR_TOLERANCE = 2.0
# Supported needs steady / grok geometric means >= this. A ratio <= 1 is not supported.
MIN_FACTOR_RATIO = 2.0

# Claim 4, task dependence. |Cohen's d| of a dynamics statistic between two
# tasks: at or above this the tasks clearly differ (the means lie two pooled
# standard deviations apart) ...
TASK_EFFECT_SUPPORTED = 2.0
# ... and below this they do not (a small effect by Cohen's convention).
TASK_EFFECT_NOT_SUPPORTED = 0.3

# Claim 5, peak compressibility right after the plateau. The offset is
# (epoch of max compression factor - test-fit epoch) / plateau length, where
# the plateau runs from the train-fit to the test-fit epoch. Supported when the
# median offset lies in this interval ...
PEAK_OFFSET_SUPPORTED = (0.0, 0.25)
# ... not supported when it lies outside this one.
PEAK_OFFSET_PLAUSIBLE = (-0.5, 1.0)

# Claim 6, straight path. A plateau step is straight when the Fisher cosine of
# consecutive steps is >= this ...
STRAIGHT_COSINE = 0.9
# ... and no task comes close when every task's median is below this.
CURVED_COSINE = 0.5


@dataclass(frozen=True)
class ClaimResult:
    """Verdict on one claim, with the statistic and threshold that decided it.

    ``n_seeds`` maps each group (regime or task) to the finite per-seed values
    used. ``value`` and ``spread`` are ``None`` when no statistic could be
    computed.
    """

    id: str
    claim: str
    task: str
    verdict: str
    statistic: str
    threshold: str | float
    value: float | None
    spread: float | None
    n_seeds: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain JSON types, with NaN and infinity as None."""
        return _json_safe(asdict(self))


# --- Shared helpers ----------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _per_seed(values: ArrayLike, name: str) -> np.ndarray:
    """Convert one value per seed to a 1-D float array, keeping NaN.

    Raises ValueError naming ``name`` when the input is not a flat sequence of
    numbers.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} = {values!r} is not numeric: pass one number per seed"
        ) from None
    if array.ndim != 1:
        raise ValueError(
            f"{name} has shape {array.shape}: pass a flat sequence, one number per seed"
        )
    return array


def _finite(values: ArrayLike, name: str) -> tuple[np.ndarray, int]:
    """Return the finite per-seed values and how many were dropped."""
    array = _per_seed(values, name)
    keep = np.isfinite(array)
    return array[keep], int(array.size - keep.sum())


def _check_min_seeds(min_seeds: int) -> None:
    if min_seeds < 2:
        raise ValueError(
            f"min_seeds = {min_seeds} is too small: pass at least 2, because a "
            "spread needs two seeds"
        )


def _too_few_reason(n_seeds: Mapping[str, int], min_seeds: int) -> str | None:
    """Return why some group has too few seeds, or None when every group has enough.

    Raises ValueError when ``min_seeds`` is below 2, because a spread needs two.
    """
    _check_min_seeds(min_seeds)
    short = [group for group, n in n_seeds.items() if n < min_seeds]
    if not short:
        return None
    counts = ", ".join(f"{group} has {n_seeds[group]}" for group in short)
    return f"needs at least {min_seeds} finite seeds per group, but {counts}"


def _iqr(values: np.ndarray) -> float:
    q25, q75 = np.quantile(values, [0.25, 0.75])
    return float(q75 - q25)


def _decide(supported: bool, not_supported: bool) -> str:
    if supported:
        return SUPPORTED
    if not_supported:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _inconclusive(base: dict[str, Any], reason: str, **details: Any) -> ClaimResult:
    """Return an inconclusive result without a value, stating the reason."""
    return ClaimResult(
        **base,
        verdict=INCONCLUSIVE,
        value=None,
        spread=None,
        details={**details, "reason": reason},
    )


def _group_counts(**groups: np.ndarray) -> dict[str, int]:
    return {name: int(values.size) for name, values in groups.items()}


# --- Claim 1: grokked and steady models learn the same features --------------


def same_features(
    task: str,
    grok_scores: Mapping[str, ArrayLike],
    steady_scores: Mapping[str, ArrayLike],
    *,
    grok_key_frequencies: Sequence[Sequence[int] | None] | None = None,
    steady_key_frequencies: Sequence[Sequence[int] | None] | None = None,
    jaccard_same: float = JACCARD_SAME,
    jaccard_different: float = JACCARD_DIFFERENT,
    score_same_stds: float = SCORE_SAME_STDS,
    score_different_stds: float = SCORE_DIFFERENT_STDS,
    min_seeds: int = MIN_SEEDS,
) -> ClaimResult:
    """Test whether grokked and steady models of ``task`` learn the same features.

    ``grok_scores`` and ``steady_scores`` map each feature score to its per-seed
    values, with the same keys in both: the Fourier concentration
    (``top_k_norm_fraction``) for modular addition, the probe R^2 of energy and
    of |m| for Ising. The optional key-frequency sets (one per seed, modular
    addition only) add the mean pairwise Jaccard overlap as a second criterion.

    Supported when every score agrees within ``score_same_stds`` times the
    larger per-regime std and the Jaccard overlap (if given) is >=
    ``jaccard_same``. Not supported when every score differs by more than
    ``score_different_stds`` stds and the overlap (if given) is <=
    ``jaccard_different``. With key frequencies, the value is the mean Jaccard
    overlap and the spread its std over seed pairs. Without them, the value is
    the largest gap between regime means and the spread that score's larger std.
    """
    _check_score_names(grok_scores, steady_scores)
    use_jaccard = _check_key_frequency_inputs(
        grok_key_frequencies, steady_key_frequencies
    )
    base = {
        "id": "same_features",
        "claim": "grokked and steady models learn the same features",
        "task": task,
        "statistic": (
            "mean pairwise Jaccard overlap of key-frequency sets, and per feature "
            "score |mean_grok - mean_steady| against the larger per-regime std"
            if use_jaccard
            else "largest |mean_grok - mean_steady| over feature scores, against "
            "that score's larger per-regime std"
        ),
        "threshold": _same_features_threshold(
            use_jaccard, jaccard_same, jaccard_different,
            score_same_stds, score_different_stds,
        ),
    }
    scores, n_dropped, n_seeds = _compare_scores(grok_scores, steady_scores)
    details: dict[str, Any] = {
        "scores": scores,
        "score_same_stds": score_same_stds,
        "score_different_stds": score_different_stds,
    }
    if use_jaccard:
        pairs, dropped_sets = _jaccard_pairs(
            grok_key_frequencies, steady_key_frequencies
        )
        n_dropped += dropped_sets["grok"] + dropped_sets["steady"]
        for group in ("grok", "steady"):
            n_seeds[group] = min(n_seeds[group], pairs[f"n_{group}"])
        details.update(jaccard_same=jaccard_same, jaccard_different=jaccard_different)
    details["n_dropped"] = n_dropped
    base["n_seeds"] = n_seeds
    reason = _too_few_reason(n_seeds, min_seeds)
    if reason:
        return _inconclusive(base, reason, **details)

    allowed = [entry["max_std"] for entry in scores.values()]
    gaps = [entry["gap"] for entry in scores.values()]
    scores_same = all(g <= score_same_stds * s for g, s in zip(gaps, allowed))
    scores_differ = all(g > score_different_stds * s for g, s in zip(gaps, allowed))
    if use_jaccard:
        overlaps = np.array(pairs["overlaps"])
        value, spread = float(overlaps.mean()), float(overlaps.std(ddof=1))
        details["jaccard_pairs"] = pairs["overlaps"]
        supported = value >= jaccard_same and scores_same
        not_supported = value <= jaccard_different and scores_differ
    else:
        widest = max(scores, key=lambda name: scores[name]["gap"])
        value, spread = scores[widest]["gap"], scores[widest]["max_std"]
        details["widest_score"] = widest
        supported, not_supported = scores_same, scores_differ
    return ClaimResult(
        **base,
        verdict=_decide(supported, not_supported),
        value=value,
        spread=spread,
        details=details,
    )


def _check_score_names(
    grok_scores: Mapping[str, ArrayLike], steady_scores: Mapping[str, ArrayLike]
) -> None:
    if not grok_scores or set(grok_scores) != set(steady_scores):
        raise ValueError(
            f"feature scores {sorted(grok_scores)} (grok) and {sorted(steady_scores)} "
            "(steady) must be the same non-empty set of names"
        )


def _check_key_frequency_inputs(grok: Any, steady: Any) -> bool:
    """Return whether key-frequency sets were given, raising if only one side was."""
    if (grok is None) != (steady is None):
        raise ValueError(
            "key frequencies were given for only one regime: pass "
            "grok_key_frequencies and steady_key_frequencies together"
        )
    return grok is not None


def _same_features_threshold(
    use_jaccard: bool, j_same: float, j_diff: float, same: float, diff: float
) -> str:
    scores = f"every score gap <= {same:g} x larger std"
    differ = f"every score gap > {diff:g} x larger std"
    if use_jaccard:
        return (
            f"Supported: Jaccard >= {j_same:g} and {scores}. "
            f"Not supported: Jaccard <= {j_diff:g} and {differ}"
        )
    return f"Supported: {scores}. Not supported: {differ}"


def _compare_scores(
    grok_scores: Mapping[str, ArrayLike], steady_scores: Mapping[str, ArrayLike]
) -> tuple[dict[str, dict[str, float]], int, dict[str, int]]:
    """Compare each score's regime means; return the table, drops and seed counts.

    A score with fewer than two finite values in a regime gets NaN statistics,
    and the caller rejects it through the seed counts.
    """
    table: dict[str, dict[str, float]] = {}
    n_dropped = 0
    n_seeds = {"grok": np.iinfo(np.int64).max, "steady": np.iinfo(np.int64).max}
    for name in sorted(grok_scores):
        grok, dropped_grok = _finite(grok_scores[name], f"grok score {name}")
        steady, dropped_steady = _finite(steady_scores[name], f"steady score {name}")
        n_dropped += dropped_grok + dropped_steady
        n_seeds["grok"] = min(n_seeds["grok"], grok.size)
        n_seeds["steady"] = min(n_seeds["steady"], steady.size)
        table[name] = _score_gap(grok, steady)
    return table, n_dropped, {k: int(v) for k, v in n_seeds.items()}


def _score_gap(grok: np.ndarray, steady: np.ndarray) -> dict[str, float]:
    if grok.size < 2 or steady.size < 2:
        nan = float("nan")
        return {"mean_grok": nan, "mean_steady": nan, "std_grok": nan,
                "std_steady": nan, "gap": nan, "max_std": nan}
    std_grok, std_steady = float(grok.std(ddof=1)), float(steady.std(ddof=1))
    return {
        "mean_grok": float(grok.mean()),
        "mean_steady": float(steady.mean()),
        "std_grok": std_grok,
        "std_steady": std_steady,
        "gap": abs(float(grok.mean() - steady.mean())),
        "max_std": max(std_grok, std_steady),
    }


def _jaccard_pairs(
    grok: Sequence[Sequence[int] | None], steady: Sequence[Sequence[int] | None]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Return the Jaccard overlap of every (grok, steady) pair of key-frequency sets.

    A seed whose set is ``None`` (not analysed) is dropped and counted.
    """
    grok_sets = [set(s) for s in grok if s is not None]
    steady_sets = [set(s) for s in steady if s is not None]
    overlaps = [jaccard(a, b) for a in grok_sets for b in steady_sets]
    pairs = {
        "overlaps": overlaps,
        "n_grok": len(grok_sets),
        "n_steady": len(steady_sets),
    }
    dropped = {
        "grok": len(grok) - len(grok_sets),
        "steady": len(steady) - len(steady_sets),
    }
    return pairs, dropped


# --- Claim 2: steady training has a compressive regime, grokking lacks it ----


def compressive_regime(
    task: str,
    grok_slopes: ArrayLike,
    grok_r2: ArrayLike,
    steady_slopes: ArrayLike,
    steady_r2: ArrayLike,
    *,
    r2_threshold: float = COMPRESSIVE_R2,
    steady_fraction_min: float = STEADY_FRACTION_MIN,
    grok_fraction_max: float = GROK_FRACTION_MAX,
    min_seeds: int = MIN_SEEDS,
) -> ClaimResult:
    """Test whether steady seeds have a compressive regime and grok seeds do not.

    The inputs are the per-seed slope and R^2 of the linear fit of test loss
    against pruned fraction. A seed counts once both are finite. The value is
    the steady minus the grok fraction of compressive seeds, and the spread the
    binomial standard error of that difference.
    """
    grok = _compressive_flags(grok_slopes, grok_r2, r2_threshold, "grok")
    steady = _compressive_flags(steady_slopes, steady_r2, r2_threshold, "steady")
    n_seeds = {"grok": grok["n"], "steady": steady["n"]}
    base = {
        "id": "compressive_regime",
        "claim": "steady training has a compressive regime that grokking lacks",
        "task": task,
        "statistic": (
            "fraction of seeds whose loss-vs-pruned-fraction fit has slope > 0 and "
            f"R^2 >= {r2_threshold:g}, steady minus grok"
        ),
        "threshold": (
            f"Supported: steady fraction >= {steady_fraction_min:g} and grok fraction "
            f"<= {grok_fraction_max:g}. Not supported: steady fraction <= "
            f"{grok_fraction_max:g} or grok fraction >= steady fraction"
        ),
        "n_seeds": n_seeds,
    }
    details = {
        "r2_threshold": r2_threshold,
        "n_dropped": grok["n_dropped"] + steady["n_dropped"],
    }
    reason = _too_few_reason(n_seeds, min_seeds)
    if reason:
        return _inconclusive(base, reason, **details)
    p_grok, p_steady = grok["fraction"], steady["fraction"]
    spread = np.sqrt(
        p_grok * (1 - p_grok) / grok["n"] + p_steady * (1 - p_steady) / steady["n"]
    )
    supported = p_steady >= steady_fraction_min and p_grok <= grok_fraction_max
    not_supported = p_steady <= grok_fraction_max or p_grok >= p_steady
    return ClaimResult(
        **base,
        verdict=_decide(supported, not_supported),
        value=p_steady - p_grok,
        spread=float(spread),
        details={**details, "grok_fraction": p_grok, "steady_fraction": p_steady},
    )


def _compressive_flags(
    slopes: ArrayLike, r2: ArrayLike, r2_threshold: float, group: str
) -> dict[str, Any]:
    """Count the compressive seeds of one regime among those with finite fits."""
    slope_values = _per_seed(slopes, f"{group}_slopes")
    r2_values = _per_seed(r2, f"{group}_r2")
    if slope_values.size != r2_values.size:
        raise ValueError(
            f"{group}_slopes has {slope_values.size} seeds but {group}_r2 has "
            f"{r2_values.size}: pass one slope and one R^2 per seed"
        )
    keep = np.isfinite(slope_values) & np.isfinite(r2_values)
    flags = (slope_values[keep] > 0) & (r2_values[keep] >= r2_threshold)
    n = int(keep.sum())
    return {
        "n": n,
        "n_dropped": int(keep.size - n),
        "fraction": float(flags.mean()) if n else float("nan"),
    }


# --- Claim 3: compression factors about 25x (steady) and 5x (grokking) -------


def compression_factors(
    task: str,
    grok_factors: ArrayLike,
    steady_factors: ArrayLike,
    *,
    pruning_order: str,
    tolerance: float,
    expected_steady: float = EXPECTED_STEADY_FACTOR,
    expected_grok: float = EXPECTED_GROK_FACTOR,
    factor_tolerance: float = FACTOR_TOLERANCE,
    min_ratio: float = MIN_FACTOR_RATIO,
    min_seeds: int = MIN_SEEDS,
) -> ClaimResult:
    """Test whether the compression factors are about 25x (steady) and 5x (grok).

    ``pruning_order`` and ``tolerance`` (the accuracy tolerance behind the
    factors) are recorded in ``details``, because the factors mean nothing
    without them. The value is the ratio of steady to grok geometric means.
    Its spread is the multiplicative standard error exp(sqrt(s_g^2 / n_g +
    s_s^2 / n_s)), where s is the std of the log factors of a regime.
    Factors must be positive. An infinite factor (every parameter prunable)
    is dropped and counted like NaN.
    """
    # NOTE: dropping infinite factors biases a regime's mean downwards. The
    # count in details["n_dropped"] shows when that happened.
    grok, dropped_grok = _positive_factors(grok_factors, "grok_factors")
    steady, dropped_steady = _positive_factors(steady_factors, "steady_factors")
    n_seeds = _group_counts(grok=grok, steady=steady)
    base = {
        "id": "compression_factors",
        "claim": "compression factors are about 25x (steady) and 5x (grokking)",
        "task": task,
        "statistic": "geometric mean compression factor, steady / grok",
        "threshold": (
            f"Supported: ratio >= {min_ratio:g}, steady mean within "
            f"x{factor_tolerance:g} of {expected_steady:g} and grok mean within "
            f"x{factor_tolerance:g} of "
            f"{expected_grok:g}. Not supported: ratio <= 1"
        ),
        "n_seeds": n_seeds,
    }
    details: dict[str, Any] = {
        "pruning_order": pruning_order,
        "tolerance": tolerance,
        "expected_steady": expected_steady,
        "expected_grok": expected_grok,
        "factor_tolerance": factor_tolerance,
        "min_ratio": min_ratio,
        "n_dropped": dropped_grok + dropped_steady,
    }
    reason = _too_few_reason(n_seeds, min_seeds)
    if reason:
        return _inconclusive(base, reason, **details)
    log_grok, log_steady = np.log(grok), np.log(steady)
    ratio = float(np.exp(log_steady.mean() - log_grok.mean()))
    log_se = np.sqrt(
        log_grok.var(ddof=1) / grok.size + log_steady.var(ddof=1) / steady.size
    )
    details.update(_geometric_summary("grok", log_grok))
    details.update(_geometric_summary("steady", log_steady))
    steady_matches = _within_factor(
        details["steady_geometric_mean"], expected_steady, factor_tolerance
    )
    grok_matches = _within_factor(
        details["grok_geometric_mean"], expected_grok, factor_tolerance
    )
    details.update(steady_matches=steady_matches, grok_matches=grok_matches)
    supported = ratio >= min_ratio and steady_matches and grok_matches
    return ClaimResult(
        **base,
        verdict=_decide(supported, ratio <= 1.0),
        value=ratio,
        spread=float(np.exp(log_se)),
        details=details,
    )


def _positive_factors(values: ArrayLike, name: str) -> tuple[np.ndarray, int]:
    factors, n_dropped = _finite(values, name)
    if np.any(factors <= 0):
        raise ValueError(
            f"{name} contains {factors[factors <= 0].tolist()}: compression factors "
            "are total / kept parameters and must be positive"
        )
    return factors, n_dropped


def _geometric_summary(group: str, logs: np.ndarray) -> dict[str, float]:
    return {
        f"{group}_geometric_mean": float(np.exp(logs.mean())),
        f"{group}_geometric_std_factor": float(np.exp(logs.std(ddof=1))),
    }


def _within_factor(value: float, expected: float, factor: float) -> bool:
    return expected / factor <= value <= expected * factor


# --- Claim 4: development during grokking depends on the task ----------------


def task_dependence(
    statistic_by_task: Mapping[str, ArrayLike],
    *,
    statistic_name: str = "median Fisher cosine of consecutive steps on the plateau",
    effect_supported: float = TASK_EFFECT_SUPPORTED,
    effect_not_supported: float = TASK_EFFECT_NOT_SUPPORTED,
    min_seeds: int = MIN_SEEDS,
) -> ClaimResult:
    """Test whether a grokking-run dynamics statistic differs between two tasks.

    ``statistic_by_task`` maps each of exactly two tasks to the per-seed values
    of ``statistic_name``. The value is Cohen's d (first task minus second,
    over the pooled std) and the spread its large-sample standard error
    sqrt((n1 + n2) / (n1 n2) + d^2 / (2 (n1 + n2))). Equal means with zero
    pooled std give d = 0, and different means with zero pooled std give an
    infinite d.
    """
    if len(statistic_by_task) != 2:
        raise ValueError(
            f"statistic_by_task has tasks {sorted(statistic_by_task)}: pass exactly two"
        )
    (task_a, values_a), (task_b, values_b) = statistic_by_task.items()
    first, dropped_a = _finite(values_a, f"statistic of task {task_a}")
    second, dropped_b = _finite(values_b, f"statistic of task {task_b}")
    n_seeds = {task_a: int(first.size), task_b: int(second.size)}
    base = {
        "id": "task_dependence",
        "claim": "model development during grokking is task-dependent",
        "task": f"{task_a} vs {task_b}",
        "statistic": f"Cohen's d of the {statistic_name} between tasks",
        "threshold": (
            f"Supported: |d| >= {effect_supported:g}. "
            f"Not supported: |d| < {effect_not_supported:g}"
        ),
        "n_seeds": n_seeds,
    }
    details: dict[str, Any] = {
        "statistic_name": statistic_name,
        "n_dropped": dropped_a + dropped_b,
    }
    reason = _too_few_reason(n_seeds, min_seeds)
    if reason:
        return _inconclusive(base, reason, **details)
    d = _cohens_d(first, second)
    n_a, n_b = first.size, second.size
    standard_error = np.sqrt((n_a + n_b) / (n_a * n_b) + d**2 / (2 * (n_a + n_b)))
    for task, values in ((task_a, first), (task_b, second)):
        details[f"mean_{task}"] = float(values.mean())
        details[f"std_{task}"] = float(values.std(ddof=1))
    return ClaimResult(
        **base,
        verdict=_decide(abs(d) >= effect_supported, abs(d) < effect_not_supported),
        value=d,
        spread=float(standard_error),
        details=details,
    )


def _cohens_d(first: np.ndarray, second: np.ndarray) -> float:
    difference = float(first.mean() - second.mean())
    pooled_var = (
        (first.size - 1) * first.var(ddof=1) + (second.size - 1) * second.var(ddof=1)
    ) / (first.size + second.size - 2)
    if pooled_var == 0:
        return 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
    return difference / float(np.sqrt(pooled_var))


# --- Claim 5: peak compressibility comes right after the plateau -------------


def peak_after_plateau(
    task: str,
    peak_epochs: ArrayLike,
    train_fit_epochs: ArrayLike,
    test_fit_epochs: ArrayLike,
    *,
    supported_interval: tuple[float, float] = PEAK_OFFSET_SUPPORTED,
    plausible_interval: tuple[float, float] = PEAK_OFFSET_PLAUSIBLE,
    min_seeds: int = MIN_SEEDS,
) -> ClaimResult:
    """Test whether each grok seed's compression factor peaks just after its plateau.

    Per seed, the offset is (peak epoch - test-fit epoch) / (test-fit epoch -
    train-fit epoch): 0 is the end of the plateau, 1 one plateau length later.
    A seed without a plateau (test fit not after train fit) or with a NaN epoch
    is dropped and counted. The value is the median offset and the spread its
    interquartile range.
    """
    peaks = _per_seed(peak_epochs, "peak_epochs")
    starts = _per_seed(train_fit_epochs, "train_fit_epochs")
    ends = _per_seed(test_fit_epochs, "test_fit_epochs")
    if not peaks.size == starts.size == ends.size:
        raise ValueError(
            f"peak_epochs, train_fit_epochs and test_fit_epochs have {peaks.size}, "
            f"{starts.size} and {ends.size} seeds: pass one epoch of each per seed"
        )
    finite = np.isfinite(peaks) & np.isfinite(starts) & np.isfinite(ends)
    with np.errstate(invalid="ignore"):
        has_plateau = finite & (ends > starts)
    offsets = (peaks[has_plateau] - ends[has_plateau]) / (
        ends[has_plateau] - starts[has_plateau]
    )
    low, high = supported_interval
    outer_low, outer_high = plausible_interval
    base = {
        "id": "peak_after_plateau",
        "claim": "peak compressibility comes immediately after the grokking plateau",
        "task": task,
        "statistic": (
            "median over grok seeds of (epoch of max compression factor - test-fit "
            "epoch) / plateau length"
        ),
        "threshold": (
            f"Supported: median in [{low:g}, {high:g}]. Not supported: median "
            f"outside [{outer_low:g}, {outer_high:g}]"
        ),
        "n_seeds": {"grok": int(offsets.size)},
    }
    details: dict[str, Any] = {
        "n_dropped": int(peaks.size - finite.sum()),
        "n_no_plateau": int(finite.sum() - has_plateau.sum()),
        "offsets": offsets.tolist(),
    }
    reason = _too_few_reason(base["n_seeds"], min_seeds)
    if reason:
        return _inconclusive(base, reason, **details)
    median = float(np.median(offsets))
    return ClaimResult(
        **base,
        verdict=_decide(
            low <= median <= high, not outer_low <= median <= outer_high
        ),
        value=median,
        spread=_iqr(offsets),
        details=details,
    )


# --- Claim 6: grokking follows a straight path in information space ----------


def straight_path(
    plateau_cosines: Mapping[str, Sequence[ArrayLike]],
    *,
    straight_cosine: float = STRAIGHT_COSINE,
    curved_cosine: float = CURVED_COSINE,
    min_seeds: int = MIN_SEEDS,
) -> ClaimResult:
    """Test whether grok runs move straight in information space in some task.

    ``plateau_cosines`` maps each task to one array per grok seed: the Fisher
    cosines of consecutive steps whose epochs lie on that seed's plateau. A
    seed's statistic is the median of its finite cosines. A task's value is the
    median over seeds and its spread their interquartile range. The result
    reports the task with the highest value among tasks with enough seeds.
    """
    if not plateau_cosines:
        raise ValueError("plateau_cosines is empty: pass at least one task")
    _check_min_seeds(min_seeds)
    tasks = {task: _seed_medians(task, seeds, straight_cosine)
             for task, seeds in plateau_cosines.items()}
    n_seeds = {task: len(entry["seed_medians"]) for task, entry in tasks.items()}
    base = {
        "id": "straight_path",
        "claim": "grokking follows a straight path in information space in some task",
        "task": ", ".join(plateau_cosines),
        "statistic": (
            "per task, median over grok seeds of the median Fisher cosine of "
            "consecutive plateau steps; highest task reported"
        ),
        "threshold": (
            f"Supported: some task >= {straight_cosine:g}. Not supported: every "
            f"task < {curved_cosine:g}"
        ),
        "n_seeds": n_seeds,
    }
    details: dict[str, Any] = {
        "tasks": tasks,
        "n_dropped": sum(entry["n_dropped"] for entry in tasks.values()),
    }
    ready = {task: e for task, e in tasks.items() if n_seeds[task] >= min_seeds}
    if not ready:
        return _inconclusive(base, _too_few_reason(n_seeds, min_seeds), **details)
    best = max(ready, key=lambda task: ready[task]["median"])
    details["best_task"] = best
    # Every task must have enough seeds before all of them can count as curved.
    all_curved = len(ready) == len(tasks) and all(
        e["median"] < curved_cosine for e in ready.values()
    )
    if len(ready) < len(tasks):
        details["reason_not_all_tasks"] = _too_few_reason(n_seeds, min_seeds)
    return ClaimResult(
        **base,
        verdict=_decide(ready[best]["median"] >= straight_cosine, all_curved),
        value=ready[best]["median"],
        spread=ready[best]["iqr"],
        details=details,
    )


def _seed_medians(
    task: str, seeds: Sequence[ArrayLike], straight_cosine: float
) -> dict[str, Any]:
    """Summarise one task's per-seed plateau cosines.

    NaN cosines are dropped and counted. A seed left with no finite cosine is
    dropped and counted in ``n_empty_seeds``.
    """
    medians, fractions, n_dropped, n_empty = [], [], 0, 0
    for index, cosines in enumerate(seeds):
        values, dropped = _finite(cosines, f"plateau cosines of {task} seed {index}")
        n_dropped += dropped
        if values.size == 0:
            n_empty += 1
            continue
        medians.append(float(np.median(values)))
        fractions.append(float(np.mean(values >= straight_cosine)))
    array = np.array(medians)
    return {
        "seed_medians": medians,
        "seed_straight_fractions": fractions,
        "median": float(np.median(array)) if medians else float("nan"),
        "iqr": _iqr(array) if medians else float("nan"),
        "n_dropped": n_dropped,
        "n_empty_seeds": n_empty,
    }

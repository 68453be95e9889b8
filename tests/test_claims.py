"""Claim verdicts on synthetic per-seed measurements with hand-computed results."""

import json
import math

import numpy as np
import pytest

from groklab.analysis.claims import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    ClaimResult,
    compression_factors,
    compressive_regime,
    peak_after_plateau,
    same_features,
    straight_path,
    task_dependence,
)

NAN = float("nan")


def assert_serialisable(result: ClaimResult) -> dict:
    """Check that the result survives strict JSON and return its dict."""
    data = result.to_dict()
    json.dumps(data, allow_nan=False)
    return data


def test_claim_result_dict_fields():
    result = task_dependence({"modadd": [0.1, 0.2], "ising": [0.7, 0.8]})
    data = assert_serialisable(result)
    assert list(data) == [
        "id", "claim", "task", "verdict", "statistic", "threshold",
        "value", "spread", "n_seeds", "details",
    ]
    assert data["id"] == "task_dependence"
    assert data["n_seeds"] == {"modadd": 2, "ising": 2}


def test_claims_reject_min_seeds_below_two():
    with pytest.raises(ValueError, match="min_seeds = 1"):
        task_dependence({"modadd": [0.1, 0.2], "ising": [0.7, 0.8]}, min_seeds=1)
    with pytest.raises(ValueError, match="min_seeds = 1"):
        straight_path({"ising": [[0.9], [0.95]]}, min_seeds=1)


# --- Claim 1: same features ---------------------------------------------------


def modadd_scores(grok, steady):
    return {"top_k_norm_fraction": grok}, {"top_k_norm_fraction": steady}


def test_same_features_modadd_supported():
    grok, steady = modadd_scores([0.30, 0.34], [0.31, 0.35])
    result = same_features(
        "modadd", grok, steady,
        grok_key_frequencies=[[1, 6, 22, 30, 41], [1, 6, 22, 30, 41]],
        steady_key_frequencies=[[1, 6, 22, 30, 50], [1, 6, 22, 30, 41]],
    )
    # Pairs: 4/6, 1, 4/6, 1 -> mean 5/6, std (ddof=1) sqrt(4 / 36 / 3).
    assert result.verdict == SUPPORTED
    assert result.value == pytest.approx(5 / 6)
    assert result.spread == pytest.approx(math.sqrt(1 / 27))
    assert result.n_seeds == {"grok": 2, "steady": 2}
    score = result.details["scores"]["top_k_norm_fraction"]
    assert score["gap"] == pytest.approx(0.01)
    assert score["max_std"] == pytest.approx(0.04 / math.sqrt(2))
    assert_serialisable(result)


def test_same_features_modadd_not_supported():
    grok, steady = modadd_scores([0.30, 0.32], [0.10, 0.12])
    result = same_features(
        "modadd", grok, steady,
        grok_key_frequencies=[[1, 2, 3, 4, 5]] * 2,
        steady_key_frequencies=[[6, 7, 8, 9, 10]] * 2,
    )
    # Jaccard 0 <= 0.25, and gap 0.2 > 4 x 0.01414.
    assert result.verdict == NOT_SUPPORTED
    assert result.value == 0.0
    assert result.spread == 0.0


def test_same_features_mixed_evidence_inconclusive():
    # Same key frequencies, but concentrations 0.2 apart with std 0.014.
    grok, steady = modadd_scores([0.30, 0.32], [0.10, 0.12])
    result = same_features(
        "modadd", grok, steady,
        grok_key_frequencies=[[1, 2, 3]] * 2,
        steady_key_frequencies=[[1, 2, 3]] * 2,
    )
    assert result.verdict == INCONCLUSIVE
    assert result.value == 1.0


def test_same_features_ising_supported():
    grok = {"energy": [0.90, 0.94], "abs_m": [0.70, 0.80]}
    steady = {"energy": [0.89, 0.91], "abs_m": [0.72, 0.76]}
    result = same_features("ising", grok, steady)
    # Energy gap 0.02 is the widest, and its larger std is 0.04 / sqrt(2).
    assert result.verdict == SUPPORTED
    assert result.value == pytest.approx(0.02)
    assert result.spread == pytest.approx(0.04 / math.sqrt(2))
    assert result.details["widest_score"] == "energy"


def test_same_features_ising_borderline():
    grok = {"energy": [0.90, 0.94], "abs_m": [0.70, 0.80]}
    steady = {"energy": [0.85, 0.87], "abs_m": [0.72, 0.76]}
    result = same_features("ising", grok, steady)
    # Gap 0.06 lies between 2 x 0.0283 and 4 x 0.0283.
    assert result.verdict == INCONCLUSIVE
    assert result.value == pytest.approx(0.06)


def test_same_features_one_seed_inconclusive():
    grok, steady = modadd_scores([0.30], [0.31, 0.35])
    result = same_features("modadd", grok, steady)
    assert result.verdict == INCONCLUSIVE
    assert result.value is None
    assert result.n_seeds == {"grok": 1, "steady": 2}
    assert "grok has 1" in result.details["reason"]


def test_same_features_drops_nan():
    grok, steady = modadd_scores([0.30, NAN, 0.34], [0.31, 0.35])
    result = same_features(
        "modadd", grok, steady,
        grok_key_frequencies=[[1, 2], None, [1, 2]],
        steady_key_frequencies=[[1, 2], [1, 2]],
    )
    assert result.verdict == SUPPORTED
    assert result.details["n_dropped"] == 2
    assert result.n_seeds == {"grok": 2, "steady": 2}


def test_same_features_all_nan_inconclusive():
    grok, steady = modadd_scores([NAN, NAN], [0.31, 0.35])
    result = same_features("modadd", grok, steady)
    assert result.verdict == INCONCLUSIVE
    assert result.details["n_dropped"] == 2
    assert_serialisable(result)


def test_same_features_rejects_bad_input():
    with pytest.raises(ValueError, match="same non-empty set"):
        same_features("ising", {"energy": [1, 2]}, {"abs_m": [1, 2]})
    with pytest.raises(ValueError, match="only one regime"):
        same_features("modadd", *modadd_scores([1, 2], [1, 2]),
                      grok_key_frequencies=[[1], [1]])
    with pytest.raises(ValueError, match="shape"):
        same_features("modadd", *modadd_scores([[1, 2]], [1, 2]))


# --- Claim 2: compressive regime ------------------------------------------------


def test_compressive_regime_supported_at_boundary():
    result = compressive_regime(
        "modadd",
        grok_slopes=[1, 1, 1, 1, 1], grok_r2=[0.95, 0.5, 0.5, 0.5, 0.5],
        steady_slopes=[1, 1, 1, 1, 1], steady_r2=[0.95, 0.95, 0.95, 0.95, 0.85],
    )
    # Steady 4/5 = 0.8, grok 1/5 = 0.2: both limits are inclusive.
    assert result.verdict == SUPPORTED
    assert result.value == pytest.approx(0.6)
    assert result.spread == pytest.approx(math.sqrt(0.16 / 5 * 2))
    assert result.details["steady_fraction"] == pytest.approx(0.8)
    assert result.details["grok_fraction"] == pytest.approx(0.2)


def test_compressive_regime_not_supported():
    # A negative slope with high R^2 is not compressive, so steady is 1/5.
    result = compressive_regime(
        "ising",
        grok_slopes=[1, 1], grok_r2=[0.2, 0.3],
        steady_slopes=[1, -1, -1, -1, -1], steady_r2=[0.95] * 5,
    )
    assert result.verdict == NOT_SUPPORTED
    assert result.value == pytest.approx(0.2)


def test_compressive_regime_grok_as_often_not_supported():
    result = compressive_regime(
        "modadd",
        grok_slopes=[1, 1, 1, 1, 1], grok_r2=[0.95, 0.95, 0.95, 0.5, 0.5],
        steady_slopes=[1, 1, 1, 1, 1], steady_r2=[0.95, 0.95, 0.95, 0.5, 0.5],
    )
    assert result.verdict == NOT_SUPPORTED
    assert result.value == 0.0


def test_compressive_regime_partial_inconclusive():
    result = compressive_regime(
        "modadd",
        grok_slopes=[1] * 5, grok_r2=[0.5] * 5,
        steady_slopes=[1] * 5, steady_r2=[0.95, 0.95, 0.95, 0.5, 0.5],
    )
    assert result.verdict == INCONCLUSIVE
    assert result.value == pytest.approx(0.6)
    assert result.spread == pytest.approx(math.sqrt(0.24 / 5))


def test_compressive_regime_threshold_is_an_input():
    result = compressive_regime(
        "modadd", grok_slopes=[1, 1], grok_r2=[0.5, 0.5],
        steady_slopes=[1, 1], steady_r2=[0.85, 0.85], r2_threshold=0.8,
    )
    assert result.verdict == SUPPORTED
    assert result.details["r2_threshold"] == 0.8


def test_compressive_regime_nan_and_few_seeds():
    result = compressive_regime(
        "modadd", grok_slopes=[1, NAN], grok_r2=[0.5, 0.5],
        steady_slopes=[1, 1], steady_r2=[0.95, NAN],
    )
    assert result.verdict == INCONCLUSIVE
    assert result.n_seeds == {"grok": 1, "steady": 1}
    assert result.details["n_dropped"] == 2
    assert result.value is None


def test_compressive_regime_rejects_length_mismatch():
    with pytest.raises(ValueError, match="one slope and one R\\^2 per seed"):
        compressive_regime("modadd", [1, 1], [0.5], [1, 1], [0.9, 0.9])


# --- Claim 3: compression factors ---------------------------------------------


def factors(grok, steady, **options):
    return compression_factors(
        "modadd", grok, steady, pruning_order="fisher", tolerance=0.01, **options
    )


def test_compression_factors_supported():
    result = factors([4.0, 6.25], [20.0, 31.25])
    # Geometric means 5 and 25, ratio 5. Each regime's log std is
    # ln(1.5625) / sqrt(2), so the standard error is ln(1.5625) / sqrt(2) too.
    assert result.verdict == SUPPORTED
    assert result.value == pytest.approx(5.0)
    assert result.spread == pytest.approx(1.5625 ** (1 / math.sqrt(2)))
    assert result.details["steady_geometric_mean"] == pytest.approx(25.0)
    assert result.details["grok_geometric_mean"] == pytest.approx(5.0)
    assert result.details["pruning_order"] == "fisher"
    assert result.details["tolerance"] == 0.01


def test_compression_factors_reversed_not_supported():
    result = factors([4.0, 5.0], [2.0, 2.5])
    assert result.verdict == NOT_SUPPORTED
    assert result.value == pytest.approx(0.5)


def test_compression_factors_wrong_magnitude_inconclusive():
    # Ratio 2, but 3x and 1.5x are far from 25x and 5x.
    result = factors([1.5, 1.5], [3.0, 3.0])
    assert result.verdict == INCONCLUSIVE
    assert result.value == pytest.approx(2.0)
    assert result.spread == pytest.approx(1.0)
    assert result.details["steady_matches"] is False


def test_compression_factors_expected_values_are_inputs():
    result = factors([1.5, 1.5], [3.0, 3.0], expected_steady=3.0, expected_grok=1.5)
    assert result.verdict == SUPPORTED
    assert result.details["expected_steady"] == 3.0


def test_compression_factors_drop_infinite_and_nan():
    result = factors([4.0, 6.25, NAN], [20.0, 31.25, math.inf])
    assert result.verdict == SUPPORTED
    assert result.details["n_dropped"] == 2
    assert result.n_seeds == {"grok": 2, "steady": 2}


def test_compression_factors_one_seed_inconclusive():
    result = factors([5.0], [25.0, 25.0])
    assert result.verdict == INCONCLUSIVE
    assert "grok has 1" in result.details["reason"]


def test_compression_factors_reject_non_positive():
    with pytest.raises(ValueError, match="must be positive"):
        factors([0.0, 5.0], [25.0, 25.0])


# --- Claim 4: task dependence ------------------------------------------------


def test_task_dependence_supported():
    result = task_dependence({"modadd": [0.1, 0.2, 0.3], "ising": [0.7, 0.8, 0.9]})
    # Pooled std 0.1, so d = (0.2 - 0.8) / 0.1 = -6.
    assert result.verdict == SUPPORTED
    assert result.value == pytest.approx(-6.0)
    assert result.spread == pytest.approx(math.sqrt(6 / 9 + 36 / 12))
    assert result.task == "modadd vs ising"


def test_task_dependence_not_supported():
    result = task_dependence({"modadd": [0.1, 0.2, 0.3], "ising": [0.11, 0.21, 0.31]})
    assert result.verdict == NOT_SUPPORTED
    assert result.value == pytest.approx(-0.1)
    assert result.spread == pytest.approx(math.sqrt(6 / 9 + 0.01 / 12))


def test_task_dependence_medium_effect_inconclusive():
    result = task_dependence({"modadd": [0.1, 0.2, 0.3], "ising": [0.2, 0.3, 0.4]})
    assert result.verdict == INCONCLUSIVE
    assert result.value == pytest.approx(-1.0)


def test_task_dependence_zero_variance():
    equal = task_dependence({"modadd": [0.5, 0.5], "ising": [0.5, 0.5]})
    apart = task_dependence({"modadd": [0.5, 0.5], "ising": [0.6, 0.6]})
    assert equal.verdict == NOT_SUPPORTED
    assert equal.value == 0.0
    assert apart.verdict == SUPPORTED
    assert apart.value == -math.inf
    assert assert_serialisable(apart)["value"] is None


def test_task_dependence_nan_and_few_seeds():
    result = task_dependence({"modadd": [0.1, NAN], "ising": [NAN, NAN]})
    assert result.verdict == INCONCLUSIVE
    assert result.n_seeds == {"modadd": 1, "ising": 0}
    assert result.details["n_dropped"] == 3


def test_task_dependence_rejects_three_tasks():
    with pytest.raises(ValueError, match="exactly two"):
        task_dependence({"a": [1, 2], "b": [1, 2], "c": [1, 2]})


# --- Claim 5: peak compressibility after the plateau -------------------------


def test_peak_after_plateau_supported():
    result = peak_after_plateau(
        "modadd", peak_epochs=[54, 60, 79], train_fit_epochs=[10, 10, 10],
        test_fit_epochs=[50, 60, 70],
    )
    # Offsets 4/40, 0/50, 9/60 = 0.1, 0, 0.15: median 0.1, IQR 0.125 - 0.05.
    assert result.verdict == SUPPORTED
    assert result.value == pytest.approx(0.1)
    assert result.spread == pytest.approx(0.075)
    assert result.details["offsets"] == pytest.approx([0.1, 0.0, 0.15])


def test_peak_during_plateau_not_supported():
    result = peak_after_plateau(
        "modadd", peak_epochs=[10, 20], train_fit_epochs=[10, 20],
        test_fit_epochs=[50, 60],
    )
    assert result.verdict == NOT_SUPPORTED
    assert result.value == pytest.approx(-1.0)


def test_peak_half_plateau_later_inconclusive():
    result = peak_after_plateau(
        "ising", peak_epochs=[70, 85, 100], train_fit_epochs=[10, 10, 10],
        test_fit_epochs=[50, 60, 70],
    )
    assert result.verdict == INCONCLUSIVE
    assert result.value == pytest.approx(0.5)
    assert result.spread == pytest.approx(0.0)


def test_peak_drops_nan_and_missing_plateau():
    result = peak_after_plateau(
        "modadd", peak_epochs=[54, 60, NAN, 30], train_fit_epochs=[10, 10, 10, 30],
        test_fit_epochs=[50, 60, 70, 30],
    )
    assert result.verdict == SUPPORTED
    assert result.details["n_dropped"] == 1
    assert result.details["n_no_plateau"] == 1
    assert result.n_seeds == {"grok": 2}


def test_peak_one_seed_inconclusive():
    result = peak_after_plateau("modadd", [54, NAN], [10, 10], [50, 50])
    assert result.verdict == INCONCLUSIVE
    assert result.value is None
    assert "grok has 1" in result.details["reason"]


def test_peak_rejects_length_mismatch():
    with pytest.raises(ValueError, match="one epoch of each per seed"):
        peak_after_plateau("modadd", [1, 2], [0, 0], [1])


# --- Claim 6: straight path --------------------------------------------------


def test_straight_path_supported():
    result = straight_path({
        "modadd": [[0.1, 0.2, 0.3], [0.0, 0.1]],
        "ising": [[0.95, 0.99, 0.97], [0.92, 0.96, 0.3, 0.98]],
    })
    # Ising seed medians 0.97 and 0.94: median 0.955, IQR 0.9625 - 0.9475.
    assert result.verdict == SUPPORTED
    assert result.value == pytest.approx(0.955)
    assert result.spread == pytest.approx(0.015)
    assert result.details["best_task"] == "ising"
    ising = result.details["tasks"]["ising"]
    assert ising["seed_straight_fractions"] == pytest.approx([1.0, 0.75])
    assert result.details["tasks"]["modadd"]["median"] == pytest.approx(0.125)


def test_straight_path_not_supported():
    result = straight_path({"modadd": [[0.1, 0.3], [0.2]], "ising": [[0.4], [0.45]]})
    assert result.verdict == NOT_SUPPORTED
    assert result.value == pytest.approx(0.425)


def test_straight_path_middle_inconclusive():
    result = straight_path({"modadd": [[0.1], [0.2]], "ising": [[0.7], [0.8]]})
    assert result.verdict == INCONCLUSIVE
    assert result.value == pytest.approx(0.75)


def test_straight_path_needs_every_task_to_reject():
    straight = straight_path({"modadd": [[0.1]], "ising": [[0.95], [0.97]]})
    curved = straight_path({"modadd": [[0.1]], "ising": [[0.2], [0.3]]})
    assert straight.verdict == SUPPORTED
    assert curved.verdict == INCONCLUSIVE
    assert "modadd has 1" in curved.details["reason_not_all_tasks"]


def test_straight_path_drops_nan_cosines():
    result = straight_path({"ising": [[0.95, NAN], [NAN, NAN], [0.93]]})
    assert result.verdict == SUPPORTED
    assert result.n_seeds == {"ising": 2}
    assert result.details["n_dropped"] == 3
    assert result.details["tasks"]["ising"]["n_empty_seeds"] == 1


def test_straight_path_too_few_seeds_everywhere():
    result = straight_path({"modadd": [[NAN]], "ising": [[0.99]]})
    assert result.verdict == INCONCLUSIVE
    assert result.value is None
    data = assert_serialisable(result)
    assert data["details"]["tasks"]["modadd"]["median"] is None


def test_straight_path_rejects_empty_and_2d_input():
    with pytest.raises(ValueError, match="at least one task"):
        straight_path({})
    with pytest.raises(ValueError, match="ising seed 0"):
        straight_path({"ising": [np.ones((2, 2))]})

"""Claim verdicts fed from analysis.json dicts with known per-seed numbers."""

import copy
import json

import pytest

from groklab.analysis.claim_inputs import (
    NO_PRUNING_OVER_TIME,
    evaluate_claims,
    plateau_cosines,
)

VERDICTS = {"supported", "not_supported", "inconclusive"}
REQUIRED = ("id", "claim", "task", "verdict", "statistic", "threshold", "value",
            "spread", "n_seeds", "figure", "number")


def _order(factor, slope, r2):
    """Build one pruning order entry in the analysis.json layout."""
    return {
        "compression": {"factor": factor, "n_kept": 100, "n_total": 1000,
                        "tolerance": 0.01, "order": "fisher"},
        "compressive": slope > 0 and r2 >= 0.9,
        "linear_fit": {"slope": slope, "r2": r2, "intercept": 0.0,
                       "max_fraction": 0.5, "n_points": 20},
    }


def make_analysis(task="modadd", regime="grok", seed=0, *, factor=5.0, slope=1.0,
                  r2=0.5, key_frequencies=(1, 6, 22, 30, 41), concentration=0.4,
                  probe_r2=0.9, cosines=None, timing=(10, 50), over_time=None):
    """Return a small analysis.json dict with the fields the claims read.

    ``cosines`` are the Fisher cosines at turn epochs 1, 2, ...; by default
    0.2 everywhere. ``over_time`` is (epochs, factors) for pruning_over_time,
    left out when None.
    """
    cosines = [0.2] * 98 if cosines is None else list(cosines)
    turns = list(range(1, len(cosines) + 1))
    analysis = {
        "run": f"{task}-{regime}-s{seed}",
        "task": task,
        "regime": regime,
        "config": {"seed": seed, "task": task, "regime": regime},
        "analysis_config": {"tolerance": 0.01, "fisher_form": "regression",
                            "linear_fit_max_fraction": 0.5},
        "timing": {"epoch_train_fit": timing[0], "epoch_test_fit": timing[1]},
        "pruning": {"tolerance": 0.01, "fisher_form": "regression",
                    "orders": {"fisher": _order(factor, slope, r2),
                               "magnitude": _order(2.0, -1.0, 0.1)}},
        "geometry": {"epochs": [0, *turns, len(turns) + 1], "turn_epochs": turns,
                     "all": {"fisher_cosine": cosines}},
    }
    if task == "modadd":
        analysis["features"] = {"key_frequencies": list(key_frequencies),
                                "top_k_norm_fraction": concentration}
    else:
        analysis["features"] = {"layers": {
            "conv1": {"probe_r2": {"energy": probe_r2 - 0.1,
                                   "abs_magnetisation": probe_r2 - 0.2}},
            "fc1": {"probe_r2": {"energy": probe_r2, "abs_magnetisation": probe_r2}},
        }}
    if over_time is not None:
        epochs, factors = over_time
        analysis["pruning_over_time"] = {
            "epochs": epochs, "tolerance": 0.01,
            "orders": {"fisher": {"compression_factor": factors}},
        }
    return analysis


def by_claim(entries, number, task):
    matches = [e for e in entries if e["number"] == number and e["task"] == task]
    assert len(matches) == 1, (number, task, matches)
    return matches[0]


def seeds(regime, values, **common):
    """Return one analysis per seed, passing values[i] as keyword arguments."""
    return [make_analysis(regime=regime, seed=s, **common, **v)
            for s, v in enumerate(values)]


def test_entries_complete_and_strict_json():
    analyses = seeds("grok", [{}] * 2) + seeds("steady", [{}] * 2)
    entries = evaluate_claims(analyses)
    json.loads(json.dumps(entries, allow_nan=False))
    assert sorted((e["number"], e["task"]) for e in entries) == [
        (1, "modadd"), (2, "modadd"), (3, "modadd"), (4, "all"), (5, "modadd"),
        (6, "all"),
    ]
    for entry in entries:
        for key in REQUIRED:
            assert key in entry, (entry["id"], key)
        assert entry["verdict"] in VERDICTS


def test_compression_factors_supported():
    grok = seeds("grok", [{"factor": f} for f in (4.5, 5.0, 5.5)])
    steady = seeds("steady", [{"factor": f} for f in (24.0, 25.0, 27.0)])
    entry = by_claim(evaluate_claims(grok + steady), 3, "modadd")
    assert entry["verdict"] == "supported"
    assert entry["value"] == pytest.approx(25.31 / 4.98, rel=0.02)
    assert entry["details"]["pruning_order"] == "fisher"
    assert entry["details"]["tolerance"] == 0.01
    assert entry["details"]["seeds"] == {"grok": [0, 1, 2], "steady": [0, 1, 2]}
    assert entry["figure"] == "modadd_pruning"


def test_compression_factors_not_supported():
    grok = seeds("grok", [{"factor": f} for f in (6.0, 7.0, 8.0)])
    steady = seeds("steady", [{"factor": f} for f in (3.0, 3.5, 4.0)])
    entry = by_claim(evaluate_claims(grok + steady), 3, "modadd")
    assert entry["verdict"] == "not_supported"
    assert entry["value"] < 1


def test_one_seed_per_regime_inconclusive():
    entries = evaluate_claims([make_analysis(regime="grok"),
                               make_analysis(regime="steady")])
    for entry in entries:
        assert entry["verdict"] == "inconclusive", entry["id"]
        assert entry["value"] is None


def test_compressive_regime_supported():
    grok = seeds("grok", [{"slope": 1.0, "r2": 0.4}] * 3)
    steady = seeds("steady", [{"slope": 2.0, "r2": 0.95}] * 3)
    entry = by_claim(evaluate_claims(grok + steady), 2, "modadd")
    assert entry["verdict"] == "supported"
    assert entry["value"] == 1.0
    assert entry["details"]["pruning_order"] == "fisher"


def test_same_features_modadd_verdicts():
    same = seeds("grok", [{"concentration": c} for c in (0.40, 0.42, 0.41)]) + seeds(
        "steady", [{"concentration": c} for c in (0.41, 0.40, 0.42)])
    entry = by_claim(evaluate_claims(same), 1, "modadd")
    assert entry["verdict"] == "supported"
    assert entry["value"] == 1.0
    other_frequencies = (2, 3, 4, 5, 7)
    different = seeds("grok", [{"concentration": c} for c in (0.40, 0.41, 0.42)])
    different += seeds("steady", [
        {"concentration": c, "key_frequencies": other_frequencies}
        for c in (0.90, 0.91, 0.92)
    ])
    entry = by_claim(evaluate_claims(different), 1, "modadd")
    assert entry["verdict"] == "not_supported"
    assert entry["value"] == 0.0


def test_same_features_ising_uses_best_layer():
    analyses = seeds("grok", [{"probe_r2": r} for r in (0.90, 0.91, 0.92)],
                     task="ising") + seeds(
        "steady", [{"probe_r2": r} for r in (0.91, 0.90, 0.92)], task="ising")
    entry = by_claim(evaluate_claims(analyses), 1, "ising")
    assert entry["verdict"] == "supported"
    assert sorted(entry["details"]["scores"]) == [
        "probe R^2 abs_magnetisation (best layer)", "probe R^2 energy (best layer)"]
    assert entry["details"]["scores"]["probe R^2 energy (best layer)"][
        "mean_grok"] == pytest.approx(0.91)


def test_missing_pruning_over_time_inconclusive():
    analyses = seeds("grok", [{}] * 3) + seeds("steady", [{}] * 3)
    entry = by_claim(evaluate_claims(analyses), 5, "modadd")
    assert entry["verdict"] == "inconclusive"
    assert entry["details"]["reason"] == NO_PRUNING_OVER_TIME
    assert entry["figure"] == "modadd_compressibility_over_time"


def test_peak_after_plateau_supported():
    # Plateau 10..50; the largest finite factor sits at epoch 55, offset 0.125.
    # The unbounded factor at epoch 0 (stored as None) must not count as the peak.
    over_time = ([0, 10, 50, 55, 100], [None, 2.0, 3.0, 6.0, 4.0])
    analyses = seeds("grok", [{"over_time": over_time}] * 3) + seeds("steady", [{}] * 2)
    entry = by_claim(evaluate_claims(analyses), 5, "modadd")
    assert entry["verdict"] == "supported"
    assert entry["value"] == pytest.approx(0.125)
    assert entry["details"]["peaks"][0] == {"epoch": 55.0, "factor": 6.0,
                                           "n_unbounded": 1}
    assert entry["details"]["pruning_order"] == "fisher"


def test_peak_far_after_plateau_not_supported():
    over_time = ([0, 10, 50, 150], [1.0, 2.0, 3.0, 9.0])
    analyses = seeds("grok", [{"over_time": over_time}] * 2) + seeds("steady", [{}] * 2)
    entry = by_claim(evaluate_claims(analyses), 5, "modadd")
    assert entry["verdict"] == "not_supported"
    assert entry["value"] == pytest.approx(2.5)


def test_plateau_cosines_follow_turn_epochs():
    cosines = [0.0] * 9 + [1.0] * 41 + [0.0] * 48   # turn epochs 10..50 are 1.0
    analysis = make_analysis(cosines=cosines, timing=(10, 50))
    assert plateau_cosines(analysis) == [1.0] * 41
    assert plateau_cosines(make_analysis(timing=(10, None))) == []


def test_straight_path_and_task_dependence():
    straight = [0.0] * 9 + [0.95] * 41 + [0.0] * 48
    analyses = (
        seeds("grok", [{"cosines": straight}] * 3)
        + seeds("steady", [{}] * 2)
        + seeds("grok", [{"cosines": [c] * 98} for c in (0.1, 0.2, 0.15)], task="ising")
        + seeds("steady", [{}] * 2, task="ising")
    )
    entries = evaluate_claims(analyses)
    straight_entry = by_claim(entries, 6, "all")
    assert straight_entry["verdict"] == "supported"
    assert straight_entry["value"] == pytest.approx(0.95)
    assert straight_entry["details"]["best_task"] == "modadd"
    dependence = by_claim(entries, 4, "all")
    assert dependence["verdict"] == "supported"
    assert dependence["n_seeds"] == {"modadd": 3, "ising": 3}


def test_one_task_leaves_cross_task_claims_open():
    analyses = seeds("grok", [{"cosines": [0.1] * 98}] * 3) + seeds("steady", [{}] * 2)
    entries = evaluate_claims(analyses)
    dependence = by_claim(entries, 4, "all")
    assert dependence["verdict"] == "inconclusive"
    assert "ising has 0" in dependence["details"]["reason"]
    # Every modadd seed is curved, but ising is absent, so "every task" is unknown.
    assert by_claim(entries, 6, "all")["verdict"] == "inconclusive"


def test_repeated_seed_rejected():
    analysis = make_analysis()
    with pytest.raises(ValueError, match="modadd grok has several analyses of seed 0"):
        evaluate_claims([analysis, copy.deepcopy(analysis)])

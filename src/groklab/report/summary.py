"""The per-task, per-regime summary written to summary.json."""

from __future__ import annotations

from typing import Any

from groklab.analysis.features import jaccard


def regime_summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """Collect the headline numbers of one analysed run, each with its settings."""
    pruning = analysis["pruning"]
    headline_order = next(iter(pruning["orders"]))
    headline = pruning["orders"][headline_order]
    summary = {
        "run": analysis["run"],
        "epoch_train_fit": analysis["timing"]["epoch_train_fit"],
        "epoch_test_fit": analysis["timing"]["epoch_test_fit"],
        "epoch_test_onset": analysis["timing"]["epoch_test_onset"],
        "grokking_delay": analysis["timing"]["delay"],
        "final_train_acc": analysis["final"]["train/acc"],
        "final_test_acc": analysis["final"]["test/acc"],
        "final_test_loss": analysis["final"]["test/loss"],
        "final_param_norm": analysis["final"]["param_norm"],
        "compression_factor": headline["compression"]["factor"],
        "compression_note": _compression_note(headline["compression"]),
        "compression_definition": headline["compression"]["definition"],
        "compression_tolerance": pruning["tolerance"],
        "pruning_order": headline_order,
        "compression_factors": {
            order: entry["compression"]["factor"] for order, entry in pruning["orders"].items()
        },
        "compressive_regime": {
            order: {
                "compressive": entry["compressive"],
                **entry["linear_fit"],
            }
            for order, entry in pruning["orders"].items()
        },
        "fisher_form": pruning["fisher_form"],
        "fisher_inputs": pruning["fisher_inputs"],
        "median_fisher_cosine": analysis["geometry"]["fisher_cosine_summary"]["median"],
        "fisher_cosine_summary": analysis["geometry"]["fisher_cosine_summary"],
        "config": analysis["config"],
    }
    summary.update(feature_summary(analysis))
    return summary


def _compression_note(compression: dict[str, Any]) -> str | None:
    """Explain a missing compression factor: JSON has no infinity."""
    if compression["n_kept"] == 0:
        return (
            "every parameter can be pruned within the tolerance (unpruned test accuracy "
            f"{compression['base_accuracy']:.3g}), so the factor is unbounded"
        )
    return None


def feature_summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """Return the headline feature measures of one analysis, for tables and summaries."""
    features = analysis["features"]
    if analysis["task"] == "modadd":
        return {
            "key_frequencies": features["key_frequencies"],
            "top_k_norm_fraction": features["top_k_norm_fraction"],
            "neuron_purity_mean": features["a"]["purity_mean"],
            "neuron_ipr_mean": features["a"]["ipr_mean"],
            "dominant_frequency_agreement": features["dominant_frequency_agreement"],
        }
    return {
        "feature_correlations": {
            layer: {
                target: {
                    "max_abs_corr": entry["correlations"][target]["max_abs_corr"],
                    "probe_r2": entry["probe_r2"][target],
                }
                for target in entry["correlations"]
            }
            for layer, entry in features["layers"].items()
        }
    }


def task_comparison(grok: dict[str, Any], steady: dict[str, Any]) -> dict[str, Any]:
    """Compare the two regimes of one task: key-frequency overlap for modular addition."""
    if "key_frequencies" in grok:
        return {
            "key_frequency_jaccard": jaccard(grok["key_frequencies"], steady["key_frequencies"])
        }
    return {}

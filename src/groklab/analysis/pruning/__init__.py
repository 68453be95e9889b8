"""Saliency-ordered pruning: pruning curves, compression factors, linear fits.

``core`` defines the orders, scopes and result types, ``curve`` the public
curve and compression-factor functions, ``evaluators`` the reference and
batched evaluators, ``incremental`` the exact fast path for ModAddMLP, and
``cnn`` the fast path for IsingCNN.
"""

from groklab.analysis.pruning.core import (
    CUSTOM_ORDER,
    GLOBAL_SCOPE,
    CompressionResult,
    LinearFit,
    PruningCurve,
    PruningOrder,
    linear_fit,
    prune,
    saliency,
)
from groklab.analysis.pruning.curve import (
    DEFAULT_MEMORY_MB,
    DEFAULT_POINTS,
    compression_factor,
    default_fractions,
    make_evaluator,
    pruning_curve,
    pruning_curve_reference,
    refine_counts,
)
from groklab.analysis.pruning.evaluators import EvaluationMethod

__all__ = [
    "CUSTOM_ORDER",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_POINTS",
    "GLOBAL_SCOPE",
    "CompressionResult",
    "EvaluationMethod",
    "LinearFit",
    "PruningCurve",
    "PruningOrder",
    "compression_factor",
    "default_fractions",
    "linear_fit",
    "make_evaluator",
    "prune",
    "pruning_curve",
    "pruning_curve_reference",
    "refine_counts",
    "saliency",
]

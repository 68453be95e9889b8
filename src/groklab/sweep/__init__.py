"""Sweeps: grids of runs over config values and seeds, trained as packed ensembles."""

from groklab.sweep.grid import SweepSpec, parse_grids, parse_seeds
from groklab.sweep.run import SweepOptions, SweepResult, run_sweep

__all__ = [
    "SweepOptions",
    "SweepResult",
    "SweepSpec",
    "parse_grids",
    "parse_seeds",
    "run_sweep",
]

"""groklab: grokking versus steady learning, compared by features, compressibility and dynamics."""

__version__ = "0.1.0"

"""Tasks: modular addition and 2D Ising phase classification."""

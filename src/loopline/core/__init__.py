"""(layer docstring: written below)."""

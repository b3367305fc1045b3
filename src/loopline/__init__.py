"""Loopline: a closed-loop MLOps reference project."""

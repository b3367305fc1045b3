"""Prefect flows: one module per pipeline stage, each a thin wiring of loopline calls."""

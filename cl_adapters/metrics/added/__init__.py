"""Metrics each in its own module: a module-level ``METRICS`` tuple of ``metric.Metric`` rows, which
``spec.METRICS`` appends to the table (results.json, console, report, W&B and the docs read them from there)."""

"""Evaluation metrics (MME scoring in :mod:`vlmkit.metrics.mme`)."""

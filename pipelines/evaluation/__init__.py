"""Evaluation: metrics and the PNG plots of a report."""

"""Load tests of the model service (python -m benchmarks.serving)."""

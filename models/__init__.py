"""Keras model builders, one module per model family."""

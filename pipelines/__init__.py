"""Data → model → training → export: tf.data pipelines and the scripts that run each model family end to end."""

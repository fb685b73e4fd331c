"""Data → model → training → export: tf.data pipelines and the scripts that run each model family end to end."""

import os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 and newer; on an AVX2-only CPU
# they still train the detector 1.4 times faster per step (benchmarks/training.py). Read when TensorFlow is
# first imported, which in `python -m pipelines.<family>` is after this package.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

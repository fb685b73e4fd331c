"""Data: sources, generators, loaders, TFDS builders and tf.data input pipelines."""

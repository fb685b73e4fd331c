"""The warm-up requests an export writes into its artifact (`serving.warmup`): real examples, every signature.

Each signature gets two requests: one example alone, and a batch of every example (when they share a
shape), so the graph has run at batch size 1 and above before a server sends it traffic. Scalar inputs
(a beam width, thresholds) take the artifact's served defaults.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from serving.warmup import WarmupRequest

WARMUP_EXAMPLES = 4  # what each family's `warmup_examples` takes from its test split

Example = np.ndarray | str  # an image (H, W, C) 0-255, or a text


def warmup_requests(
    signatures: Mapping[str, Any], examples: Sequence[Example], options: Mapping[str, float | int]
) -> list[WarmupRequest]:
    """Requests for each of `signatures` (concrete functions) built from `examples`."""
    if not examples:
        raise ValueError("warm-up needs at least one example")
    examples = list(examples)
    same_shape = len({np.shape(example) for example in examples}) == 1
    batches = [examples[:1]] + ([examples] if same_shape and len(examples) > 1 else [])
    requests = []
    for name, function in sorted(signatures.items()):
        specs = tf.nest.flatten(function.structured_input_signature)  # positional for a tf.function, named when loaded
        for batch in batches:
            inputs = {}
            for spec in specs:
                if spec.shape.rank:
                    inputs[spec.name] = _batch_tensor(batch, spec)
                elif spec.name in options:
                    inputs[spec.name] = np.asarray(options[spec.name], dtype=spec.dtype.as_numpy_dtype)
                else:
                    raise ValueError(f"signature {name!r} takes {spec.name!r}, which has no served default")
            requests.append(WarmupRequest(name, inputs))
    return requests


def _batch_tensor(batch: list[Example], spec: tf.TensorSpec) -> np.ndarray:
    if spec.dtype != tf.string:
        return np.stack([np.asarray(example) for example in batch]).astype(spec.dtype.as_numpy_dtype)
    if all(isinstance(example, str) for example in batch):
        return np.array([example.encode() for example in batch], dtype=object)
    return np.array([tf.io.encode_png(np.asarray(example, np.uint8)).numpy() for example in batch], dtype=object)

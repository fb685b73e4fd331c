"""Memory given back after a spike: the environment `python -m serving` starts the server with.

Large images make TensorFlow allocate hundreds of MB for a moment (decoding, resizing). Two things kept
that memory after the spike (benchmarks/memory.py, tensorflow/serving#2142):

- oneDNN's large tensors come from TensorFlow's own pool (a BFC allocator), which keeps the most it ever
  held: the worker stayed 380 MB above its resting size for good. TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1
  takes them from malloc instead;
- glibc's malloc then keeps freed pages in its per-thread arenas; jemalloc, preloaded, returns them to the
  system within a second, also while the server is idle (its background thread, `JEMALLOC_CONF`).

MODELSERVICE_ALLOCATOR=jemalloc (the default) preloads jemalloc when it is installed (Debian:
libjemalloc2; the container image has it); `system` keeps the C library's malloc. A variable already in
the environment (LD_PRELOAD, MALLOC_CONF, TF_ONEDNN_USE_SYSTEM_ALLOCATOR) is left as it is.
"""

from collections.abc import Mapping
from pathlib import Path

JEMALLOC = "libjemalloc.so.2"
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
ALLOCATORS = ("jemalloc", "system")


def find_library(name: str) -> Path | None:
    return next((Path(folder) / name for folder in LIBRARY_DIRS if (Path(folder) / name).is_file()), None)


def allocator_env(allocator: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to `environ` for the server process."""
    added = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}
    if allocator == "jemalloc" and (library := find_library(JEMALLOC)) and not environ.get("LD_PRELOAD"):
        added |= {"LD_PRELOAD": str(library), "MALLOC_CONF": JEMALLOC_CONF}
    return {name: value for name, value in added.items() if name not in environ}

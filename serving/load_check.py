"""`python -m serving.load_check VERSION_FOLDER`: load one version as the server does and answer its warm-up requests.

The validation gate runs this in a fresh process before it blesses a version (TFX's InfraValidator), so a
version that would fail to load in the server, or whose warm-up requests fail, is never blessed. Prints one
JSON line: {"loaded": true, "warmup_requests": N, "seconds": S} or {"loaded": false, "error": "..."}; the exit
status is 0 or 1.
"""

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.load_check", description=__doc__)
    parser.add_argument("version", type=Path, help="a version folder, such as artifacts/classifier/3")
    args = parser.parse_args(argv)
    from serving import store
    from serving.model_manager import load_version

    started = time.perf_counter()
    try:
        runtime, answered, _ = load_version(args.version, args.version.parent.name, 0)
        runtime.close()
    except Exception as error:  # whatever stops the server loading it stops the blessing
        reason = str(error) if isinstance(error, store.ModelLoadError) else f"{type(error).__name__}: {error}"
        print(json.dumps({"loaded": False, "error": reason}))
        return 1
    print(json.dumps({"loaded": True, "warmup_requests": answered, "seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

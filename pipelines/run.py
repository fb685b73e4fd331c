"""What `make run` does: train every family's quick profile, and serve each one as soon as it is exported.

    python -m pipelines.run                          # classifier, seq2seq, detector, transfer; then serve
    python -m pipelines.run --families classifier detector --port 3001

The server starts once the first family is exported (the classifier, about half a minute of training) and
picks up the others from the BentoML model store as they finish (it polls every MODELSERVICE_POLL_SECONDS,
default 2), so the first answer comes minutes before the last model is trained. A family already exported
is not trained again (`--skip-if-exported`). Each family script runs the validation gate after export; a
version it does not bless is not served, and `make run` goes on with the other families. At the end it
prints how long each family took, then keeps serving until Ctrl-C.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from pipelines.family import NAMES, duration
from pipelines.validation import NOT_BLESSED_EXIT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", nargs="+", choices=NAMES, default=list(NAMES), help="in this order")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=3000, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # stop the server too, below
    started = time.monotonic()
    timings: list[tuple[str, float]] = []
    server: subprocess.Popen | None = None
    unblessed: list[str] = []
    try:
        for name in args.families:
            began = time.monotonic()
            trained = subprocess.run([sys.executable, "-m", f"pipelines.{name}", "--skip-if-exported"])
            timings.append((name, time.monotonic() - began))
            if trained.returncode == NOT_BLESSED_EXIT:
                print(f"run: the validation gate did not bless {name}'s latest version (table above): not served")
                unblessed.append(name)
                continue
            if trained.returncode:
                raise subprocess.CalledProcessError(trained.returncode, trained.args)
            if server is None:
                server = start_server(args.host, args.port, wait_for_blessing=bool(unblessed))
            else:
                print(f"run: {name} is exported; the server picks it up within seconds", flush=True)
        print(summary(timings, time.monotonic() - started, f"http://{args.host}:{args.port}"), flush=True)
        return server.wait() if server is not None else 0
    except subprocess.CalledProcessError as error:
        print(f"run: {' '.join(error.cmd[1:])} failed with exit status {error.returncode}", file=sys.stderr)
        return error.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


def start_server(host: str, port: int, *, wait_for_blessing: bool) -> subprocess.Popen:
    """The server; with a model that has no blessed version yet, it starts anyway (rather than refuse, as a
    deployment does) and serves that model once a version of it is blessed."""
    print(f"run: starting the server on http://{host}:{port}; the other families join as they finish", flush=True)
    environment = {**os.environ, "MODELSERVICE_REQUIRE_MODELS": "0"} if wait_for_blessing else None
    return subprocess.Popen([sys.executable, "-m", "serving", "--host", host, "--port", str(port)], env=environment)


def summary(timings: list[tuple[str, float]], total: float, url: str) -> str:
    rows = [f"  {name:<11} {duration(seconds)}" for name, seconds in timings]
    return "\n".join(
        [
            "run: time per family (training, evaluation, export, validation)",
            *rows,
            f"  {'in all':<11} {duration(total)}; serving every family at {url} (Ctrl-C stops it)",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())

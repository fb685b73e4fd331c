"""Drive `h2load` (nghttp2's C load generator for HTTP/2, Debian package `nghttp2-client`) with gRPC calls, and
read back the same figures as `benchmarks.wrk`.

A gRPC call is an HTTP/2 POST to /<package.Service>/<Method> with `content-type: application/grpc` and the
request message framed by a 5-byte prefix (not compressed, length), so h2load sends real unary calls over
kept-open connections, one per client, as a client that reuses its channel does. What it cannot see is the
call's gRPC status, which comes in the trailers of an HTTP 200: the caller counts failures on the server's
metrics instead (`benchmarks.serving.grpc_failures`), and checks one call with a real gRPC client first
(`first_answer`).
"""

import resource
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.wrk import Level

GRPC_TYPE = "application/grpc"


def executable() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise SystemExit(
            "h2load is not installed: apt-get install nghttp2-client (Debian/Ubuntu) or brew install nghttp2"
        )
    return found


def framed(message: bytes) -> bytes:
    """A gRPC message on the wire: uncompressed flag, big-endian length, the serialized protobuf."""
    return struct.pack(">BI", 0, len(message)) + message


def first_answer(target: str, path: str, body: bytes) -> str | None:
    """None when one call of `body` (framed) to `path` answers OK through a real gRPC channel, else why not."""
    import grpc

    with grpc.insecure_channel(target.removeprefix("http://")) as channel:
        try:
            channel.unary_unary(path)(body[5:], timeout=60)
        except grpc.RpcError as error:
            return f"gRPC {error.code().name}: {error.details()}"
    return None


def run(
    target: str,
    path: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    streams: int = 1,
    timeout_s: float = 30.0,
    rate: int | None = None,
    json_over_http1: bool = False,
) -> Level:
    """`connections` clients, each one connection with `streams` calls in flight at a time, for `seconds`;
    with `rate`, each client sends at most that many a second (else the next once one is answered).
    `json_over_http1`: plain HTTP/1.1 POSTs of a JSON `body` instead of gRPC calls."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as folder:
        data, log = Path(folder) / "body.bin", Path(folder) / "calls.log"
        data.write_bytes(body)
        headers = (
            ("content-type: application/json",) if json_over_http1 else (f"content-type: {GRPC_TYPE}", "te: trailers")
        )
        command = [
            executable(),
            *("--threads", "1", "--clients", str(connections), "--max-concurrent-streams", str(streams)),
            *("--duration", f"{max(1, round(seconds))}", "--connection-inactivity-timeout", f"{timeout_s:g}"),
            *(("--rps", str(rate)) if rate else ()),
            *(("--h1",) if json_over_http1 else ()),
            *(argument for header in headers for argument in ("--header", header)),
            *("--data", str(data), "--log-file", str(log)),
            target + path,
        ]
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        process = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
        elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0:
            raise RuntimeError(f"h2load failed with code {process.returncode}: {process.stderr or process.stdout}")
        calls = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    usage = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    # Each line: start (µs since the epoch), HTTP status, µs until the whole answer.
    starts = [int(start) for start, _, _ in calls]
    ends = sorted(int(start) + int(duration) for start, _, duration in calls)
    latencies = sorted(int(duration) / 1000 for _, _, duration in calls)
    duration = (max(ends) - min(starts)) / 1e6 if calls else 0.0
    return Level(
        connections=connections * streams,  # the calls in flight, as wrk's connections are
        requests=len(calls),
        seconds=round(duration, 3),
        rps=len(calls) / duration if duration else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        errors=sum(status != "200" for _, status, _ in calls),
        load_generator_cpu_cores=round(usage / elapsed, 2),
    )


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def version() -> str:
    result = subprocess.run([executable(), "--version"], capture_output=True, text=True)
    return (result.stdout or result.stderr).strip().splitlines()[0]

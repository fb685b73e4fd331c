"""Drive `wrk` (the C load generator, Debian package `wrk`) and read back its figures and its CPU use.

A Python load generator on the same 2 cores costs more CPU per request than the server it measures;
wrk sends the same keep-alive requests for a fraction of that. Each run cycles through pre-formatted
requests (one body per file; several loads' requests in turn, for mixed traffic) and reports through a
Lua `done` hook as one JSON line.
"""

import json
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# Loaded by wrk: one pre-formatted request per body file, sent in turn; the figures as one JSON line at the end.
SCRIPT = """
local entries = {%(entries)s}  -- {body file, path, content type}
local requests = {}
local index = 0

init = function(args)
  for i, entry in ipairs(entries) do
    local handle = assert(io.open(entry[1], "rb"))
    requests[i] = wrk.format("POST", entry[2], {["Content-Type"] = entry[3]}, handle:read("*a"))
    handle:close()
  end
end

request = function()
  index = index %% #requests + 1
  return requests[index]
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, '
    .. '"connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, "status_errors": %%d, "timeouts": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
"""


# With Load.backs_off: a connection answered 503 waits its Retry-After seconds, with jitter (0.5x to 1.5x), before
# its next request, as a well-behaved client does: without jitter, clients refused together retry together
# (wrk calls `response`, then `delay` before that connection's next request).
BACK_OFF = """
local pause = 0

response = function(status, headers, body)
  if status == 503 then
    pause = 1000 * (tonumber(headers["retry-after"] or headers["Retry-After"]) or 1) * (0.5 + math.random())
  end
end

delay = function()
  local wait = pause
  pause = 0
  return wait
end
"""


@dataclass(frozen=True)
class Load:
    """What to send: POST `path` with one of `bodies` (in turn) as `content_type`."""

    path: str
    content_type: str
    bodies: Sequence[bytes]
    backs_off: bool = False  # honour Retry-After on 503, instead of sending again at once


@dataclass(frozen=True)
class Level:
    """One measured run of wrk at a number of connections."""

    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # connection, read, write and timeout errors, and answers that were not 2xx or 3xx
    load_generator_cpu_cores: float

    def to_dict(self) -> dict:
        return asdict(self)


def executable() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)")
    return found


def run(url: str, load: Load | Sequence[Load], *, connections: int, seconds: float, timeout_s: float = 30.0) -> Level:
    """Keep `connections` keep-alive connections busy for `seconds` (one wrk thread: it shares the cores);
    several loads: their requests in turn."""
    loads = [load] if isinstance(load, Load) else list(load)
    with tempfile.TemporaryDirectory(prefix="wrk-") as folder:
        script = _write_script(Path(folder), loads)
        command = [
            executable(),
            "--threads",
            "1",
            "--connections",
            str(connections),
            "--duration",
            f"{max(1, round(seconds))}s",
            "--timeout",
            f"{timeout_s:g}s",
            "--script",
            str(script),
            url,
        ]
        # Children's CPU counts once they are reaped; the servers under test are reaped only when they stop.
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        process = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
        elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    stdout, stderr = process.stdout, process.stderr
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed with code {process.returncode}: {stderr.strip() or stdout.strip()}")
    figures = json.loads(stdout.strip().splitlines()[-1])
    duration = figures["duration_us"] / 1e6
    errors = sum(figures[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return Level(
        connections=connections,
        requests=figures["requests"],
        seconds=round(duration, 3),
        rps=figures["requests"] / duration if duration else 0.0,
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        errors=errors,
        load_generator_cpu_cores=round(usage / elapsed, 2),
    )


def _write_script(folder: Path, loads: Sequence[Load]) -> Path:
    entries = []
    for number, load in enumerate(loads):
        for index, body in enumerate(load.bodies):
            name = folder / f"body-{number}-{index}"
            name.write_bytes(body)
            entries.append((index, number, _lua_table(str(name), load.path, load.content_type)))
    entries.sort()  # the loads' requests interleaved: mixed traffic from the first request
    script = folder / "load.lua"
    text = SCRIPT % {"entries": ", ".join(entry for _, _, entry in entries)}
    script.write_text(text + (BACK_OFF if any(load.backs_off for load in loads) else ""))
    return script


def _lua_table(*strings: str) -> str:
    return "{" + ", ".join(json.dumps(text) for text in strings) + "}"  # a JSON string is a Lua string literal

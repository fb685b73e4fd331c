"""Start the BentoML server as a child process and wait until it is ready (tests, benchmarks)."""

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port that no one listens on, for a server about to start, from below the kernel's ephemeral range: a port
    from that range, once released, may be handed to the next socket bound to port 0 or to the next outgoing
    connection (BentoML's processes take such ports while they start), and the server meant for it then cannot
    listen on it."""
    ephemeral_low = _lowest_ephemeral_port()
    for _ in range(64):
        port = random.randrange(max(1024, ephemeral_low - 12_000), ephemeral_low)
        if port_taken("127.0.0.1", port) is None:
            return port
    with socket.socket() as probe:  # a crowded machine: the kernel's choice, as a last resort
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lowest_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def port_taken(host: str, port: int) -> str | None:
    """Why a server of its own cannot listen on `host:port` (another one does), or None when it can."""
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: past closed connections
        try:
            probe.bind(address)
        except OSError as error:
            return error.strerror
    return None


def home_beside(folder: Path) -> dict[str, str]:
    """The environment for a BentoML server started beside another one of this process's: a BentoML home of its
    own in `folder`, whose model store is the current home's. BentoML empties its home's Prometheus folder when a
    server starts, so two servers sharing a home would hide part of each other's metrics and mix the rest."""
    current = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "models").exists():
        (folder / "models").symlink_to(current / "models", target_is_directory=True)
    return {"BENTOML_HOME": str(folder)}


@contextmanager
def running_process(
    command: list[str],
    *,
    port: int,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 120.0,
    probe: str = "/readyz",
) -> Iterator[str]:
    """Run an HTTP server `command` listening on loopback `port`; yield its base URL once `probe` answers 200
    (/livez for a server that starts with nothing to serve yet). Its gRPC API is off unless `env` or `command`
    gives it a port: servers started side by side would all want TF Serving's 8500."""
    with open(log_path, "wb") if log_path else contextlib.nullcontext(subprocess.DEVNULL) as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, "MODELSERVICE_GRPC_PORT": "0", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url + probe, process, timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def running_server(
    *,
    service: str = "serving.service:ModelService",
    env: dict[str, str] | None = None,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 120.0,
    probe: str = "/readyz",
):
    """Run `bentoml serve <service>` (this project's by default) on a free loopback port; yield its base URL."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        service,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return running_process(command, port=port, env=env, log_path=log_path, timeout=timeout, probe=probe)


def server_worker(port: int):
    """The process that holds the models of the server listening on `port`, started from this process: the
    largest under the child whose command line says `--port <port>` (other servers may be running)."""
    import psutil

    (server,) = [
        child
        for child in psutil.Process().children(recursive=True)
        if "--port" in (command := child.cmdline()) and command[command.index("--port") + 1] == str(port)
    ]
    return max([server, *server.children(recursive=True)], key=lambda process: process.memory_info().rss)


def _wait_ready(probe_url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(probe_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{probe_url} did not answer 200 within {timeout:.0f} s")

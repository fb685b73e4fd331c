"""A large gRPC request over a link with a round-trip delay: grpcio's server against the zttp one.

    python -m benchmarks.grpc_upload                          # 16 MiB, round trips of 0, 2 and 10 ms
    python -m benchmarks.grpc_upload --megabytes 37 --rtt-ms 0,1,5,20 --calls 3

A batch of 64 RGB 224x224 float32 images is a 37 MiB message. How fast a server takes it in depends on HTTP/2 flow
control: the receiver lets the sender have only as many bytes in flight as its window, so a connection carries at
most a window per round trip. grpcio's server grows its windows to the link (BDP probing). zttp 0.0.35 keeps
HTTP/2's initial 64 KiB, which took a 16 MiB request 2.8 s at a 10 ms round trip; the server under
`MODELSERVICE_GRPC_SERVER=zttp` grants 16 MiB windows in frames of its own (`serving/grpc_http2.py`), and this
benchmark shows what that buys and checks that it still holds with a new zttp.

Both servers run in this process with `grpc.health.v1.Health` (a request's bytes go through the transport and are
then refused as an unknown service name, so the figure is the transport's alone), each behind a TCP proxy here that
holds every chunk for half the round trip in each direction. A grpcio client times `--calls` calls of a
`--megabytes` message through each proxy and keeps the fastest. Writes `<out>/grpc_upload.json` and a bar plot.
"""

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from benchmarks.common import comma_separated, environment, plot_ratio_bars, save_results, settings
from serving.grpc_http2 import GrpcApp, Handlers, Http2Server
from serving.process import free_port

MIB = 2**20
SERVERS = ("grpcio", "zttp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.grpc_upload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--megabytes", type=float, default=16.0, help="the request message's size in MiB")
    parser.add_argument("--rtt-ms", default="0,2,10", help="comma-separated round-trip delays the proxy adds")
    parser.add_argument("--calls", type=int, default=3, help="calls timed per server and delay; the fastest counts")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.rtt_ms = comma_separated(parser, "--rtt-ms", args.rtt_ms, float)
    if args.megabytes <= 0 or args.calls < 1 or min(args.rtt_ms) < 0:
        parser.error("--megabytes must be positive, --calls at least 1, and every --rtt-ms at least 0")
    return args


async def delaying_proxy(target_port: int, one_way_seconds: float) -> tuple[asyncio.Server, int]:
    """A TCP proxy on a free port to `target_port` that delivers each chunk `one_way_seconds` after it came, in
    both directions and in order (the link's bandwidth is the machine's: only the delay is added)."""
    loop = asyncio.get_running_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(2**16):
                loop.call_later(one_way_seconds, writer.write, data)
        finally:
            loop.call_later(one_way_seconds, writer.close)

    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        with contextlib.suppress(asyncio.CancelledError):  # the run ended with the connection open
            await asyncio.gather(
                pipe(client_reader, server_writer), pipe(server_reader, client_writer), return_exceptions=True
            )

    port = free_port()
    return await asyncio.start_server(connect, "127.0.0.1", port), port


def fastest_call_seconds(port: int, megabytes: float, calls: int) -> float:
    """The fastest of `calls` Health checks whose request carries `megabytes` MiB, on one channel (connected and
    warmed by a small call first)."""
    size = int(megabytes * MIB)
    options = [("grpc.max_send_message_length", size + MIB)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        check(health_pb2.HealthCheckRequest(), timeout=30)
        large = health_pb2.HealthCheckRequest(service="x" * size)
        fastest = float("inf")
        for _ in range(calls):
            started = time.perf_counter()
            try:
                check(large, timeout=600)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:  # what an unknown service name is answered
                    raise
            fastest = min(fastest, time.perf_counter() - started)
        return fastest


async def started_servers(max_bytes: int) -> tuple[dict[str, int], list[Any]]:
    ports = {server: free_port() for server in SERVERS}
    grpcio = grpc.aio.server(options=[("grpc.max_receive_message_length", max_bytes)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), grpcio)
    grpcio.add_insecure_port(f"127.0.0.1:{ports['grpcio']}")
    await grpcio.start()
    handlers = Handlers()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), handlers)
    zttp = Http2Server(GrpcApp(handlers, max_bytes), "127.0.0.1", ports["zttp"])
    await zttp.start()
    return ports, [grpcio, zttp]


async def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    ports, servers = await started_servers(int(args.megabytes * MIB) + MIB)
    rows = []
    try:
        for rtt_ms in args.rtt_ms:
            row: dict[str, Any] = {"rtt_ms": rtt_ms}
            for server in SERVERS:
                proxy, port = await delaying_proxy(ports[server], rtt_ms / 2000)
                seconds = await asyncio.to_thread(fastest_call_seconds, port, args.megabytes, args.calls)
                proxy.close()
                row[server] = {"seconds": seconds, "MiB_per_s": args.megabytes / seconds}
                print(
                    f"round trip {rtt_ms:5.1f} ms  {server:6s}  {args.megabytes:g} MiB in {seconds * 1000:8.1f} ms"
                    f"  ({row[server]['MiB_per_s']:7.1f} MiB/s)",
                    flush=True,
                )
            row["ratio"] = row["grpcio"]["MiB_per_s"] / row["zttp"]["MiB_per_s"]
            rows.append(row)
    finally:
        await servers[0].stop(1.0)
        await servers[1].stop(1.0)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    started = time.perf_counter()
    rows = asyncio.run(measure(args))
    ratios = ", ".join(f"{row['ratio']:.1f}x at {row['rtt_ms']:g} ms" for row in rows)
    print(f"\ngrpcio's upload rate / zttp's: {ratios}")
    results = {
        "settings": settings(args),
        "environment": environment(("grpcio", "zttp", "uvicorn")),
        "rows": rows,
        "total_seconds": time.perf_counter() - started,
    }
    save_results(
        args.out,
        "grpc_upload",
        results,
        lambda path: plot_ratio_bars(
            rows,
            path,
            sides=[("grpcio", "grpcio's server"), ("zttp", "MODELSERVICE_GRPC_SERVER=zttp")],
            rate="MiB_per_s",
            tick_label=lambda row: f"{row['rtt_ms']:g} ms",
            title=f"{args.megabytes:g} MiB gRPC request by round-trip delay (grpcio / zttp above its bar)",
        ),
    )
    return rows


if __name__ == "__main__":
    main()

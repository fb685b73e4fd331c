"""The HTTP ceiling for `benchmarks.serving`: uvicorn + FastAPI, one route that parses the JSON, answers a constant;
and with --grpc-port the gRPC ceiling: grpcio's server, as the service runs it, with a Predict that answers a constant.

    python -m benchmarks.ceiling_app --port 8000 --grpc-port 8500

No model, no BentoML: what the web stack alone costs per request on this machine, so every other
figure is a fraction of what any Python model service could reach here. The route reads the same
/classify body the service gets, parses it with `json.loads`, and answers one fixed prediction. The gRPC servers
(`serving.grpc_server`'s kind: `ACCEPTORS` grpcio asyncio servers sharing the port, on uvicorn's event loop)
get the request parsed by grpcio and answer one fixed PredictResponse.
"""

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ANSWER = {"predictions": [{"label": "0", "score": 1.0}]}


def create_app(grpc_port: int = 0) -> FastAPI:
    @asynccontextmanager
    async def serving_grpc(app: FastAPI) -> AsyncIterator[None]:
        servers = await serve_grpc(grpc_port) if grpc_port else []
        yield
        for server in servers:
            await server.stop(None)

    app = FastAPI(title="No-op ceiling", lifespan=serving_grpc)

    @app.get("/readyz")
    async def ready() -> dict:
        return {"ok": True}

    @app.post("/classify")
    async def classify(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse(ANSWER)

    return app


async def serve_grpc(port: int) -> list[Any]:
    """A no-op TF Serving PredictionService on `port`, on this event loop, served as the service serves its own."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.grpc_server import ACCEPTORS

    answer = predict_pb2.PredictResponse()
    answer.model_spec.name = "classifier"

    class Ceiling(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):
            return answer

    servers = []
    for _ in range(ACCEPTORS):
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Ceiling(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        servers.append(server)
    return servers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ceiling_app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=0, help="the gRPC ceiling's port (default: none)")
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(create_app(args.grpc_port), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()

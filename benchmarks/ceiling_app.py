"""The HTTP ceiling for `benchmarks.serving`: uvicorn + FastAPI, one route that parses the JSON, answers a constant;
and with --grpc-port the gRPC ceiling: grpcio's server, as the service runs it, with a Predict that answers a constant.

    python -m benchmarks.ceiling_app --port 8000 --grpc-port 8500

No model, no BentoML: what the web stack alone costs per request on this machine, so every other
figure is a fraction of what any Python model service could reach here. The route reads the same
/classify body the service gets, parses it with `json.loads`, and answers one fixed prediction. The gRPC server
(`serving.grpc_server`'s kind: grpcio's threads, each handing its call to the event loop and waiting for it)
gets the request parsed by grpcio and answers one fixed PredictResponse.
"""

import argparse
import asyncio
import json
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ANSWER = {"predictions": [{"label": "0", "score": 1.0}]}


def create_app() -> FastAPI:
    app = FastAPI(title="No-op ceiling")

    @app.get("/readyz")
    async def ready() -> dict:
        return {"ok": True}

    @app.post("/classify")
    async def classify(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse(ANSWER)

    return app


def serve_grpc(port: int) -> Any:
    """A no-op TF Serving PredictionService on `port`, each call handed to the event loop as the service does."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    answer = predict_pb2.PredictResponse()
    answer.model_spec.name = "classifier"

    async def predict() -> predict_pb2.PredictResponse:
        return answer

    class Ceiling(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return asyncio.run_coroutine_threadsafe(predict(), loop).result()

    server = grpc.server(ThreadPoolExecutor(528))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Ceiling(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


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

    grpc_server = serve_grpc(args.grpc_port) if args.grpc_port else None  # noqa: F841 (served while uvicorn runs)
    uvicorn.run(create_app(), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()

"""The HTTP ceiling for `benchmarks.serving`: uvicorn + FastAPI, one route that parses the JSON, answers a constant.

    python -m benchmarks.ceiling_app --port 8000

No model, no BentoML: what the web stack alone costs per request on this machine, so every other
figure is a fraction of what any Python model service could reach here. The route reads the same
/classify body the service gets, parses it with `json.loads`, and answers one fixed prediction.
"""

import argparse
import json

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ceiling_app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(create_app(), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()

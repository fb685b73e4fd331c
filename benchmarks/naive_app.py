"""The naive baseline: the model server people write first, for `benchmarks.serving` to compare against.

    python -m benchmarks.naive_app --model runs/classifier/model.keras --port 8000 [--labels '["0", "1", ...]']

A FastAPI app served by uvicorn that loads the Keras model file and calls `model.predict` once per
request, on that request's images alone: no batching across requests. Access logging is off, as in
the real service, so the comparison measures the serving design rather than log lines.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fastapi import FastAPI
from pydantic import BaseModel


class ClassifyRequest(BaseModel):
    instances: list


def create_app(model_path: str, labels: list[str] | None = None) -> FastAPI:
    import keras
    import numpy as np

    app = FastAPI(title="Naive Keras server")
    model = keras.saving.load_model(model_path)
    input_shape = tuple(model.input_shape[1:])

    @app.get("/readyz")
    def ready() -> dict:
        return {"ok": True}

    @app.post("/classify")
    def classify(request: ClassifyRequest) -> dict:
        images = np.array(request.instances, dtype="float32").reshape((-1, *input_shape))
        probabilities = model.predict(images, verbose=0)
        ids = probabilities.argmax(axis=1)
        return {
            "predictions": [
                {"label": labels[i] if labels else str(i), "score": float(probabilities[row, i])}
                for row, i in enumerate(ids)
            ]
        }

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.naive_app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="the Keras model file (.keras) to serve")
    parser.add_argument(
        "--labels", default="[]", help="class names in class-id order, as a JSON list (default: the ids)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    import uvicorn

    app = create_app(args.model, json.loads(args.labels) or None)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()

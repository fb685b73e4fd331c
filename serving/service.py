"""The HTTP service: BentoML serves the exported models; routes only parse, call and format.

    python -m serving                      # checks the models, says which it serves, then starts this
    bentoml serve serving.service:ModelService --port 3000

Configuration comes from MODELSERVICE_* environment variables (`serving/settings.py`): which models and
versions (MODELSERVICE_MODELS, "classifier:latest=2,seq2seq:3", or TF Serving's model config file; default
every model at its latest version, `serving/model_config.py`) from where (MODELSERVICE_MODEL_DIR, a folder
of artifacts; default the BentoML store), kept in step with it while serving (`serving/model_manager.py`),
workers, batching, limits, log level, the admin token. Routes: POST /classify, POST /translate, POST /detect
(boxes as JSON, or drawn on the image as a PNG with format=png), TF Serving's REST API under /v1/models (by
version and by label; GET /v1/models lists every model's versions), GET /models, the admin API under /admin,
plus BentoML's /livez, /readyz and /metrics. FastAPI's OpenAPI docs are at /docs and a page to try the models
at / (`serving/page.py`), both with nothing loaded from outside the service. TF Serving's gRPC API answers on
MODELSERVICE_GRPC_PORT from the same process and models (`serving/grpc_server.py`).
"""

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from serving import admin, api_schema, drawing, forms, inputs, settings, tuning
from serving.answers import classifier_predictions, detector_predictions, seq2seq_predictions, to_json
from serving.api_schema import INFERENCE_ERRORS, LOOKUP_ERRORS, errors, json_body, json_or_upload_body
from serving.contract import Role, Task
from serving.drain import Drain, Stopping
from serving.fast_path import FastPath, FastPathService
from serving.grpc_server import GrpcServer
from serving.inputs import InputError
from serving.page import add_page_and_docs

if TYPE_CHECKING:
    from serving.model_manager import ModelManager, Served
    from serving.runtime import ModelRuntime

logger = logging.getLogger("modelservice")

api = FastAPI(
    title="Model service",
    description=(
        "Image classification, object detection and date normalisation (and TF Serving's REST API) "
        "over exported TensorFlow SavedModels."
    ),
    # FastAPI's /docs and /redoc load their scripts from a CDN: serving.page serves /docs itself, and no /redoc.
    docs_url=None,
    redoc_url=None,
)


api.include_router(admin.router)
add_page_and_docs(api)


@api.exception_handler(InputError)
async def input_error(_: Request, error: InputError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


@api.exception_handler(Exception)
async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s", request.url.path)
    return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)


def manager(request: Request) -> "ModelManager":
    return request.app.state.manager


def served(request: Request) -> "Served":
    """What is AVAILABLE now: one snapshot for the whole request, however versions change meanwhile."""
    return manager(request).served


def version_number(version: str | None) -> int | None:
    if version is None:
        return None
    # isdigit() alone takes other scripts' digits ("¹", "٣"), which int() then refuses or reads as another number.
    if not (version.isascii() and version.isdigit()):
        raise InputError(f"version {version!r} is not a version number", expected="a whole number, as in /versions/3")
    return int(version)


def find_model(request: Request, name: str, version: str | None = None, label: str | None = None) -> "ModelRuntime":
    """The model version a TF Serving route names: by number, by label, or its highest AVAILABLE version."""
    return chosen(request, served(request).runtime(name, version=version_number(version), label=label))


def chosen(request: Request, runtime: "ModelRuntime") -> "ModelRuntime":
    """Record which version answers, for the per-version metrics (serving.metrics)."""
    request.state.model = (runtime.model.name, runtime.model.version)
    return runtime


def query_value(request: Request, name: str, default: str | None = None) -> str | None:
    # Most inference requests have no query string; parsing an empty one is a visible share of a request's cost.
    return request.query_params.get(name, default) if request.scope.get("query_string") else default


def model_for_task(request: Request, task: Task) -> "ModelRuntime":
    """The model of ?model= (else the first of this task), at ?version= or ?label= (else its highest version)."""
    name, version, label = (query_value(request, key) for key in ("model", "version", "label"))
    if version is not None and label is not None:
        raise InputError("both ?version= and ?label= are given", expected="one of them, or neither for the latest")
    now = served(request)
    candidates = task_models(now, task)
    if not name:
        if not candidates:
            raise InputError(f"no {task} model is served", expected="train and export one first", status=404)
        name = candidates[0]
    runtime = now.runtime(name, version=version_number(version), label=label)
    if runtime.model.task != task:
        # Each route reads its own task's metadata (a detector's thresholds): another task's model cannot answer it.
        raise InputError(
            f"model {name!r} is a {runtime.model.task}, not a {task}",
            expected=f"a {task}: one of {candidates}",
        )
    return chosen(request, runtime)


def task_models(now: "Served", task: Task) -> list[str]:
    """The served models of `task`; a task route without ?model= uses the first."""
    return [model for model, its_task in now.tasks.items() if its_task == task]


def served_limits() -> api_schema.ServedLimits:
    """What the default model of each task takes now, for the OpenAPI document."""
    models: ModelManager | None = getattr(api.state, "manager", None)
    if models is None:  # the document asked for before the models load
        return api_schema.ServedLimits()
    now = models.served

    def default(task: Task) -> "ModelRuntime | None":
        names = task_models(now, task)
        return now.runtime(names[0]) if names else None

    classifier, detector, seq2seq = (default(task) for task in (Task.CLASSIFIER, Task.DETECTOR, Task.SEQ2SEQ))
    return api_schema.ServedLimits(
        classifier_shape=classifier and tuple(classifier.model.metadata.image_input.image_shape),
        detector_shape=detector and tuple(detector.model.metadata.image_input.image_shape),
        max_text_length=seq2seq and seq2seq.model.text_input.max_length,
        max_beam_width=seq2seq and seq2seq.model.metadata.decoding.max_beam_width,
    )


def openapi_document() -> dict[str, Any]:
    """/openapi.json: built for each request, not cached as FastAPI does: the served models come and go."""
    document = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    return api_schema.completed(document, served_limits(), admin_on=bool(SETTINGS.admin_token))


api.openapi = openapi_document


@api.exception_handler(HTTPException)
async def http_error(request: Request, error: HTTPException) -> Response:
    """Starlette answers a 405 with the methods of the first route whose path matches; a resource with one route
    per method (the admin labels: PUT, POST, DELETE) gets all of its methods in `Allow`."""
    route = request.scope.get("route")
    if error.status_code == 405 and isinstance(route, APIRoute):
        methods = {
            method for other in api.routes if getattr(other, "path", None) == route.path for method in other.methods
        }
        error.headers = {**(error.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, error)


@api.get("/models", responses=errors())
async def list_models(request: Request) -> dict[str, Any]:
    """Every AVAILABLE version's metadata.json (a schema-1 artifact's with its roles migrated)."""
    now = served(request)
    return {
        "models": [
            runtime.model.metadata.to_dict() for versions in now.runtimes.values() for runtime in versions.values()
        ]
    }


IMAGES_OR_UPLOAD = (
    'JSON {"instances": [image, ...]} of 0–255 pixel lists (one shape per request), '
    "or a multipart upload in field `image`"
)


@api.post(
    "/classify",
    responses=errors(*INFERENCE_ERRORS, 415),
    openapi_extra=json_or_upload_body("ClassifyRequest", "ImageUpload", example="digit", description=IMAGES_OR_UPLOAD)
    | api_schema.TASK_QUERY,
)
async def classify(request: Request) -> dict[str, Any]:
    """JSON {"instances": [image, ...]} with nested 0–255 pixel lists, or a multipart upload in field `image`."""
    runtime = model_for_task(request, Task.CLASSIFIER)
    images = await image_request(request)
    outputs = await runtime.run(runtime.model.metadata.signature(images.role), images.batch)
    return {"predictions": classifier_predictions(outputs), "model": model_tag(runtime)}


DETECT_FORMATS = ("json", "png")


@api.post(
    "/detect",
    response_model=None,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the detections as JSON, or with format=png the image with its boxes drawn",
        }
    }
    | errors(*INFERENCE_ERRORS, 415),
    openapi_extra=json_or_upload_body("DetectRequest", "DetectUpload", example="scene", description=IMAGES_OR_UPLOAD)
    | api_schema.TASK_QUERY,
)
async def detect(request: Request) -> dict[str, Any] | Response:
    """Objects in images: JSON {"instances": [image, ...]} or a multipart upload in field `image`.

    Optional `score_threshold` and `iou_threshold` (numbers 0–1; form fields or JSON keys) and `format`
    ("json", or "png" for one image with its boxes drawn; a form field, JSON key or ?format=).
    """
    runtime = model_for_task(request, Task.DETECTOR)
    metadata = runtime.model.metadata
    postprocessing = metadata.postprocessing
    images = await image_request(request)
    thresholds = {  # the keys are the signature's scalar inputs
        "score_threshold": images.threshold("score_threshold", default=postprocessing.score_threshold),
        "iou_threshold": images.threshold("iou_threshold", default=postprocessing.iou_threshold),
    }
    answer_format = requested_format(request, images)
    if answer_format == "png" and len(images.batch) != 1:
        raise InputError(
            f"format=png answers one image; the request has {len(images.batch)}",
            expected="exactly one image with format=png",
        )
    outputs = await runtime.run(metadata.signature(images.role), images.batch, **thresholds)
    predictions = detector_predictions(outputs)
    if answer_format == "png":
        drawn = drawing.draw_detections(drawing.as_rgb(images.batch[0]), predictions[0]["detections"])
        return Response(drawing.png_bytes(drawn), media_type="image/png")
    return {"predictions": predictions, "model": model_tag(runtime)}


@api.post(
    "/translate",
    responses=errors(*INFERENCE_ERRORS),
    openapi_extra=json_body("TranslateRequest", example="dates") | api_schema.TASK_QUERY,
)
async def translate(request: Request) -> dict[str, Any]:
    """JSON {"texts": ["March 4, 1999", ...], "beam_width": 3} → the decoded text and its score per input;
    with "attention": true, also the attention behind each best answer (versions exported with it)."""
    runtime = model_for_task(request, Task.SEQ2SEQ)
    metadata = runtime.model.metadata
    decoding = metadata.decoding
    expected = (
        f'{{"texts": [string, ...], "beam_width": 1–{decoding.max_beam_width} (optional), '
        '"attention": true or false (optional)}'
    )
    document = inputs.parse_json(await inputs.read_body(request))
    texts = inputs.text_batch(
        inputs.field(document, "texts", expected), max_length=runtime.model.text_input.max_length, name="texts"
    )
    beam_width = inputs.integer_option(
        document.get("beam_width", decoding.default_beam_width), "beam_width", low=1, high=decoding.max_beam_width
    )
    # Both roles take the strings and the task's options (here the beam width); the attention role's signature
    # also returns the attention, at the cost of one more decoder pass.
    role = Role.ATTENTION if inputs.boolean_option(document.get("attention", False), "attention") else Role.TEXTS
    if role not in metadata.signatures:
        raise InputError(
            f"version {runtime.model.version} of {runtime.model.name!r} does not expose attention",
            expected='a request without "attention", or a version exported by this release, which adds it '
            "(re-export the model)",
        )
    outputs = await runtime.run(metadata.signature(role), texts, beam_width=beam_width)
    return {"predictions": seq2seq_predictions(outputs), "model": model_tag(runtime)}


@dataclass(frozen=True)
class ImageRequest:
    """The images of a /classify or /detect request, and the request's other fields (its options)."""

    role: Role  # the signature role that takes `batch` and the options: IMAGE_BYTES or IMAGES
    batch: np.ndarray
    fields: dict[str, Any]  # the JSON body's keys, or the multipart form's other fields (text)
    from_form: bool

    def threshold(self, name: str, *, default: float) -> float:
        """A number from 0 to 1: a JSON number, or a form field's text that reads as one."""
        if name not in self.fields:
            return default
        parse = inputs.form_number if self.from_form else inputs.number_option
        return parse(self.fields[name], name, low=0.0, high=1.0)


async def image_request(request: Request) -> ImageRequest:
    """One image uploaded as multipart field `image`, or JSON {"instances": [...]} of 0–255 pixel arrays."""
    body = await inputs.read_body(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = forms.parse_form(body, content_type, file_field="image")
        if "image" not in form.files:
            raise InputError("missing file field 'image'", expected="a PNG or JPEG uploaded as multipart field 'image'")
        image = inputs.encoded_image(form.files["image"])
        return ImageRequest(Role.IMAGE_BYTES, np.array([image], dtype=object), form.fields, from_form=True)
    if content_type.startswith("application/json") or not content_type:
        document = inputs.parse_json(body)
        instances = inputs.field(document, "instances", f'{{"instances": [image, ...]}}, each {inputs.PIXEL_INSTANCE}')
        batch = inputs.pixel_batch(instances, booleans_possible=inputs.may_hold_booleans(body))
        return ImageRequest(Role.IMAGES, batch, document, from_form=False)
    raise InputError(
        f"unsupported content type {content_type!r}", expected="application/json or multipart/form-data", status=415
    )


def requested_format(request: Request, images: ImageRequest) -> str:
    """The body's `format` field, else the ?format= query parameter, else "json"."""
    return inputs.choice_option(
        images.fields.get("format", query_value(request, "format", "json")), "format", DETECT_FORMATS
    )


def model_tag(runtime: "ModelRuntime") -> dict[str, str]:
    return {"name": runtime.model.name, "version": runtime.model.version}


# --- TF Serving REST API -------------------------------------------------------------------------


@api.get("/v1/models", responses=errors())
async def served_models(request: Request) -> dict[str, Any]:
    """Every model: name, task, each version's state, labels and blessing, and the latest version's signatures."""
    now, listed = served(request), []
    for name in manager(request).model_names():
        entry: dict[str, Any] = {"name": name, "task": None, "versions": [], "signatures": {}}
        if name in now.runtimes:
            latest = now.runtime(name)
            entry |= {"task": latest.model.task, "signatures": latest.signature_summaries()}
        entry["versions"] = [
            {
                "version": str(status.version),
                "state": str(status.state),
                "labels": now.labels_of(name, status.version),
                "blessing": status.blessing,
            }
            | ({"error": status.error} if status.error else {})
            | ({"warning": status.warning} if status.warning else {})
            for status in manager(request).statuses(name)
        ]
        listed.append(entry)
    return {"models": listed}


# Before the status routes, whose {version} and {label} also match "3:predict": a 405 on a :predict path names
# the methods of the first route that matches it (http_error).


@api.post("/v1/models/{name}:predict", **api_schema.PREDICT)
@api.post("/v1/models/{name}/versions/{version}:predict", **api_schema.PREDICT)
@api.post("/v1/models/{name}/labels/{label}:predict", **api_schema.PREDICT)
async def tfserving_predict(
    request: Request, name: str, version: str | None = None, label: str | None = None
) -> dict[str, Any]:
    runtime = find_model(request, name, version, label)
    body = await inputs.read_body(request)
    document = inputs.parse_json(body)
    if not isinstance(document, dict):
        raise InputError("the JSON body is not an object", expected='{"instances": [...]} or {"inputs": ...}')
    signature_name = document.get("signature_name", "serving_default")
    if not isinstance(signature_name, str) or signature_name not in runtime.model.signatures:
        raise InputError(
            f"unknown signature_name {signature_name!r}", expected=f"one of {sorted(runtime.model.signatures)}"
        )
    row_format = "instances" in document
    if row_format == ("inputs" in document):
        raise InputError(
            "the body must have exactly one of 'instances' or 'inputs'",
            expected='{"instances": [...]} or {"inputs": ...}',
        )
    values, options = runtime.tensor_values(
        signature_name,
        document["instances"] if row_format else document["inputs"],
        row_format,
        booleans_possible=inputs.may_hold_booleans(body),
    )
    outputs = await runtime.run(signature_name, values, **options)
    columns = {key: to_json(value) for key, value in outputs.items()}
    if row_format:
        return {"predictions": [{key: column[row] for key, column in columns.items()} for row in range(len(values))]}
    return {"outputs": columns}


@api.get("/v1/models/{name}", responses=errors(*LOOKUP_ERRORS))
@api.get("/v1/models/{name}/versions/{version}", responses=errors(*LOOKUP_ERRORS))
@api.get("/v1/models/{name}/labels/{label}", responses=errors(*LOOKUP_ERRORS))
async def model_status(
    request: Request, name: str, version: str | None = None, label: str | None = None
) -> dict[str, Any]:
    """TF Serving's model status: every version this server knows (or the one asked for), its state and error."""
    models = manager(request)
    models.statuses(name)  # an unknown model is a 404 before its version is read (a GET on "3:predict" lands here)
    # A label's version is looked up once, and recorded for the metrics as on the other label routes.
    labelled = label is not None
    number = int(find_model(request, name, label=label).model.version) if labelled else version_number(version)
    statuses = models.version_statuses(name, version=number)
    return {"model_version_status": [status.to_tfserving() for status in statuses]}


@api.get("/v1/models/{name}/metadata", responses=errors(*LOOKUP_ERRORS))
@api.get("/v1/models/{name}/versions/{version}/metadata", responses=errors(*LOOKUP_ERRORS))
@api.get("/v1/models/{name}/labels/{label}/metadata", responses=errors(*LOOKUP_ERRORS))
async def model_metadata(
    request: Request, name: str, version: str | None = None, label: str | None = None
) -> dict[str, Any]:
    runtime = find_model(request, name, version, label)
    return {
        "model_spec": {"name": name, "signature_name": "", "version": runtime.model.version},
        "metadata": {"signature_def": {"signature_def": runtime.signature_defs()}},
    }


SETTINGS = settings.current()


@bentoml.service(
    name="modelservice",
    service_class=FastPathService,
    # One process holds the models, so concurrent requests share batches; more workers each load every model.
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout, "max_concurrency": SETTINGS.max_concurrency},
    logging={
        "access": {"enabled": SETTINGS.access_log}
    },  # per-request log lines cost more than the model call at 64 clients
)
@bentoml.asgi_app(api, path="/")
class ModelService:
    def __init__(self) -> None:
        # TensorFlow loads here, in the worker that serves, not in BentoML's parent process that only reads this class.
        from serving import model_config, store
        from serving.model_manager import ModelManager

        logger.setLevel(SETTINGS.log_level)
        manager = ModelManager(
            model_config.configured_specs(SETTINGS.models, SETTINGS.model_config_file),
            store.source_for(SETTINGS.model_dir),
            max_load_retries=SETTINGS.max_load_retries,
            serve_unblessed=SETTINGS.serve_unblessed,
        )
        manager.poll()
        if SETTINGS.require_models and (problem := manager.start_problem()):
            raise store.ModelLoadError(problem)  # python -m serving checks this first and says why
        api.state.manager = manager
        tuning.settle_after_load()
        if SETTINGS.poll_seconds:
            manager.start_polling(SETTINGS.poll_seconds)

    async def __is_ready__(self) -> bool:
        """/readyz answers 200 once a model version is AVAILABLE (BentoML asks this)."""
        return bool(api.state.manager.served.runtimes)


STOPPING = Stopping()  # the HTTP and gRPC sides' shared drain
# What an inference request gets on either side: its timeout, and its route's limit of requests in flight.
ADMISSION = {
    "timeout": SETTINGS.timeout,
    "max_concurrency": SETTINGS.max_concurrency,
    "min_concurrency": SETTINGS.min_concurrency,
    "latency_target": SETTINGS.latency_target_ms / 1000,
}
ModelService.add_outer_asgi_middleware(Drain, seconds=SETTINGS.drain_seconds, stopping=STOPPING)  # the outermost
ModelService.add_outer_asgi_middleware(
    GrpcServer,
    api=api,
    host=SETTINGS.host,
    port=SETTINGS.grpc_port,
    transport=SETTINGS.grpc_server,
    max_message_mb=SETTINGS.grpc_max_message_mb,
    workers=SETTINGS.workers,
    stopping=STOPPING,
    stop_grace_seconds=SETTINGS.drain_seconds,
    **ADMISSION,
)
ModelService.add_outer_asgi_middleware(
    FastPath,
    api=api,
    endpoints=(classify, detect, translate, tfserving_predict),
    access_log=SETTINGS.access_log,
    **ADMISSION,
)

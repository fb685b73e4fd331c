"""The admin API: reload the model configuration, set, move and remove version labels.

Off unless MODELSERVICE_ADMIN_TOKEN is set; then every admin request needs `Authorization: Bearer <token>`
(401 without one, 403 with a wrong one, and nothing changes). The inference routes stay open: a reverse
proxy in front of the server handles their authentication.

    POST   /admin/reload                          re-read MODELSERVICE_MODEL_CONFIG_FILE, or take the
                                                  ModelServerConfig (as JSON) in the body, and poll at once
    PUT    /admin/models/{name}/labels/{label}    {"version": 3}: point the label at an AVAILABLE version (or POST)
    DELETE /admin/models/{name}/labels/{label}

A rollback is a label moved back: `PUT /admin/models/classifier/labels/stable {"version": 2}`.
"""

import asyncio
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from serving import inputs, model_config, settings
from serving.api_schema import JSON, errors
from serving.inputs import InputError

if TYPE_CHECKING:
    from serving.model_manager import ModelManager

router = APIRouter(prefix="/admin", tags=["admin"])

AUTHORIZED_ERRORS = (400, 401, 403, 413)  # what every admin request can get, its body aside
LABEL_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["version"],
                    "properties": {"version": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
                },
                "example": {"version": 2},
            }
        },
    }
}
# Optional: without a body the server reads MODELSERVICE_MODEL_CONFIG_FILE again.
RELOAD_BODY = {
    "requestBody": {
        "required": False,
        "description": "TF Serving's ModelServerConfig as JSON (serving/model_config.py)",
        "content": {
            JSON: {
                "schema": {"type": "object", "properties": {"model_config_list": {"type": "object"}}},
                "example": {"model_config_list": {"config": [{"name": "classifier", "base_path": "classifier"}]}},
            }
        },
    }
}


def authorize(request: Request) -> None:
    check_token(request.headers.get("authorization", ""))


def check_token(authorization: str) -> None:
    """`authorization` (an HTTP header's or gRPC call metadata's value) is "Bearer <the admin token>"."""
    token = settings.current().admin_token
    if not token:
        raise InputError(
            "the admin API is off", expected="a server started with MODELSERVICE_ADMIN_TOKEN set", status=403
        )
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise InputError(
            "missing admin token", expected="Authorization: Bearer <token> (a header, or gRPC metadata)", status=401
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise InputError("wrong admin token", expected="the token MODELSERVICE_ADMIN_TOKEN holds", status=403)


def manager(request: Request):
    return request.app.state.manager


@router.post("/reload", responses=errors(*AUTHORIZED_ERRORS), openapi_extra=RELOAD_BODY)
async def reload_config(request: Request) -> dict[str, Any]:
    """Serve a new configuration: the body's ModelServerConfig (JSON), else the config file read again."""
    authorize(request)
    body = await inputs.read_body(request)
    try:
        if body.strip():
            specs = model_config.parse_config_document(inputs.parse_json(body), "the request body", config_base_dir())
        elif (config_file := settings.current().model_config_file) is not None:
            specs = model_config.read_config_file(config_file)
        else:
            raise InputError(
                "no model config file to read again",
                expected="a ModelServerConfig as JSON in the body, or a server started with "
                "MODELSERVICE_MODEL_CONFIG_FILE",
            )
    except model_config.ConfigError as error:
        raise InputError(str(error), expected="TF Serving's ModelServerConfig") from None
    return await reload(manager(request), specs)


def config_base_dir() -> Path:
    """Where a reloaded config's relative base paths start: beside the config file, else the working folder."""
    config_file = settings.current().model_config_file
    return config_file.parent if config_file else Path.cwd()


async def reload(models: "ModelManager", specs: list[model_config.ModelSpec]) -> dict[str, Any]:
    await asyncio.to_thread(models.reconfigure, specs)  # loads run off the event loop
    return {"models": [spec.name for spec in specs], "problems": models.failures()}


@router.put(
    "/models/{name}/labels/{label}",
    responses=errors(*AUTHORIZED_ERRORS, 404, 409),
    openapi_extra=LABEL_BODY,
)
@router.post(
    "/models/{name}/labels/{label}",
    responses=errors(*AUTHORIZED_ERRORS, 404, 409),
    openapi_extra=LABEL_BODY,
)
async def set_label(request: Request, name: str, label: str) -> dict[str, Any]:
    authorize(request)
    label = _label(label)
    document = inputs.parse_json(await inputs.read_body(request))
    version = inputs.integer_option(
        inputs.field(document, "version", '{"version": N}'), "version", low=1, high=2**63 - 1
    )
    manager(request).set_label(name, label, version)
    return {"name": name, "label": label, "version": str(version)}


@router.delete("/models/{name}/labels/{label}", responses=errors(*AUTHORIZED_ERRORS, 404))
async def remove_label(request: Request, name: str, label: str) -> dict[str, Any]:
    authorize(request)
    manager(request).remove_label(name, _label(label))
    return {"name": name, "label": label, "removed": True}


def _label(label: str) -> str:
    try:
        return model_config.check_label(label, "the path")
    except model_config.ConfigError as error:
        raise InputError(str(error), expected="a label of letters, digits and _") from None

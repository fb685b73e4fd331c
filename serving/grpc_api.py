"""TF Serving's gRPC API on the HTTP server's models: existing gRPC clients work unchanged.

    tensorflow.serving.PredictionService   Predict, GetModelMetadata; Classify, Regress and MultiInference
                                           answer UNIMPLEMENTED (every signature here is a predict signature)
    tensorflow.serving.ModelService        GetModelStatus, HandleReloadConfigRequest (the admin token as the
                                           call's `authorization: Bearer <token>` metadata)

The services read the same snapshot of AVAILABLE versions and labels (`serving.model_manager.Served`), check
inputs as the HTTP routes do (`serving.inputs`), and call `ModelRuntime.run`, so a gRPC request joins the
same batches as HTTP requests for the same signature. A client's mistake is an `InputError`, answered with
the gRPC status its HTTP status stands for (`STATUS_CODES`) and its message and expectation.
"""

import functools
import math
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import admin, inputs, model_config
from serving.grpc_server import MODEL_SERVICE, PREDICTION_SERVICE, Call, GrpcServer, Method
from serving.inputs import InputError
from serving.model_manager import VersionStatus
from serving.runtime import scalar_option

if TYPE_CHECKING:
    from serving.model_manager import ModelManager
    from serving.runtime import ModelRuntime

DEFAULT_SIGNATURE = "serving_default"
METADATA_FIELD = "signature_def"
STATES = get_model_status_pb2.ModelVersionStatus.State
UNKNOWN_ERROR = 2  # tensorflow.error.Code.UNKNOWN, what TF Serving reports for a version that failed to load


class Services:
    """Both services' methods over one server's models; `serving.grpc_server` wraps each in its admission,
    timeout, error mapping and metrics, and registers them."""

    def __init__(self, models: "ModelManager", max_message_bytes: int):
        self.models = models
        self.max_message_bytes = max_message_bytes

    def runtime(self, spec: model_pb2.ModelSpec, call: Call) -> "ModelRuntime":
        """The version a ModelSpec names: by version, by version_label, else the model's highest AVAILABLE one."""
        name, version, label = version_choice(spec)
        runtime = self.models.served.runtime(name, version=version, label=label)
        call.model = (runtime.model.name, str(runtime.model.version))
        return runtime

    # --- PredictionService -------------------------------------------------------------------------

    async def predict(self, request: predict_pb2.PredictRequest, call: Call) -> predict_pb2.PredictResponse:
        runtime = self.runtime(request.model_spec, call)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature_name not in runtime.model.signatures:
            raise InputError(
                f"unknown signature_name {signature_name!r}", expected=f"one of {sorted(runtime.model.signatures)}"
            )
        batch, options = self.tensor_inputs(runtime, signature_name, request.inputs)
        outputs = await runtime.run(signature_name, batch, **options)
        if unknown := sorted(set(request.output_filter) - set(outputs)):
            raise InputError(f"output_filter names unknown outputs {unknown}", expected=f"some of {sorted(outputs)}")
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(self.answered_spec(runtime, signature_name))
        for key in request.output_filter or outputs:
            response.outputs[key].CopyFrom(tensor_proto(outputs[key]))
        return response

    def tensor_inputs(
        self, runtime: "ModelRuntime", signature_name: str, tensors: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A PredictRequest's inputs as one checked batch and the signature's scalar options."""
        specs = runtime.input_specs(signature_name)
        expected = f"inputs {sorted(specs)} of signature {signature_name!r}: see GetModelMetadata"
        if unknown := sorted(set(tensors) - set(specs)):
            raise InputError(f"unknown input {unknown[0]!r}", expected=expected)
        if missing := sorted(set(specs) - set(tensors)):
            raise InputError(f"missing input {missing[0]!r} of signature {signature_name!r}", expected=expected)
        arrays = {name: self.array(tensors[name], spec, name) for name, spec in specs.items()}
        spec = runtime.batch_spec(signature_name)
        options = {
            name: scalar_option(arrays[name].item(), name, option.dtype)
            for name, option in runtime.option_specs(signature_name).items()
        }
        batch = arrays[spec.name]
        if spec.dtype == tf.string:
            return runtime.string_batch(signature_name, list(batch)), options
        return inputs.pixel_tensor(batch, spec.name), options

    def array(self, tensor: tensor_pb2.TensorProto, spec: tf.TensorSpec, name: str) -> np.ndarray:
        """The TensorProto as an array once its dtype and shape match `spec`, and before anything is allocated:
        a proto may declare a shape far larger than the values it carries (they repeat to fill it)."""
        wanted, dims = _spec_check(spec)
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        if tensor.dtype != wanted:
            raise InputError(
                f"input {name!r} is {_dtype_name(tensor.dtype)}, not {spec.dtype.name}", expected=_expected(name, spec)
            )
        if not _fits(shape, dims):
            raise InputError(f"input {name!r} has shape {shape}", expected=_expected(name, spec))
        size = math.prod(shape) * (spec.dtype.size if spec.dtype != tf.string else 1)
        if size > self.max_message_bytes:
            raise InputError(
                f"input {name!r} of shape {shape} holds {size} bytes, over the largest message",
                expected=f"inputs of at most {self.max_message_bytes} bytes (MODELSERVICE_GRPC_MAX_MESSAGE_MB)",
                status=413,
            )
        try:
            return tensor_array(tensor, spec.dtype, shape)
        except (TypeError, ValueError) as error:
            problem = f"input {name!r} is not a valid TensorProto: {error}"
            raise InputError(problem, expected=_expected(name, spec)) from None

    def answered_spec(self, runtime: "ModelRuntime", signature_name: str = "") -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=runtime.model.name, signature_name=signature_name)
        spec.version.value = int(runtime.model.version)
        return spec

    async def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, call: Call
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        runtime = self.runtime(request.model_spec, call)
        if list(request.metadata_field) != [METADATA_FIELD]:
            raise InputError(
                f"metadata_field is {list(request.metadata_field)}", expected=f"[{METADATA_FIELD!r}], the one served"
            )
        definitions = json_format.ParseDict(
            {"signature_def": runtime.signature_defs()}, get_model_metadata_pb2.SignatureDefMap()
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.CopyFrom(self.answered_spec(runtime))
        response.metadata[METADATA_FIELD].Pack(definitions)
        return response

    async def not_a_predict_signature(self, request: Any, call: Call) -> Any:
        runtime = self.runtime(request.model_spec, call)
        raise InputError(
            f"model {runtime.model.name!r} has only predict signatures (tensors in and out), no classification or "
            "regression signature over tf.Example",
            expected="Predict, with the inputs GetModelMetadata lists",
            status=501,
        )

    async def multi_inference(self, request: Any, call: Call) -> Any:
        specs = [task.model_spec for task in request.tasks]
        if not specs:
            raise InputError("the request has no tasks", expected="Predict instead: MultiInference is not served")
        for spec in specs:
            self.runtime(spec, call)
        raise InputError(
            "MultiInference runs classification and regression signatures over tf.Example, which no model here has",
            expected="Predict, with the inputs GetModelMetadata lists",
            status=501,
        )

    # --- ModelService ----------------------------------------------------------------------------

    async def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest, call: Call
    ) -> get_model_status_pb2.GetModelStatusResponse:
        name, version, label = version_choice(request.model_spec)
        statuses = self.models.version_statuses(name, version=version, label=label)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=[_version(s) for s in statuses])

    async def reload_config(
        self, request: model_management_pb2.ReloadConfigRequest, call: Call, authorization: str
    ) -> model_management_pb2.ReloadConfigResponse:
        admin.check_token(authorization)
        try:
            specs = model_config.specs_from_message(request.config, "the request's config", admin.config_base_dir())
        except model_config.ConfigError as error:
            raise InputError(str(error), expected="TF Serving's ModelServerConfig") from None
        reloaded = await admin.reload(self.models, specs)
        response = model_management_pb2.ReloadConfigResponse()
        if reloaded["problems"]:  # TF Serving's answer when a version fails to load: the reason in `status`
            response.status.error_code = UNKNOWN_ERROR
            response.status.error_message = "; ".join(reloaded["problems"])
        return response


def tensor_array(tensor: tensor_pb2.TensorProto, dtype: tf.DType, shape: list[int]) -> np.ndarray:
    """A TensorProto's values: straight from its bytes when it carries them as `tensor_content`, as clients'
    `tf.make_tensor_proto` does for arrays (a fifth of the time `tf.make_ndarray` takes); else TensorFlow's way."""
    if tensor.tensor_content and dtype != tf.string:
        return np.frombuffer(tensor.tensor_content, dtype.as_numpy_dtype).reshape(shape)
    return tf.make_ndarray(tensor)


def tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """An output array as a TensorProto, built directly (`tf.make_tensor_proto` took most of a call's own time)."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape])
    if array.dtype.kind in "SO":
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=array.ravel().tolist())
    return tensor_pb2.TensorProto(
        dtype=_dtype_enum(array.dtype), tensor_shape=shape, tensor_content=np.ascontiguousarray(array).tobytes()
    )


@functools.cache
def _dtype_enum(dtype: np.dtype) -> int:
    return tf.dtypes.as_dtype(dtype).as_datatype_enum


@functools.lru_cache(maxsize=1024)
def _spec_check(spec: tf.TensorSpec) -> tuple[int, tuple[int | None, ...] | None]:
    """What a TensorProto must be for `spec`, read once: its dtype enum and sizes (None: any; no tuple: any rank)."""
    return spec.dtype.as_datatype_enum, (tuple(spec.shape.as_list()) if spec.shape.rank is not None else None)


def _fits(shape: list[int], dims: tuple[int | None, ...] | None) -> bool:
    if any(size < 0 for size in shape):
        return False
    if dims is None:
        return True
    return len(shape) == len(dims) and all(want is None or want == size for size, want in zip(shape, dims))


def _expected(name: str, spec: tf.TensorSpec) -> str:
    return f"{name!r} as a {spec.dtype.name} tensor of shape {_shape_text(spec.shape)}"


def version_choice(spec: model_pb2.ModelSpec) -> tuple[str, int | None, str | None]:
    """A ModelSpec's model name, and the version or the label it names (None for neither)."""
    if not spec.name:
        raise InputError("model_spec.name is empty", expected="the name of a served model in model_spec.name")
    choice = spec.WhichOneof("version_choice")
    return (
        spec.name,
        spec.version.value if choice == "version" else None,
        spec.version_label if choice == "version_label" else None,
    )


def _dtype_name(enum: int) -> str:
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"dtype enum {enum}"


def _shape_text(shape: tf.TensorShape) -> str:
    """[N, any, any, 3]: N for the batch axis, `any` for other axes of any size."""
    sizes = ["any" if size is None else str(size) for size in shape.as_list()]
    return "[" + ", ".join(["N", *sizes[1:]] if sizes else sizes) + "]"


def _version(status: VersionStatus) -> get_model_status_pb2.ModelVersionStatus:
    answer = get_model_status_pb2.ModelVersionStatus(version=status.version, state=STATES.Value(str(status.state)))
    if status.error:
        answer.status.error_code = UNKNOWN_ERROR
        answer.status.error_message = status.error
    return answer


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: GrpcServer, services: Services):
        self.server = server
        self.services = services

    async def _answer(self, name: str, method: Method, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.server.answer(f"/{PREDICTION_SERVICE}/{name}", method, request, context)

    async def Predict(self, request, context):
        return await self._answer("Predict", self.services.predict, request, context)

    async def GetModelMetadata(self, request, context):
        return await self._answer("GetModelMetadata", self.services.get_model_metadata, request, context)

    async def Classify(self, request, context):
        return await self._answer("Classify", self.services.not_a_predict_signature, request, context)

    async def Regress(self, request, context):
        return await self._answer("Regress", self.services.not_a_predict_signature, request, context)

    async def MultiInference(self, request, context):
        return await self._answer("MultiInference", self.services.multi_inference, request, context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: GrpcServer, services: Services):
        self.server = server
        self.services = services

    async def GetModelStatus(self, request, context):
        route = f"/{MODEL_SERVICE}/GetModelStatus"
        return await self.server.answer(route, self.services.get_model_status, request, context)

    async def HandleReloadConfigRequest(self, request, context):
        authorization = dict(context.invocation_metadata() or ()).get("authorization", "")
        route = f"/{MODEL_SERVICE}/HandleReloadConfigRequest"
        return await self.server.answer(route, self.services.reload_config, request, context, authorization)

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
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
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
        # Per loaded version, dropped with it.
        self._plans: weakref.WeakKeyDictionary[ModelRuntime, dict[str, InputPlan]] = weakref.WeakKeyDictionary()

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
        self.fill_spec(response.model_spec, runtime, signature_name)
        for key in request.output_filter or outputs:
            fill_tensor(response.outputs[key], outputs[key])
        return response

    def tensor_inputs(
        self, runtime: "ModelRuntime", signature_name: str, tensors: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A PredictRequest's inputs as one checked batch and the signature's scalar options."""
        plan = self.input_plan(runtime, signature_name)
        if len(tensors) != len(plan.tensors) or any(name not in tensors for name in plan.tensors):
            expected = f"inputs {sorted(plan.tensors)} of signature {signature_name!r}: see GetModelMetadata"
            if unknown := sorted(set(tensors) - set(plan.tensors)):
                raise InputError(f"unknown input {unknown[0]!r}", expected=expected)
            missing = sorted(set(plan.tensors) - set(tensors))
            raise InputError(f"missing input {missing[0]!r} of signature {signature_name!r}", expected=expected)
        arrays = {name: self.array(tensors[name], check, name) for name, check in plan.tensors.items()}
        options = {name: scalar_option(arrays[name].item(), name, dtype) for name, dtype in plan.options.items()}
        batch = arrays[plan.batch_name]
        if plan.strings:
            return runtime.string_batch(signature_name, list(batch)), options
        return inputs.pixel_tensor(batch, plan.batch_name), options

    def input_plan(self, runtime: "ModelRuntime", signature_name: str) -> "InputPlan":
        plans = self._plans.setdefault(runtime, {})
        if signature_name not in plans:
            plans[signature_name] = InputPlan.of(runtime, signature_name)
        return plans[signature_name]

    def array(self, tensor: tensor_pb2.TensorProto, check: "TensorCheck", name: str) -> np.ndarray:
        """The TensorProto as an array once its dtype and shape match `check`, and before anything is allocated:
        a proto may declare a shape far larger than the values it carries (they repeat to fill it)."""
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        if tensor.dtype != check.dtype_enum:
            raise InputError(
                f"input {name!r} is {_dtype_name(tensor.dtype)}, not {check.spec.dtype.name}",
                expected=_expected(name, check.spec),
            )
        if not _fits(shape, check.dims):
            raise InputError(f"input {name!r} has shape {shape}", expected=_expected(name, check.spec))
        size = math.prod(shape) * check.item_bytes
        if size > self.max_message_bytes:
            raise InputError(
                f"input {name!r} of shape {shape} holds {size} bytes, over the largest message",
                expected=f"inputs of at most {self.max_message_bytes} bytes (MODELSERVICE_GRPC_MAX_MESSAGE_MB)",
                status=413,
            )
        try:
            if tensor.tensor_content and check.numpy_dtype is not None:
                # As clients' `tf.make_tensor_proto` sends arrays: a fifth of the time `tf.make_ndarray` takes.
                return np.frombuffer(tensor.tensor_content, check.numpy_dtype).reshape(shape)
            return tf.make_ndarray(tensor)
        except (TypeError, ValueError) as error:
            problem = f"input {name!r} is not a valid TensorProto: {error}"
            raise InputError(problem, expected=_expected(name, check.spec)) from None

    @staticmethod
    def fill_spec(spec: model_pb2.ModelSpec, runtime: "ModelRuntime", signature_name: str = "") -> None:
        """The ModelSpec of the version that answered, filled in place (building one and copying it cost more)."""
        spec.name = runtime.model.name
        spec.version.value = int(runtime.model.version)
        spec.signature_name = signature_name

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
        self.fill_spec(response.model_spec, runtime)
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


def fill_tensor(tensor: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """An output array into the response's TensorProto, in place: half the time of building a TensorProto and
    copying it in, which took a tenth of the event loop's time at 64 clients (`tf.make_tensor_proto`: more)."""
    dims = tensor.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    if array.dtype.kind in "SO":
        tensor.dtype = types_pb2.DT_STRING
        tensor.string_val.extend(array.ravel().tolist())
    else:
        tensor.dtype = _dtype_enum(array.dtype)
        tensor.tensor_content = array.tobytes()


@functools.cache
def _dtype_enum(dtype: np.dtype) -> int:
    return tf.dtypes.as_dtype(dtype).as_datatype_enum


@dataclass(frozen=True)
class TensorCheck:
    """What a TensorProto must be for one input: its dtype enum and sizes (None: any size; no tuple: any rank)."""

    spec: tf.TensorSpec
    dtype_enum: int
    dims: tuple[int | None, ...] | None
    item_bytes: int  # a string counts as one byte here; its length is checked with the texts or images
    numpy_dtype: np.dtype | None  # None for strings, read by TensorFlow rather than from raw bytes

    @classmethod
    def of(cls, spec: tf.TensorSpec) -> "TensorCheck":
        strings = spec.dtype == tf.string
        return cls(
            spec=spec,
            dtype_enum=spec.dtype.as_datatype_enum,
            dims=tuple(spec.shape.as_list()) if spec.shape.rank is not None else None,
            item_bytes=1 if strings else spec.dtype.size,
            numpy_dtype=None if strings else np.dtype(spec.dtype.as_numpy_dtype),
        )


@dataclass(frozen=True)
class InputPlan:
    """A signature's inputs as a PredictRequest carries them, read once per version and signature: read from
    the TensorFlow specs on every call, their hashing and comparisons took longer than the checks themselves."""

    tensors: dict[str, TensorCheck]
    batch_name: str
    strings: bool  # texts or encoded images, else pixels
    options: dict[str, tf.DType]  # scalar inputs: one value for the whole call

    @classmethod
    def of(cls, runtime: "ModelRuntime", signature_name: str) -> "InputPlan":
        batch = runtime.batch_spec(signature_name)
        return cls(
            tensors={name: TensorCheck.of(spec) for name, spec in runtime.input_specs(signature_name).items()},
            batch_name=batch.name,
            strings=batch.dtype == tf.string,
            options={name: spec.dtype for name, spec in runtime.option_specs(signature_name).items()},
        )


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

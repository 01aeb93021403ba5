"""Triton model configs generated from an ONNX graph's inputs and outputs.

Built as model_config_pb2 messages and printed with protobuf's text format, so every generated
file is a config Triton parses (field names and enums are checked here, not at server start).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

_TRITON_TYPES = {
    onnx.TensorProto.FLOAT: mc.TYPE_FP32,
    onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
    onnx.TensorProto.BFLOAT16: mc.TYPE_BF16,
    onnx.TensorProto.DOUBLE: mc.TYPE_FP64,
    onnx.TensorProto.UINT8: mc.TYPE_UINT8,
    onnx.TensorProto.UINT16: mc.TYPE_UINT16,
    onnx.TensorProto.UINT32: mc.TYPE_UINT32,
    onnx.TensorProto.UINT64: mc.TYPE_UINT64,
    onnx.TensorProto.INT8: mc.TYPE_INT8,
    onnx.TensorProto.INT16: mc.TYPE_INT16,
    onnx.TensorProto.INT32: mc.TYPE_INT32,
    onnx.TensorProto.INT64: mc.TYPE_INT64,
    onnx.TensorProto.BOOL: mc.TYPE_BOOL,
    onnx.TensorProto.STRING: mc.TYPE_STRING,
}

DEFAULT_MAX_BATCH = 8


class GraphError(ValueError):
    """The graph has I/O Triton cannot describe (unknown element type, unknown rank)."""


@dataclass(frozen=True)
class TensorIO:
    name: str
    data_type: int  # model_config_pb2 DataType
    dims: tuple[int, ...]  # -1 where the graph's dimension is symbolic or unknown

    @property
    def type_name(self) -> str:
        return str(mc.DataType.Name(self.data_type))


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]

    @property
    def batchable(self) -> bool:
        """Triton may batch only when every tensor's first dimension is free and of the same meaning;
        a dynamic leading dim on every input and output is the signal that it is a batch dim."""
        tensors = (*self.inputs, *self.outputs)
        return all(t.dims and t.dims[0] == -1 for t in tensors)


def _tensor(value: onnx.ValueInfoProto) -> TensorIO:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type not in _TRITON_TYPES:
        raise GraphError(f"tensor {value.name!r}: element type {tensor_type.elem_type} has no Triton type")
    if not tensor_type.HasField("shape"):
        raise GraphError(f"tensor {value.name!r} has no shape (unknown rank): give the graph static ranks")
    dims = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim
    )
    return TensorIO(value.name, _TRITON_TYPES[tensor_type.elem_type], dims)


def graph_io(model: onnx.ModelProto) -> GraphIO:
    initializers = {i.name for i in model.graph.initializer}
    # Old exporters list initializers as graph inputs too; they are weights, not request tensors.
    inputs = tuple(_tensor(v) for v in model.graph.input if v.name not in initializers)
    return GraphIO(inputs, tuple(_tensor(v) for v in model.graph.output))


def _fill(config: mc.ModelConfig, io: GraphIO, max_batch: int) -> None:
    batched = max_batch > 0
    for target, tensors in ((config.input, io.inputs), (config.output, io.outputs)):
        for tensor in tensors:
            entry = target.add()
            entry.name = tensor.name
            entry.data_type = tensor.data_type  # type: ignore[assignment]
            # Triton's dims exclude the batch dim when max_batch_size > 0.
            dims = tensor.dims[1:] if batched else tensor.dims
            entry.dims.extend(dims or (1,))
    config.max_batch_size = max_batch
    if batched:
        config.dynamic_batching.SetInParent()


def cpu_config(name: str, io: GraphIO, max_batch: int, threads: int = 2) -> mc.ModelConfig:
    """Python backend + onnxruntime (triton_models/generic_onnx.py), the way rvm and u2netp run here."""
    config = mc.ModelConfig(name=name, backend="python")
    _fill(config, io, max_batch)
    _one_instance(config, mc.ModelInstanceGroup.KIND_CPU)
    config.parameters["intra_op_threads"].string_value = str(threads)
    config.parameters["inter_op_threads"].string_value = "1"
    return config


def _one_instance(config: mc.ModelConfig, kind: int) -> None:
    group = config.instance_group.add()
    group.kind = kind
    group.count = 1


def _native_gpu_config(
    name: str, io: GraphIO, max_batch: int, platform: str, filename: str
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, platform=platform, default_model_filename=filename)
    _fill(config, io, max_batch)
    _one_instance(config, mc.ModelInstanceGroup.KIND_GPU)
    return config


def gpu_config(name: str, io: GraphIO, max_batch: int) -> mc.ModelConfig:
    """Triton's native onnxruntime backend on the same model.onnx (--model-config-name=gpu)."""
    return _native_gpu_config(name, io, max_batch, "onnxruntime_onnx", "model.onnx")


def trt_config(name: str, io: GraphIO, max_batch: int) -> mc.ModelConfig:
    """Native TensorRT on model.plan (--model-config-name=trt)."""
    return _native_gpu_config(name, io, max_batch, "tensorrt_plan", "model.plan")


def render(config: mc.ModelConfig, header: str) -> str:
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + text_format.MessageToString(config)


def read(path: Path) -> mc.ModelConfig:
    config = mc.ModelConfig()
    text_format.Parse(path.read_text(encoding="utf-8"), config)
    return config


def config_io_names(config: mc.ModelConfig) -> tuple[set[str], set[str]]:
    return {i.name for i in config.input}, {o.name for o in config.output}

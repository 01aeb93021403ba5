"""A Triton model config held against the ONNX graph it serves, by the rules Triton 2.51 (r24.10)
applies when it loads the model, so a config that would not load fails here, on the CPU.

Sources of each rule (Triton r24.10):
* onnxruntime_backend `src/onnxruntime.cc` (ModelInstanceState constructor, ValidateInputs,
  ValidateOutputs, Validate*SequenceControl): every control input is a graph input of dims [1]
  and the control's dtype ("model does not provide that input" otherwise); the graph has exactly
  as many inputs as the config's inputs + controls + states; input/output dtypes equal; dims
  compared without the batch dim; optional inputs refused when max_batch_size > 0. The
  tensorrt backend applies the same control and I/O checks to a plan.
* core `src/sequence_batch_scheduler/sequence_batch_scheduler.cc` (GenerateInitialStateData): at
  most one initial_state, named, of the state's dtype and rank, with no -1 dims and the state's
  fixed dims; `zero_data` or `data_file` gives its contents.
* core `src/sequence_state.cc`: the state tensor is created per sequence, but a batch's state
  shape comes from the batch, so states whose sides vary from one sequence to the next (RVM's
  follow the frame's aspect ratio, and start as [1,1,1,1]) must not be batched: max_batch_size
  at most 1 (the batching rule of docs/gpu.md).
* TensorRT's ONNX parser treats equal dim names as equal sizes: a state that names a dim like
  the frame's would be tied to the frame's size (only the batch dim may be shared).

`problems(config, graph)` lists every broken rule as a sentence; an empty list means the config
passes. Python-backend configs are checked for their I/O names and dtypes only (their model.py
decides the rest).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from tritonclient.grpc import model_config_pb2 as mc

from export import pbtxt

NATIVE_PLATFORMS = frozenset({"onnxruntime_onnx", "tensorrt_plan"})

Named = tuple[int | str, ...]  # a graph tensor's dims: an int when fixed, its name when symbolic


def named_dims(value: onnx.ValueInfoProto) -> Named:
    """The dims of a graph input or output; an unnamed free dim is "?"."""
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    )


def _graph_tensors(values: Iterable[onnx.ValueInfoProto]) -> dict[str, tuple[int, Named]]:
    return {v.name: (v.type.tensor_type.elem_type, named_dims(v)) for v in values}


def graph_inputs(graph: onnx.ModelProto) -> dict[str, tuple[int, Named]]:
    initializers = {i.name for i in graph.graph.initializer}
    return _graph_tensors(v for v in graph.graph.input if v.name not in initializers)


def graph_outputs(graph: onnx.ModelProto) -> dict[str, tuple[int, Named]]:
    return _graph_tensors(graph.graph.output)


def _triton_type(onnx_type: int) -> int:
    return pbtxt._TRITON_TYPES.get(onnx_type, mc.TYPE_INVALID)


def _type_name(config_type: int) -> str:
    return str(mc.DataType.Name(config_type))


def is_native(config: mc.ModelConfig) -> bool:
    return config.platform in NATIVE_PLATFORMS or config.backend in {"onnxruntime", "tensorrt"}


def _dims_fit(what: str, config_dims: tuple[int, ...], graph_dims: Named, batched: bool) -> list[str]:
    """Config dims (batch dim excluded when batched) against the graph's, as the backends compare
    them: same rank; a fixed graph dim must be that number in the config; the batch dim of a
    batched model must be free in the graph."""
    if batched:
        if not graph_dims or isinstance(graph_dims[0], int):
            return [
                f"{what}: max_batch_size > 0 needs a free first (batch) dim in the graph, it has {graph_dims}"
            ]
        graph_dims = graph_dims[1:]
    if len(config_dims) != len(graph_dims):
        return [f"{what}: config dims {list(config_dims)} have rank {len(config_dims)}, graph {graph_dims}"]
    return [
        f"{what}: config dim {i} is {c}, the graph fixes it at {g}"
        for i, (c, g) in enumerate(zip(config_dims, graph_dims, strict=True))
        if isinstance(g, int) and c != g
    ]


def _io_problems(config: mc.ModelConfig, graph: onnx.ModelProto) -> list[str]:
    found: list[str] = []
    batched = config.max_batch_size > 0
    sides = (("input", config.input, graph_inputs(graph)), ("output", config.output, graph_outputs(graph)))
    for side, entries, tensors in sides:
        for entry in entries:
            if entry.name not in tensors:
                found.append(f"{side} {entry.name!r} is not a graph {side} (graph has {sorted(tensors)})")
                continue
            elem, dims = tensors[entry.name]
            if _triton_type(elem) != entry.data_type:
                found.append(
                    f"{side} {entry.name!r}: config {_type_name(entry.data_type)}, "
                    f"graph {_type_name(_triton_type(elem))}"
                )
            found += _dims_fit(f"{side} {entry.name!r}", tuple(entry.dims), dims, batched)
    return found


def _control_problems(config: mc.ModelConfig, inputs: dict[str, tuple[int, Named]]) -> list[str]:
    found: list[str] = []
    batched = config.max_batch_size > 0
    for control_input in config.sequence_batching.control_input:
        if control_input.name not in inputs:
            found.append(
                f"sequence control {control_input.name!r} is not a graph input: the backend refuses the "
                "model ('model does not provide that input') and tritonserver exits"
            )
            continue
        elem, dims = inputs[control_input.name]
        if (dims[1:] if batched else dims) != (1,):
            found.append(
                f"sequence control {control_input.name!r} must have dims [1] in the graph, has {dims}"
            )
        for control in control_input.control:
            wanted = control.data_type or (
                mc.TYPE_INT32
                if control.int32_false_true
                else mc.TYPE_FP32
                if control.fp32_false_true
                else mc.TYPE_BOOL
            )
            if _triton_type(elem) != wanted:
                found.append(
                    f"sequence control {control_input.name!r}: graph dtype differs from the control's"
                )
    return found


def _state_problems(config: mc.ModelConfig, graph: onnx.ModelProto) -> list[str]:
    found: list[str] = []
    inputs, outputs = graph_inputs(graph), graph_outputs(graph)
    batched = config.max_batch_size > 0
    state_names = {s.input_name for s in config.sequence_batching.state}
    state_names |= {s.output_name for s in config.sequence_batching.state}
    request_names: set[str] = set()
    for name, (_, dims) in inputs.items():
        if name not in state_names:
            request_names |= {d for d in (dims[1:] if batched else dims) if isinstance(d, str)}
    for state in config.sequence_batching.state:
        what = f"state {state.input_name!r}/{state.output_name!r}"
        for name, tensors, side in (
            (state.input_name, inputs, "input"),
            (state.output_name, outputs, "output"),
        ):
            if name not in tensors:
                found.append(f"{what}: {name!r} is not a graph {side}")
                continue
            elem, dims = tensors[name]
            if _triton_type(elem) != state.data_type:
                found.append(f"{what}: {name!r} is {_type_name(_triton_type(elem))} in the graph")
            if len(dims) != len(state.dims) + batched:
                found.append(f"{what}: dims {list(state.dims)} do not have the rank of {name!r} {dims}")
            shared = {d for d in (dims[1:] if batched else dims) if isinstance(d, str)} & request_names
            if shared:
                found.append(
                    f"{what}: {name!r} names dims {sorted(shared)} like a request input: TensorRT ties "
                    "equal names to equal sizes, and a state's sides are not the frame's"
                )
        if len(state.initial_state) != 1:
            found.append(f"{what}: needs exactly one initial_state (has {len(state.initial_state)})")
            continue
        initial = state.initial_state[0]
        if not initial.name:
            found.append(f"{what}: initial_state needs a name")
        if initial.data_type != state.data_type:
            found.append(f"{what}: initial_state dtype differs from the state's")
        if len(initial.dims) != len(state.dims) or any(
            i == -1 or (s != -1 and i != s) for i, s in zip(initial.dims, state.dims, strict=False)
        ):
            found.append(
                f"{what}: initial_state dims {list(initial.dims)} do not fit state dims {list(state.dims)}"
            )
        if initial.WhichOneof("state_data") != "zero_data" or not initial.zero_data:
            found.append(f"{what}: the state starts from zeros, so initial_state needs zero_data: true")
    if batched and config.max_batch_size > 1 and any(-1 in s.dims for s in config.sequence_batching.state):
        found.append(
            f"max_batch_size {config.max_batch_size} with states of free size: Triton batches requests "
            "by their inputs' shapes and takes the state shape from the batch, so a first frame and a "
            "running sequence in one batch fail it or corrupt state; use max_batch_size 1 (docs/gpu.md)"
        )
    return found


def problems(config: mc.ModelConfig, graph: onnx.ModelProto) -> list[str]:
    """Every rule of this module's docstring `config` breaks for `graph`, as sentences."""
    found = _io_problems(config, graph)
    if not is_native(config):
        return found
    inputs = graph_inputs(graph)
    batching = config.sequence_batching
    expected = len(config.input) + len(batching.control_input) + len(batching.state)
    if len(inputs) != expected:
        found.append(
            f"the graph has {len(inputs)} inputs, the config declares {expected} "
            "(inputs + sequence controls + states): the backend refuses the model"
        )
    if config.max_batch_size > 0:
        found += [
            f"input {i.name!r} is optional: refused when max_batch_size > 0"
            for i in config.input
            if i.optional
        ]
    found += _control_problems(config, inputs)
    found += _state_problems(config, graph)
    preferred = [*config.dynamic_batching.preferred_batch_size, *batching.oldest.preferred_batch_size]
    found += [
        f"preferred batch size {p} > max_batch_size" for p in preferred if p > max(config.max_batch_size, 1)
    ]
    return found

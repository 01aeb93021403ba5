"""Run an ONNX graph with PyTorch operators, node by node, on any torch device.

For a GPU host that has PyTorch with CUDA but no onnxruntime-gpu, TensorRT or Triton (the lent
benchmark machines): benchmarks/gpu_smoke.py runs the exported rvm and u2netp graphs through it.
Covers the operators of those two graphs (SUPPORTED) with ONNX opset 18 semantics; anything else
raises NotImplementedError naming the operator. onnx2torch would do this too, but it imports
torchvision, which such hosts may lack.

Shape arithmetic (Shape, Gather, Slice of shapes, ...) stays in int64 tensors on the CPU; float
tensors live on the device. Under torch.autocast the convolutions and matrix products run in
fp16/bf16, the rest in float32 (the graph's own Casts keep working).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

Tensor = torch.Tensor
_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.BOOL: torch.bool,
}


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None or t.numel() == 0 else [int(v) for v in t.reshape(-1).tolist()]


def _same_device(inputs: Sequence[Tensor | None]) -> list[Tensor | None]:
    """Elementwise operands on one device: the CPU shape tensors join the device tensors."""
    devices = {t.device for t in inputs if t is not None}
    if len(devices) <= 1:
        return list(inputs)
    target = next(d for d in devices if d.type != "cpu")
    return [None if t is None else t.to(target) for t in inputs]


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., list[Tensor]]:
    def run(node: onnx.NodeProto, a: Tensor, b: Tensor) -> list[Tensor]:
        a, b = _same_device([a, b])  # type: ignore[assignment]
        return [fn(a, b)]

    return run


def _div(a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(node: onnx.NodeProto, x: Tensor, w: Tensor, b: Tensor | None = None) -> list[Tensor]:
    a = _attrs(node)
    pads = list(a.get("pads", [0, 0, 0, 0]))  # type: ignore[call-overload]
    if pads[:2] != pads[2:]:
        raise NotImplementedError(f"Conv with asymmetric pads {pads}")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("Conv auto_pad")
    return [
        F.conv2d(
            x,
            w,
            b,
            stride=tuple(a.get("strides", [1, 1])),  # type: ignore[arg-type]
            padding=tuple(pads[:2]),
            dilation=tuple(a.get("dilations", [1, 1])),  # type: ignore[arg-type]
            groups=int(a.get("group", 1)),  # type: ignore[call-overload]
        )
    ]


def _pool(kind: str) -> Callable[..., list[Tensor]]:
    def run(node: onnx.NodeProto, x: Tensor) -> list[Tensor]:
        a = _attrs(node)
        if any(a.get("pads", [0])):  # type: ignore[arg-type]
            raise NotImplementedError(f"{kind} with pads")
        kernel, strides = tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"]))  # type: ignore[arg-type]
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            return [F.max_pool2d(x, kernel, strides, ceil_mode=ceil)]
        include = bool(a.get("count_include_pad", 0))
        return [F.avg_pool2d(x, kernel, strides, ceil_mode=ceil, count_include_pad=include)]

    return run


def _resize(
    node: onnx.NodeProto,
    x: Tensor,
    roi: Tensor | None = None,
    scales: Tensor | None = None,
    sizes: Tensor | None = None,
) -> list[Tensor]:
    a = _attrs(node)
    mode = a.get("mode", b"nearest")
    transform = a.get("coordinate_transformation_mode", b"half_pixel")
    if mode != b"linear" or transform not in (b"pytorch_half_pixel", b"half_pixel") or x.dim() != 4:
        raise NotImplementedError(f"Resize mode={mode!r} coordinate_transformation_mode={transform!r}")
    if a.get("antialias", 0):
        raise NotImplementedError("Resize antialias")
    size = _ints(sizes)
    if size:
        # half_pixel and pytorch_half_pixel agree except for outputs of one pixel (pytorch: 0)
        out = F.interpolate(x, size=tuple(size[2:]), mode="bilinear", align_corners=False)
    else:
        factors = [float(v) for v in scales.reshape(-1).tolist()]  # type: ignore[union-attr]
        if factors[:2] != [1.0, 1.0]:
            raise NotImplementedError("Resize of the batch or channel dim")
        out = F.interpolate(
            x,
            scale_factor=tuple(factors[2:]),
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )
    return [out]


def _reduce(fn: Callable[..., Tensor]) -> Callable[..., list[Tensor]]:
    def run(node: onnx.NodeProto, x: Tensor, axes: Tensor | None = None) -> list[Tensor]:
        a = _attrs(node)
        dims = _ints(axes) or [int(v) for v in a.get("axes", [])]  # type: ignore[union-attr]
        keep = bool(a.get("keepdims", 1))
        if not dims:
            if a.get("noop_with_empty_axes", 0):
                return [x]
            dims = list(range(x.dim()))
        return [fn(x, dim=tuple(dims), keepdim=keep)]

    return run


def _slice(
    node: onnx.NodeProto,
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    axes: Tensor | None = None,
    steps: Tensor | None = None,
) -> list[Tensor]:
    begin, end = _ints(starts), _ints(ends)
    dims = _ints(axes) or list(range(len(begin)))
    strides = _ints(steps) or [1] * len(begin)
    index: list[slice] = [slice(None)] * x.dim()
    for s, e, d, st in zip(begin, end, dims, strides, strict=True):
        if st <= 0:
            raise NotImplementedError("Slice with a negative step")
        size = x.shape[d]
        s = max(0, min(size, s + size if s < 0 else s))
        e = max(0, min(size, e + size if e < 0 else e))
        index[d] = slice(s, e, st)
    return [x[tuple(index)]]


def _split(node: onnx.NodeProto, x: Tensor, split: Tensor | None = None) -> list[Tensor]:
    a = _attrs(node)
    axis = int(a.get("axis", 0))  # type: ignore[call-overload]
    sizes = _ints(split)
    if not sizes:
        parts = int(a.get("num_outputs", len(node.output)))  # type: ignore[call-overload]
        sizes = [-(-x.shape[axis] // parts)] * parts
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    return list(torch.split(x, sizes, dim=axis))


def _clip(
    node: onnx.NodeProto, x: Tensor, lo: Tensor | None = None, hi: Tensor | None = None
) -> list[Tensor]:
    x, lo, hi = _same_device([x, lo, hi])  # type: ignore[assignment]
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return [x]


def _cast(node: onnx.NodeProto, x: Tensor) -> list[Tensor]:
    to = _DTYPES[int(_attrs(node)["to"])]  # type: ignore[call-overload]
    if to == torch.uint8 and x.is_floating_point():
        x = x.float()  # graphs clip and round before this cast; saturate like a C cast would not
    return [x.to(to)]


def _reshape(node: onnx.NodeProto, x: Tensor, shape: Tensor) -> list[Tensor]:
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(_ints(shape))]
    return [x.reshape(dims)]


def _expand(node: onnx.NodeProto, x: Tensor, shape: Tensor) -> list[Tensor]:
    return [torch.broadcast_to(x, torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))]


def _concat(node: onnx.NodeProto, *xs: Tensor) -> list[Tensor]:
    parts = _same_device(xs)
    return [torch.cat(parts, dim=int(_attrs(node)["axis"]))]  # type: ignore[arg-type, call-overload]


def _where(node: onnx.NodeProto, c: Tensor, a: Tensor, b: Tensor) -> list[Tensor]:
    c, a, b = _same_device([c, a, b])  # type: ignore[assignment]
    return [torch.where(c, a, b)]


def _range(node: onnx.NodeProto, start: Tensor, limit: Tensor, delta: Tensor) -> list[Tensor]:
    device = next((t.device for t in (start, limit, delta) if t.device.type != "cpu"), start.device)
    values = [v.reshape(()).item() for v in (start, limit, delta)]
    return [torch.arange(*values, dtype=start.dtype, device=device)]


def _hard_sigmoid(node: onnx.NodeProto, x: Tensor) -> list[Tensor]:
    a = _attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))  # type: ignore[arg-type]
    return [torch.clamp(x * alpha + beta, 0.0, 1.0)]


OPS: dict[str, Callable[..., list[Tensor]]] = {
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(_div),
    "Max": _binary(torch.maximum),
    "Min": _binary(torch.minimum),
    "Less": _binary(torch.lt),
    "MatMul": _binary(torch.matmul),
    "Abs": lambda n, x: [x.abs()],
    "Sin": lambda n, x: [torch.sin(x)],
    "Tanh": lambda n, x: [torch.tanh(x)],
    "Relu": lambda n, x: [F.relu(x)],
    "Sigmoid": lambda n, x: [torch.sigmoid(x)],
    "Round": lambda n, x: [torch.round(x)],  # half to even, as ONNX
    "Floor": lambda n, x: [torch.floor(x)],
    "HardSigmoid": _hard_sigmoid,
    "Clip": _clip,
    "Cast": _cast,
    "Shape": lambda n, x: [torch.tensor(tuple(x.shape), dtype=torch.int64)],
    "Gather": lambda n, x, i: [
        torch.index_select(x, int(_attrs(n).get("axis", 0)), i.reshape(-1).to(x.device)).reshape(
            tuple(x.shape[: int(_attrs(n).get("axis", 0))])
            + tuple(i.shape)
            + tuple(x.shape[int(_attrs(n).get("axis", 0)) + 1 :])
        )
    ],  # fmt: skip
    "Slice": _slice,
    "Concat": _concat,
    "Split": _split,
    "Reshape": _reshape,
    "Expand": _expand,
    "Squeeze": lambda n, x, axes=None: [x.squeeze(tuple(_ints(axes))) if _ints(axes) else x.squeeze()],
    "Unsqueeze": lambda n, x, axes: [x.reshape(_unsqueezed(tuple(x.shape), _ints(axes)))],
    "Transpose": lambda n, x: [x.permute(*_attrs(n)["perm"])],  # type: ignore[misc]
    "Where": _where,
    "Range": _range,
    "ReduceMax": _reduce(lambda x, dim, keepdim: torch.amax(x, dim=dim, keepdim=keepdim)),
    "ReduceMin": _reduce(lambda x, dim, keepdim: torch.amin(x, dim=dim, keepdim=keepdim)),
    "ReduceSum": _reduce(lambda x, dim, keepdim: torch.sum(x, dim=dim, keepdim=keepdim)),
    "ReduceMean": _reduce(lambda x, dim, keepdim: torch.mean(x, dim=dim, keepdim=keepdim)),
    "GlobalAveragePool": lambda n, x: [x.mean(dim=(2, 3), keepdim=True)],
    "AveragePool": _pool("avg"),
    "MaxPool": _pool("max"),
    "Conv": _conv,
    "Resize": _resize,
}
SUPPORTED = frozenset(OPS) | {"Constant"}


def _unsqueezed(shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    out = list(shape)
    rank = len(shape) + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        out.insert(axis, 1)
    return tuple(out)


class OnnxGraph:
    """An ONNX model as a callable on torch tensors: `graph(frame=..., r1i=...)` returns a dict of
    the graph's outputs. Weights are moved to `device` once; integer constants stay on the CPU.

    Raises NotImplementedError at construction for an operator outside SUPPORTED."""

    def __init__(self, model: onnx.ModelProto, device: torch.device) -> None:
        missing = {n.op_type for n in model.graph.node} - SUPPORTED
        if missing:
            raise NotImplementedError(f"operators not covered: {', '.join(sorted(missing))}")
        self.device = device
        self.nodes = list(model.graph.node)
        self.outputs = [o.name for o in model.graph.output]
        self.constants: dict[str, Tensor] = {}
        for init in model.graph.initializer:
            self.constants[init.name] = self._place(numpy_helper.to_array(init))
        for node in self.nodes:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = self._place(numpy_helper.to_array(_attrs(node)["value"]))  # type: ignore[arg-type]

    def _place(self, array: np.ndarray) -> Tensor:
        tensor = torch.from_numpy(np.array(array))
        return tensor.to(self.device) if tensor.is_floating_point() else tensor

    @torch.inference_mode()
    def __call__(self, **inputs: Tensor) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {**self.constants, **inputs}
        for node in self.nodes:
            if node.op_type == "Constant":
                continue
            args = [values[name] if name else None for name in node.input]
            for name, value in zip(node.output, OPS[node.op_type](node, *args), strict=False):
                values[name] = value
        return {name: values[name] for name in self.outputs}

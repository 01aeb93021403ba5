"""uint8 front and back ends grafted onto the raw ONNX graphs.

Clients send and receive uint8 pixels; the float conversion, layout changes, resizes and
normalisations run inside the same graph as the network (see docs/ARCHITECTURE.md for the
measured reason). The raw graph is kept node for node: only its opset is raised to 18 (for
Resize antialias; the conversion is checked bit-exact in tests) and the raw tensors the wrapper
feeds or consumes are renamed into a `raw/` namespace.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

# Bump when the grafted front/back ends change, so `export models` rewrites the files.
WRAPPER_VERSION = 1
OPSET = 18
IR_VERSION = 8  # the oldest IR that carries opset 18: loadable by older onnxruntime builds too

# RVM's own automatic rule (inference.py in RobustVideoMatting): work at most at 512 px.
RVM_DOWNSAMPLE_BASE = 512.0
U2NET_SIZE = 320
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EPS = 1e-6


def _const(name: str, value: np.ndarray | float | list[int]) -> onnx.TensorProto:
    array = np.asarray(value, dtype=np.int64 if isinstance(value, list) else np.float32)
    return numpy_helper.from_array(array, name)


def _upgrade(raw: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.version_converter.convert_version(raw, OPSET)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def _to_u8(prefix: str, src: str, dst: str, scale: bool) -> list[onnx.NodeProto]:
    """float -> uint8 with round-half-even and clipping, like np.clip(np.round(x), 0, 255)."""
    first = src
    nodes: list[onnx.NodeProto] = []
    if scale:
        nodes.append(helper.make_node("Mul", [src, "c/255"], [f"{prefix}/scaled"]))
        first = f"{prefix}/scaled"
    nodes += [
        helper.make_node("Round", [first], [f"{prefix}/rounded"]),
        helper.make_node("Clip", [f"{prefix}/rounded", "c/0", "c/255"], [f"{prefix}/clipped"]),
        helper.make_node("Cast", [f"{prefix}/clipped"], [dst], to=TensorProto.UINT8),
    ]
    return nodes


def _common_initializers() -> list[onnx.TensorProto]:
    return [_const("c/0", 0.0), _const("c/1", 1.0), _const("c/255", 255.0), _const("c/eps", _EPS)]


def _finish(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="matting-service export",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"wrapper_version": str(WRAPPER_VERSION)})
    onnx.checker.check_model(model)
    return model


def wrap_rvm(raw: onnx.ModelProto, downsample_base: float = RVM_DOWNSAMPLE_BASE) -> onnx.ModelProto:
    """frame uint8 [B,H,W,3] -> alpha uint8 [B,H,W], foreground uint8 [B,H,W,3]; r1..r4 pass through."""
    g = _upgrade(raw).graph
    for old in ("src", "downsample_ratio", "fgr", "pha"):
        _rename(g, old, f"raw/{old}")
    pre = [
        helper.make_node("Cast", ["frame"], ["pre/f32"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["pre/f32", "c/255"], ["pre/unit"]),
        helper.make_node("Transpose", ["pre/unit"], ["raw/src"], perm=[0, 3, 1, 2]),
        # ratio = min(1, base / max(H, W)), reshaped to the [1] the raw graph takes
        helper.make_node("Shape", ["frame"], ["pre/shape"]),
        helper.make_node("Slice", ["pre/shape", "c/i1", "c/i3"], ["pre/hw"]),
        helper.make_node("ReduceMax", ["pre/hw"], ["pre/long_side_i"], keepdims=1),
        helper.make_node("Cast", ["pre/long_side_i"], ["pre/long_side"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["downsample_base", "pre/long_side"], ["pre/ratio_raw"]),
        helper.make_node("Min", ["pre/ratio_raw", "c/1"], ["raw/downsample_ratio"]),
    ]
    post = [
        helper.make_node("Squeeze", ["raw/pha", "c/i1"], ["post/pha"]),
        *_to_u8("post/alpha", "post/pha", "alpha", scale=True),
        helper.make_node("Transpose", ["raw/fgr"], ["post/fgr_nhwc"], perm=[0, 2, 3, 1]),
        *_to_u8("post/fg", "post/fgr_nhwc", "foreground", scale=True),
    ]
    states_in = [i for i in g.input if i.name.startswith("r") and i.name.endswith("i")]
    states_out = [o for o in g.output if o.name.startswith("r") and o.name.endswith("o")]
    graph = helper.make_graph(
        pre + list(g.node) + post,
        "rvm_uint8",
        [
            helper.make_tensor_value_info("frame", TensorProto.UINT8, ["batch", "height", "width", 3]),
            *states_in,
        ],
        [
            helper.make_tensor_value_info("alpha", TensorProto.UINT8, ["batch", "height", "width"]),
            helper.make_tensor_value_info("foreground", TensorProto.UINT8, ["batch", "height", "width", 3]),
            *states_out,
        ],
        initializer=[
            *_common_initializers(),
            _const("c/i1", [1]),
            _const("c/i3", [3]),
            _const("downsample_base", np.array([downsample_base], np.float32)),
            *g.initializer,
        ],
    )
    return _finish(graph, "Robust Video Matting (mobilenetv3) with uint8 NHWC front/back ends")


def _resize(src: str, sizes: str, dst: str) -> onnx.NodeProto:
    # Cubic with a=-0.5 and antialias is Pillow's BICUBIC filter (onnxruntime ports Pillow's
    # antialias code); the closest in-graph match for rembg's Pillow LANCZOS resizes.
    return helper.make_node(
        "Resize",
        [src, "", "", sizes],
        [dst],
        mode="cubic",
        cubic_coeff_a=-0.5,
        antialias=1,
        coordinate_transformation_mode="half_pixel",
    )


def wrap_u2netp(raw: onnx.ModelProto) -> onnx.ModelProto:
    """image uint8 [H,W,3] -> alpha uint8 [H,W], with rembg's pre/postprocessing in the graph."""
    g = _upgrade(raw).graph
    raw_in, raw_out = g.input[0].name, g.output[0].name
    _rename(g, raw_in, "raw/input")
    _rename(g, raw_out, "raw/mask")
    n = U2NET_SIZE
    pre = [
        helper.make_node("Cast", ["image"], ["pre/f32"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["pre/f32", "c/i0"], ["pre/nhwc"]),
        helper.make_node("Transpose", ["pre/nhwc"], ["pre/nchw"], perm=[0, 3, 1, 2]),
        _resize("pre/nchw", "c/net_size", "pre/small"),
        # rembg resizes a uint8 PIL image, so its network input is rounded and clipped to 0..255
        helper.make_node("Round", ["pre/small"], ["pre/small_r"]),
        helper.make_node("Clip", ["pre/small_r", "c/0", "c/255"], ["pre/small_u8"]),
        # rembg divides by the image maximum, not by 255
        helper.make_node("ReduceMax", ["pre/small_u8"], ["pre/max"], keepdims=0),
        helper.make_node("Max", ["pre/max", "c/eps"], ["pre/max_safe"]),
        helper.make_node("Div", ["pre/small_u8", "pre/max_safe"], ["pre/unit"]),
        helper.make_node("Sub", ["pre/unit", "c/mean"], ["pre/centred"]),
        helper.make_node("Div", ["pre/centred", "c/std"], ["raw/input"]),
    ]
    post = [
        helper.make_node("ReduceMin", ["raw/mask"], ["post/lo"], keepdims=0),
        helper.make_node("ReduceMax", ["raw/mask"], ["post/hi"], keepdims=0),
        helper.make_node("Sub", ["raw/mask", "post/lo"], ["post/shifted"]),
        helper.make_node("Sub", ["post/hi", "post/lo"], ["post/span"]),
        helper.make_node("Max", ["post/span", "c/eps"], ["post/span_safe"]),
        helper.make_node("Div", ["post/shifted", "post/span_safe"], ["post/norm"]),
        # rembg truncates to uint8 before resizing back
        helper.make_node("Mul", ["post/norm", "c/255"], ["post/levels"]),
        helper.make_node("Floor", ["post/levels"], ["post/levels_u8"]),
        helper.make_node("Shape", ["image"], ["post/image_shape"]),
        helper.make_node("Slice", ["post/image_shape", "c/i0", "c/i2"], ["post/hw"]),
        helper.make_node("Concat", ["c/one_one", "post/hw"], ["post/sizes"], axis=0),
        _resize("post/levels_u8", "post/sizes", "post/full"),
        helper.make_node("Reshape", ["post/full", "post/hw"], ["post/full_hw"]),
        *_to_u8("post/alpha", "post/full_hw", "alpha", scale=False),
    ]
    graph = helper.make_graph(
        pre + list(g.node) + post,
        "u2netp_uint8",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["height", "width", 3])],
        [helper.make_tensor_value_info("alpha", TensorProto.UINT8, ["height", "width"])],
        initializer=[
            *_common_initializers(),
            _const("c/i0", [0]),
            _const("c/i2", [2]),
            _const("c/one_one", [1, 1]),
            _const("c/net_size", [1, 3, n, n]),
            _const("c/mean", np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)),
            _const("c/std", np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)),
            *g.initializer,
        ],
    )
    return _finish(graph, "U^2-Net-p salient object mask with rembg's pre/postprocessing, uint8 I/O")


WRAPPERS = {"rvm": wrap_rvm, "u2netp": wrap_u2netp}

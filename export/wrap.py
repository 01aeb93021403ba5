"""uint8 front and back ends grafted onto the raw ONNX graphs.

Clients send and receive uint8 pixels; the float conversion, layout changes, resizes and
normalisations run inside the same graph as the network (see docs/ARCHITECTURE.md for the
measured reason). The raw graph is kept node for node: only its opset is raised to 18 (checked
bit-exact against the original in tests) and the raw tensors the wrapper
feeds or consumes are renamed into a `raw/` namespace.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

# Bump when the grafted front/back ends change, so `export models` rewrites the files.
WRAPPER_VERSION = 4
OPSET = 18
IR_VERSION = 8  # the oldest IR that carries opset 18: loadable by older onnxruntime builds too

# RVM's own automatic rule (inference.py in RobustVideoMatting): work at most at 512 px.
RVM_DOWNSAMPLE_BASE = 512.0
U2NET_SIZE = 320
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EPS = 1e-6

# Alpha levels curve, applied to both models' float alpha before it becomes uint8:
#     alpha' = clip((alpha - ALPHA_LO) / (ALPHA_HI - ALPHA_LO), 0, 1)
# u2netp's min-max normalisation reaches 1.0 at one pixel only and rembg truncates, so an opaque
# subject's interior came out 254, not 255; RVM leaves a few near-0/near-1 levels too. With 1 %
# margins the interior is 255 and the background 0 while soft edges keep their ramp (stretched
# by 1/0.98). Symmetric margins keep 0.5 where it was, so IoU at 0.5 does not move; figures for
# the choice in docs/images.md ("Alpha levels").
ALPHA_LO = 0.01
ALPHA_HI = 0.99


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


def _levels(prefix: str, src: str, dst: str) -> list[onnx.NodeProto]:
    """The alpha levels curve (ALPHA_LO, ALPHA_HI) on a float alpha in 0..1; output in 0..1."""
    return [
        helper.make_node("Sub", [src, "c/alpha_lo"], [f"{prefix}/shifted"]),
        helper.make_node("Div", [f"{prefix}/shifted", "c/alpha_span"], [f"{prefix}/stretched"]),
        helper.make_node("Clip", [f"{prefix}/stretched", "c/0", "c/1"], [dst]),
    ]


def _common_initializers() -> list[onnx.TensorProto]:
    return [
        _const("c/0", 0.0),
        _const("c/1", 1.0),
        _const("c/255", 255.0),
        _const("c/eps", _EPS),
        _const("c/alpha_lo", ALPHA_LO),
        _const("c/alpha_span", ALPHA_HI - ALPHA_LO),
    ]


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


def _state_value(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """A recurrent state's value info with dim names of its own: `batch` (shared with `frame`,
    because Triton batches a state with its frame), then `<name>_channels`, `<name>_height`,
    `<name>_width` for the free dims (a fixed dim, like r1o's 16 channels, stays fixed).

    The released graph names the states' sides `height`/`width` like the frame's, but they are
    other sizes: states live at the working resolution (long side <= 512, halved per stage) and
    start as [1,1,1,1]. TensorRT's parser treats equal names as equal sizes, so shared names made
    every optimisation profile unbuildable (frame 256.. against state 1..128). Inputs and outputs
    get different names too: r1i is [1,1,1,1] on a sequence's first frame while r1o is not."""
    dims = value.type.tensor_type.shape.dim
    labels = ("batch", f"{value.name}_channels", f"{value.name}_height", f"{value.name}_width")
    shape: list[int | str] = [
        label if i == 0 or not dim.HasField("dim_value") else dim.dim_value
        for i, (dim, label) in enumerate(zip(dims, labels, strict=True))
    ]
    return helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, shape)


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
        *_levels("post/curve", "post/pha", "post/pha_levels"),
        *_to_u8("post/alpha", "post/pha_levels", "alpha", scale=True),
        helper.make_node("Transpose", ["raw/fgr"], ["post/fgr_nhwc"], perm=[0, 2, 3, 1]),
        *_to_u8("post/fg", "post/fgr_nhwc", "foreground", scale=True),
    ]
    states_in = [_state_value(i) for i in g.input if i.name.startswith("r") and i.name.endswith("i")]
    states_out = [_state_value(o) for o in g.output if o.name.startswith("r") and o.name.endswith("o")]
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


class _Lanczos:
    """Pillow's LANCZOS resize (libImaging/Resample.c) as graph nodes, so u2netp sees exactly what
    rembg feeds it: the model is sensitive to the resampling filter (rembg with BICUBIC instead of
    LANCZOS differs by up to 182 levels on sod_bsds300 103041.jpg), and ONNX Resize has no Lanczos.

    Each pass is a dense [out, in] weight matrix built from the runtime sizes: Pillow's taps
    (support 3 scaled by the downscale factor, normalised per output pixel, quantised to its 22
    fixed-point bits), then a MatMul, rounding half up and clipping to 0..255 as Pillow's 8-bit
    passes do. Horizontal pass first, as in Pillow. Cost grows with in*out per row, which is fine
    at u2netp's 320 px but would not be for 100 MP inputs.
    """

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []

    def _n(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def weights(self, p: str, in_size: str, out_size: str) -> str:
        """[out, in] float weights; in_size and out_size are int64 scalars."""
        n = self._n
        in_f = n("Cast", [in_size], f"{p}/in_f", to=TensorProto.FLOAT)
        out_f = n("Cast", [out_size], f"{p}/out_f", to=TensorProto.FLOAT)
        scale = n("Div", [in_f, out_f], f"{p}/scale")
        filterscale = n("Max", [scale, "c/1"], f"{p}/filterscale")
        inv = n("Div", ["c/1", filterscale], f"{p}/inv")
        rows = n("Range", ["c/s0", out_size, "c/s1"], f"{p}/rows")
        cols = n("Range", ["c/s0", in_size, "c/s1"], f"{p}/cols")
        rows_f = n("Cast", [rows], f"{p}/rows_f", to=TensorProto.FLOAT)
        cols_f = n("Cast", [cols], f"{p}/cols_f", to=TensorProto.FLOAT)
        centre = n("Mul", [n("Add", [rows_f, "c/half"], f"{p}/rows_mid"), scale], f"{p}/centre")
        centre_col = n("Unsqueeze", [centre, "c/i1"], f"{p}/centre_col")
        cols_mid = n("Add", [cols_f, "c/half"], f"{p}/cols_mid")
        x = n("Mul", [n("Sub", [cols_mid, centre_col], f"{p}/offset"), inv], f"{p}/x")
        w = n(
            "Mul", [self._sinc(f"{p}/a", x), self._sinc(f"{p}/b", n("Div", [x, "c/3"], f"{p}/x3"))], f"{p}/w"
        )
        inside = n("Less", [n("Abs", [x], f"{p}/absx"), "c/3"], f"{p}/inside")
        w = n("Where", [inside, w, "c/0"], f"{p}/w_win")
        total = n("ReduceSum", [w, "c/i1"], f"{p}/total", keepdims=1)
        w = n("Div", [w, total], f"{p}/w_norm")
        fixed = n("Round", [n("Mul", [w, "c/fixed"], f"{p}/w_scaled")], f"{p}/w_fixed")
        return n("Div", [fixed, "c/fixed"], f"{p}/weights")

    def _sinc(self, p: str, x: str) -> str:
        n = self._n
        pix = n("Mul", [x, "c/pi"], f"{p}/pix")
        ratio = n("Div", [n("Sin", [pix], f"{p}/sin"), pix], f"{p}/ratio")
        tiny = n("Less", [n("Abs", [pix], f"{p}/abs"), "c/eps"], f"{p}/tiny")
        return n("Where", [tiny, "c/1", ratio], f"{p}/sinc")

    def to_u8_levels(self, p: str, x: str) -> str:
        # Pillow adds half an LSB and truncates: round half up, then clip8
        floor = self._n("Floor", [self._n("Add", [x, "c/half"], f"{p}/plus_half")], f"{p}/floor")
        return self._n("Clip", [floor, "c/0", "c/255"], f"{p}/levels")

    def resize(self, p: str, src: str, in_hw: tuple[str, str], out_hw: tuple[str, str]) -> str:
        """src [..., H, W] float levels -> [..., out_h, out_w] float levels (integers 0..255)."""
        n = self._n
        wx = self.weights(f"{p}/wx", in_hw[1], out_hw[1])
        wx_t = n("Transpose", [wx], f"{p}/wx_t", perm=[1, 0])
        horizontal = self.to_u8_levels(f"{p}/h", n("MatMul", [src, wx_t], f"{p}/h_sum"))
        wy = self.weights(f"{p}/wy", in_hw[0], out_hw[0])
        return self.to_u8_levels(f"{p}/v", n("MatMul", [wy, horizontal], f"{p}/v_sum"))


def _scalar_dim(nodes: list[onnx.NodeProto], shape: str, axis: int, name: str) -> str:
    nodes.append(helper.make_node("Gather", [shape, f"c/s{axis}"], [name], axis=0))
    return name


def wrap_u2netp(raw: onnx.ModelProto) -> onnx.ModelProto:
    """image uint8 [H,W,3] -> alpha uint8 [H,W], with rembg's pre/postprocessing in the graph."""
    g = _upgrade(raw).graph
    raw_in, raw_out = g.input[0].name, g.output[0].name
    _rename(g, raw_in, "raw/input")
    _rename(g, raw_out, "raw/mask")
    lz = _Lanczos()
    dims: list[onnx.NodeProto] = [helper.make_node("Shape", ["image"], ["shape"])]
    hw = (_scalar_dim(dims, "shape", 0, "h"), _scalar_dim(dims, "shape", 1, "w"))
    net_hw = ("c/net_size", "c/net_size")
    pre = [
        helper.make_node("Cast", ["image"], ["pre/f32"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pre/f32"], ["pre/chw"], perm=[2, 0, 1]),
    ]
    small = lz.resize("pre/lanczos", "pre/chw", hw, net_hw)
    pre_nodes = lz.nodes
    lz.nodes = []
    normalise = [
        # rembg divides by the maximum of the resized image, not by 255
        helper.make_node("ReduceMax", [small], ["pre/max"], keepdims=0),
        helper.make_node("Max", ["pre/max", "c/eps"], ["pre/max_safe"]),
        helper.make_node("Div", [small, "pre/max_safe"], ["pre/unit"]),
        helper.make_node("Sub", ["pre/unit", "c/mean"], ["pre/centred"]),
        helper.make_node("Div", ["pre/centred", "c/std"], ["pre/normed"]),
        helper.make_node("Unsqueeze", ["pre/normed", "c/i0"], ["raw/input"]),
    ]
    post = [
        helper.make_node("ReduceMin", ["raw/mask"], ["post/lo"], keepdims=0),
        helper.make_node("ReduceMax", ["raw/mask"], ["post/hi"], keepdims=0),
        helper.make_node("Sub", ["raw/mask", "post/lo"], ["post/shifted"]),
        helper.make_node("Sub", ["post/hi", "post/lo"], ["post/span"]),
        helper.make_node("Max", ["post/span", "c/eps"], ["post/span_safe"]),
        helper.make_node("Div", ["post/shifted", "post/span_safe"], ["post/norm"]),
        *_levels("post/curve", "post/norm", "post/norm_levels"),
        # rembg truncates to uint8 before resizing back
        helper.make_node("Mul", ["post/norm_levels", "c/255"], ["post/levels"]),
        helper.make_node("Floor", ["post/levels"], ["post/levels_u8"]),
        helper.make_node("Reshape", ["post/levels_u8", "c/net_hw"], ["post/mask_hw"]),
    ]
    full = lz.resize("post/lanczos", "post/mask_hw", net_hw, hw)
    post += [*lz.nodes, helper.make_node("Cast", [full], ["alpha"], to=TensorProto.UINT8)]
    graph = helper.make_graph(
        dims + pre + pre_nodes + normalise + list(g.node) + post,
        "u2netp_uint8",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["height", "width", 3])],
        [helper.make_tensor_value_info("alpha", TensorProto.UINT8, ["height", "width"])],
        initializer=[
            *_common_initializers(),
            _const("c/i0", [0]),
            _const("c/i1", [1]),
            numpy_helper.from_array(np.array(0, np.int64), "c/s0"),
            numpy_helper.from_array(np.array(1, np.int64), "c/s1"),
            numpy_helper.from_array(np.array(U2NET_SIZE, np.int64), "c/net_size"),
            _const("c/net_hw", [U2NET_SIZE, U2NET_SIZE]),
            _const("c/half", 0.5),
            _const("c/3", 3.0),
            _const("c/pi", float(np.pi)),
            _const("c/fixed", float(1 << 22)),
            _const("c/mean", np.array(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)),
            _const("c/std", np.array(IMAGENET_STD, np.float32).reshape(3, 1, 1)),
            *g.initializer,
        ],
    )
    return _finish(graph, "U^2-Net-p salient object mask with rembg's pre/postprocessing, uint8 I/O")


WRAPPERS = {"rvm": wrap_rvm, "u2netp": wrap_u2netp}

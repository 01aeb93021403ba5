"""The Triton models this service serves: names, tensors, statefulness, and which ones the
gateway calls. One source of truth: the gateway's readiness check reads it, and tests hold every
`model_repository/<m>/config.pbtxt` (and configs/*.pbtxt) and the table in
model_repository/README.md to it. Semantics (units, sequences, errors): model_repository/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as a gRPC caller sends or reads it, batch dimension excluded."""

    name: str
    dtype: str  # Triton protocol name: UINT8, INT32, FP32, BYTES (TYPE_STRING in config.pbtxt)
    dims: tuple[int | str, ...]  # a str is a free size (-1 in config.pbtxt) named as in the docs
    optional: bool = False

    @property
    def config_dims(self) -> tuple[int, ...]:
        """The dims as config.pbtxt writes them (free sizes are -1)."""
        return tuple(-1 if isinstance(d, str) else d for d in self.dims)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # as in config.pbtxt; > 0 puts a batch dim first ([1, ...] per request)
    stateful: bool  # sequence batcher: one correlation id per video (START, END, in order)
    gateway_calls: bool  # the gateway or its workers call it, so readiness depends on it

    def shape(self, tensor: TensorSpec) -> str:
        """What one request carries, e.g. `[1,H,W,3]` for a batched model's frame."""
        dims = ((1,) if self.max_batch_size > 0 else ()) + tensor.dims
        return "[" + ",".join(str(d) for d in dims) + "]"


_RGB = ("H", "W", 3)
_MASK = ("H", "W")

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "rvm",
        inputs=(TensorSpec("frame", "UINT8", _RGB),),
        outputs=(TensorSpec("alpha", "UINT8", _MASK), TensorSpec("foreground", "UINT8", _RGB)),
        max_batch_size=4,
        stateful=True,
        gateway_calls=True,
    ),
    ModelSpec(
        "u2netp",
        inputs=(TensorSpec("image", "UINT8", _RGB),),
        outputs=(TensorSpec("alpha", "UINT8", _MASK),),
        max_batch_size=0,
        stateful=False,
        gateway_calls=True,
    ),
    ModelSpec(
        "image_decode",
        inputs=(TensorSpec("image_bytes", "BYTES", (1,)),),
        outputs=(TensorSpec("image", "UINT8", _RGB), TensorSpec("alpha", "UINT8", _MASK)),
        max_batch_size=0,
        stateful=False,
        gateway_calls=False,
    ),
    ModelSpec(
        "matte_image",
        inputs=(TensorSpec("image_bytes", "BYTES", (1,)),),
        outputs=(TensorSpec("alpha", "UINT8", _MASK),),
        max_batch_size=0,
        stateful=False,
        gateway_calls=False,
    ),
    ModelSpec(
        "foreground",
        inputs=(TensorSpec("frame", "UINT8", _RGB), TensorSpec("model", "BYTES", (1,), optional=True)),
        outputs=(TensorSpec("alpha", "UINT8", _MASK), TensorSpec("foreground", "UINT8", _RGB)),
        max_batch_size=1,
        stateful=True,
        gateway_calls=True,
    ),
    ModelSpec(
        "keypoint_mask",
        inputs=(
            TensorSpec("frame", "UINT8", _RGB),
            TensorSpec("points", "FP32", ("N", 2), optional=True),
            TensorSpec("labels", "INT32", ("N",), optional=True),
        ),
        outputs=(TensorSpec("mask", "UINT8", _MASK),),
        max_batch_size=1,
        stateful=True,
        gateway_calls=True,
    ),
    ModelSpec(
        "background_generator",
        inputs=(
            TensorSpec("subject", "UINT8", ("H", "W", 4)),
            TensorSpec("prompt", "BYTES", (1,), optional=True),
        ),
        outputs=(TensorSpec("background", "UINT8", _RGB),),
        max_batch_size=0,
        stateful=False,
        gateway_calls=True,
    ),
)

GATEWAY_MODELS: tuple[str, ...] = tuple(m.name for m in MODELS if m.gateway_calls)


def model_spec(name: str) -> ModelSpec:
    """The contract of model `name`; raises KeyError for a model the service does not ship."""
    for spec in MODELS:
        if spec.name == name:
            return spec
    raise KeyError(name)

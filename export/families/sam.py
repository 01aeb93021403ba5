"""Segment Anything -> sam_encoder.onnx + sam_decoder.onnx for the keypoint_mask model slot.

Encoder: `image` float32 [1,3,H,W], RGB 0..255, already resized so that max(H,W) == image size
(SAM's ResizeLongestSide); normalisation and zero padding happen in the graph, exactly as in
Sam.preprocess -> `image_embeddings` float32 [1,256,S/16,S/16].
Decoder: segment_anything.utils.onnx.SamOnnxModel, the upstream export wrapper, unchanged, so the
I/O is the one every SAM ONNX consumer knows: image_embeddings, point_coords [1,N,2] (in the
resized frame's pixels), point_labels [1,N] (1 fg, 0 bg, -1 padding), mask_input [1,1,4E,4E],
has_mask_input [1], orig_im_size [2] -> masks [1,1,H0,W0] logits, iou_predictions [1,1],
low_res_masks [1,1,4E,4E].
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from export.families import Artifact, FamilyError, load_checkpoint, load_into

ENCODER_FILE = "sam_encoder.onnx"
DECODER_FILE = "sam_decoder.onnx"


@dataclass(frozen=True)
class Variant:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    window_size: int = 14
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048


# The upstream build_sam_vit_* settings, plus `tiny` (a few MB) for tests and CI smoke runs.
VARIANTS: dict[str, Variant] = {
    "vit_h": Variant(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": Variant(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": Variant(768, 12, 12, (2, 5, 8, 11)),
    "tiny": Variant(64, 2, 2, (1,), image_size=128, window_size=4, prompt_dim=32, decoder_mlp_dim=64),
}


def _segment_anything() -> tuple[types.ModuleType, types.ModuleType]:
    """segment_anything.modeling and segment_anything.utils.onnx, even without torchvision.

    The package's __init__ imports its predictor, whose resize helper needs torchvision (no
    CPU-only wheel for this torch); the model code does not. So when the plain import fails on
    torchvision, the package is registered without running its __init__ and the model code is
    imported from it directly.
    """
    missing = FamilyError("family sam needs the segment-anything package: pip install -e '.[export]'")
    try:
        importlib.import_module("segment_anything")
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise missing from exc
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or not spec.submodule_search_locations:
            raise missing from exc
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["segment_anything"] = package
    return (
        importlib.import_module("segment_anything.modeling"),
        importlib.import_module("segment_anything.utils.onnx"),
    )


def build_model(variant: Variant) -> Any:
    """A randomly initialised Sam with segment-anything's own constructors (the upstream _build_sam)."""
    import torch

    m, _ = _segment_anything()
    embedding = variant.image_size // 16
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=variant.depth,
            embed_dim=variant.embed_dim,
            img_size=variant.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=variant.num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=variant.global_attn_indexes,
            window_size=variant.window_size,
            out_chans=variant.prompt_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=variant.prompt_dim,
            image_embedding_size=(embedding, embedding),
            input_image_size=(variant.image_size, variant.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=2, embedding_dim=variant.prompt_dim, mlp_dim=variant.decoder_mlp_dim, num_heads=8
            ),
            transformer_dim=variant.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def detect_variant(state: dict[str, Any], path: Path) -> str:
    """The variant whose embed dim and depth match the checkpoint's patch embedding and blocks."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        raise FamilyError(f"checkpoint {path} is not a SAM checkpoint (no image_encoder.patch_embed)")
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, variant in VARIANTS.items():
        if variant.embed_dim == weight.shape[0] and variant.depth == depth:
            return name
    raise FamilyError(
        f"checkpoint {path}: no SAM variant has embed dim {weight.shape[0]} and depth {depth} "
        f"(known: {', '.join(VARIANTS)})"
    )


def _encoder(sam: Any) -> Any:
    import torch

    class SamEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sam = sam

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.sam.image_encoder(self.sam.preprocess(image))

    return SamEncoder().eval()


def _decoder(sam: Any) -> Any:
    """SamOnnxModel with its crop to the pre-padding size made dynamic.

    Upstream crops with `masks[..., : int(h), : int(w)]`; the tracer freezes those ints to the
    example's aspect ratio, so every other aspect ratio got masks stretched from the wrong
    region. Here the crop is an ONNX Slice whose ends are computed from orig_im_size.
    """
    import torch
    from torch.nn import functional as F

    _, onnx_utils = _segment_anything()

    class Crop(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, masks: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
            return masks[..., : int(hw[0]), : int(hw[1])]

        @staticmethod
        def symbolic(g: Any, masks: Any, hw: Any) -> Any:
            starts = g.op("Constant", value_t=torch.tensor([0, 0], dtype=torch.int64))
            axes = g.op("Constant", value_t=torch.tensor([2, 3], dtype=torch.int64))
            return g.op("Slice", masks, starts, hw, axes)

    class SamDecoder(onnx_utils.SamOnnxModel):  # type: ignore[misc,name-defined]
        def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
            masks = F.interpolate(
                masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
            )
            prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = Crop.apply(masks, prepadded)
            size = orig_im_size.to(torch.int64)
            return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)

    return SamDecoder(sam, return_single_mask=True).eval()


def encoder_and_decoder(sam: Any) -> tuple[Any, Any]:
    return _encoder(sam), _decoder(sam)


def artifacts(sam: Any) -> list[Artifact]:
    import torch

    size = sam.image_encoder.img_size
    embed = sam.prompt_encoder.image_embedding_size
    channels = sam.prompt_encoder.embed_dim
    encoder, decoder = encoder_and_decoder(sam)
    # A non-square example so the tracer cannot fold H == W into the graph.
    image = torch.randint(0, 256, (1, 3, size * 3 // 4, size), dtype=torch.float32)
    decoder_example = (
        torch.randn(1, channels, *embed),
        torch.randint(0, size, (1, 5, 2), dtype=torch.float32),
        torch.randint(-1, 2, (1, 5), dtype=torch.float32),
        torch.zeros(1, 1, 4 * embed[0], 4 * embed[1]),
        torch.tensor([0.0]),
        torch.tensor([size * 0.75, size], dtype=torch.float32),
    )
    return [
        Artifact(
            ENCODER_FILE,
            encoder,
            (image,),
            ["image"],
            ["image_embeddings"],
            {"image": {2: "height", 3: "width"}},
            doc=f"SAM image encoder; image: RGB 0..255 resized so max(H,W) == {size}",
        ),
        Artifact(
            DECODER_FILE,
            decoder,
            decoder_example,
            [
                "image_embeddings",
                "point_coords",
                "point_labels",
                "mask_input",
                "has_mask_input",
                "orig_im_size",
            ],
            ["masks", "iou_predictions", "low_res_masks"],
            {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}, "masks": {2: "h", 3: "w"}},
            doc="SAM prompt decoder (segment_anything.utils.onnx.SamOnnxModel, single best mask)",
        ),
    ]


def build(args: argparse.Namespace) -> list[Artifact]:
    state = load_checkpoint(args.checkpoint)
    name = detect_variant(state, args.checkpoint) if args.variant == "auto" else args.variant
    if name not in VARIANTS:
        raise FamilyError(f"unknown sam variant {name!r}: choose auto, {', '.join(VARIANTS)}")
    sam = build_model(VARIANTS[name])
    load_into(sam, state, f"sam {name}", args.checkpoint)
    return artifacts(sam)

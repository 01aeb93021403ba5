"""SAM 2 / SAM 2.1 -> four ONNX graphs for the keypoint_mask model slot (memory-bank video predictor).

The architecture is built by the `sam2` package's own config files and Hydra instantiation (as
sam2.build_sam.build_sam2_video_predictor does, with the same post-processing overrides), so a
SAM 2.1 hiera-t/s/b+/l checkpoint loads strictly. The per-frame algorithm of
SAM2Base.track_step (sam2/modeling/sam2_base.py; SAM 2 paper, Ravi et al. 2024, section 4) is cut
at its module boundaries; the bookkeeping between them (which memories a frame attends to) is
triton_models/keypoints/sam2.py. S = image size (1024 for the real configs), E = S/16, C = the
hidden dim (256), Cm = the memory dim (64); all float32 unless said.

sam2_image_encoder.onnx   image [1,3,S,S] RGB 0..255 (resized to SxS, no aspect kept, as upstream)
                          -> vision_feat [1,C,E,E], vision_pos [1,C,E,E], high_res_feat0
                          [1,C/8,4E,4E], high_res_feat1 [1,C/4,2E,2E], no_mem_feat [1,C,E,E]
                          (vision_feat + no_mem_embed: the prompt frame's decoder input)
sam2_memory_attention.onnx  vision_feat, vision_pos, memory [M,Cm,E,E], memory_pos [M,Cm,E,E],
                          memory_tpos int64 [M] (row of maskmem_tpos_enc), obj_ptrs [P,C],
                          obj_ptr_tpos [P] (signed frame distance / (max_obj_ptrs - 1))
                          -> pix_feat [1,C,E,E]
sam2_mask_decoder.onnx    pix_feat, high_res_feat0, high_res_feat1, point_coords [1,N,2] (x, y in
                          the SxS input's pixels), point_labels int32 [1,N] (1 fg, 0 bg, -1 pad),
                          multimask float32 [1] (1: best of 3 masks, 0: single mask)
                          -> low_res_masks [1,1,4E,4E] logits, high_res_masks [1,1,S,S] logits,
                          obj_ptr [1,C], object_score_logits [1,1]
sam2_memory_encoder.onnx  vision_feat, high_res_masks, object_score_logits, mask_from_points
                          float32 [1] (1: binarise the mask, the prompt frame) -> maskmem_features
                          [1,Cm,E,E], maskmem_pos_enc [1,Cm,E,E]

RoPE in the memory attention is rewritten with real cos/sin (the upstream complex-number form has
no ONNX export); the parity test compares it against the upstream module.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

from export.families import Artifact, FamilyError, load_checkpoint, load_into

ENCODER_FILE = "sam2_image_encoder.onnx"
ATTENTION_FILE = "sam2_memory_attention.onnx"
DECODER_FILE = "sam2_mask_decoder.onnx"
MEMORY_FILE = "sam2_memory_encoder.onnx"
FILES = (ENCODER_FILE, ATTENTION_FILE, DECODER_FILE, MEMORY_FILE)

# sam2.build_sam.build_sam2_video_predictor's apply_postprocessing overrides (fill_hole_area is
# left out: it needs the package's optional CUDA extension).
VIDEO_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
]

# The sam2.1_hiera_t structure at toy size (image 256, C=32, Cm=16): the test configuration, built
# from the real config file so every module type is the real one.
_TINY = [
    "model.image_size=256",
    "model.image_encoder.trunk.embed_dim=8",
    "model.image_encoder.trunk.stages=[1,1,2,1]",
    "model.image_encoder.trunk.global_att_blocks=[3]",
    "model.image_encoder.neck.d_model=32",
    "model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    "model.image_encoder.neck.position_encoding.num_pos_feats=32",
    "model.memory_attention.d_model=32",
    "model.memory_attention.num_layers=2",
    "model.memory_attention.layer.d_model=32",
    "model.memory_attention.layer.dim_feedforward=64",
    "model.memory_attention.layer.self_attention.embedding_dim=32",
    "model.memory_attention.layer.self_attention.feat_sizes=[16,16]",
    "model.memory_attention.layer.cross_attention.embedding_dim=32",
    "model.memory_attention.layer.cross_attention.feat_sizes=[16,16]",
    "model.memory_attention.layer.cross_attention.kv_in_dim=16",
    "model.memory_encoder.out_dim=16",
    "++model.memory_encoder.in_dim=32",
    "model.memory_encoder.position_encoding.num_pos_feats=16",
    "++model.memory_encoder.mask_downsampler.embed_dim=32",
    "model.memory_encoder.fuser.layer.dim=32",
]

# variant -> (config file inside the sam2 package, Hydra overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", []),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", []),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", []),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", []),
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", _TINY),
}


def build_model(variant: str) -> Any:
    """A randomly initialised SAM2Base of `variant`, in eval mode, built by the sam2 package's
    Hydra config (raises FamilyError when the package is missing or the variant is unknown)."""
    if variant not in VARIANTS:
        raise FamilyError(f"unknown sam2 variant {variant!r}: choose auto, {', '.join(VARIANTS)}")
    try:
        import sam2  # noqa: F401  (its __init__ registers the package's config module with Hydra)
        from hydra import compose
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
    except ModuleNotFoundError as exc:
        raise FamilyError(
            f"family sam2 needs the sam2 package ({exc.name} is missing): make export-tools"
        ) from exc
    config, overrides = VARIANTS[variant]
    cfg = compose(config_name=config, overrides=[*overrides, *VIDEO_OVERRIDES])
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True).eval()


def detect_variant(state: dict[str, Any], path: Any) -> str:
    """The variant whose Hiera width and block count match the checkpoint's."""
    weight = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if weight is None:
        raise FamilyError(f"checkpoint {path} is not a SAM 2 checkpoint (no image_encoder.trunk)")
    blocks = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
    widths_blocks = {
        (96, 12): "sam2.1_hiera_t",
        (96, 16): "sam2.1_hiera_s",
        (112, 24): "sam2.1_hiera_b+",
        (144, 48): "sam2.1_hiera_l",
        (8, 5): "tiny",
    }
    name = widths_blocks.get((int(weight.shape[0]), blocks))
    if name is None:
        raise FamilyError(
            f"checkpoint {path}: no SAM 2 variant has Hiera width {weight.shape[0]} and {blocks} blocks"
        )
    return name


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    """Rotary encoding on interleaved (real, imag) pairs: x [..., T, D], cos/sin [T, D/2].

    Real-arithmetic form of sam2.modeling.position_encoding.apply_rotary_enc."""
    import torch

    pairs = x.reshape(*x.shape[:-1], -1, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    return torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(-2)


def _real_rope(attention: Any) -> None:
    """Replace a RoPEAttention's forward by the same computation without complex tensors.

    Keys beyond the spatial memories (the object pointer tokens, `num_k_exclude_rope`) are left
    unrotated; the spatial memories are M stacked copies of the query grid, so they are rotated
    with the query's angles per copy (upstream: rope_k_repeat)."""
    import torch
    from torch.nn import functional as F

    freqs = attention.freqs_cis
    cos, sin = freqs.real.clone(), freqs.imag.clone()
    tokens = int(freqs.shape[0])

    def forward(q: Any, k: Any, v: Any, num_k_exclude_rope: Any = 0) -> Any:
        q = attention._separate_heads(attention.q_proj(q), attention.num_heads)
        k = attention._separate_heads(attention.k_proj(k), attention.num_heads)
        v = attention._separate_heads(attention.v_proj(v), attention.num_heads)
        q = _rotate(q, cos, sin)
        spatial = k.shape[-2] - num_k_exclude_rope
        rope, rest = k[:, :, :spatial], k[:, :, spatial:]
        b, h, _, d = rope.shape
        rope = _rotate(rope.reshape(b, h, -1, tokens, d), cos, sin).reshape(b, h, -1, d)
        out = F.scaled_dot_product_attention(q, torch.cat((rope, rest), dim=2), v)
        return attention.out_proj(attention._recombine_heads(out))

    attention.forward = forward


def _modules(model: Any) -> dict[str, Any]:
    import torch

    c = model.hidden_dim
    mem = model.mem_dim
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255.0
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255.0

    # Hiera's windowed position embedding depends on the input size only, which SAM 2 fixes (SxS):
    # traced, its bicubic resize + Tile came out with a repeats vector of the wrong length, and
    # onnxruntime then read past it (NaN or different masks from run to run). So it is computed
    # here, once, from the loaded weights, and enters the graph as a constant.
    trunk = model.image_encoder.trunk
    with torch.no_grad():
        window_pos = trunk._get_pos_embed((model.image_size // 4, model.image_size // 4)).clone()
    trunk._get_pos_embed = lambda hw: window_pos

    class ImageEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model.forward_image((image - mean) / std)
            fpn, pos = out["backbone_fpn"], out["vision_pos_enc"]
            feat = fpn[-1]
            no_mem = feat + self.model.no_mem_embed.view(1, c, 1, 1)
            return feat, pos[-1], fpn[0], fpn[1], no_mem

    attention_module = copy.deepcopy(model.memory_attention)
    for layer in attention_module.layers:
        for name in ("self_attn", "cross_attn_image"):
            _real_rope(getattr(layer, name))

    class MemoryAttention(torch.nn.Module):
        proj_tpos = model.proj_tpos_enc_in_obj_ptrs

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.attention = attention_module

        def forward(
            self,
            vision_feat: torch.Tensor,
            vision_pos: torch.Tensor,
            memory: torch.Tensor,
            memory_pos: torch.Tensor,
            memory_tpos: torch.Tensor,
            obj_ptrs: torch.Tensor,
            obj_ptr_tpos: torch.Tensor,
        ) -> torch.Tensor:
            curr = vision_feat.flatten(2).permute(2, 0, 1)
            curr_pos = vision_pos.flatten(2).permute(2, 0, 1)
            spatial = memory.flatten(2).permute(0, 2, 1).reshape(-1, 1, mem)
            tpos = self.model.maskmem_tpos_enc[memory_tpos].reshape(-1, 1, mem)  # [M,1,Cm]
            spatial_pos = (memory_pos.flatten(2).permute(0, 2, 1) + tpos).reshape(-1, 1, mem)
            split = c // mem
            ptrs = obj_ptrs.reshape(-1, split, mem).reshape(-1, 1, mem)
            ptr_pos = self.model.obj_ptr_tpos_proj(_sine(obj_ptr_tpos, c if self.proj_tpos else mem))
            ptr_pos = ptr_pos.unsqueeze(1).expand(-1, split, mem).reshape(-1, 1, mem)
            out = self.attention(
                curr=curr,
                curr_pos=curr_pos,
                memory=torch.cat((spatial, ptrs), dim=0),
                memory_pos=torch.cat((spatial_pos, ptr_pos), dim=0),
                num_obj_ptr_tokens=ptrs.shape[0],
            )
            return out.permute(1, 2, 0).reshape(vision_feat.shape)

    class MaskDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            pix_feat: torch.Tensor,
            high_res_feat0: torch.Tensor,
            high_res_feat1: torch.Tensor,
            point_coords: torch.Tensor,
            point_labels: torch.Tensor,
            multimask: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            points = {"point_coords": point_coords, "point_labels": point_labels}
            # both heads, one chosen: the choice depends on the point count, which the runtime knows
            heads = [
                self.model._forward_sam_heads(
                    backbone_features=pix_feat,
                    point_inputs=points,
                    high_res_features=[high_res_feat0, high_res_feat1],
                    multimask_output=flag,
                )
                for flag in (True, False)
            ]
            pick = multimask.reshape(()) > 0.5
            return tuple(torch.where(pick, a, b) for a, b in zip(*(h[3:] for h in heads), strict=True))

    class MemoryEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            vision_feat: torch.Tensor,
            high_res_masks: torch.Tensor,
            object_score_logits: torch.Tensor,
            mask_from_points: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            m = self.model
            soft = torch.sigmoid(high_res_masks)
            if m.binarize_mask_from_pts_for_mem_enc:
                soft = torch.where(mask_from_points.reshape(()) > 0.5, (high_res_masks > 0).float(), soft)
            mask = soft * m.sigmoid_scale_for_mem_enc + m.sigmoid_bias_for_mem_enc
            out = m.memory_encoder(vision_feat, mask, skip_mask_sigmoid=True)
            features = out["vision_features"]
            if m.no_obj_embed_spatial is not None:
                absent = 1.0 - (object_score_logits > 0).float()
                features = features + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
            return features, out["vision_pos_enc"][-1]

    return {
        ENCODER_FILE: ImageEncoder().eval(),
        ATTENTION_FILE: MemoryAttention().eval(),
        DECODER_FILE: MaskDecoder().eval(),
        MEMORY_FILE: MemoryEncoder().eval(),
    }


def _sine(positions: Any, dim: int) -> Any:
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    return get_1d_sine_pe(positions, dim=dim)


def modules(model: Any) -> dict[str, Any]:
    """The four export wrappers of `model` by file name (shapes in the module docstring)."""
    return _modules(model)


def runtime_metadata(model: Any, variant: str) -> dict[str, str]:
    """What the server's memory bank needs to know, stored in the memory attention graph."""
    return {
        "sam2_variant": variant,
        "image_size": str(model.image_size),
        "num_maskmem": str(model.num_maskmem),
        "max_obj_ptrs_in_encoder": str(model.max_obj_ptrs_in_encoder),
        "use_signed_tpos_enc_to_obj_ptrs": str(int(model.use_signed_tpos_enc_to_obj_ptrs)),
        "multimask_output_in_sam": str(int(model.multimask_output_in_sam)),
        "multimask_output_for_tracking": str(int(model.multimask_output_for_tracking)),
        "multimask_min_pt_num": str(model.multimask_min_pt_num),
        "multimask_max_pt_num": str(model.multimask_max_pt_num),
    }


def artifacts(model: Any, variant: str) -> list[Artifact]:
    import torch

    s, c, cm = model.image_size, model.hidden_dim, model.mem_dim
    e = s // model.backbone_stride
    wrappers = modules(model)
    feat = torch.randn(1, c, e, e)
    high0, high1 = torch.randn(1, c // 8, 4 * e, 4 * e), torch.randn(1, c // 4, 2 * e, 2 * e)
    return [
        Artifact(
            ENCODER_FILE,
            wrappers[ENCODER_FILE],
            (torch.randint(0, 256, (1, 3, s, s), dtype=torch.float32),),
            ["image"],
            ["vision_feat", "vision_pos", "high_res_feat0", "high_res_feat1", "no_mem_feat"],
            doc=f"SAM 2 image encoder ({variant}); image: RGB 0..255 resized to {s}x{s}",
        ),
        Artifact(
            ATTENTION_FILE,
            wrappers[ATTENTION_FILE],
            (
                feat,
                torch.randn(1, c, e, e),
                torch.randn(3, cm, e, e),
                torch.randn(3, cm, e, e),
                torch.tensor([6, 1, 0]),
                torch.randn(2, c),
                torch.tensor([2.0, 1.0]) / 15,
            ),
            ["vision_feat", "vision_pos", "memory", "memory_pos", "memory_tpos", "obj_ptrs", "obj_ptr_tpos"],
            ["pix_feat"],
            {
                "memory": {0: "memories"},
                "memory_pos": {0: "memories"},
                "memory_tpos": {0: "memories"},
                "obj_ptrs": {0: "pointers"},
                "obj_ptr_tpos": {0: "pointers"},
            },
            doc=f"SAM 2 memory attention ({variant})",
            metadata=runtime_metadata(model, variant),
        ),
        Artifact(
            DECODER_FILE,
            wrappers[DECODER_FILE],
            (
                feat,
                high0,
                high1,
                torch.randint(0, s, (1, 3, 2)).float(),
                torch.tensor([[1, 0, 1]], dtype=torch.int32),
                torch.tensor([1.0]),
            ),
            ["pix_feat", "high_res_feat0", "high_res_feat1", "point_coords", "point_labels", "multimask"],
            ["low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits"],
            {"point_coords": {1: "points"}, "point_labels": {1: "points"}},
            doc=f"SAM 2 prompt encoder + mask decoder + object pointer ({variant})",
        ),
        Artifact(
            MEMORY_FILE,
            wrappers[MEMORY_FILE],
            (feat, torch.randn(1, 1, s, s), torch.tensor([[1.0]]), torch.tensor([1.0])),
            ["vision_feat", "high_res_masks", "object_score_logits", "mask_from_points"],
            ["maskmem_features", "maskmem_pos_enc"],
            doc=f"SAM 2 memory encoder ({variant})",
        ),
    ]


def build(args: argparse.Namespace) -> list[Artifact]:
    state = load_checkpoint(args.checkpoint)
    if isinstance(state.get("model"), dict):  # the released checkpoints wrap the weights in "model"
        state = dict(state["model"])
    name = detect_variant(state, args.checkpoint) if args.variant == "auto" else args.variant
    model = build_model(name)
    load_into(model, state, f"sam2 {name}", args.checkpoint)
    return artifacts(model, name)

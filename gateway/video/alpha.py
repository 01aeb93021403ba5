"""A video's own transparency: which inputs carry it, how to decode it, what the model sees
behind it, and how it combines with the model's alpha.

Inputs that carry alpha: VP9 tagged `alpha_mode=1` in WebM/Matroska (the alpha plane travels
in BlockAdditional, which only the libvpx decoder reads: FFmpeg's native vp9 decoder drops it),
ProRes 4444, PNG (or any RGBA codec) in MOV, GIF transparency. Their alpha is multiplied into
every output, as the image API does for transparent images: a pixel the input made transparent
is not foreground (the /foreground_mask mask), stays transparent (RGBA outputs) and shows the new
background (composites).

The models take RGB only. What a transparent pixel stores is undefined (the scene that was
there, black, noise: whatever the tool that made it left), so the model sees the input over
white, as a viewer shows it and as the image API feeds its models; the result then depends on
what the input shows only. Measured in docs/video.md ("Input transparency").
"""

from __future__ import annotations

import av
import numpy as np

# The colour behind transparent pixels in what the model sees (white, as the image API).
BACKDROP = 255


def _vp9_with_alpha(stream: av.video.stream.VideoStream) -> bool:
    if stream.codec_context is None or stream.codec_context.name != "vp9":
        return False
    return {k.lower(): v for k, v in stream.metadata.items()}.get("alpha_mode") == "1"


def alpha_decoder(stream: av.video.stream.VideoStream) -> av.codec.context.CodecContext | None:
    """A libvpx-vp9 decoder for a VP9 stream tagged with alpha (None for every other stream).

    The stream's own decoder is FFmpeg's native vp9, which ignores the alpha side data."""
    return av.codec.CodecContext.create("libvpx-vp9", "r") if _vp9_with_alpha(stream) else None


def stream_has_alpha(stream: av.video.stream.VideoStream, pix_fmt: str) -> bool:
    """Whether frames of `stream` (decoded as `pix_fmt` by its own decoder) may carry alpha."""
    if _vp9_with_alpha(stream):
        return True
    fmt = av.video.format.VideoFormat(pix_fmt)
    return len(fmt.components) in (2, 4) or fmt.has_palette  # grey+alpha, colour+alpha, palette


def split(
    frame: av.VideoFrame, may_have_alpha: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A decoded frame -> (model_rgb, alpha, colour).

    model_rgb: uint8 [H,W,3], the frame over BACKDROP where it is transparent (what the model sees);
    alpha: uint8 [H,W], the input's own alpha, or None when every pixel is opaque;
    colour: uint8 [H,W,3], the straight (unassociated) colour under that alpha, None with it.
    """
    if not may_have_alpha:
        return frame.to_ndarray(format="rgb24"), None, None
    rgba = frame.to_ndarray(format="rgba")
    alpha = np.ascontiguousarray(rgba[..., 3])
    colour = np.ascontiguousarray(rgba[..., :3])
    if alpha.min(initial=255) == 255:
        return colour, None, None
    a = alpha.astype(np.uint16)[..., None]
    model_rgb = ((colour.astype(np.uint16) * a + BACKDROP * (255 - a) + 127) // 255).astype(np.uint8)
    return model_rgb, alpha, colour


def times(alpha: np.ndarray, input_alpha: np.ndarray | None) -> np.ndarray:
    """The model's alpha times the input's (both uint8 [H,W], 255 = opaque), rounded; uint8 [H,W]."""
    if input_alpha is None:
        return alpha
    return ((alpha.astype(np.uint16) * input_alpha + 127) // 255).astype(np.uint8)


def foreground_colour(
    foreground: np.ndarray, input_alpha: np.ndarray | None, colour: np.ndarray | None
) -> np.ndarray:
    """The colour to composite (uint8 [H,W,3]): where the input is partly transparent its own
    straight colour is the subject's colour by definition, while the model's foreground there was
    predicted from a mix with the white backdrop; elsewhere the model's foreground."""
    if input_alpha is None or colour is None:
        return foreground
    return np.where((input_alpha < 255)[..., None], colour, foreground)

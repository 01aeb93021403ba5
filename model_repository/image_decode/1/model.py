"""image_decode: bytes -> uint8 [H,W,3] sRGB, oriented as the camera meant it.

Pillow decodes; EXIF orientation is applied, an embedded ICC profile is converted to sRGB, an
animation yields its first frame, and images above `max_pixels` are refused before their pixels
are decoded (a small file can declare an enormous canvas).
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF photos from phones, when pillow-heif is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:
    pass

SRGB = ImageCms.createProfile("sRGB")


class DecodeError(ValueError):
    """The bytes are not an image this service accepts; the message is meant for the client."""


def _to_srgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken or unsupported profile: the pixels are still usable as plain RGB
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # matte against white, the way the photo looks in a browser on a white page
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    if not data:
        raise DecodeError("image_bytes is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
                )
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_srgb(image)
    except DecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, HEIC)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"image refused, it exceeds the limit of {max_pixels} pixels: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DecodeError(f"corrupt or truncated image: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.max_pixels = int(config["parameters"]["max_pixels"]["string_value"])
        # Pillow's own guard stays on, set to the same limit, for formats that resize on load
        Image.MAX_IMAGE_PIXELS = self.max_pixels

    def _one(self, request: Any) -> Any:
        raw = pb_utils.get_input_tensor_by_name(request, "image_bytes").as_numpy().reshape(-1)
        if raw.size != 1:
            raise DecodeError(f"image_bytes must hold exactly one image, got {raw.size}")
        data = raw[0]
        pixels = decode(bytes(data) if not isinstance(data, bytes) else data, self.max_pixels)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("image", pixels)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except DecodeError as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"image_decode: {exc}"))
                )
        return responses

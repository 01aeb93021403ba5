"""image_decode: bytes -> what the models see (`image` UINT8 [H,W,3] sRGB, upright, transparent
parts over white) and the image's own transparency (`alpha` UINT8 [H,W], 255 = opaque).

The gateway's decoder (triton_models.decode) does the work, so a photo means the same pixels over
gRPC as over REST: formats JPEG/PNG/WebP/GIF/TIFF/BMP/HEIC/AVIF, EXIF orientation applied, an
embedded ICC profile converted to sRGB, the first frame of an animation, and images above the
config parameter `max_pixels` refused from their header before any pixel is decoded.
"""

from __future__ import annotations

import numpy as np

from triton_models.config import model_config, parameter
from triton_models.decode import ImageTooLarge, InvalidImage, Limits, decode, over_white
from triton_models.serving import Request, Response, input_array, output_response, respond_each


class DecodeError(ValueError):
    """The bytes are not an image this service accepts; the message is meant for the client."""


def _too_large(exc: ImageTooLarge, max_pixels: int) -> DecodeError:
    size = f"of {exc.width}x{exc.height} pixels " if exc.width else ""
    return DecodeError(f"image {size}exceeds the limit of {max_pixels} pixels")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        max_pixels = int(parameter(model_config(args), "max_pixels", "100000000"))
        self.limits = Limits(max_side=None, max_pixels=max_pixels)

    def _one(self, request: Request) -> Response:
        raw = input_array(request, "image_bytes").reshape(-1)
        if raw.size != 1:
            raise DecodeError(f"image_bytes must hold exactly one image, got {raw.size}")
        data = raw[0] if isinstance(raw[0], bytes) else bytes(raw[0])
        if not data:
            raise DecodeError("image_bytes is empty")
        try:
            img = decode(data, self.limits)
        except ImageTooLarge as exc:
            raise _too_large(exc, self.limits.max_pixels) from None
        except InvalidImage as exc:
            raise DecodeError(f"not an image in a supported format, or corrupt: {exc}") from None
        alpha = img.alpha if img.alpha is not None else np.full(img.rgb.shape[:2], 255, np.uint8)
        return output_response({"image": over_white(img.rgb, img.alpha), "alpha": alpha})

    def execute(self, requests: list[Request]) -> list[Response]:
        return respond_each(requests, self._one, prefix="image_decode: ", refused=(DecodeError,))

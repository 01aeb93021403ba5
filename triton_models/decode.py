"""Image bytes -> sRGB pixels: size limits from the header, EXIF orientation, colour profiles.

Every image endpoint and the HD job decode through here, so a photo means the same pixels
everywhere. Policy (docs/images.md): the limit is checked from the header before any pixel is
decoded; pixels are converted to sRGB through the embedded ICC profile (if any), and outputs embed
an sRGB profile, so colour-managed viewers show what the camera saw.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()
with contextlib.suppress(AttributeError):  # AVIF only where this pillow-heif build has it
    pillow_heif.register_avif_opener()  # type: ignore[attr-defined]

# Formats we promise; anything else Pillow can open (EPS, ICO, PSD, ...) is refused, because a
# parser we never test is attack surface, not a feature.
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "TIFF", "GIF", "HEIF", "AVIF"})

SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
SRGB_ICC: bytes = SRGB_PROFILE.tobytes()

# EXIF orientations 5..8 swap width and height.
_TRANSPOSING = frozenset({5, 6, 7, 8})


class InvalidImage(ValueError):
    """Not an image we accept (unknown format, truncated, corrupt)."""


class ImageTooLarge(ValueError):
    """The header declares more pixels than the endpoint allows; width and height are 0 when
    Pillow refused the file before its size could be read (a decompression bomb)."""

    def __init__(self, width: int = 0, height: int = 0) -> None:
        super().__init__(f"{width}x{height}")
        self.width = width
        self.height = height

    @property
    def size_text(self) -> str:
        """'WxH ' when the size is known, '' otherwise (for messages: 'image WxH exceeds...')."""
        return f"{self.width}x{self.height} " if self.width and self.height else ""


@dataclass(frozen=True)
class Limits:
    max_side: int | None  # regular endpoints: each side at most this
    max_pixels: int  # all endpoints: width * height at most this


@dataclass(frozen=True)
class Header:
    width: int  # after EXIF orientation
    height: int
    format: str
    mode: str


@dataclass
class Decoded:
    rgb: np.ndarray  # uint8 [H,W,3], sRGB, upright
    alpha: np.ndarray | None  # uint8 [H,W] if the file carries transparency (any pixel < 255)
    format: str


Source = bytes | Path


def _open(source: Source) -> Image.Image:
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    with warnings.catch_warnings():
        # Our own limit below is the one that counts; Pillow's bomb warning would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(fp)
        except Image.DecompressionBombError:
            raise ImageTooLarge() from None  # over twice Pillow's own limit: far beyond ours
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InvalidImage(str(exc)) from None


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a corrupt EXIF block must not make the image unreadable
        return 1


def read_header(im: Image.Image, limits: Limits) -> Header:
    if im.format not in ACCEPTED_FORMATS:
        raise InvalidImage(f"format {im.format!r} not accepted")
    width, height = im.size
    if width <= 0 or height <= 0:
        raise InvalidImage("empty image")
    if _orientation(im) in _TRANSPOSING:
        width, height = height, width
    too_wide = limits.max_side is not None and max(width, height) > limits.max_side
    if too_wide or width * height > limits.max_pixels:
        raise ImageTooLarge(width, height)
    return Header(width, height, str(im.format), im.mode)


def probe(source: Source, limits: Limits) -> Header:
    """Format and upright size from the header only; raises InvalidImage / ImageTooLarge."""
    with _open(source) as im:
        return read_header(im, limits)


def check_whole(source: Source, limits: Limits) -> Header:
    """probe, and the whole file read: raises InvalidImage for a truncated or corrupt body too (a
    truncated HD upload is refused at submit, as the regular endpoints refuse it, not found only
    by the job). JPEG is decoded at 1/8 scale (Pillow's draft: every entropy-coded segment is
    still read, ~1/40 of a full decode); PNG is checked by its chunk CRCs up to IEND
    (Image.verify, nothing inflated); other formats are decoded in full."""
    with _open(source) as im:
        header = read_header(im, limits)
    # A fresh handle: Pillow's verify must come right after open, and read_header has read on.
    with _open(source) as im:
        try:
            if im.format in ("JPEG", "MPO"):
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
            elif im.format == "PNG":
                im.verify()
            else:
                im.load()
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            raise InvalidImage(str(exc)) from None
    return header


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255 (a white image); scale the range instead.
    arr = np.asarray(im, dtype=np.float64)
    peak = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    if im.mode == "F" and arr.max(initial=0) <= 1.0:
        peak = 1.0
    return Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB or CMYK or L image -> RGB in sRGB; the embedded profile decides the transform."""
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(
                im, src, SRGB_PROFILE, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
            )  # type: ignore[return-value]
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken or mismatched profile: fall back to treating the pixels as sRGB
    return im.convert("RGB")


def _split_alpha(im: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """Separate colour and transparency, whatever the mode carries them in."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("LA", "La", "PA", "RGBa") or (im.mode in ("RGB", "L") and "transparency" in im.info):
        im = im.convert("RGBA")
    alpha: np.ndarray | None = None
    if im.mode == "RGBA":
        a = np.asarray(im.getchannel("A"))
        alpha = a.copy() if a.min(initial=255) < 255 else None
        im = im.convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        im = _sixteen_bit_to_l(im)
    return im, alpha


def decode(source: Source, limits: Limits) -> Decoded:
    """Full decode, upright, sRGB; raises InvalidImage / ImageTooLarge, never anything else."""
    with _open(source) as im:
        header = read_header(im, limits)
        try:
            im.seek(0)  # GIF/APNG/multi-page TIFF: the first frame only
            icc = im.info.get("icc_profile")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                upright = ImageOps.exif_transpose(im)
            colour, alpha = _split_alpha(upright)
            rgb = np.asarray(_to_srgb(colour, icc), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            raise InvalidImage(str(exc)) from None
    if rgb.shape[:2] != (header.height, header.width):
        raise InvalidImage("decoded size differs from the header")
    return Decoded(np.ascontiguousarray(rgb), alpha, header.format)


def over_white(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """What the models see of a transparent image: uint8 [H,W,3] `rgb` composited over white by
    its uint8 [H,W] `alpha` (255 = opaque; None = opaque everywhere, `rgb` returned as it is), as
    a viewer shows it on a white page. The matte is multiplied by `alpha` afterwards, so what the
    input made transparent stays transparent."""
    if alpha is None:
        return rgb
    a = alpha.astype(np.float32)[..., None] / 255.0
    return (rgb * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)

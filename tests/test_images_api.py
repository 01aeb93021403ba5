"""The image background API through HTTP against the real stack (gateway, worker, Triton, Redis)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import cv2
import numpy as np
import pillow_heif
import pytest
from conftest import IMAGES, SHARED, Stack, gone
from PIL import Image, features

from gateway.routes.images import SEND_A_FORM

PHOTO = IMAGES / "sod_bsds300" / "images" / "100098.jpg"
MASK = IMAGES / "sod_bsds300" / "masks" / "100098.png"
GT01 = IMAGES / "alphamatting_gt01"
TOO_LARGE = {"message": "Image too large for regular processing. Use HD endpoint."}
INVALID = {"detail": "Invalid image file"}
NOT_TRANSPARENT = "The input image must have a transparent background."


def _bytes(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def _form(data: bytes | None, ctype: str = "image/jpeg", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    if data is not None:
        form.add_field("file", data, filename="upload", content_type=ctype)
    for key, value in fields.items():
        form.add_field(key, value)
    return form


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=240)) as session:
        yield session


async def _post(http: aiohttp.ClientSession, stack: Stack, path: str, form: object, token: str | None = None,
                ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"api_token": stack.token if token is None else token}
    async with http.post(stack.url + path, data=form, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def _png(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    assert im.format == "PNG"
    return im


def _tmp_entries(stack: Stack) -> set[str]:
    tmp = stack.settings.tmp_dir
    return {p.name for p in tmp.iterdir()} if tmp.is_dir() else set()


async def test_matte_segments_the_subject(http: aiohttp.ClientSession, stack: Stack) -> None:
    before = _tmp_entries(stack)
    status, headers, body = await _post(http, stack, "/image/matte/v1", _form(PHOTO.read_bytes()))
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "image/png" and headers["Cache-Control"] == "no-cache"
    out = _png(body)
    assert out.mode == "RGBA" and out.size == _photo().size and out.info.get("icc_profile")
    alpha = np.asarray(out.getchannel("A")) > 127
    truth = np.asarray(Image.open(MASK).convert("L")) > 127
    assert (alpha & truth).sum() / (alpha | truth).sum() > 0.5
    assert len(np.unique(np.asarray(out.getchannel("A")))) > 10  # soft alpha kept
    assert _tmp_entries(stack) <= before  # the request's staging dir is gone


async def test_matte_opaque_subject_is_exactly_opaque(http: aiohttp.ClientSession, stack: Stack) -> None:
    """The alpha levels curve: 255 inside the subject (it was 254 almost everywhere before), 0 in
    the background, the soft edge kept. Regions: GT01's true alpha, eroded 7 px off its edges."""
    data = (GT01 / "GT01_image.png").read_bytes()
    status, _, body = await _post(http, stack, "/image/matte/v1", _form(data, "image/png"))
    assert status == 200, body[:300]
    alpha = np.asarray(_png(body).getchannel("A"))
    truth = np.asarray(Image.open(GT01 / "GT01_alpha.png").convert("L"))
    kernel = np.ones((15, 15), np.uint8)
    inside = cv2.erode((truth == 255).astype(np.uint8), kernel) > 0
    outside = cv2.erode((truth == 0).astype(np.uint8), kernel) > 0
    assert np.mean(alpha[inside] == 255) > 0.97
    assert np.mean(alpha[outside] == 0) > 0.99
    assert np.count_nonzero((alpha > 0) & (alpha < 255)) > 5000  # soft edges, not a hard cut-out


@pytest.mark.parametrize(
    ("path", "fields", "mode"),
    [
        ("/image/blur/v1", {"blur_radius": "12"}, "RGB"),
        ("/image/color/v1", {"bg_color": "255,0,0"}, "RGB"),
        (
            "/image/gradient/v1",
            {"gradient_start": "0,0,0", "gradient_end": "0,0,255", "gradient_direction": "horizontal"},
            "RGB",
        ),  # fmt: skip
        ("/image/shadow/v1", {"shadow_offset_x": "15", "shadow_opacity": "0.7"}, "RGBA"),
        ("/image/shadow/v1", {"bg_color": "200,200,200"}, "RGB"),
        ("/image/matte/v1", {"model": "rvm"}, "RGBA"),
        ("/image/matte/v1", {"model": "blend"}, "RGBA"),
    ],
)
async def test_every_operation(http: aiohttp.ClientSession, stack: Stack, path: str, fields: dict[str, str],
                               mode: str) -> None:  # fmt: skip
    status, headers, body = await _post(http, stack, path, _form(PHOTO.read_bytes(), **fields))
    assert status == 200, body[:300]
    assert headers["Cache-Control"] == "no-cache"
    out = _png(body)
    assert out.mode == mode and out.size == _photo().size
    pixels = np.asarray(out.convert("RGB"), dtype=int)
    background = np.asarray(Image.open(MASK).convert("L")) < 10
    if path == "/image/color/v1":
        assert (pixels[background][:, 0] > 200).mean() > 0.8  # red where the photo's background was
    if path == "/image/gradient/v1":
        assert pixels[background][:, 2].std() > 20  # a gradient, not a flat colour


async def test_odd_inputs_decode(http: aiohttp.ClientSession, stack: Stack) -> None:
    im = _photo()
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to view
    grey16 = Image.fromarray(np.asarray(im.convert("L"), dtype=np.uint16) * 257)
    cases = {
        "exif": (_bytes(im, "JPEG", exif=exif.tobytes()), (im.height, im.width)),
        "png16": (_bytes(grey16, "PNG"), im.size),
        "grey": (_bytes(im.convert("L"), "JPEG"), im.size),
        "cmyk": (_bytes(im.convert("CMYK"), "JPEG"), im.size),
        "gif": (_bytes(im.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"), im.size),
        "webp": (_bytes(im, "WEBP"), im.size),
        "wrong_ctype": (_bytes(im, "PNG"), im.size),  # sent as text/plain below: content decides
    }
    for name, (data, size) in cases.items():
        ctype = "text/plain" if name == "wrong_ctype" else "application/octet-stream"
        status, _, body = await _post(http, stack, "/image/matte/v1", _form(data, ctype))
        assert status == 200, (name, body[:200])
        out = _png(body)
        assert out.size == size, name
        if name == "png16":  # 16-bit range scaled, not clipped to white: the subject is found
            assert 0.05 < (np.asarray(out.getchannel("A")) > 127).mean() < 0.95


async def test_errors_in_document_format(http: aiohttp.ClientSession, stack: Stack) -> None:
    before = _tmp_entries(stack)
    im = _photo()
    jpeg = _bytes(im, "JPEG")
    wide = _bytes(Image.new("RGB", (2049, 16), (90, 90, 90)), "PNG")
    bomb = _bytes(Image.new("1", (30000, 30000)), "PNG")
    cases: list[tuple[str, object, int, dict[str, str]]] = [
        ("/image/matte/v1", _form(wide, "image/png"), 400, TOO_LARGE),
        ("/image/blur/v1", _form(bomb, "image/png"), 400, TOO_LARGE),
        ("/image/matte/v1", _form(jpeg[: len(jpeg) // 2]), 400, INVALID),
        ("/image/matte/v1", _form(b"GIF89a this is not really a gif", "image/gif"), 400, INVALID),
        ("/image/matte/v1", _form(_bytes(im, "EPS")), 400, INVALID),
        ("/image/color/v1", _form(jpeg, bg_color="255,0"), 400,
         {"detail": "bg_color must be in format 'R,G,B' (e.g., '255,0,0')"}),
        ("/image/blur/v1", _form(jpeg, blur_radius="lots"), 422, {"message": "Invalid request data"}),
        # int() reads "1_0" as 10 and pydantic's lax mode "20.0" as 20: digits only
        ("/image/blur/v1", _form(jpeg, blur_radius="1_0"), 422, {"message": "Invalid request data"}),
        ("/image/shadow/v1", _form(jpeg, shadow_offset_x="20.0"), 422, {"message": "Invalid request data"}),
        ("/image/matte/v1", _form(None, other="x"), 422, {"message": "Invalid request data"}),
        ("/image/matte/v1", b'{"image": "x"}', 415, SEND_A_FORM),
    ]  # fmt: skip
    for path, form, status, body in cases:
        got, _, raw = await _post(http, stack, path, form)
        assert (got, _json(raw)) == (status, body), path
    got, _, raw = await _post(http, stack, "/image/shadow/v1", _form(jpeg, shadow_opacity="3"))
    assert got == 400 and "shadow_opacity" in _json(raw)["message"]
    got, _, raw = await _post(http, stack, "/image/matte/v1", _form(jpeg), token="nope")
    assert got == 401 and set(_json(raw)) == {"message"}
    assert _tmp_entries(stack) <= before  # refused requests leave no staging dir either


def _json(raw: bytes) -> dict[str, str]:
    return dict(json.loads(raw))


async def test_image_url_input(http: aiohttp.ClientSession, stack: Stack, media_server: str) -> None:
    rel = PHOTO.relative_to(IMAGES.parent)
    form = _form(None, image_url=f"{media_server}/{rel}")
    status, _, body = await _post(http, stack, "/image/color/v1", form)
    assert status == 200 and _png(body).size == _photo().size
    form = _form(None, image_url=f"{media_server}/nope.png")
    status, _, body = await _post(http, stack, "/image/color/v1", form)
    assert status == 400 and _json(body)["detail"].startswith("Failed to download image")
    form = _form(PHOTO.read_bytes(), image_url=f"{media_server}/{rel}")
    status, _, body = await _post(http, stack, "/image/color/v1", form)
    assert status == 400 and "not both" in _json(body)["message"]


async def test_generate(http: aiohttp.ClientSession, stack: Stack) -> None:
    im = _photo()
    mask = Image.open(MASK).convert("L")
    cutout = im.copy()
    cutout.putalpha(mask)
    form = _form(_bytes(cutout, "PNG"), "image/png")
    status, headers, body = await _post(http, stack, "/image/generate/v1", form)
    assert status == 200, body[:300]
    out = _png(body)
    assert out.mode == "RGB" and out.size == im.size and headers["Cache-Control"] == "no-cache"
    pixels = np.asarray(out, dtype=int)
    subject = np.asarray(mask) > 250
    assert np.abs(pixels[subject] - np.asarray(im, dtype=int)[subject]).mean() < 3  # subject kept
    assert pixels[~(np.asarray(mask) > 5)].std() > 1  # a backdrop, with light and shadow
    prompted = await _post(http, stack, "/image/generate/v1",
                           _form(_bytes(cutout, "PNG"), "image/png", prompt="dark blue"))  # fmt: skip
    assert prompted[0] == 200 and np.asarray(_png(prompted[2]), dtype=int).mean() < pixels.mean()
    for data in (_bytes(im, "PNG"), _bytes(im.convert("RGBA"), "PNG"), _bytes(im, "JPEG")):
        status, _, body = await _post(http, stack, "/image/generate/v1", _form(data, "image/png"))
        assert (status, _json(body)) == (400, {"message": NOT_TRANSPARENT})


def _transparent_variants() -> dict[str, bytes]:
    """One small cut-out (left third clear) in every mode and format that carries transparency."""
    pillow_heif.register_heif_opener()  # the writer as well as the reader
    rgb = _photo().resize((160, 107), Image.Resampling.LANCZOS)
    alpha = np.full((107, 160), 255, np.uint8)
    alpha[:, :53] = 0
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(alpha))
    palette = rgb.quantize(colors=64)
    indices = np.asarray(palette).copy()
    indices[alpha == 0] = 255  # a palette entry no pixel of the quantised photo uses
    trns = Image.fromarray(indices, "P")
    colours = palette.getpalette() or []
    trns.putpalette(colours + [0] * (768 - len(colours)))  # all 256 entries, 255 among them
    out = {
        "webp-lossy": _bytes(rgba, "WEBP", quality=80),
        "webp-lossless": _bytes(rgba, "WEBP", lossless=True),
        "png-palette-trns": _bytes(trns, "PNG", transparency=255),
        "png-la": _bytes(rgba.convert("LA"), "PNG"),
        "tiff-rgba": _bytes(rgba, "TIFF"),
        "gif-transparent": _bytes(trns, "GIF", transparency=255),
        "heif-alpha": _bytes(rgba, "HEIF"),
    }
    if features.check("avif"):
        out["avif-alpha"] = _bytes(rgba, "AVIF")
    return out


async def test_generate_accepts_every_format_with_transparency(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    for name, data in _transparent_variants().items():
        status, _, body = await _post(
            http, stack, "/image/generate/v1", _form(data, "application/octet-stream")
        )
        assert status == 200, (name, body[:300])
        assert _png(body).size == (160, 107), name
    # a field input: a real WebP with real alpha, which used to be refused as "not transparent"
    webp = SHARED / "hunt" / "rgba.webp"
    status, _, body = await _post(http, stack, "/image/generate/v1", _form(webp.read_bytes(), "image/webp"))
    assert status == 200, body[:300]
    source = Image.open(webp)
    assert source.format == "WEBP" and source.mode == "RGBA"
    out = np.asarray(_png(body).convert("RGB"), dtype=int)
    opaque = np.asarray(source.getchannel("A")) == 255
    assert np.abs(out[opaque] - np.asarray(source.convert("RGB"), dtype=int)[opaque]).mean() < 3


async def _result(http: aiohttp.ClientSession, stack: Stack, job: str, token: str | None = None,
                  ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"api_token": token or stack.token}
    async with http.get(f"{stack.url}/image/hd/result/{job}", headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def _wait(http: aiohttp.ClientSession, stack: Stack, job: str) -> tuple[int, dict[str, str], bytes]:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status, headers, body = await _result(http, stack, job)
        if status != 202:
            return status, headers, body
        polled = _json(body)
        progress = polled.pop("progress_percentage", 0.0)  # by pipeline step once a worker has it
        assert polled == {"message": "Task is still processing", "uuid": job, "status": "processing"}
        assert 0 <= float(progress) < 100
        await asyncio.sleep(0.5)
    raise AssertionError("HD job did not finish")


async def test_hd_lifecycle(http: aiohttp.ClientSession, stack: Stack) -> None:
    big = _photo().resize((2600, 1734), Image.Resampling.LANCZOS)  # over the regular limit
    data = _bytes(big, "JPEG", quality=90)
    assert (await _post(http, stack, "/image/color/v1", _form(data)))[0] == 400
    form = _form(data, operation="color", bg_color="0,0,255")
    status, _, body = await _post(http, stack, "/image/hd/submit/v1", form)
    assert status == 202, body
    submitted = _json(body)
    job = submitted["uuid"]
    assert submitted == {"message": "Image submitted for processing", "uuid": job, "status": "processing"}
    other = await _result(http, stack, job, stack.other_token)
    assert (other[0], _json(other[2])) == (404, {"detail": "Task not found"})
    status, headers, body = await _wait(http, stack, job)
    assert status == 200 and headers["Content-Type"] == "image/png" and headers["Cache-Control"] == "no-cache"
    out = _png(body)
    assert out.size == big.size and out.mode == "RGB"
    assert await gone(stack.settings.results_dir / job)  # removed after the download
    again = await _result(http, stack, job)
    assert (again[0], _json(again[2])) == (404, {"detail": "Processed image file not found"})
    assert again[1]["X-Result-Removed"] == "after its first complete download"
    # The worker removes the upload just after marking the job done: allow it that moment.
    upload = stack.settings.data_dir / "uploads" / job
    deadline = time.monotonic() + 10
    while upload.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not upload.exists()


async def test_hd_errors(http: aiohttp.ClientSession, stack: Stack) -> None:
    status, _, body = await _post(http, stack, "/image/hd/submit/v1", _form(b"not an image at all"))
    assert (status, _json(body)) == (400, INVALID)
    bomb = _bytes(Image.new("1", (20000, 20000)), "PNG")  # 400 MP declared, over HD's 100 MP
    status, _, body = await _post(http, stack, "/image/hd/submit/v1", _form(bomb, "image/png"))
    assert status == 400 and "HD" in _json(body)["message"]
    missing = await _result(http, stack, "00000000-0000-4000-8000-000000000000")
    assert (missing[0], _json(missing[2])) == (404, {"detail": "Task not found"})
    # a truncated body is refused at submit like on the regular endpoints (the seed's 400), for
    # JPEG (read at 1/8 scale) and PNG (chunk CRCs); it was a 202 and then a failed job
    for kind, ctype in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
        half = _bytes(_photo(), kind)[: len(_bytes(_photo(), kind)) // 2]
        status, _, body = await _post(http, stack, "/image/hd/submit/v1", _form(half, ctype))
        assert (status, _json(body)) == (400, INVALID), kind

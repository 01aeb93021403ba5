"""Bounded parsing: JSON size, depth, elements and integer digits; multipart parts and text
fields; background images' pixel count before any decode. Each bound answers 413 in the
endpoint's own error family instead of a 500 or hundreds of MB of gateway memory."""

from __future__ import annotations

import asyncio
import io
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import Stack, mask_error

from gateway.bounded import BodyTooLarge, JsonLimits, loads


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[" * 100 + "]" * 100, "deeper than 32"),
        ('{"a":' * 40 + "1" + "}" * 40, "deeper than 32"),
        ("[" + ",".join("0" * 1 for _ in range(10_001)) + "]", "more than 10000 elements"),
        ('{"x": ' + "9" * 5000 + "}", "longer than 100 digits"),
        ('{"x": -' + "9" * 101 + "}", "longer than 100 digits"),
    ],
)
def test_json_bounds_refuse_before_parsing(text: str, why: str) -> None:
    with pytest.raises(BodyTooLarge, match=why):
        loads(text.encode(), JsonLimits())


def test_json_bounds_let_ordinary_bodies_through() -> None:
    body = (
        '{"video": "http://x/[[[[{{{{\\"]]]]", "key_points": [{"x": 1, "y": 2}], "n": 12345678901234567890}'
    )
    assert loads(body.encode(), JsonLimits())["n"] == 12345678901234567890
    nested = "[" * 32 + "]" * 32
    assert loads(nested.encode(), JsonLimits()) is not None
    with pytest.raises(ValueError):
        loads(b"{not json", JsonLimits())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_is_rfc_8259_json(constant: str) -> None:
    """Python's json reads these; JSON has no such values, so the body is malformed (400)."""
    with pytest.raises(ValueError, match="not a JSON value"):
        loads(f'{{"key_points": [{{"x": {constant}, "y": 90}}]}}'.encode(), JsonLimits())


async def test_nan_in_a_body_is_malformed_json(stack: Stack, http: aiohttp.ClientSession) -> None:
    body = b'{"video": "http://127.0.0.1:1/a.mp4", "key_points": [{"x": NaN, "y": 90}]}'
    headers = {"api_token": stack.token, "Content-Type": "application/json"}
    url = f"{stack.url}/mask_by_key_points"
    status, error = await mask_error(http, "POST", url, data=body, headers=headers)
    assert (status, error["error"]["message"]) == (400, "Malformed JSON"), error


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # was 500 RecursionError
        b'{"video": ' + b"7" * 5000 + b"}",  # was 500 ValueError
        b'{"video": "http://127.0.0.1/a.mp4", "pad": "' + b"x" * 200_000 + b'"}',  # over 64 KB
        b"[" * 40 + b"]" * 40,
        b"[" + b"0," * 20_000 + b"0]",
    ],
)
@pytest.mark.parametrize("path", ["/foreground_mask", "/mask_by_key_points"])
async def test_json_endpoints_answer_413_in_the_mask_format(
    stack: Stack, http: aiohttp.ClientSession, body: bytes, path: str
) -> None:
    status, payload = await mask_error(
        http,
        "POST",
        f"{stack.url}{path}",
        data=body,
        headers={"api_token": stack.token, "Content-Type": "application/json"},
    )
    assert status == 413 and payload["error"]["message"] == "Payload Too Large", payload
    assert "Error" not in payload["error"]["details"]


def _big_png(side: int, rows: int | None = None) -> bytes:
    """A greyscale PNG declaring side x side, a few KB (rows of zeros compress to nothing);
    `rows`: only that many rows of pixels are stored (a header that promises more than it holds)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00" * ((side + 1) * (rows or side)), 9)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


async def _submit(http: aiohttp.ClientSession, stack: Stack, form: aiohttp.FormData) -> tuple[int, dict]:
    async with http.post(f"{stack.url}/video/submit/v1", data=form, headers={"api_token": stack.token}) as r:
        return r.status, await r.json()


async def test_video_submit_bounds_its_form(
    stack: Stack, http: aiohttp.ClientSession, video_clips: dict[str, Path]
) -> None:
    clip = video_clips["one.mp4"].read_bytes()
    form = aiohttp.FormData()
    form.add_field("file", clip, filename="one.mp4", content_type="video/mp4")
    form.add_field("bg_color", "1" * 1_000_000)  # was 500 HTTPRequestEntityTooLarge at 200 MB
    status, body = await _submit(http, stack, form)
    assert status == 413 and "bg_color" in body["detail"], body

    form = aiohttp.FormData()
    for i in range(100):  # 75,000 of these were accepted
        form.add_field(f"x{i}", "y" * 100)
    form.add_field("file", clip, filename="one.mp4", content_type="video/mp4")
    status, body = await _submit(http, stack, form)
    assert (status, body) == (413, {"detail": "The form has more than 32 parts."})

    png = _big_png(12000)
    assert len(png) < 200_000
    form = aiohttp.FormData()
    form.add_field("file", clip, filename="one.mp4", content_type="video/mp4")
    form.add_field("bg_image", io.BytesIO(png), filename="bg.png", content_type="image/png")
    status, body = await _submit(http, stack, form)  # was 202, the worker then took 1.5 GB
    assert status == 413 and "12000x12000" in body["detail"], body

    form = aiohttp.FormData()  # so large that Pillow refuses it before reading its size
    form.add_field("file", clip, filename="one.mp4", content_type="video/mp4")
    bomb = _big_png(60000, rows=1)
    form.add_field("bg_image", io.BytesIO(bomb), filename="bg.png", content_type="image/png")
    status, body = await _submit(http, stack, form)
    assert status == 413 and body["detail"].startswith("Background image exceeds the"), body


async def test_image_endpoint_bounds_its_form(stack: Stack, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    for i in range(100):
        form.add_field(f"x{i}", "y")
    form.add_field("file", _big_png(8), filename="a.png", content_type="image/png")
    async with http.post(f"{stack.url}/image/matte/v1", data=form, headers={"api_token": stack.token}) as r:
        assert r.status == 413 and await r.json() == {"detail": "The form has more than 32 parts."}
    body = "&".join(f"f{i}=v" for i in range(100))
    async with http.post(
        f"{stack.url}/image/matte/v1",
        data=body,
        headers={"api_token": stack.token, "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 413 and "parts" in (await r.json())["detail"]


async def test_image_endpoint_says_what_is_wrong_with_its_form_parts(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """An oversized text field was a bare 422 "Invalid request data", then (briefly) a 413 that
    also caught an image sent under another part name; each is now the family's 400 with a
    sentence saying what is wrong (a client-chosen name quoted only when short and plain)."""
    url, headers = f"{stack.url}/image/color/v1", {"api_token": stack.token}
    png = _big_png(8)

    async def post(*parts: tuple[str, bytes | str, str | None]) -> tuple[int, dict]:
        form = aiohttp.FormData()
        for name, value, filename in parts:
            form.add_field(name, value, filename=filename, content_type="image/png" if filename else None)
        async with http.post(url, data=form, headers=headers) as r:
            return r.status, await r.json()

    for name, shown in (("bg_color", "'bg_color'"), ("n" * 300, "(unnamed or unusual name)")):
        got = await post(("file", png, "a.png"), (name, "1" * 5000, None))
        assert got == (400, {"message": f"Form field {shown} is over the 4096-byte limit."})
    got = await post(("image", png * 1000, "a.png"))
    assert got == (400, {"message": "Send the image in the 'file' part, not in 'image'."})
    got = await post(("file", png, "a.png"), ("file", png, "b.png"))
    assert got == (400, {"message": "Send one image in the 'file' part, not several."})
    # a field just under the bound is read whole, however the body is chunked (it was one read of
    # one chunk: of a value split across chunks, only blanks could arrive, a 400 for bg_color)
    form = aiohttp.FormData()
    form.add_field("file", png, filename="a.png", content_type="image/png")
    form.add_field("bg_color", " " * 4000 + "0,255,0")
    async with http.post(url, data=form, headers=headers) as r:
        assert r.status == 200, await r.text()


async def test_the_service_names_itself_not_its_libraries(stack: Stack, http: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/status/nope", "/no/such/route"):
        async with http.get(f"{stack.url}{path}", headers={"api_token": stack.token}) as r:
            server = r.headers.get("Server", "")
            assert server.startswith("matting-service/"), server
            assert "aiohttp" not in server and "Python" not in server


RAW_REFUSALS = {  # requests aiohttp's HTTP parser refuses before any route sees them
    "a 10 KB header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
    "a 20 KB path": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "a negative length": b"POST /foreground_mask HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "length and chunked": b"POST /image/matte/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", RAW_REFUSALS)
async def test_requests_the_parser_refuses_answer_in_our_format(stack: Stack, case: str) -> None:
    """These were aiohttp's own text/plain 400s echoing the request's first bytes, with its
    `Server: Python/3.11 aiohttp/x` and no X-Request-ID (fresh tester, round 8)."""
    reader, writer = await asyncio.open_connection(stack.settings.gateway_host, stack.settings.gateway_port)
    try:
        writer.write(RAW_REFUSALS[case])
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0].split(" ")[1] == "400", lines[0]
    assert headers["server"].startswith("matting-service/") and headers["x-request-id"], headers
    assert headers["content-type"].startswith("application/json")
    assert b"aaaa" not in body and b"aiohttp" not in raw
    json.loads(body)  # the family's error document


async def test_outbound_fetch_names_the_service(stack: Stack, http: aiohttp.ClientSession) -> None:
    """The URL fetcher's User-Agent, seen by a loopback server the gateway downloads from."""
    from aiohttp import web

    seen: list[str] = []

    async def video(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.Response(body=b"not a video", content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/v.mp4", video)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        status, _ = await mask_error(
            http,
            "POST",
            f"{stack.url}/foreground_mask",
            json={"video": f"http://127.0.0.1:{port}/v.mp4"},
            headers={"api_token": stack.token},
        )
    finally:
        await runner.cleanup()
    assert status == 400 and seen and seen[0].startswith("matting-service/"), seen
    assert "aiohttp" not in seen[0] and "Python" not in seen[0]


async def test_error_texts_quote_no_long_host_and_no_library_names(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    host = ("a" * 60 + ".") * 4 + "invalid"
    status, payload = await mask_error(
        http,
        "POST",
        f"{stack.url}/foreground_mask",
        json={"video": f"http://{host}/v.mp4"},
        headers={"api_token": stack.token},
    )
    details = payload["error"]["details"]
    assert status == 400 and "could not be resolved" in details, payload
    assert host not in details and len(details) < 200
    status, payload = await mask_error(
        http,
        "POST",
        f"{stack.url}/foreground_mask",
        json={"video": "http://127.0.0.1:1/closed.mp4"},
        headers={"api_token": stack.token},
    )
    assert status == 400 and "Error" not in payload["error"]["details"], payload

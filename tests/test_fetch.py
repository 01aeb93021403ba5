"""SSRF rules and download limits of gateway.fetch, against real loopback aiohttp servers."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from common.settings import Settings
from devstack.processes import free_port
from gateway.fetch import DownloadTooLarge, FetchError, PinnedResolver, fetch_to_file, refusal_reason

PAYLOAD = os.urandom(100_000)

REFUSED = [
    "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "127.0.0.1", "127.8.9.10",
    "169.254.169.254", "169.254.1.1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "fec0::1", "ff02::1", "2001:db8::1",
    "2001::1",  # Teredo
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1",
    "::127.0.0.1", "::10.0.0.1",  # IPv4-compatible
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:c0a8:101::",  # 6to4 of loopback/metadata/private
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b:1::1",  # NAT64
]  # fmt: skip
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.200.0.7", "::1"])
def test_allow_loopback_admits_loopback(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address), allow_loopback=True) is None


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "169.254.169.254", "0.0.0.0", "100.64.0.1", "fd00:ec2::254", "::ffff:127.0.0.1"]
)
def test_allow_loopback_admits_nothing_else(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address), allow_loopback=True) is not None


async def test_pinned_resolver_answers_only_for_its_host() -> None:
    resolver = PinnedResolver("example.com", [ipaddress.ip_address("93.184.215.14")])
    assert [r["host"] for r in await resolver.resolve("example.com", 443)] == ["93.184.215.14"]
    with pytest.raises(OSError):
        await resolver.resolve("rebound.example", 443)


class Origin:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
async def origin() -> AsyncIterator[Origin]:
    o = Origin()

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        o.hits.append(request.path)
        return await handler(request)

    async def file(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="video/mp4")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"\0" * 2_000_000)

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(40):
            await resp.write(b"\0" * 65536)
        await resp.write_eof()
        return resp

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(body=PAYLOAD)
        raise web.HTTPFound(f"/chain/{left - 1}")

    app = web.Application(middlewares=[count])
    app.router.add_get("/file", file)
    app.router.add_get("/big", big)
    app.router.add_get("/big-chunked", big_chunked)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", o.port).start()
    try:
        yield o
    finally:
        await runner.cleanup()


def _settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(
        data_dir=tmp_path, allow_loopback_urls=True, download_timeout_s=10, download_max_redirects=3
    )
    return base.with_overrides(**changes)


async def _refused(
    url: str, settings: Settings, dest: Path, match: str, kind: type[FetchError] = FetchError, **kw: int
) -> None:
    with pytest.raises(kind, match=match):
        await fetch_to_file(url, dest, settings, **kw)
    assert not dest.exists(), "a failed download must leave no partial file"


async def test_download_with_loopback_allowed(origin: Origin, tmp_path: Path) -> None:
    dest = tmp_path / "in.mp4"
    result = await fetch_to_file(f"{origin.url}/file", dest, _settings(tmp_path))
    assert dest.read_bytes() == PAYLOAD
    assert (result.size, result.content_type, result.path) == (len(PAYLOAD), "video/mp4", dest)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1"])
async def test_non_standard_ipv4_forms_refused(origin: Origin, tmp_path: Path, host: str) -> None:
    """Even with loopback allowed: the resolver would read these as 127.0.0.1, aiohttp would not."""
    before = len(origin.hits)
    url = f"http://{host}:{origin.port}/file"
    await _refused(url, _settings(tmp_path), tmp_path / "x", "non-standard form")
    assert len(origin.hits) == before


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_loopback_refused_by_default(origin: Origin, tmp_path: Path, host: str) -> None:
    before = len(origin.hits)
    url = f"http://{host}:{origin.port}/file"
    await _refused(url, _settings(tmp_path, allow_loopback_urls=False), tmp_path / "x", "private or reserved")
    assert len(origin.hits) == before, "a refused URL must not be contacted"


async def test_mapped_loopback_refused_even_when_loopback_allowed(origin: Origin, tmp_path: Path) -> None:
    await _refused(
        f"http://[::ffff:127.0.0.1]:{origin.port}/file", _settings(tmp_path), tmp_path / "x", "private"
    )


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0/",
    ],
)
async def test_redirect_to_private_address_refused(origin: Origin, tmp_path: Path, target: str) -> None:
    await _refused(f"{origin.url}/redirect?to={target}", _settings(tmp_path), tmp_path / "x", "private")


async def test_redirect_to_other_scheme_refused(origin: Origin, tmp_path: Path) -> None:
    await _refused(
        f"{origin.url}/redirect?to=file:///etc/passwd", _settings(tmp_path), tmp_path / "x", "http"
    )


async def test_redirect_limit(origin: Origin, tmp_path: Path) -> None:
    settings = _settings(tmp_path)  # at most 3 redirects
    dest = tmp_path / "ok"
    assert (await fetch_to_file(f"{origin.url}/chain/3", dest, settings)).size == len(PAYLOAD)
    await _refused(f"{origin.url}/chain/4", settings, tmp_path / "x", "Too many redirects")


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_byte_limit(origin: Origin, tmp_path: Path, path: str) -> None:
    await _refused(
        f"{origin.url}{path}",
        _settings(tmp_path),
        tmp_path / "x",
        "too large",
        DownloadTooLarge,
        max_bytes=1_000_000,
    )


async def test_settings_byte_limit_applies_by_default(origin: Origin, tmp_path: Path) -> None:
    settings = _settings(tmp_path, download_max_bytes=50_000)
    await _refused(f"{origin.url}/file", settings, tmp_path / "x", "too large", DownloadTooLarge)


async def test_total_timeout(origin: Origin, tmp_path: Path) -> None:
    started = asyncio.get_running_loop().time()
    await _refused(
        f"{origin.url}/slow", _settings(tmp_path, download_timeout_s=0.5), tmp_path / "x", "longer than"
    )
    assert asyncio.get_running_loop().time() - started < 3


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.mp4", "file:///etc/passwd", "gopher://x/", "not a url", ""]
)
async def test_only_http_and_https(tmp_path: Path, url: str) -> None:
    await _refused(url, _settings(tmp_path), tmp_path / "x", ".")


async def test_http_error_status_is_reported(origin: Origin, tmp_path: Path) -> None:
    await _refused(f"{origin.url}/missing", _settings(tmp_path), tmp_path / "x", "HTTP 404")

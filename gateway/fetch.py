"""Safe download of a client-supplied URL: the one place that touches foreign URLs.

Defences against server-side request forgery, in order:
* http/https only; an IPv4 address only in its standard dotted-quad form (`2130706433`,
  `0x7f000001`, `127.1` and `0177.0.0.1` are refused: the resolver reads them as addresses,
  aiohttp refuses to connect to them, and they exist to slip past filters);
* the host is resolved here and EVERY address it resolves to must be public
  (`refusal_reason`), including the IPv4 addresses embedded in IPv6 forms (mapped, compatible,
  6to4, NAT64);
* the checked addresses are pinned for the connection (`PinnedResolver`), so a second DNS answer
  cannot swap in a private address (DNS rebinding); Host and TLS SNI still carry the URL's name;
* redirects are followed by hand, each hop checked the same way, at most DOWNLOAD_MAX_REDIRECTS;
* the body streams to disk under a byte limit and one total deadline; a partial file never stays.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from common import compat
from common.settings import Settings
from gateway.identity import USER_AGENT

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 256 * 1024
_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# Named explicitly although the stdlib flags cover most of them: the list documents the policy
# and guards against stdlib changes in what `is_global` means.
_BLOCKED_V4 = (
    _V4("0.0.0.0/8"),
    _V4("10.0.0.0/8"),
    _V4("100.64.0.0/10"),  # carrier-grade NAT
    _V4("127.0.0.0/8"),
    _V4("169.254.0.0/16"),  # link-local, incl. cloud metadata 169.254.169.254
    _V4("172.16.0.0/12"),
    _V4("192.0.0.0/24"),
    _V4("192.0.2.0/24"),
    _V4("192.168.0.0/16"),
    _V4("198.18.0.0/15"),
    _V4("198.51.100.0/24"),
    _V4("203.0.113.0/24"),
    _V4("224.0.0.0/4"),  # multicast
    _V4("240.0.0.0/4"),  # reserved, incl. broadcast
)
_BLOCKED_V6 = (
    _V6("::/128"),
    _V6("::1/128"),
    _V6("64:ff9b:1::/48"),  # local-use NAT64
    _V6("100::/64"),  # discard
    _V6("2001::/23"),  # IETF protocol assignments (Teredo, ORCHID, ...)
    _V6("2001:db8::/32"),
    _V6("fc00::/7"),  # unique local, incl. AWS metadata fd00:ec2::254
    _V6("fe80::/10"),
    _V6("fec0::/10"),
    _V6("ff00::/8"),
)
_NAT64 = _V6("64:ff9b::/96")
_V4_COMPATIBLE = _V6("::/96")
_LOOPBACK_V4 = _V4("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


_HOST_ECHO_CHARS = 64


def _short(host: str) -> str:
    """A host name as error texts quote it: at most 64 characters (a client-chosen name of 250
    characters is the client's text, not ours to echo)."""
    return repr(host) if len(host) <= _HOST_ECHO_CHARS else repr(host[: _HOST_ECHO_CHARS - 3] + "...")


class FetchError(Exception):
    """The URL cannot be downloaded; `reason` is written for the user who supplied it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DownloadTooLarge(FetchError):
    """The body exceeds the byte limit: callers answer 413 (or their document's own message)."""


@dataclass(frozen=True)
class FetchResult:
    path: Path
    content_type: str
    size: int
    final_url: str


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _v4_public(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in _BLOCKED_V4)


def refusal_reason(ip: IPAddress, allow_loopback: bool = False) -> str | None:
    """None when `ip` may be contacted; else why not (for logs and the user's message).

    allow_loopback admits exactly 127.0.0.0/8 and ::1 as written, never their IPv6 wrappings.
    """
    if allow_loopback and (ip == _LOOPBACK_V6 or (ip.version == 4 and ip in _LOOPBACK_V4)):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return None if _v4_public(ip) else f"{ip} is a private, loopback or reserved address"
    embedded = _embedded_v4(ip)
    if embedded is not None:
        if _v4_public(embedded):
            return None
        return f"{ip} embeds the non-public IPv4 address {embedded}"
    if any(ip in net for net in _BLOCKED_V6) or not ip.is_global:
        return f"{ip} is a private, loopback or reserved address"
    return None


class PinnedResolver(AbstractResolver):
    """Answers only for the one host it was built for, with the addresses already checked."""

    def __init__(self, host: str, addresses: list[IPAddress]) -> None:
        self.host = host
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(f"host {host!r} was not checked for this connection")
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET if ip.version == 4 else socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self.addresses
        ]

    async def close(self) -> None:
        return None


def _numeric_ipv4(host: str) -> bool:
    """Whether the C resolver takes `host` for an IPv4 address (inet_aton: dotted quads, and
    also decimal, octal and hex numbers and fewer than four parts, the forms `ipaddress` refuses)."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


async def resolve_checked(url: URL, allow_loopback: bool) -> list[IPAddress]:
    """All addresses of the URL's host, or FetchError if any one of them is not public."""
    if url.scheme not in ("http", "https"):
        raise FetchError("Only http:// and https:// URLs are supported.")
    host = url.raw_host
    if not host:
        raise FetchError("The URL has no host name.")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        if _numeric_ipv4(host):
            raise FetchError(
                f"The host {_short(host)} is an IPv4 address in a non-standard form; "
                "write it as four decimal numbers (a.b.c.d)."
            ) from None
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, url.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError(f"The host name {_short(host)} could not be resolved.") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))
    if not addresses:
        raise FetchError(f"The host name {_short(host)} could not be resolved.")
    for ip in addresses:
        if refusal_reason(ip, allow_loopback) is not None:
            # One bad record refuses the host: a client could otherwise mix public and private.
            raise FetchError("The URL points to a private or reserved network address, which is not allowed.")
    return addresses


async def url_refusal(url: str, settings: Settings) -> str | None:
    """Why `url` may not be called (the rules above), or None; for URLs kept for later (webhooks)."""
    try:
        await resolve_checked(URL(url.strip()), settings.allow_loopback_urls)
    except FetchError as exc:
        return exc.reason
    except ValueError:
        return "The URL is not valid."
    return None


@dataclass
class _Hop:
    """One checked request with its own pinned session; closing it closes both."""

    session: aiohttp.ClientSession
    response: aiohttp.ClientResponse

    async def close(self) -> None:
        self.response.release()
        await self.session.close()


async def _open(url: URL, settings: Settings, timeout: aiohttp.ClientTimeout) -> _Hop:
    addresses = await resolve_checked(url, settings.allow_loopback_urls)
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(url.raw_host or "", addresses), use_dns_cache=False, limit=1
    )
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)
    try:
        response = await session.get(
            url, allow_redirects=False, headers={"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        )
    except BaseException:
        await session.close()
        raise
    return _Hop(session, response)


async def _follow(url: URL, settings: Settings, timeout: aiohttp.ClientTimeout) -> _Hop:
    for _ in range(settings.download_max_redirects + 1):
        hop = await _open(url, settings, timeout)
        status = hop.response.status
        if status not in _REDIRECTS:
            return hop
        location = hop.response.headers.get("Location", "")
        await hop.close()
        if not location:
            raise FetchError(f"The server sent a redirect (HTTP {status}) without a location.")
        url = url.join(URL(location))
    raise FetchError(f"Too many redirects (more than {settings.download_max_redirects}).")


async def _stream(response: aiohttp.ClientResponse, dest: Path, limit: int) -> int:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise DownloadTooLarge(f"The file is too large ({declared} bytes; the limit is {limit} bytes).")
    size = 0
    with dest.open("wb") as out:
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise DownloadTooLarge(f"The file is too large (over the limit of {limit} bytes).")
            out.write(chunk)
    return size


async def fetch_to_file(
    url: str, dest: Path, settings: Settings, *, max_bytes: int | None = None
) -> FetchResult:
    limit = settings.download_max_bytes if max_bytes is None else max_bytes
    deadline = settings.download_timeout_s
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError("The URL is not valid.") from exc
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(deadline, 15.0))
    try:
        async with compat.timeout(deadline):
            hop = await _follow(parsed, settings, timeout)
            response = hop.response
            try:
                if response.status != 200:
                    raise FetchError(
                        f"Downloading the URL failed: the server answered HTTP {response.status}."
                    )
                size = await _stream(response, dest, limit)
                content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                final_url = str(response.url)
            finally:
                await hop.close()
    except BaseException as exc:
        dest.unlink(missing_ok=True)
        if isinstance(exc, TimeoutError):
            raise FetchError(f"Downloading the URL took longer than {deadline:g}s.") from None
        if isinstance(exc, aiohttp.ClientError | OSError) and not isinstance(exc, FetchError):
            # the library's exception class is not the caller's business (it names our stack)
            raise FetchError("Downloading the URL failed: could not connect or read.") from None
        raise
    return FetchResult(dest, content_type, size, final_url)

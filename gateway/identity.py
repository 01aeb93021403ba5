"""How the service names itself on the wire: the `Server` header of every response and the
`User-Agent` of every outbound request (URL fetches, webhook deliveries). Replaces aiohttp's
defaults (`Python/3.11 aiohttp/3.x`), which tell a caller which library versions to look up
vulnerabilities for; the service's own name and release version are what an operator on the
other end needs to find us."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

SERVICE_NAME = "matting-service"

try:
    SERVICE_VERSION = version(SERVICE_NAME)
except PackageNotFoundError:  # running from a source tree that was never installed
    SERVICE_VERSION = "0"

SERVER = f"{SERVICE_NAME}/{SERVICE_VERSION}"
USER_AGENT = f"{SERVICE_NAME}/{SERVICE_VERSION} (URL fetcher)"
WEBHOOK_USER_AGENT = f"{SERVICE_NAME}/{SERVICE_VERSION} (webhooks)"


async def set_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before aiohttp's own `setdefault(Server, ...)`."""
    response.headers["Server"] = SERVER

"""GET /openapi.json (gateway.openapi's document) and GET /docs (Swagger UI on it).

Swagger UI comes from the swagger-ui-py wheel (its packaged dist, served from /docs/static/):
nothing is loaded from a CDN, so the page works where the service cannot reach the internet.
"""

from __future__ import annotations

import json

from aiohttp import web
from swagger_ui.core import ApplicationDocument

from gateway.keys import SETTINGS
from gateway.openapi import document

routes = web.RouteTableDef()

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"


@routes.get(OPENAPI_PATH)
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SETTINGS]))


def add_docs_page(app: web.Application) -> None:
    """Registers /docs, /docs/ and /docs/static/* (the library's own aiohttp handlers)."""
    page = ApplicationDocument(
        app, app_type="aiohttp", config_rel_url=OPENAPI_PATH, url_prefix=DOCS_PATH, title="Matting service"
    )
    # The library puts the document under the page's prefix; ours is served at the root.
    page.parameters["url"] = json.dumps(OPENAPI_PATH)
    page.match_handler()(page)

"""The aiohttp application keys: a leaf module that handlers and the app factory both import, so
the app and its routes never import each other. (The request id's key lives in gateway.errors,
which every layer of the web code imports and which must not depend on the clients below.)

AppKeys compare by identity; with them here, `python -m gateway.app` (where app.py runs as
`__main__`) still shares exactly one copy of each with the route modules.
"""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from common.settings import Settings
from gateway.jobs import JobStore
from gateway.storage import Storage
from gateway.triton import Triton

SETTINGS = web.AppKey("settings", Settings)
TRITON = web.AppKey("triton", Triton)
REDIS = web.AppKey("redis", Redis)
JOBS = web.AppKey("jobs", JobStore)
STORAGE = web.AppKey("storage", Storage)

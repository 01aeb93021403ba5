"""api_token header -> owner id (the token's SHA-256), compared in constant time.

The clear token is hashed once and never stored, logged or echoed; the owner id is what job
records, rate limits and concurrency slots are keyed by.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from common.settings import hash_token
from gateway.errors import Family, api_error
from gateway.keys import SETTINGS

TOKEN_HEADER = "api_token"


def _known(candidate: str, hashes: frozenset[str]) -> bool:
    # Compare against every configured hash without stopping early, so timing reveals nothing.
    found = False
    for known in hashes:
        found |= hmac.compare_digest(candidate, known)
    return found


def require_owner(request: web.Request, family: Family) -> str:
    """The caller's owner id, or the family's auth error (mask: 403, background: 401)."""
    token = request.headers.get(TOKEN_HEADER, "").strip()
    if token:
        owner = hash_token(token)
        if _known(owner, request.app[SETTINGS].api_token_hashes):
            return owner
    if family == "mask":
        raise api_error("mask", 403, "Forbidden", "Missing or invalid api_token header.")
    raise api_error("bg", 401, "Missing or invalid api_token header.")

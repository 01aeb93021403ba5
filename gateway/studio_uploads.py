"""Videos handed to the studio (POST /studio/uploads), reachable through signed, expiring links.

A browser's <video> element cannot send an api_token header and /mask_by_key_points takes a URL,
so an uploaded (or once-fetched) video gets a link whose signature is the credential, like a
result's mask_url. The file sits beside the jobs' inputs (`uploads/<upload_id>/video`, shared
with the workers), so the janitor's sweep of stale upload dirs removes it; the link expires with
`SIGNED_LINK_TTL_S`. When a mask job or a preview is given such a link, the gateway copies the
file it already holds instead of downloading itself over the network (`local_file`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from yarl import URL

from common.compat import UTC
from common.settings import Settings
from gateway.storage import is_job_id, uploads_root

UPLOADS_PATH = "/studio/uploads"
FILE_NAME = "video"


def _signature(settings: Settings, upload_id: str, expires: int) -> str:
    # "upload:" keeps a result link's signature (job id + expiry) from opening an upload.
    msg = f"upload:{upload_id}:{expires}".encode()
    return hmac.new(settings.signing_secret, msg, hashlib.sha256).hexdigest()


def upload_file(settings: Settings, upload_id: str) -> Path:
    """Where the upload `upload_id` (a uuid4) lives; raises ValueError for any other id."""
    if not is_job_id(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return uploads_root(settings) / upload_id / FILE_NAME


def signed_link(settings: Settings, upload_id: str) -> tuple[str, datetime]:
    """(absolute URL under the public base URL, expiry as an aware UTC datetime)."""
    expires = int(time.time()) + settings.signed_link_ttl_s
    query = urlencode({"expires": expires, "sig": _signature(settings, upload_id, expires)})
    return f"{settings.base_url}{UPLOADS_PATH}/{upload_id}?{query}", datetime.fromtimestamp(expires, tz=UTC)


def verify(settings: Settings, upload_id: str, expires: str, sig: str) -> bool:
    """True for an unexpired link this service signed for `upload_id`."""
    try:
        expires_at = int(expires)
    except ValueError:
        return False
    if expires_at < time.time() or not is_job_id(upload_id):
        return False
    return hmac.compare_digest(_signature(settings, upload_id, expires_at), sig)


def local_file(url: str, settings: Settings) -> Path | None:
    """The file behind `url` when it is a valid upload link of this service (None otherwise, or
    when the file is gone: the caller then downloads it and reports what the network says)."""
    try:
        parsed, base = URL(url.strip()), URL(settings.base_url)
        same_origin = parsed.absolute and parsed.origin() == base.origin()
    except (ValueError, TypeError):  # no host ("http://"), bad port: not ours; the fetch says why
        return None
    prefix = f"{base.path.rstrip('/')}{UPLOADS_PATH}/"
    if not same_origin or not parsed.path.startswith(prefix):
        return None
    upload_id = parsed.path.removeprefix(prefix)
    if not verify(settings, upload_id, parsed.query.get("expires", ""), parsed.query.get("sig", "")):
        return None
    path = upload_file(settings, upload_id)
    return path if path.is_file() else None

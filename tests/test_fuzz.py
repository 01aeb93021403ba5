"""Hostile input through the real endpoints of a real gateway process: hypothesis-generated JSON
bodies and multipart forms, and mutated real media (bit flips, truncation, header corruption).

Bar for every case: an answer within the client timeout (no hang), the gateway still alive (no
crash), no 5xx but 503, and every error body in the endpoint family's documented format.
Case counts (derandomized, so every run sends the same requests) are in the test names and in
docs/reliability.md. The gateway queues into its own Redis database that no worker reads, so
accepted hostile jobs cost nothing; the end-to-end test sends a few mutated clips through the
session worker to show a broken stream ends as a failed job, never a hung or crashed worker.

Limits checked before decoding (resolution, duration, upload size, body size) have their own tests
at the end, against the same gateway with low limits.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import redis
from conftest import IMAGES, TEST_TOKEN, VIDEOS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import ClipSpec, make_clip, serve

from common.settings import Settings
from devstack.app_services import gateway_service
from devstack.processes import Service, free_port
from gateway.app import ROUTE_TABLES

REQUEST_TIMEOUT_S = 30.0
DB = 8
TOKEN = f"fuzz-{uuid.uuid4().hex}"
FUZZ = settings(
    deadline=None,  # each request has its own timeout; hypothesis' deadline would only add flakiness
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# `make fuzz` runs every generated test x FUZZ_SCALE (the campaign, >= 10,000 cases; the names
# give the x1 counts the default suite runs). Derandomized: each scale sends the same requests
# every run.
FUZZ_SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def fuzz(cases: int) -> settings:
    return settings(FUZZ, max_examples=max(1, round(cases * FUZZ_SCALE)))


# Limits of the fuzz gateway: low enough that the real 720p clips (9.7 s, 1.7 MB) cross each one.
LIMITS = {
    "VIDEO_MAX_SIDE": "1000",
    "VIDEO_MAX_DURATION_S": "5",
    "MAX_UPLOAD_BYTES": "1000000",
    "MAX_REQUEST_BYTES": "2000000",
    "DOWNLOAD_TIMEOUT_S": "5",
}


def _has_route(path: str) -> bool:
    return any(getattr(r, "path", None) == path for table in ROUTE_TABLES for r in table)


# --- the fuzz gateway and media ---


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-media")
    make_clip(VIDEOS / "01_dog.mp4", root, ClipSpec("small.mp4", "libx264"))
    make_clip(VIDEOS / "04_coffee.mp4", root, ClipSpec("small.webm", "libvpx-vp9", options={"cpu-used": "8"}))
    make_clip(
        VIDEOS / "01_dog.mp4", root, ClipSpec("long.mp4", "libx264", width=160, height=90, duration_s=6)
    )
    (root / "mutated").mkdir()
    return root


@pytest.fixture(scope="module")
def media_url(media: Path) -> Iterator[str]:
    with serve(media, slow_delay_s=8) as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_gateway(stack: Any, redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("fuzz-gateway")
    redis_url = f"redis://127.0.0.1:{redis_port}/{DB}"
    settings_ = stack.settings.with_overrides(gateway_port=free_port(), redis_url=redis_url, data_dir=root)
    env = {
        "API_TOKENS": TOKEN,
        "ALLOW_LOOPBACK_URLS": "true",
        "RATE_LIMIT_PER_MINUTE": "0",
        "MAX_QUEUED_JOBS": "1000000",
        "MAX_CONCURRENT_JOBS_PER_TOKEN": "1000000",
        **LIMITS,
    }
    svc = gateway_service(settings_, root / "gateway.log", env)
    svc.settings = settings_  # type: ignore[attr-defined]
    svc.start()
    try:
        svc.wait_ready(60)
        yield svc
    finally:
        svc.stop()
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()


SENT: Counter[str] = Counter()  # requests sent per test: the case counts `make fuzz` reports
_RUNNING = ["-"]  # the test whose requests `send` counts


@pytest.fixture(autouse=True)
def _count_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    _RUNNING[0] = request.node.name
    yield
    report = os.environ.get("FUZZ_COUNTS")
    if report:  # make fuzz: the counts of the campaign, per test and in all
        Path(report).write_text(json.dumps({"total": sum(SENT.values()), **SENT}, indent=1) + "\n")


def send(
    gw: Service, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request (malformed bodies must reach the server as they are), with a timeout."""
    SENT[_RUNNING[0]] += 1
    s: Settings = gw.settings  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection(s.gateway_host, s.gateway_port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers={"api_token": TOKEN, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k: v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def file_form(field: str, filename: str, content_type: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A well-formed one-file multipart body (the file itself is what is hostile) and its header."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def check(gw: Service, family: str, status: int, headers: dict[str, str], raw: bytes) -> None:
    """The bar every hostile case must clear."""
    assert gw.alive(), f"gateway died; log tail:\n{gw.tail()}"
    assert status < 500 or status == 503, (status, raw[:500])
    if status < 400:
        return
    body = json.loads(raw)
    if family == "mask":
        assert set(body) == {"error", "request_id"}, body
        assert body["error"]["code"] == status and isinstance(body["error"]["message"], str)
        assert isinstance(body["error"]["details"], str) and body["request_id"] == headers["X-Request-ID"]
    else:
        assert isinstance(body, dict) and body, body
        assert set(body) <= {"message", "detail", "status"}, body
        assert isinstance(body.get("message", body.get("detail")), str), body


# --- strategies ---

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_URLS = [
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]:1/",
    "http://0x7f.1/",
    "http://10.0.0.1/v.mp4",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "http://user:pass@localhost:1/",
    "https://example.invalid/v.mp4",
    "http://127.0.0.1:1/closed.mp4",
    "",
    " " * 5000,
    "http://" + "a" * 3000 + ".com/",
]


def url_strategy(media_url: str) -> st.SearchStrategy[str]:
    served = [
        f"{media_url}/{p}" for p in ("small.mp4", "small.webm", "missing/x.mp4", "slow/x.mp4", "nope.mp4")
    ]
    return st.sampled_from(HOSTILE_URLS + served) | st.text(max_size=60)


def body_strategy(media_url: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """JSON objects built from the documented fields (each present, absent or of a wrong type),
    arbitrary JSON, and raw bytes that are not JSON at all."""
    documented = st.fixed_dictionaries({}, optional={k: v | JSON for k, v in fields.items()})
    extra = st.dictionaries(st.text(max_size=12), JSON, max_size=3)
    objects = st.builds(lambda a, b: {**b, **a}, documented, extra)
    as_json = (objects | JSON).map(lambda v: json.dumps(v).encode())
    encoded = st.builds(
        lambda v, enc: json.dumps(v, ensure_ascii=False).encode(enc, errors="replace"),
        objects,
        st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252"]),
    )
    return as_json | encoded | st.binary(max_size=300) | JSON_BOMBS


# bodies past the JSON bounds (gateway/bounded.py): depth, element count, integer digits, size
JSON_BOMBS = st.one_of(
    st.integers(33, 200_000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(33, 5_000).map(lambda d: b'{"video":' * d + b"1" + b"}" * d),
    st.integers(101, 20_000).map(lambda n: b'{"video": ' + b"9" * n + b"}"),
    st.integers(10_001, 40_000).map(lambda n: b"[" + b"0," * n + b"0]"),
    st.integers(65_537, 3_000_000).map(lambda n: b'{"video": "' + b"x" * n + b'"}'),
)


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=utf-16",
    ]
)


# --- JSON endpoints ---


def test_foreground_mask_json_bodies_150_cases(fuzz_gateway: Service, media_url: str) -> None:
    fields = {
        "video": url_strategy(media_url),
        "output_container_and_codec": st.sampled_from(["mp4_h264", "gif", "MP4_H264", "avi"])
        | st.text(max_size=8),
    }

    @fuzz(150)
    @given(body=body_strategy(media_url, fields), content_type=CONTENT_TYPES)
    def case(body: bytes, content_type: str) -> None:
        status, headers, raw = send(
            fuzz_gateway, "POST", "/foreground_mask", body, {"Content-Type": content_type}
        )
        check(fuzz_gateway, "mask", status, headers, raw)
        assert status in (202, 400, 413, 415, 422), (status, raw[:300])

    case()


def test_mask_by_key_points_json_bodies_150_cases(fuzz_gateway: Service, media_url: str) -> None:
    if not _has_route("/mask_by_key_points"):
        pytest.skip("POST /mask_by_key_points has not landed yet")
    point = st.fixed_dictionaries(
        {},
        optional={
            "x": st.integers() | JSON,
            "y": st.integers() | JSON,
            "type": st.sampled_from(["positive", "negative"]) | JSON,
        },
    )
    fields = {
        "video": url_strategy(media_url),
        "frame_index": st.integers(-5, 10**9),
        "key_points": st.lists(point, max_size=6),
        "auto_trim": st.booleans(),
        "output_container_and_codec": st.sampled_from(["mp4_h264", "gif"]) | st.text(max_size=8),
    }

    @fuzz(150)
    @given(body=body_strategy(media_url, fields), content_type=CONTENT_TYPES)
    def case(body: bytes, content_type: str) -> None:
        status, headers, raw = send(
            fuzz_gateway, "POST", "/mask_by_key_points", body, {"Content-Type": content_type}
        )
        check(fuzz_gateway, "mask", status, headers, raw)
        assert status in (202, 400, 413, 415, 422), (status, raw[:300])

    case()


# --- multipart forms ---

PART_NAMES = ["file", "image", "image_file", "bg_color", "bg_image", "bg_image_url", "output_format", "color",
              "gradient", "blur_radius", "shadow", "format", "x"]  # fmt: skip


@st.composite
def multipart(draw: st.DrawFn, payloads: list[bytes]) -> tuple[bytes, str]:
    """A form whose parts, names, file names, content types, values and boundary are all drawn;
    sometimes the declared boundary is not the one used, or the closing delimiter is missing."""
    boundary = draw(
        st.text(
            st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='";\\'),
            min_size=1,
            max_size=70,
        )
    )
    declared = draw(st.sampled_from([boundary, boundary, boundary, "other" + boundary, ""]))
    chunks: list[bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(PART_NAMES) | st.text(max_size=10))
        disposition = f'form-data; name="{name}"'
        if draw(st.booleans()):
            disposition += f'; filename="{draw(st.text(max_size=20))}"'
        ctype = draw(
            st.sampled_from(
                ["video/mp4", "image/png", "image/jpeg", "application/octet-stream", "text/plain", ""]
            )
        )
        value = draw(
            st.sampled_from(payloads)
            | st.binary(max_size=200)
            | st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass"))
        )
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        chunks.append(head.encode("utf-8", "surrogatepass") + b"\r\n" + value + b"\r\n")
    if draw(st.booleans()):
        chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(
        chunks
    ), f"multipart/form-data; boundary={declared}" if declared else "multipart/form-data"


def _small_payloads(media: Path) -> list[bytes]:
    image = next(iter(sorted((IMAGES / "sod_bsds300" / "images").glob("*.jpg")))).read_bytes()
    return [(media / "small.mp4").read_bytes(), image, b"255,0,0", b"mov", b"http://169.254.169.254/"]


def test_video_submit_multipart_forms_120_cases(fuzz_gateway: Service, media: Path) -> None:
    payloads = _small_payloads(media)

    @fuzz(120)
    @given(form=multipart(payloads))
    def case(form: tuple[bytes, str]) -> None:
        body, content_type = form
        status, headers, raw = send(
            fuzz_gateway, "POST", "/video/submit/v1", body, {"Content-Type": content_type}
        )
        check(fuzz_gateway, "bg", status, headers, raw)
        assert status in (202, 400, 413, 415, 422), (status, raw[:300])

    case()
    staging = fuzz_gateway.settings.tmp_dir  # type: ignore[attr-defined]
    assert not any(staging.glob("upload-*")), "a refused upload left its staging dir behind"


IMAGE_ENDPOINTS = [
    *(f"/image/{name}/v1" for name in ("matte", "blur", "color", "gradient", "shadow")),
    "/image/hd/submit/v1",
]


def test_image_endpoints_multipart_forms_120_cases(fuzz_gateway: Service, media: Path) -> None:
    endpoints = [e for e in IMAGE_ENDPOINTS if _has_route(e)]
    if not endpoints:
        pytest.skip("the image endpoints have not landed yet")
    payloads = _small_payloads(media)

    @fuzz(120)
    @given(form=multipart(payloads), path=st.sampled_from(endpoints))
    def case(form: tuple[bytes, str], path: str) -> None:
        body, content_type = form
        status, headers, raw = send(fuzz_gateway, "POST", path, body, {"Content-Type": content_type})
        check(fuzz_gateway, "bg", status, headers, raw)

    case()


# --- mutated real media ---


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    buf = bytearray(data)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 64)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        buf = buf[: rng.randrange(1, len(buf))]
    elif kind == "header":  # the first KiB holds the container header (ftyp/moov start, EBML, SOI)
        for _ in range(rng.randint(1, 16)):
            buf[rng.randrange(min(1024, len(buf)))] = rng.randrange(256)
    elif kind == "splice":  # a block of the file copied elsewhere: lengths and offsets now lie
        a, b = sorted(rng.sample(range(len(buf)), 2))
        at = rng.randrange(len(buf))
        buf[at:at] = buf[a : min(b, a + 4096)]
    return bytes(buf)


MUTATIONS = st.sampled_from(["bitflip", "truncate", "header", "splice"])


def test_mutated_real_videos_upload_and_url_60_cases(
    fuzz_gateway: Service, media: Path, media_url: str
) -> None:
    sources = [media / "small.mp4", media / "small.webm", VIDEOS / "06_pingpong.mp4"]
    originals = {p: p.read_bytes() for p in sources}

    @fuzz(60)
    @given(source=st.sampled_from(sources), kind=MUTATIONS, seed=st.integers(0, 2**32), via_url=st.booleans())
    def case(source: Path, kind: str, seed: int, via_url: bool) -> None:
        data = mutate(originals[source], kind, random.Random(seed))
        if via_url:
            name = f"mutated/{seed}{source.suffix}"
            (media / name).write_bytes(data)
            body = json.dumps({"video": f"{media_url}/{name}"}).encode()
            status, headers, raw = send(
                fuzz_gateway, "POST", "/foreground_mask", body, {"Content-Type": "application/json"}
            )
            check(fuzz_gateway, "mask", status, headers, raw)
        else:
            form, ctype = file_form("file", f"v{source.suffix}", "video/mp4", data)
            status, headers, raw = send(
                fuzz_gateway,
                "POST",
                "/video/submit/v1",
                form,
                ctype,
            )
            check(fuzz_gateway, "bg", status, headers, raw)
        assert status in (202, 400, 413, 415, 422), (status, raw[:300])

    case()


def test_mutated_real_images_40_cases(fuzz_gateway: Service) -> None:
    endpoints = [e for e in IMAGE_ENDPOINTS if _has_route(e)]
    if not endpoints:
        pytest.skip("the image endpoints have not landed yet")
    sources = sorted((IMAGES / "sod_bsds300" / "images").glob("*.jpg"))[:3] + [
        IMAGES / "alphamatting_gt01" / "GT01_image.png"
    ]
    originals = {p: p.read_bytes() for p in sources}

    @fuzz(40)
    @given(
        source=st.sampled_from(sources),
        kind=MUTATIONS,
        seed=st.integers(0, 2**32),
        path=st.sampled_from(endpoints),
    )
    def case(source: Path, kind: str, seed: int, path: str) -> None:
        data = mutate(originals[source], kind, random.Random(seed))
        form, ctype = file_form("image", f"i{source.suffix}", "image/jpeg", data)
        status, headers, raw = send(fuzz_gateway, "POST", path, form, ctype)
        check(fuzz_gateway, "bg", status, headers, raw)

    case()


async def test_mutated_clips_end_in_a_terminal_state_on_the_real_worker(stack: Any, media: Path) -> None:
    """4 mutated clips that still probe (the gateway accepts them) go through the session worker."""
    import aiohttp
    from faults import submit_mask, wait_status

    mutated = media / "e2e"
    mutated.mkdir(exist_ok=True)
    data = (media / "small.mp4").read_bytes()
    cases = {
        "flips.mp4": mutate(data, "bitflip", random.Random(1)),
        "cut.mp4": data[: len(data) * 2 // 3],
        "mdat.mp4": data[: data.find(b"mdat") + 3000] + bytes(len(data) - data.find(b"mdat") - 3000),
        "splice.mp4": mutate(data, "splice", random.Random(3)),
    }
    for name, content in cases.items():
        (mutated / name).write_bytes(content)
    headers = {"api_token": TEST_TOKEN}
    outcomes: dict[str, str] = {}
    with serve(mutated) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            for name in cases:
                async with http.post(
                    f"{stack.url}/foreground_mask", json={"video": f"{url}/{name}"}, headers=headers
                ) as r:
                    body = await r.json()
                    if r.status != 202:  # refused at the door: a documented error is fine too
                        check(stack.gateway, "mask", r.status, dict(r.headers), json.dumps(body).encode())
                        outcomes[name] = str(r.status)
                        continue
                job_id = body["request_id"]
                started = time.monotonic()
                final = await wait_status(http, stack.url, headers, job_id, timeout_s=120)
                if final["status"] == "failed":
                    assert final["error"]["message"] and final["error"]["details"]
                outcomes[name] = f"{final['status']} in {time.monotonic() - started:.1f}s"
            _ = await submit_mask(http, stack.url, headers, f"{url}/flips.mp4")  # still accepting work
    print(outcomes)
    assert all(w.alive() for w in stack.workers)


# --- query strings and path parameters ---

PATH_SEGMENTS = st.sampled_from(
    [
        "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%00", "a" * 5000, "6b1f3f8e-2f43-4a51-9d9c-2c4b0f1f6e11",
        "%ff%fe", "%c0%ae%c0%ae", "\\..\\", "~root", "*", "{uuid}", "%25", "%20%20", "%20", ";x=1",
    ]
) | st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=60
).map(lambda t: quote(t, safe=""))  # fmt: skip
QUERY_KEYS = st.sampled_from(["expires", "signature", "sig", "token", "api_token", "page", "x"])


def test_query_strings_and_path_parameters_60_cases(fuzz_gateway: Service) -> None:
    """Path parameters (ids, traversal, encodings, long) and query strings on every GET route."""
    templates = [
        ("/status/{}", "mask"),
        ("/results/{}", "mask"),
        ("/video/result/{}", "bg"),
        ("/image/hd/result/{}", "bg"),
        ("/healthz/{}", "bg"),
        ("/studio/uploads/{}", "mask"),
        ("/studio/static/{}", "mask"),
    ]
    query = st.lists(st.tuples(QUERY_KEYS | st.text(max_size=10), st.text(max_size=80)), max_size=6)

    @fuzz(60)
    @given(template=st.sampled_from(templates), segment=PATH_SEGMENTS, pairs=query, auth=st.booleans())
    def case(template: tuple[str, str], segment: str, pairs: list[tuple[str, str]], auth: bool) -> None:
        path, family = template
        target = path.format(segment) + ("?" + urlencode(pairs) if pairs else "")
        headers = {} if auth else {"api_token": ""}
        status, response_headers, raw = send(fuzz_gateway, "GET", target, b"", headers)
        check(fuzz_gateway, family, status, response_headers, raw)
        assert status in (200, 202, 400, 401, 403, 404, 410, 413, 414, 422, 429), (status, raw[:300])

    case()


# --- limits checked before decoding ---


def test_video_resolution_over_limit_refused_from_the_probe(fuzz_gateway: Service, media_server: str) -> None:
    """A real 1280x720 clip against VIDEO_MAX_SIDE=1000: 413 from the container probe, nothing queued."""
    body = json.dumps({"video": f"{media_server}/videos/06_pingpong.mp4"}).encode()
    status, headers, raw = send(
        fuzz_gateway, "POST", "/foreground_mask", body, {"Content-Type": "application/json"}
    )
    check(fuzz_gateway, "mask", status, headers, raw)
    assert status == 413 and "1280x720" in json.loads(raw)["error"]["details"]


def test_video_duration_over_limit_refused_from_the_probe(fuzz_gateway: Service, media_url: str) -> None:
    """A 6 s clip against VIDEO_MAX_DURATION_S=5: 422 from the container's duration, before decoding."""
    body = json.dumps({"video": f"{media_url}/long.mp4"}).encode()
    status, headers, raw = send(
        fuzz_gateway, "POST", "/foreground_mask", body, {"Content-Type": "application/json"}
    )
    check(fuzz_gateway, "mask", status, headers, raw)
    assert status == 422 and "5s limit" in json.loads(raw)["error"]["details"]


def test_upload_over_limit_refused_while_streaming(fuzz_gateway: Service) -> None:
    """A 1.7 MB real clip against MAX_UPLOAD_BYTES=1 MB: 413 and the partial file removed."""
    form, ctype = file_form("file", "v.mp4", "video/mp4", (VIDEOS / "01_dog.mp4").read_bytes())
    status, headers, raw = send(fuzz_gateway, "POST", "/video/submit/v1", form, ctype)
    check(fuzz_gateway, "bg", status, headers, raw)
    assert status == 413 and "1000000" in json.loads(raw)["detail"]
    assert not any(fuzz_gateway.settings.tmp_dir.glob("upload-*"))  # type: ignore[attr-defined]


def test_json_body_over_limit_is_413(fuzz_gateway: Service) -> None:
    """MAX_REQUEST_BYTES=2 MB: a 3 MB JSON body is refused with the mask family's 413."""
    body = json.dumps({"video": "http://x/" + "a" * 3_000_000}).encode()
    status, headers, raw = send(
        fuzz_gateway, "POST", "/foreground_mask", body, {"Content-Type": "application/json"}
    )
    check(fuzz_gateway, "mask", status, headers, raw)
    assert status == 413


def test_image_decompression_bomb_refused_from_the_header() -> None:
    """A 20000x20000 PNG of 60 KB: refused from its header, before a pixel is decoded."""
    import io

    from PIL import Image

    from triton_models.decode import ImageTooLarge, Limits, decode

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG", optimize=True)
    assert len(buf.getvalue()) < 200_000
    started = time.monotonic()
    with pytest.raises(ImageTooLarge):
        decode(buf.getvalue(), Limits(max_side=None, max_pixels=100_000_000))
    assert time.monotonic() - started < 1.0

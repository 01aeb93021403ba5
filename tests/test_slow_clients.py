"""Slow and vanished clients on a real gateway process with short timeouts: an idle socket,
headers trickled a line at a time and a body trickled a byte at a time are all cut; a client
that leaves mid-body is logged as 499 at INFO, with no ERROR line and no 500."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_TOKEN

from common.settings import Settings
from devstack.app_services import gateway_service
from devstack.processes import Service, free_port

IDLE_S = 2.0
WINDOW_S = 1.0


@pytest.fixture(scope="module")
def slow_gateway(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("slow-gateway")
    settings = Settings().with_overrides(
        gateway_port=free_port(), redis_url=f"redis://127.0.0.1:{redis_port}/9", data_dir=root
    )
    env = {
        "API_TOKENS": TEST_TOKEN,
        "HTTP_IDLE_TIMEOUT_S": str(IDLE_S),
        "HTTP_BODY_WINDOW_S": str(WINDOW_S),
        "HTTP_BODY_MIN_BYTES_PER_S": "100",
    }
    svc = gateway_service(settings, root / "gateway.log", env)
    svc.settings = settings  # type: ignore[attr-defined]
    svc.log_path = root / "gateway.log"  # type: ignore[attr-defined]
    svc.start()
    try:
        svc.wait_ready(60)
        yield svc
    finally:
        svc.stop()


def _connect(gw: Service) -> socket.socket:
    s: Settings = gw.settings  # type: ignore[attr-defined]
    sock = socket.create_connection((s.gateway_host, s.gateway_port), timeout=30)
    sock.settimeout(0.2)
    return sock


def _closed_within(
    sock: socket.socket, seconds: float, trickle: list[bytes] | None = None
) -> tuple[float, bytes]:
    """Send `trickle` one item every 0.5 s while reading; (seconds until the server closed, what it sent)."""
    started = time.monotonic()
    received = b""
    pending = list(trickle or [])
    next_send = started
    while time.monotonic() - started < seconds:
        if pending and time.monotonic() >= next_send:
            try:
                sock.sendall(pending.pop(0))
            except OSError:
                return time.monotonic() - started, received
            next_send += 0.5
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started, received
        if not chunk:
            return time.monotonic() - started, received
        received += chunk
    raise AssertionError(f"connection still open after {seconds}s")


def test_idle_socket_is_closed(slow_gateway: Service) -> None:
    with _connect(slow_gateway) as sock:
        took, _ = _closed_within(sock, IDLE_S + 5)
    assert took >= IDLE_S - 0.5


def test_headers_trickled_a_line_at_a_time_are_cut(slow_gateway: Service) -> None:
    lines = [b"GET /healthz HTTP/1.1\r\n"] + [f"X-Pad-{i}: {i}\r\n".encode() for i in range(100)]
    with _connect(slow_gateway) as sock:
        took, received = _closed_within(sock, IDLE_S + 5, lines)
    assert received == b"" and took < IDLE_S + 2


def test_body_trickled_a_byte_at_a_time_gets_408(slow_gateway: Service) -> None:
    head = (
        "POST /foreground_mask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"api_token: {TEST_TOKEN}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with _connect(slow_gateway) as sock:
        took, received = _closed_within(sock, 3 * WINDOW_S + 5, [head] + [b" "] * 60)
    assert received.startswith(b"HTTP/1.1 408"), received[:100]
    assert took < 3 * WINDOW_S + 2
    head_part, _, body = received.partition(b"\r\n\r\n")
    error = json.loads(body)  # the mask family's documented format, not an empty body
    assert error["error"]["code"] == 408 and error["error"]["message"] == "Request Timeout"
    assert f"X-Request-ID: {error['request_id']}".encode() in head_part
    deadline = time.monotonic() + 10  # the access log says what the client was sent, not 499
    access: list[dict] = []
    while time.monotonic() < deadline and not access:
        access = [line for line in _log_lines(slow_gateway) if line.get("request_id") == error["request_id"]]
        access = [line for line in access if "status" in line]
        time.sleep(0.2)
    assert access and access[0]["status"] == 408, access


def _log_lines(gw: Service) -> list[dict]:
    path: Path = gw.log_path  # type: ignore[attr-defined]
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"raw": line})
    return lines


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/foreground_mask", "application/json"), ("/video/submit/v1", "multipart/form-data; boundary=b")],
)
def test_client_leaving_mid_body_is_499_not_an_error(
    slow_gateway: Service, path: str, content_type: str
) -> None:
    before = len(_log_lines(slow_gateway))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"api_token: {TEST_TOKEN}\r\nContent-Length: 20000\r\n\r\n"  # under the JSON limit
    ).encode()
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n' + b"x" * 500
    with _connect(slow_gateway) as sock:
        sock.sendall(head + body)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    access: list[dict] = []
    while time.monotonic() < deadline and not access:
        new = _log_lines(slow_gateway)[before:]
        access = [line for line in new if line.get("path") == path and "status" in line]
        time.sleep(0.2)
    assert access and access[0]["status"] == 499, new
    assert not [line for line in new if line.get("level") == "ERROR" or "Traceback" in str(line)], new

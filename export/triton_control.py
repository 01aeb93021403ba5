"""The few Triton calls the export tool makes: load a model into a running server, wait for it."""

from __future__ import annotations

import time

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


class ControlError(RuntimeError):
    """The server refused or failed to load the model."""


def client(url: str) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=url.removeprefix("grpc://"))


def load(url: str, name: str, timeout_s: float = 120.0) -> None:
    """Load (or reload, picking up new versions) one model; the server's other models are untouched."""
    triton = client(url)
    try:
        triton.load_model(name)
    except InferenceServerException as exc:
        hint = ""
        if "explicit" in str(exc) or "not allowed" in str(exc):
            hint = " (the server must run with --model-control-mode=explicit, as devstack starts it)"
        raise ControlError(f"loading {name!r} at {url} failed: {exc.message()}{hint}") from exc
    deadline = time.monotonic() + timeout_s
    while not triton.is_model_ready(name):
        if time.monotonic() > deadline:
            raise ControlError(f"{name!r} not ready at {url} after {timeout_s:.0f} s")
        time.sleep(0.2)

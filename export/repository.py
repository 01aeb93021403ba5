"""Writes model_repository/<model>/<version>/model.onnx and its manifest, atomically and only when
something changed.

The manifest (export.json beside model.onnx, git-ignored) records what the file was built from
(source checksum, wrapper version, options) and the file's own checksum, so a rerun can tell in
a few milliseconds of hashing that there is nothing to do, and a hand-edited model is rebuilt.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from export.sources import sha256_file

VERSION = "1"


@dataclass(frozen=True)
class Target:
    repository: Path
    model: str

    @property
    def onnx_path(self) -> Path:
        return self.repository / self.model / VERSION / "model.onnx"

    @property
    def manifest_path(self) -> Path:
        return self.repository / self.model / VERSION / "export.json"


def read_manifest(target: Target) -> dict[str, Any]:
    try:
        return dict(json.loads(target.manifest_path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, data: bytes) -> None:
    # Other processes (a running tritonserver, a colleague's test) may read the file right now:
    # they see the old or the new file, never half of one.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_manifest(target: Target, manifest: dict[str, Any]) -> None:
    _atomic_write(target.manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def is_current(target: Target, built_from: dict[str, Any]) -> bool:
    """True when model.onnx exists, is the file the manifest describes, and was built from the same inputs."""
    manifest = read_manifest(target)
    if manifest.get("built_from") != built_from or not target.onnx_path.is_file():
        return False
    return bool(sha256_file(target.onnx_path) == manifest.get("model_sha256"))


def write_model(target: Target, model: onnx.ModelProto, built_from: dict[str, Any]) -> dict[str, Any]:
    _atomic_write(target.onnx_path, model.SerializeToString())
    manifest = {"built_from": built_from, "model_sha256": sha256_file(target.onnx_path), "parity": None}
    write_manifest(target, manifest)
    return manifest


def record_parity(target: Target, parity: dict[str, Any]) -> None:
    manifest = read_manifest(target)
    manifest["parity"] = parity
    write_manifest(target, manifest)

"""What the model repository holds: models, versions, where each came from, checksums, and the
backend each config (CPU config.pbtxt, configs/<name>.pbtxt) runs it on."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from export import pbtxt
from export.adding import versions
from export.sources import SOURCES, sha256_file

WEIGHT_FILES = ("model.onnx", "model.plan", "sam_encoder.onnx")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    versions: list[int]
    source: str
    weights: str  # file name of the latest version's weights, "" for code-only models
    sha256: str
    configs: dict[str, str]  # "cpu" or configs/<name> -> backend or platform


def _backend(path: Path) -> str:
    try:
        config = pbtxt.read(path)
    except Exception as exc:  # a broken config is worth seeing in the listing, not a crash
        return f"unreadable ({type(exc).__name__})"
    return config.backend or config.platform or "?"


def _source(name: str, latest: Path | None, configs: dict[str, str]) -> str:
    if name in SOURCES:
        source = SOURCES[name]
        return f"{source.distribution} ({source.filename})"
    if latest is not None:
        try:
            built_from = json.loads((latest / "export.json").read_text())["built_from"]
        except (OSError, ValueError, KeyError):
            built_from = {}
        if "added" in built_from:
            return "added"
    if configs.get("cpu") == "ensemble":
        return "ensemble"
    return "code"  # Python models whose logic is the model.py itself


def scan(repository: Path) -> list[ModelEntry]:
    entries = []
    for model_dir in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        configs = {"cpu": _backend(model_dir / "config.pbtxt")}
        for extra in sorted((model_dir / "configs").glob("*.pbtxt")):
            configs[f"configs/{extra.stem}"] = _backend(extra)
        found = versions(model_dir)
        latest = model_dir / str(found[-1]) if found else None
        weights = next((f for f in WEIGHT_FILES if latest and (latest / f).is_file()), "")
        digest = sha256_file(latest / weights) if latest and weights else ""
        entries.append(
            ModelEntry(
                model_dir.name, found, _source(model_dir.name, latest, configs), weights, digest, configs
            )
        )
    return entries


def as_json(entries: list[ModelEntry]) -> str:
    return json.dumps([asdict(e) for e in entries], indent=2)


def as_table(entries: list[ModelEntry]) -> str:
    rows = [("MODEL", "VERSIONS", "SOURCE", "WEIGHTS (latest)", "SHA256", "CONFIGS")]
    for e in entries:
        rows.append(
            (
                e.name,
                ",".join(map(str, e.versions)) or "-",
                e.source,
                e.weights or "-",
                e.sha256[:12] or "-",
                "  ".join(f"{k}={v}" for k, v in e.configs.items()),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    )

"""Source -> checked raw graph -> wrapped graph -> repository, per shipped model, skipping the
work when the manifest says the file on disk was already built from the same inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export import repository, sources, wrap


@dataclass(frozen=True)
class Options:
    downsample_base: float | None = None  # None: wrap.RVM_DOWNSAMPLE_BASE

    def for_model(self, model: str) -> dict[str, Any]:
        if model == "rvm":
            return {"downsample_base": self.downsample_base or wrap.RVM_DOWNSAMPLE_BASE}
        return {}


@dataclass(frozen=True)
class Result:
    model: str
    source_path: Path
    target: repository.Target
    changed: bool


def export_one(source: sources.ModelSource, repo: Path, sources_dir: Path | None, options: Options) -> Result:
    path = sources.locate(source, sources_dir)
    digest = sources.verify_checksum(source, path)
    model_options = options.for_model(source.name)
    built_from = {
        "source_file": source.filename,
        "source_sha256": digest,
        "licence": source.licence,
        "wrapper_version": wrap.WRAPPER_VERSION,
        "options": model_options,
    }
    target = repository.Target(repo, source.name)
    if repository.is_current(target, built_from):
        return Result(source.name, path, target, changed=False)
    raw = sources.load_checked(source, path)
    wrapped = wrap.WRAPPERS[source.name](raw, **model_options)
    repository.write_model(target, wrapped, built_from)
    return Result(source.name, path, target, changed=True)


def export_all(repo: Path, sources_dir: Path | None, options: Options) -> list[Result]:
    return [export_one(source, repo, sources_dir, options) for source in sources.SOURCES.values()]


def parity_passed(target: repository.Target) -> bool:
    parity = repository.read_manifest(target).get("parity") or {}
    return bool(parity.get("passed"))

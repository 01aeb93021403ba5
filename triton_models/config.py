"""A model's config.pbtxt as the Python backend hands it to `initialize` (JSON in `args`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def model_config(args: Mapping[str, str]) -> dict[str, Any]:
    """The parsed `args["model_config"]`; raises KeyError without it, ValueError on bad JSON."""
    return dict(json.loads(args["model_config"]))


def parameter(config: Mapping[str, Any], key: str, default: str) -> str:
    """`parameters { key: ... value: { string_value: ... } }` of the config, `default` when the
    key is absent or its value empty (Triton passes every parameter as a string)."""
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return str(value) if value else default


def version_folder(args: Mapping[str, str]) -> Path:
    """`<model_repository>/<model>/<version>`: where the model's weights lie."""
    return Path(args["model_repository"]) / args["model_version"]

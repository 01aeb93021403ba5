"""Redis for the development stack (Debian's redis-server binary, installed by `make setup`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack.processes import Service, StackError, port_open


def redis_service(port: int, data_dir: Path, host: str = "127.0.0.1", password: str = "") -> Service:
    """Redis on `host`:`port` with append-only persistence in `data_dir`, so a restart loses no
    queued job. Off loopback Redis' protected mode refuses clients unless a `password` is set
    (clients then use redis://:PASSWORD@host:port/0). Raises StackError when no redis-server
    binary is on PATH."""
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server not found: run `make setup` (it installs Debian's redis-server)")
    argv = [
        binary,
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--protected-mode", "yes",
        *(["--requirepass", password] if password else []),
    ]  # fmt: skip
    return Service("redis", argv, lambda: port_open(host, port), data_dir / "redis.log")

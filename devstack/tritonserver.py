"""tritonserver for the development stack: the binary and Python backend carried by the
nvidia-pytriton wheel, laid out the way tritonserver expects them."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from common.settings import Settings
from devstack.processes import Service, free_port, http_ok

PY_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
# Where POSIX shared memory (shm_open) lives on Linux: the Python backend's regions are files here.
SHM_DIR = Path("/dev/shm")
# A start not ready after this long is taken as wedged and started again (Service): a model load
# here takes 5-30 s, two servers loading at once on 2 cores under the test suite ~10 s; the
# wedge (one model's load never completing) was seen in CI and in a clean-clone run, 5 min idle.
UNREADY_RESTART_S = 120.0


def _pytriton_root() -> Path:
    import pytriton  # the wheel that carries the tritonserver binary

    return Path(pytriton.__file__).resolve().parent


def prepare_backends(dest: Path) -> Path:
    """Lay out a Triton backend directory with the Python backend and the stub for this Python.

    The wheel keeps one stub per Python version apart from the backend; Triton expects the stub
    beside libtriton_python.so, so it is copied there once (cheap, idempotent).
    """
    root = _pytriton_root() / "tritonserver"
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / PY_VERSION / "triton_python_backend_stub",
    ]
    for src in sources:
        target = python_dir / src.name
        if not target.exists() or target.stat().st_size != src.stat().st_size:
            shutil.copy2(src, target)
    return dest


def triton_env() -> dict[str, str]:
    """Environment for tritonserver: the wheel's shared libraries and this venv's python first on
    PATH. No PYTHONPATH: the Python-backend stub runs in isolated mode and ignores it; the models
    import `triton_models` from the venv's site-packages (installed there like on a Triton host)."""
    libs = _pytriton_root().parent / "nvidia_pytriton.libs"
    ld = os.environ.get("LD_LIBRARY_PATH", "")
    # The Python-backend stubs run `python` from PATH: put this virtual environment first so the
    # models import the same numpy/onnxruntime the project pinned.
    venv_bin = str(Path(sys.executable).parent)
    return {
        "LD_LIBRARY_PATH": f"{libs}:{ld}" if ld else str(libs),
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
    }


def triton_service(
    settings: Settings,
    log_path: Path,
    backend_dir: Path,
    extra_args: Sequence[str] = (),
) -> Service:
    """tritonserver on `settings`' ports and model repository, every model loaded at start; ready
    when /v2/health/ready answers 200. `extra_args` are appended to the command line."""
    binary = _pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    prepare_backends(backend_dir)
    argv = [
        str(binary),
        f"--model-repository={settings.model_repository}",
        f"--backend-directory={backend_dir}",
        f"--http-address={settings.triton_host}",
        f"--http-port={settings.triton_http_port}",
        f"--grpc-address={settings.triton_host}",
        f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-port={settings.triton_metrics_port}",
        # Prometheus text at :metrics-port/metrics; CPU metrics (no GPU here), GPU ones on GPU hosts.
        "--allow-metrics=true",
        "--allow-cpu-metrics=true",
        "--log-verbose=0",
        "--exit-timeout-secs=10",
        "--strict-readiness=true",
        # Explicit control with every model loaded at start: the same models as the default
        # mode, plus the model control API, so `python -m export add --load` can add a model or
        # version without restarting the server or touching its other models.
        "--model-control-mode=explicit",
        "--load-model=*",
    ]
    if settings.triton_model_config_name:
        argv.append(f"--model-config-name={settings.triton_model_config_name}")
    # The Python backend unlinks its shared-memory regions only on a clean shutdown: a crashed or
    # killed server leaves them in /dev/shm (memory, ~1 MiB per model instance) for good. A
    # prefix of this server's own lets `release` find them once its process group is gone.
    shm_prefix = f"triton_python_backend_shm_region_{secrets.token_hex(6)}_"
    argv.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
    argv.extend(extra_args)
    ready_url = f"http://{settings.triton_host}:{settings.triton_http_port}/v2/health/ready"
    return Service(
        "tritonserver",
        argv,
        lambda: http_ok(ready_url),
        log_path,
        env=triton_env(),
        release=lambda: unlink_shm_regions(shm_prefix),
        restart_unready_after_s=UNREADY_RESTART_S,
    )


def unlink_shm_regions(prefix: str) -> int:
    """Unlink the shared-memory regions whose names start with `prefix` (a stopped server's);
    returns how many. A process that still maps one keeps its memory until it unmaps it."""
    gone = 0
    for region in SHM_DIR.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
            gone += 1
    return gone


@contextlib.contextmanager
def private_triton(
    repository: Path, workdir: Path, extra_args: Sequence[str] = (), timeout_s: float = 300.0
) -> Iterator[Settings]:
    """A tritonserver of its own serving `repository` on free loopback ports, for a check or a
    test; its log (tritonserver.log) and backend directory go under `workdir`. Yields the Settings
    that name its ports; stops it on exit. Raises StackError when it is not ready in `timeout_s`
    seconds."""
    settings = Settings(
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        model_repository=repository,
        data_dir=workdir,
    )
    svc = triton_service(settings, workdir / "tritonserver.log", workdir / "backends", extra_args)
    svc.start()
    try:
        svc.wait_ready(timeout_s)
        yield settings
    finally:
        svc.stop()

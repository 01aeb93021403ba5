"""Start, watch and stop the whole local stack: Redis, tritonserver, the gateway and arq workers.

`make run` is `python -m devstack.stack run` (foreground, Ctrl-C stops everything), `make up` /
`make down` run the same thing in the background. The test fixtures use the same functions to
start real Redis and tritonserver processes on free loopback ports, so what the tests exercise is
what a user runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from common.settings import REPO_ROOT, Settings

PY_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


class StackError(RuntimeError):
    """A service of the stack could not be started or did not become ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Service:
    """One child process with its log file and a readiness probe."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A new session so Ctrl-C in the terminal reaches only the launcher, which then stops the
        # children in order instead of all of them racing each other.
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(f"{self.name} exited early; last log lines:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.25)
        raise StackError(f"{self.name} not ready after {timeout_s:.0f}s; last log lines:\n{self.tail()}")

    def stop(self, timeout_s: float = 20.0, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- Redis ---------------------------------------------------------------------------------------


def redis_service(port: int, data_dir: Path) -> Service:
    """Redis with append-only persistence, so a restart loses no queued job."""
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server not found: run `make setup` (it installs Debian's redis-server)")
    argv = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--protected-mode", "yes",
    ]  # fmt: skip
    return Service("redis", argv, lambda: port_open("127.0.0.1", port), data_dir / "redis.log")


# --- tritonserver ---------------------------------------------------------------------------------


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
    libs = _pytriton_root().parent / "nvidia_pytriton.libs"
    ld = os.environ.get("LD_LIBRARY_PATH", "")
    # The Python-backend stubs run `python` from PATH: put this virtual environment first so the
    # models import the same numpy/onnxruntime the project pinned.
    venv_bin = str(Path(sys.executable).parent)
    return {
        "LD_LIBRARY_PATH": f"{libs}:{ld}" if ld else str(libs),
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
    }


def triton_service(
    settings: Settings,
    log_path: Path,
    backend_dir: Path,
    extra_args: Sequence[str] = (),
) -> Service:
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
        "--allow-metrics=false",
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
    argv.extend(extra_args)
    ready_url = f"http://{settings.triton_host}:{settings.triton_http_port}/v2/health/ready"
    return Service("tritonserver", argv, lambda: http_ok(ready_url), log_path, env=triton_env())


# --- gateway and workers -----------------------------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build the same Settings."""
    return {
        "GATEWAY_HOST": settings.gateway_host,
        "GATEWAY_PORT": str(settings.gateway_port),
        "TRITON_HOST": settings.triton_host,
        "TRITON_GRPC_PORT": str(settings.triton_grpc_port),
        "TRITON_HTTP_PORT": str(settings.triton_http_port),
        "TRITON_METRICS_PORT": str(settings.triton_metrics_port),
        "REDIS_URL": settings.redis_url,
        "MODEL_REPOSITORY": str(settings.model_repository),
        "DATA_DIR": str(settings.data_dir),
    }


def gateway_service(settings: Settings, log_path: Path, env: dict[str, str] | None = None) -> Service:
    url = f"http://{settings.gateway_host}:{settings.gateway_port}/healthz"
    return Service(
        "gateway",
        [sys.executable, "-m", "gateway.app"],
        lambda: http_ok(url),
        log_path,
        env={**settings_env(settings), **(env or {})},
    )


def _worker_registered(redis_url: str) -> bool:
    """arq writes its health-check key on the first pass of its main loop: the worker is polling."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        with client:
            return bool(client.exists("arq:queue:health-check"))
    except redis.RedisError:
        return False


def worker_service(
    settings: Settings, index: int, log_path: Path, env: dict[str, str] | None = None
) -> Service:
    return Service(
        f"worker-{index}",
        [sys.executable, "-m", "gateway.worker"],
        lambda: _worker_registered(settings.redis_url),
        log_path,
        env={**settings_env(settings), **(env or {})},
    )


# --- the whole stack ------------------------------------------------------------------------------------


def _redis_port(settings: Settings) -> int:
    return urlparse(settings.redis_url).port or 6379


def private_settings(data_dir: Path) -> Settings:
    """Settings for a stack of its own (tests, benchmarks): every service on a free loopback port."""
    return Settings(
        gateway_port=free_port(),
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=data_dir,
    )


def stack_services(
    settings: Settings,
    workers: int = 1,
    env: dict[str, str] | None = None,
    *,
    start_redis: bool = True,
) -> list[Service]:
    """Redis, tritonserver, gateway and workers for `settings`, in start order (stop in reverse)."""
    logs = settings.data_dir / "logs"
    services: list[Service] = []
    if start_redis:
        services.append(redis_service(_redis_port(settings), settings.data_dir / "redis"))
    services.append(triton_service(settings, logs / "tritonserver.log", settings.data_dir / "backends"))
    services.append(gateway_service(settings, logs / "gateway.log", env))
    services.extend(worker_service(settings, i, logs / f"worker-{i}.log", env) for i in range(workers))
    return services


def plan_stack(settings: Settings, workers: int = 1) -> list[Service]:
    """The services `make run` starts: Redis only when nothing answers at REDIS_URL already."""
    redis_port = _redis_port(settings)
    start_redis = not port_open("127.0.0.1", redis_port)
    if not start_redis:
        print(f"using the Redis already listening on port {redis_port}")
    return stack_services(settings, workers, start_redis=start_redis)


@contextlib.contextmanager
def running(services: list[Service], timeout_s: float = 300.0) -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        for svc in services:
            print(f"starting {svc.name} (log: {svc.log_path})", flush=True)
            svc.start()
            started.append(svc)
            svc.wait_ready(timeout_s)
        yield started
    finally:
        for svc in reversed(started):
            print(f"stopping {svc.name}", flush=True)
            svc.stop()


def _dev_token_notice(settings: Settings) -> dict[str, str]:
    """With no token configured, mint one for this run and say so: a usable service out of the box."""
    if settings.api_token_hashes:
        return {}
    token = "dev-" + os.urandom(12).hex()
    print(
        f"\nNo API_TOKENS configured: development token for this run:\n\n    api_token: {token}\n",
        flush=True,
    )
    return {"API_TOKENS": token}


def run(workers: int = 1) -> int:
    settings = Settings.from_env()
    extra = _dev_token_notice(settings)
    os.environ.update(extra)
    services = plan_stack(settings, workers)
    stop = {"flag": False}

    def _on_signal(signum: int, _frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        with running(services) as started:
            print(f"\nready: gateway on {settings.base_url}  (Ctrl-C stops everything)\n", flush=True)
            while not stop["flag"]:
                dead = [s for s in started if not s.alive()]
                if dead:
                    print(f"{dead[0].name} exited; last log lines:\n{dead[0].tail()}", flush=True)
                    return 1
                time.sleep(0.5)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _pid_file(settings: Settings) -> Path:
    return settings.data_dir / "stack.pid"


def up(workers: int = 1, timeout_s: float = 600.0) -> int:
    """Run the stack in the background and return once /readyz answers 200."""
    settings = Settings.from_env()
    pid_file = _pid_file(settings)
    if pid_file.exists():
        print(f"a stack seems to be running already (pid file {pid_file}); `make down` first")
        return 1
    log_path = settings.data_dir / "logs" / "stack.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.stack", "run", "--workers", str(workers)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid), encoding="utf-8")
    ready_url = f"http://{settings.gateway_host}:{settings.gateway_port}/readyz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            print(f"the stack exited during start-up; see {log_path}")
            return 1
        if http_ok(ready_url):
            print(f"ready: {settings.base_url} (log: {log_path})")
            token_lines = [ln for ln in log_path.read_text().splitlines() if "api_token:" in ln]
            if token_lines:
                print("development token:", token_lines[-1].split("api_token:")[1].strip())
            return 0
        time.sleep(1)
    print(f"not ready after {timeout_s:.0f}s; see {log_path}")
    return 1


def down() -> int:
    settings = Settings.from_env()
    pid_file = _pid_file(settings)
    if not pid_file.exists():
        print("no stack running")
        return 0
    pid = int(pid_file.read_text(encoding="utf-8").strip())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(120):
            os.kill(pid, 0)
            time.sleep(0.5)
    pid_file.unlink(missing_ok=True)
    print("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "up"):
        p = sub.add_parser(name)
        p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    sub.add_parser("down")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.workers)
    if args.command == "up":
        return up(args.workers)
    return down()


if __name__ == "__main__":
    raise SystemExit(main())

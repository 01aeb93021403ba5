"""Child processes of the development stack: start one with its log file, wait until its
readiness probe answers, stop its whole process group. Nothing here knows which services exist.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.settings import REPO_ROOT


class StackError(RuntimeError):
    """A service of the stack could not be started or did not become ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port succeeds within 0.5 s."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether GET url answers 200 within `timeout` seconds; any failure is False, never raised."""
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
    # Frees what the process leaves behind when it dies without cleaning up after itself (a
    # killed tritonserver's shared-memory regions); run once its process group is gone.
    release: Callable[[], None] | None = None
    # A start that is still not ready after this many seconds is killed and started again,
    # within wait_ready's budget (None: never). For tritonserver: its Python backend now and then
    # never finishes loading a model whose initialize has returned (the stub's last log line,
    # then nothing for minutes, while the same repository loads in seconds beside it).
    restart_unready_after_s: float | None = None
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
        """Poll the readiness probe every 0.25 s; a start not ready after
        `restart_unready_after_s` is killed and started again (its log says so).

        Raises StackError (with the last log lines) when the process exits first or the probe
        has not answered after `timeout_s` seconds in all.
        """
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(f"{self.name} exited early; last log lines:\n{self.tail()}")
            if self.ready():
                return
            wedged_after = self.restart_unready_after_s
            if wedged_after is not None and time.monotonic() - started > wedged_after:
                print(f"{self.name} not ready after {wedged_after:.0f} s, starting it again; "
                      f"last log lines:\n{self.tail()}", flush=True)  # fmt: skip
                self.stop(timeout_s=5, sig=signal.SIGKILL)
                self.start()
                started = time.monotonic()
            time.sleep(0.25)
        raise StackError(f"{self.name} not ready after {timeout_s:.0f}s; last log lines:\n{self.tail()}")

    def kill_group(self) -> None:
        """SIGKILL what is left of the process group after the process itself exited (the model
        processes of a crashed tritonserver), then free what it left behind (`release`)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._release()

    def _release(self) -> None:
        if self.release is not None:
            self.release()

    def stop(self, timeout_s: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the process group; SIGKILL it after `timeout_s` seconds; then free what
        it left behind (`release`). When it has exited already, what is left of its group is
        killed (`kill_group`)."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill_group()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._release()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running(services: list[Service], timeout_s: float = 300.0) -> Iterator[list[Service]]:
    """Start `services` in order, each ready within `timeout_s` seconds before the next starts;
    stop the started ones in reverse order on exit. Raises StackError from `Service.wait_ready`.
    """
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

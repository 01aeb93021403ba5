"""Test hosts made of Linux network namespaces: each host a namespace with one veth end on a private
bridge (itself in a namespace of its own), an address of 10.77.N.0/24 and no default route, so the
hosts reach each other and the test (10.77.N.254, a veth end in the test's namespace) and nothing
else. Needs root (`ip netns`, iproute2); `Network` removes everything it made, even on failure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field


class NamespacesRefused(Exception):
    """This machine does not let the test make network namespaces (not root, no iproute2, a
    container without CAP_SYS_ADMIN)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def require_namespaces() -> None:
    """Raises NamespacesRefused with the reason when namespaces cannot be made here."""
    probe = f"m14probe{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise NamespacesRefused(f"iproute2 `ip` unusable: {exc}") from None
    if made.returncode != 0:
        raise NamespacesRefused(f"`ip netns add` refused: {made.stderr.strip()}")
    _ip("netns", "del", probe, check=False)


@dataclass
class Host:
    name: str
    netns: str
    address: str

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace (ip netns exec execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def pids(self) -> list[int]:
        done = _ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in done.stdout.split()]

    def kill_all(self) -> list[int]:
        """SIGKILL to every process of the host: a machine that lost power."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids


@dataclass
class Network:
    tag: str = field(default_factory=lambda: str(os.getpid() % 100000))
    subnet: str = field(default_factory=lambda: f"10.77.{20 + os.getpid() % 200}")
    hosts: list[Host] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"m14sw{self.tag}"

    @property
    def client_address(self) -> str:
        """The test's own address on the network (its veth end in the test's namespace)."""
        return f"{self.subnet}.254"

    def __enter__(self) -> Network:
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            self._plug(f"c{self.tag}", None, self.client_address)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _plug(self, end: str, netns: str | None, address: str) -> None:
        """A veth pair: `end` (in `netns`, or the test's namespace) with `address`, its peer on br0."""
        peer = f"s{end}"
        _ip("link", "add", end, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", peer, "master", "br0", "up")
        prefix = ["-n", netns] if netns else []
        if netns:
            _ip("link", "set", end, "netns", netns)
            _ip(*prefix, "link", "set", "lo", "up")
        _ip(*prefix, "addr", "add", f"{address}/24", "dev", end)
        _ip(*prefix, "link", "set", end, "up")

    def add_host(self, name: str) -> Host:
        host = Host(name, f"m14{name}{self.tag}", f"{self.subnet}.{len(self.hosts) + 1}")
        _ip("netns", "add", host.netns)
        self.hosts.append(host)
        self._plug(f"h{self.tag}{len(self.hosts)}", host.netns, host.address)
        return host

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            host.kill_all()
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", f"c{self.tag}", check=False)  # its peer goes with it
        _ip("netns", "del", self.switch, check=False)

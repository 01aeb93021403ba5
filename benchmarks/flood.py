"""A paced flood of GET requests by `wrk` (Debian's `wrk`, C, `make wrk`), for benchmarks/load.py.

Why not aiohttp clients in the benchmark's own process: on a 2-core machine, a Python client
issuing 1,300 requests/s burns about a core by itself, so the measured slowdown would be the load
generator's, not the service's. wrk costs a few microseconds per request, like the remote clients
it stands for.

wrk has no rate option; its Lua `delay()` hook paces each connection instead: with C connections
and a delay of C/rate seconds before every request the flood runs at about `rate` requests/s (a
little less when answers are slow; the achieved rate is reported).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LUA = """
local targets = %(targets)s
local i = 0
counts = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  i = i %% #targets + 1
  return wrk.format("GET", targets[i][1], {["api_token"] = targets[i][2]})
end

function delay()
  return %(delay_ms)d
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      merged[status] = (merged[status] or 0) + n
    end
  end
  for status, n in pairs(merged) do
    io.write(string.format("flood-status %%d %%d\\n", status, n))
  end
  io.write(string.format("flood-summary %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass
class Flood:
    """A running wrk process; `result()` waits for it and reads its report."""

    process: subprocess.Popen[str]

    def result(self) -> dict[str, Any]:
        """{requests, rps, p50_ms, p99_ms, share_429, share_5xx, statuses, transport_errors}.
        Raises RuntimeError when wrk failed or printed no summary."""
        out, err = self.process.communicate()
        summary = re.search(r"^flood-summary (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
        if self.process.returncode or not summary:
            raise RuntimeError(f"wrk failed (exit {self.process.returncode}): {err.strip() or out.strip()}")
        requests, duration_us, p50_us, p99_us, errors = map(int, summary.groups())
        statuses = {int(s): int(n) for s, n in re.findall(r"^flood-status (\d+) (\d+)$", out, re.M)}
        n = max(1, requests)
        return {
            "requests": requests,
            "rps": round(requests / (duration_us / 1e6), 1),
            "p50_ms": round(p50_us / 1000, 1),
            "p99_ms": round(p99_us / 1000, 1),
            "share_429": round(statuses.get(429, 0) / n, 3),
            "share_5xx": round(sum(v for k, v in statuses.items() if k >= 500) / n, 4),
            "statuses": dict(sorted(statuses.items())),
            "transport_errors": errors,
        }


def start_flood(
    base_url: str,
    targets: list[tuple[str, str]],
    rate: float,
    seconds: float,
    workdir: Path,
    connections: int = 32,
) -> Flood:
    """GET each (path, api_token) of `targets` in turn, at about `rate` requests/s in total over
    `connections` keep-alive connections, for `seconds`. Raises FileNotFoundError without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk is not installed: run `make wrk` (make load does)")
    if not targets:
        raise ValueError("the flood needs at least one (path, api_token) target")
    script = workdir / "flood.lua"
    lua_targets = "{" + ", ".join(f"{{{json.dumps(p)}, {json.dumps(t)}}}" for p, t in targets) + "}"
    script.write_text(_LUA % {"targets": lua_targets, "delay_ms": round(1000 * connections / rate)})
    command = [
        wrk,
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url,
    ]
    return Flood(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

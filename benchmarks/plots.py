"""One PNG: total video frames/s against concurrent jobs, and peak RSS against clip length."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt


def concurrency_memory_png(
    out: Path,
    fps_by_jobs: dict[int, float],
    model_fps: float,
    rss_by_length: dict[float, dict[str, float]],
    title: str,
) -> Path:
    """`rss_by_length`: clip seconds -> {"worker": MiB, "tritonserver": MiB}."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    jobs = sorted(fps_by_jobs)
    left.plot(jobs, [fps_by_jobs[n] for n in jobs], "o-", label="service, all jobs together")
    left.axhline(model_fps, color="grey", linestyle="--", label="RVM onnxruntime alone, 1 stream")
    left.set(xlabel="simultaneous video jobs", ylabel="frames/s", xticks=jobs, title="throughput")
    left.set_ylim(bottom=0)
    left.legend(loc="lower right", fontsize=8)
    lengths = sorted(rss_by_length)
    for proc in ("worker", "tritonserver"):
        right.plot(lengths, [rss_by_length[s][proc] for s in lengths], "o-", label=f"{proc} tree peak RSS")
    right.set(xlabel="clip length (s)", ylabel="MiB", xticks=lengths, title="memory")
    right.set_ylim(bottom=0)
    right.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

"""One real 720p clip through the whole service, beside the bare model on the same frames.

    .venv/bin/python -m benchmarks.video_e2e [--clip PATH] [--preset mp4_h264] [--quick]

Folded into the benchmark harness (benchmarks/video_bench.py, run by `python -m benchmarks`);
this entry point keeps working and runs its video part. The measurements are the same: end to end
is POST /foreground_mask for the clip from a loopback URL until the result is downloaded, on a
private stack; model only is raw onnxruntime on the original RVM graph, same decoded frames, same
downsample ratio min(1, 512/max(H, W)), the rvm config's thread count, session.run timed alone.
"""

from __future__ import annotations

import sys

from benchmarks.__main__ import main as bench_main


def main() -> int:
    return bench_main(["--only", "video", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())

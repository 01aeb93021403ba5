"""One real 720p clip through the whole service, beside the bare model on the same frames.

    .venv/bin/python -m benchmarks.video_e2e [--video PATH] [--preset mp4_h264]

End to end: a private Redis, tritonserver, gateway and one worker (gateway.stack, free loopback
ports) serve POST /foreground_mask for the clip from a loopback URL; wall time runs from the
request to the downloaded result. Model only, after the stack has stopped (so nothing competes
for the cores): raw onnxruntime on the original RVM graph, fp32 NCHW, the same downsample ratio
min(1, 512/max(H, W)) and the thread count of the rvm Triton config, timing session.run alone on
the same decoded frames. Prints both rates and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.sources import SOURCES, locate
from gateway.pipeline.decode import iter_frames
from gateway.pipeline.probe import probe
from gateway.settings import REPO_ROOT, Settings
from gateway.stack import free_port, gateway_service, redis_service, triton_service, worker_service

VIDEO = REPO_ROOT.parent / "shared" / "data" / "videos" / "02_cups.mp4"
TOKEN = "bench-token"


def _request(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"api_token": TOKEN, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def end_to_end(video: Path, preset: str, data_dir: Path) -> tuple[float, int]:
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(video.parent), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Quiet)
    Thread(target=server.serve_forever, daemon=True).start()
    redis_port = free_port()
    settings = Settings(
        gateway_port=free_port(),
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        data_dir=data_dir,
    )
    env = {"API_TOKENS": TOKEN, "ALLOW_LOOPBACK_URLS": "true"}
    logs = data_dir / "logs"
    services = [
        redis_service(redis_port, data_dir / "redis"),
        triton_service(settings, logs / "tritonserver.log", data_dir / "backends"),
        gateway_service(settings, logs / "gateway.log", env),
        worker_service(settings, 0, logs / "worker.log", env),
    ]
    started = []
    try:
        for svc in services:
            svc.start()
            started.append(svc)
            svc.wait_ready(300)
        time.sleep(2)  # the worker has no readiness probe: let it connect before the clock starts
        t0 = time.perf_counter()
        url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
        job = _request(
            f"{settings.base_url}/foreground_mask", {"video": url, "output_container_and_codec": preset}
        )
        while True:
            status = _request(job["status_url"])
            if status["status"] in ("completed", "failed"):
                break
            time.sleep(0.2)
        if status["status"] != "completed":
            raise SystemExit(f"job failed: {status.get('error')}")
        with urllib.request.urlopen(status["mask_url"], timeout=60) as resp:
            size = len(resp.read())
        wall = time.perf_counter() - t0
        print(f"end to end: result {size} bytes, {status['total_frames']} frames")
        return wall, int(status["total_frames"])
    finally:
        for svc in reversed(started):
            svc.stop()
        server.shutdown()


def model_only(video: Path, threads: int) -> tuple[float, int]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        str(locate(SOURCES["rvm"])), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    info = probe(video)
    ratio = np.array([min(1.0, 512 / max(info.width, info.height))], dtype=np.float32)
    state = [np.zeros((1, 1, 1, 1), np.float32)] * 4
    spent, frames = 0.0, 0
    for frame in iter_frames(video):
        src = (frame.rgb.transpose(2, 0, 1)[None].astype(np.float32)) / 255.0
        t0 = time.perf_counter()
        _fgr, _pha, *state = sess.run(
            None,
            {
                "src": src,
                "r1i": state[0],
                "r2i": state[1],
                "r3i": state[2],
                "r4i": state[3],
                "downsample_ratio": ratio,
            },
        )
        spent += time.perf_counter() - t0
        frames += 1
    return spent, frames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--preset", default="mp4_h264")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (rvm config: 2)")
    args = parser.parse_args()
    info = probe(args.video)
    print(
        f"clip: {args.video.name} {info.width}x{info.height} {float(info.fps):.3f} fps "
        f"{info.duration_s:.2f}s "
        f"{info.frame_count} frames, audio={info.audio.codec if info.audio else None}; cores={os.cpu_count()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        wall, frames = end_to_end(args.video, args.preset, Path(tmp))
    spent, model_frames = model_only(args.video, args.threads)
    e2e_fps, model_fps = frames / wall, model_frames / spent
    print(f"end to end ({args.preset}): {wall:.1f} s wall, {e2e_fps:.2f} frames/s")
    print(
        f"model only (onnxruntime RVM fp32, {args.threads} threads): {spent:.1f} s, {model_fps:.2f} frames/s"
    )
    print(f"ratio end-to-end / model-only: {e2e_fps / model_fps:.2f}")


if __name__ == "__main__":
    main()

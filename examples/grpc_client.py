"""Call the Triton models directly over gRPC: matte one image, then matte the frames of one video.

    python examples/grpc_client.py --url localhost:8001 IMAGE VIDEO [--frames N]

Needs tritonclient[grpc], numpy and av (PyAV). Prints one line per call; writes nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import av
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def matte_image(client: grpcclient.InferenceServerClient, path: Path) -> np.ndarray:
    data = grpcclient.InferInput("image_bytes", [1], "BYTES")
    data.set_data_from_numpy(np.array([path.read_bytes()], dtype=object))
    return client.infer("matte_image", [data]).as_numpy("alpha")  # uint8 [H, W]


def matte_video(client: grpcclient.InferenceServerClient, path: Path, max_frames: int) -> int:
    """One video = one sequence: the same correlation id on every frame, START on the first, END
    on the last. The server keeps RVM's recurrent state between the calls."""
    sequence_id = random.randint(1, 2**63 - 1)
    with av.open(str(path)) as container:
        frames = container.decode(video=0)
        current = next(frames, None)
        index = 0
        while current is not None and index < max_frames:
            upcoming = next(frames, None) if index + 1 < max_frames else None
            rgb = current.to_ndarray(format="rgb24")[None]  # uint8 [1, H, W, 3]
            frame = grpcclient.InferInput("frame", list(rgb.shape), "UINT8")
            frame.set_data_from_numpy(rgb)
            result = client.infer(
                "rvm",
                [frame],
                sequence_id=sequence_id,
                sequence_start=index == 0,
                sequence_end=upcoming is None,
            )
            alpha = result.as_numpy("alpha")  # uint8 [1, H, W]
            foreground = result.as_numpy("foreground")  # uint8 [1, H, W, 3]
            print(f"rvm frame {index}: alpha {alpha.shape} mean {alpha.mean():.1f}, fg {foreground.shape}")
            current, index = upcoming, index + 1
    return index


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    parser.add_argument("--frames", type=int, default=10, help="at most this many video frames")
    parser.add_argument("image", type=Path)
    parser.add_argument("video", type=Path)
    args = parser.parse_args(argv)
    client = grpcclient.InferenceServerClient(args.url)
    try:
        alpha = matte_image(client, args.image)
        print(f"matte_image: alpha {alpha.shape} {alpha.dtype}, foreground share {(alpha > 127).mean():.1%}")
        count = matte_video(client, args.video, args.frames)
    except InferenceServerException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"done: {count} video frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())

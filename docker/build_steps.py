"""Run a Dockerfile's build steps without Docker: each stage in a venv of the image's Python
(3.10 for NGC tritonserver 24.10), its WORKDIR a fresh folder, its COPY lines from the build
context (the checkout's files that git and .dockerignore let through), its RUN lines verbatim
with that venv's python3 first on PATH. Stops at what needs Docker (the base image's own
contents: tritonserver, CUDA); EXPOSE, HEALTHCHECK, ENTRYPOINT and CMD are not run.

    python docker/build_steps.py docker/triton.Dockerfile --python python3.10

`make check-image-steps` runs it. The folder it builds in is printed and kept (--keep) or removed.
Exit status: 0 when every RUN succeeded, else the failing step's.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stage:
    name: str
    workdir: str = "/"
    steps: list[tuple[str, str]] = field(default_factory=list)  # (instruction, arguments)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        lines.append(current)
        current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def stages(dockerfile: Path) -> list[Stage]:
    result: list[Stage] = []
    for op, args in instructions(dockerfile):
        if op == "FROM":
            words = args.split()
            result.append(
                Stage(words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(result)))
            )
        elif result:
            result[-1].steps.append((op, args))
    return result


def context_files(ignore_file: Path) -> list[str]:
    """The checkout's files git does not ignore, less those .dockerignore excludes."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    patterns = [
        p.strip() for p in ignore_file.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
            for pattern in patterns
            for prefix in (prefixes + [parts[-1]] if pattern.startswith("**/") else prefixes)
        )

    return [p for p in listed if (ROOT / p).is_file() and not ignored(p)]


def copy(sources: list[Path], dest: Path) -> None:
    for src in sources:
        target = dest / src.name if dest.is_dir() or len(sources) > 1 else dest
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _local(home: Path, workdir: str, path: str) -> Path:
    """Where the image path `path` (relative to `workdir`) lies in the folder standing for `/`."""
    absolute = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
    return home / os.path.normpath(absolute).lstrip("/")


def run(dockerfile: Path, python: str, base: Path) -> int:
    context = base / "context"
    for rel in context_files(ROOT / ".dockerignore"):
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    homes: dict[str, Path] = {}  # stage name -> the folder standing for its `/`
    for number, stage in enumerate(stages(dockerfile)):
        home = base / f"stage{number}-{stage.name}"
        home.mkdir()
        venv = base / f"venv{number}"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        workdir = "/"
        env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
        env.pop("PYTHONPATH", None)

        for op, args in stage.steps:
            if op == "WORKDIR":
                workdir = args
                _local(home, workdir, ".").mkdir(parents=True, exist_ok=True)
            elif op == "ENV":
                env.update(dict(w.split("=", 1) for w in shlex.split(args)))
            elif op == "COPY":
                words = shlex.split(args)
                origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
                words = [w for w in words if not w.startswith("--")]
                *srcs, dest = words
                if origin is None:
                    paths = [context / s for s in srcs]
                else:
                    origin_home = homes[origin]
                    paths = [origin_home / os.path.normpath(s).lstrip("/") for s in srcs]
                target = _local(home, workdir, dest)
                if dest.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                print(f"[{stage.name}] COPY {args}", flush=True)
                copy(paths, target)
            elif op == "RUN":
                print(f"[{stage.name}] RUN {args}", flush=True)
                done = subprocess.run(["bash", "-c", args], cwd=_local(home, workdir, "."), env=env)
                if done.returncode != 0:
                    print(f"[{stage.name}] failed ({done.returncode}): {args}", file=sys.stderr)
                    return done.returncode
            else:
                print(f"[{stage.name}] not run here: {op} {args}", flush=True)
        homes[stage.name] = home
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dockerfile", type=Path)
    parser.add_argument("--python", default="python3.10", help="the image's Python (NGC 24.10: 3.10)")
    parser.add_argument("--keep", action="store_true", help="keep the folder the stages were built in")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="build-steps-"))
    print(f"building in {base} (no ../shared next to it)", flush=True)
    try:
        return run(args.dockerfile.resolve(), args.python, base)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

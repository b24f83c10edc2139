"""How long docker/Dockerfile takes to build, cold and cached, and how big the image is.

Runs Debian's dockerd as the Docker test does (devkit/docker_engine.py): no bridges, host
networking, a base made by debootstrap, the host's CA bundle as the build's pip secret.

    python -m benchmarks.docker_build          on the Docker test's cached data root
    python -m benchmarks.docker_build --cold   on a fresh data root (removed afterwards): the
                                               base, a cold build, then a cached rebuild

Prints one line per step, in seconds, and the image's size. Needs root, docker.io and
debootstrap (scripts/system-deps.sh); the cold build downloads several GB from PyPI.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from devkit.docker_engine import (
    CACHE,
    build,
    ca_bundle_secret,
    docker_engine,
    ensure_base,
    why_no_engine,
)
from devkit.local_label_studio import REPO_ROOT

TAG = "ls-active-yolo:benchmark"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="build on a fresh data root")
    args = parser.parse_args(argv)
    reason = why_no_engine()
    if reason is not None:
        print(f"no Docker engine: {reason}")
        return 2
    cache = Path(tempfile.mkdtemp(prefix="docker-cold-", dir=CACHE.parent)) if args.cold else CACHE
    try:
        with docker_engine(cache) as engine:
            started = time.monotonic()
            base = ensure_base(engine, cache)
            print(
                f"base image (debootstrap + import if missing): {time.monotonic() - started:.0f} s"
            )
            arguments = {"BASE": base}
            for step in ("build", "rebuild, nothing changed"):
                started = time.monotonic()
                build(engine, REPO_ROOT, TAG, arguments, secrets=ca_bundle_secret())
                print(f"{step}: {time.monotonic() - started:.1f} s")
            size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", TAG).stdout)
            print(f"image size: {size / 1e9:.2f} GB ({size} bytes)")
            if not args.cold:
                engine.docker("image", "rm", TAG, check=False)
    finally:
        if args.cold:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

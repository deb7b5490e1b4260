"""Build (or refresh) the TensorRT engine for a model directory, on the device that runs it.

    python -m models.build_engine --model models/hi-plate --precision fp16 \
        --cache-dir /var/lib/microplate/engines
    python -m models.build_engine --precision int8 --calibration-images /data/plates ...

The engine lands in the same cache the appliance reads (keyed by TensorRT version, GPU compute
capability, precision and ONNX sha256), so building it ahead saves the minutes a first start
would otherwise spend. Engines are never committed: they only run where they were built.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge.detect.errors import DetectorError
from edge.detect.model import load_model
from edge.detect.settings import SHIPPED_MODEL_DIR, TensorRTDetectorSettings
from edge.detect.trt_engine import (
    EngineCache,
    ensure_engine,
    import_pycuda,
    import_tensorrt,
    runtime_key,
)

logger = logging.getLogger(__name__)

DEFAULT_CACHE = TensorRTDetectorSettings().engine_cache_dir


class RichProgress:
    """One progress bar per TensorRT build phase (TensorRT reports from its own threads)."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        with self._lock:
            task = self._tasks.get(phase)
            if task is None:
                task = self._progress.add_task(phase, total=max(total, 1))
                self._tasks[phase] = task
            self._progress.update(task, completed=done, total=max(total, 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.build_engine",
        description="Build the TensorRT engine for a model directory into the engine cache.",
    )
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR, help="model directory")
    parser.add_argument("--precision", choices=["fp16", "int8"], default="fp16")
    parser.add_argument(
        "--calibration-images", type=Path, help="folder of plate photos (needed for int8)"
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="engine cache")
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    return parser


def main(argv: list[str] | None = None, console: Any = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = load_model(args.model)
        trt = import_tensorrt()
        cuda = import_pycuda()
        key = runtime_key(args.precision, model.sha256, trt=trt, cuda=cuda)
        cache = EngineCache(args.cache_dir)
        if args.force:
            cache.path_for(key, model.name).unlink(missing_ok=True)
        cached = cache.lookup(key, model.name)
        if cached is not None:
            print(f"engine is up to date: {cached}")
            return 0
        print(
            f"building {args.precision} engine for {model.name} {model.version} "
            f"(TensorRT {key.trt_version}, GPU sm{key.compute_capability}); this takes minutes"
        )
        start = time.perf_counter()
        # The calibrator allocates device memory, so a CUDA context must be current.
        ctx = cuda.Device(0).make_context()
        try:
            with RichProgress(console) as progress:
                path = ensure_engine(
                    model,
                    cache,
                    key,
                    build_if_missing=True,
                    workspace_mb=args.workspace_mb,
                    calibration_images=args.calibration_images,
                    progress=progress,
                    trt=trt,
                    cuda=cuda,
                )
        finally:
            ctx.pop()
            ctx.detach()
    except DetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size_mb = path.stat().st_size / 1e6
    print(f"built {path} ({size_mb:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())

"""TensorRT engines: the cache key, the on-disk cache and the builder (TensorRT 10 API).

An engine only runs on the TensorRT version and GPU it was built for, so the cache key is
(TensorRT version, GPU compute capability, precision, ONNX sha256): a JetPack upgrade, another
Jetson module or a new model all miss the cache and rebuild automatically.

`tensorrt` and `pycuda` are imported inside the functions that need them: this module imports
on any machine, and a missing runtime raises `BackendUnavailable` saying what to install.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect.errors import BackendUnavailable, DetectorError, ImageDecodeError
from edge.detect.imageio import read_image
from edge.detect.model import LoadedModel
from edge.detect.processing import prepare_input

logger = logging.getLogger(__name__)

# (phase name, steps done, steps in the phase); what a CLI turns into a progress bar.
ProgressCallback = Callable[[str, int, int], None]
# input name -> (min, opt, max) shapes: an optimisation profile for a dynamic dimension.
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            "TensorRT is not installed in this Python environment. On a Jetson it comes with "
            "JetPack (python3-libnvinfer); elsewhere use the 'onnx' detector type, or set the "
            "TensorRT detector's fallback to 'onnx'."
        ) from exc
    return trt


def import_pycuda() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(
            "pycuda is not installed; the TensorRT detector needs it for GPU buffers. Install "
            "the jetson extra (pip install 'microplate[jetson]') or use the 'onnx' detector type."
        ) from exc
    return cuda


def compute_capability(cuda: Any, device_index: int = 0) -> str:
    """The GPU's compute capability as "major.minor" (e.g. "8.7" for a Jetson Orin)."""
    try:
        cuda.init()
        major, minor = cuda.Device(device_index).compute_capability()
    except Exception as exc:
        raise BackendUnavailable(
            f"no usable CUDA GPU ({exc}). Check the NVIDIA driver (nvidia-smi / tegrastats), or "
            "use the 'onnx' detector type."
        ) from exc
    return f"{major}.{minor}"


def safe_model_name(model_name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in model_name)[:40] or "model"


@dataclass(frozen=True)
class EngineKey:
    trt_version: str
    compute_capability: str
    precision: str
    onnx_sha256: str

    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]

    def filename(self, model_name: str) -> str:
        safe = safe_model_name(model_name)
        sm = self.compute_capability.replace(".", "")
        return (
            f"{safe}-{self.onnx_sha256[:12]}-{self.precision}-trt{self.trt_version}-sm{sm}-"
            f"{self.digest()}.engine"
        )


class EngineCache:
    """Engines on disk, each with a JSON sidecar recording its key and the engine's sha256."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, key: EngineKey, model_name: str) -> Path:
        return self.directory / key.filename(model_name)

    def lookup(self, key: EngineKey, model_name: str) -> Path | None:
        """The cached engine for `key`, or None (missing, or its sidecar/sha256 disagree)."""
        path = self.path_for(key, model_name)
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            return None
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            logger.warning("engine sidecar %s is unreadable: rebuilding", sidecar)
            return None
        if meta.get("key") != asdict(key):
            logger.warning("engine %s was built for another key: rebuilding", path.name)
            return None
        if meta.get("engine_sha256") != _sha256(path.read_bytes()):
            logger.warning("engine %s is damaged (sha256 mismatch): rebuilding", path.name)
            return None
        return path

    def store(self, key: EngineKey, model_name: str, engine: bytes) -> Path:
        """Write atomically (temp file + rename), then drop older engines of this model."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key, model_name)
        _atomic_write(path, engine)
        meta = {"key": asdict(key), "model": model_name, "engine_sha256": _sha256(engine)}
        _atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2).encode())
        for old in self.stale(key, model_name):
            logger.info("removing superseded engine %s", old.name)
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return path

    def stale(self, key: EngineKey, model_name: str) -> list[Path]:
        """Other engines of the same model and precision (older TensorRT, GPU or ONNX)."""
        keep = self.path_for(key, model_name).name
        pattern = f"{safe_model_name(model_name)}-{'?' * 12}-{key.precision}-trt*.engine"
        return sorted(p for p in self.directory.glob(pattern) if p.name != keep)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def runtime_key(precision: str, onnx_sha256: str, *, trt: Any, cuda: Any) -> EngineKey:
    return EngineKey(
        trt_version=str(trt.__version__),
        compute_capability=compute_capability(cuda),
        precision=precision,
        onnx_sha256=onnx_sha256,
    )


def calibration_files(folder: Path, limit: int = 200) -> list[Path]:
    """The plate images for INT8 calibration; checked before the build starts."""
    if not Path(folder).is_dir():
        raise DetectorError(f"calibration_images {folder} is not a folder of plate photos")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DetectorError(
            f"INT8 calibration needs plate images, but {folder} has none. Put 50-200 typical "
            "plate photos there, or use precision 'fp16'."
        )
    return files[:limit]


def calibration_batches(model: LoadedModel, files: list[Path]) -> Iterator[np.ndarray]:
    """Plate images as model inputs (the same preprocessing as inference), one per batch."""
    spec = model.input
    for path in files:
        try:
            image = read_image(path)
        except ImageDecodeError as exc:
            logger.warning("calibration image skipped: %s", exc)
            continue
        yield np.ascontiguousarray(prepare_input(image, spec)[0])


def _make_calibrator(
    trt: Any, cuda: Any, batches: Iterator[np.ndarray], cache_file: Path, input_nbytes: int
) -> Any:
    class PlateCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        """Feeds plate images to the INT8 calibration and keeps its cache on disk."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._device = cuda.mem_alloc(input_nbytes)
            self.count = 0
            self.cache_used = False

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            # TensorRT calls this from C++: an exception escaping here would abort the build
            # without a useful message, so it is logged and ends the calibration instead.
            try:
                batch = next(self._batches, None)
            except Exception:
                logger.exception("INT8 calibration stopped: the next image could not be prepared")
                return None
            if batch is None:
                return None
            cuda.memcpy_htod(self._device, batch)
            self.count += 1
            return [int(self._device)]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file.is_file():
                logger.info("using INT8 calibration cache %s", cache_file)
                self.cache_used = True
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(cache_file, bytes(cache))

    return PlateCalibrator()


def _make_progress_monitor(trt: Any, callback: ProgressCallback) -> Any:
    class BuildProgress(trt.IProgressMonitor):  # type: ignore[misc]
        """Relays TensorRT's build phases to `callback` (TensorRT calls it from its threads)."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            callback(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            callback(phase_name, step + 1, self._steps.get(phase_name, step + 1))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            total = self._steps.pop(phase_name, 1)
            callback(phase_name, total, total)

    return BuildProgress()


def build_engine(
    model: LoadedModel,
    *,
    precision: str,
    workspace_mb: int = 1024,
    calibration_images: Path | None = None,
    calibration_cache: Path | None = None,
    progress: ProgressCallback | None = None,
    profile: Profile | None = None,
    trt: Any = None,
    cuda: Any = None,
) -> bytes:
    """Build a serialized engine from the model's ONNX with the TensorRT builder API."""
    trt = trt or import_tensorrt()
    if model.onnx_path is None:
        raise DetectorError("this model has no ONNX file to build an engine from")
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(model.onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DetectorError(
            f"TensorRT cannot parse {model.onnx_path.name}: {errors or 'unknown error'}. "
            "Re-export the model with a supported opset (17+) and static shapes."
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if progress is not None:
        monitor = _make_progress_monitor(trt, progress)
        config.progress_monitor = monitor
    if profile:
        # A dynamic batch (the well classifier's crops): one profile covering 1..max.
        shapes = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            shapes.set_shape(name, low, opt, high)
        config.add_optimization_profile(shapes)
    config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for layers that need it
    calibrator = None
    if precision == "int8":
        if calibration_images is None:
            raise DetectorError(
                "precision 'int8' needs calibration_images (a folder of plate photos); set it "
                "or use precision 'fp16'."
            )
        cuda = cuda or import_pycuda()
        nbytes = int(np.prod((1, 3, model.input.height, model.input.width))) * 4
        cache = calibration_cache or Path(calibration_images) / f"int8-{model.sha256[:12]}.cache"
        files = calibration_files(Path(calibration_images))
        calibrator = _make_calibrator(trt, cuda, calibration_batches(model, files), cache, nbytes)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    elif precision != "fp16":
        raise DetectorError(f"unknown precision {precision!r}; use 'fp16' or 'int8'")
    logger.info("building %s TensorRT engine for %s (this takes minutes)", precision, model.name)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.count == 0 and not calibrator.cache_used:
        raise DetectorError(
            f"none of the images in {calibration_images} could be used for INT8 calibration "
            "(see the warnings above). Add readable plate photos, or use precision 'fp16'."
        )
    if serialized is None:
        raise DetectorError(
            "TensorRT could not build the engine (see the TensorRT messages above). Check free "
            "GPU memory, or raise workspace_mb."
        )
    return bytes(serialized)


def ensure_engine(
    model: LoadedModel,
    cache: EngineCache,
    key: EngineKey,
    *,
    build_if_missing: bool,
    workspace_mb: int = 1024,
    calibration_images: Path | None = None,
    progress: ProgressCallback | None = None,
    profile: Profile | None = None,
    trt: Any = None,
    cuda: Any = None,
) -> Path:
    """The cached engine for `key`, building (and caching) it when missing or stale."""
    found = cache.lookup(key, model.name)
    if found is not None:
        return found
    if not build_if_missing:
        raise DetectorError(
            f"no TensorRT engine for {model.name} ({key.precision}, TensorRT {key.trt_version}, "
            f"GPU sm{key.compute_capability}) in {cache.directory}. Build it with: python -m "
            f"models.build_engine --model {model.directory} --precision {key.precision} "
            f"--cache-dir {cache.directory}"
        )
    calib_cache = cache.directory / f"int8-{key.onnx_sha256[:12]}-trt{key.trt_version}.cache"
    engine = build_engine(
        model,
        precision=key.precision,
        workspace_mb=workspace_mb,
        calibration_images=calibration_images,
        calibration_cache=calib_cache,
        progress=progress,
        profile=profile,
        trt=trt,
        cuda=cuda,
    )
    return cache.store(key, model.name, engine)

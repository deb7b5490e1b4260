"""TensorRT 10 backend (Jetson): a cached engine, pinned host buffers, `execute_async_v3`.

The engine comes from `edge.detect.trt_engine` (built on this device at first start and cached
per TensorRT version, GPU, precision and model). The CUDA context is created explicitly and
pushed around each call, because the appliance runs inference on a worker thread, not on the
thread that started the detector.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.detect.base import Detector
from edge.detect.errors import DetectorError, ModelError
from edge.detect.model import LoadedModel
from edge.detect.settings import OnnxDetectorSettings, TensorRTDetectorSettings
from edge.detect.trt_engine import (
    EngineCache,
    ensure_engine,
    import_pycuda,
    import_tensorrt,
    runtime_key,
)

logger = logging.getLogger(__name__)


@dataclass
class _Binding:
    name: str
    shape: tuple[int, ...]
    host: np.ndarray  # page-locked
    device: Any  # pycuda DeviceAllocation
    is_input: bool


def _log_progress(phase: str, done: int, total: int) -> None:
    if done in (0, total):
        logger.info("TensorRT build: %s %d/%d", phase, done, total)


class TensorRTDetector(Detector):
    backend = "tensorrt"

    @classmethod
    def create(cls, settings: TensorRTDetectorSettings, model: LoadedModel) -> Detector:
        try:
            return cls(settings, model)
        except ModelError:
            raise  # the model itself is bad: ONNX Runtime would fail the same way
        except DetectorError as exc:
            if settings.fallback != "onnx":
                raise
            logger.warning("TensorRT cannot start (%s); falling back to ONNX Runtime", exc)
        from edge.detect.onnx_backend import OnnxDetector

        common = settings.model_dump(
            include={
                "model_dir",
                "class_map",
                "min_confidence",
                "iou_threshold",
                "max_detections",
                "threads",
            }
        )
        # The model TensorRT was given is the fp32 network; the fallback runs that very file.
        return OnnxDetector(OnnxDetectorSettings(**common, precision="fp32"), model)

    def __init__(self, settings: TensorRTDetectorSettings, model: LoadedModel) -> None:
        super().__init__(settings, model)
        trt = import_tensorrt()
        cuda = import_pycuda()
        self._cuda = cuda
        self._lock = threading.Lock()
        key = runtime_key(settings.precision, model.sha256, trt=trt, cuda=cuda)
        self._ctx = cuda.Device(0).make_context()
        try:
            path = ensure_engine(
                model,
                EngineCache(settings.engine_cache_dir),
                key,
                build_if_missing=settings.build_if_missing,
                workspace_mb=settings.workspace_mb,
                calibration_images=settings.calibration_images,
                progress=_log_progress,
                trt=trt,
                cuda=cuda,
            )
            self.engine_path = path
            self._trt_logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._trt_logger)
            self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                raise DetectorError(
                    f"TensorRT cannot load the engine {path} (damaged, or built by another "
                    "TensorRT version). Delete it; it is rebuilt at the next start."
                )
            self._context = self._engine.create_execution_context()
            self._bindings = self._allocate(trt, cuda)
            self._stream = cuda.Stream()
        except BaseException as exc:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
            if isinstance(exc, (DetectorError, KeyboardInterrupt, SystemExit)):
                raise
            # pycuda and TensorRT raise their own error types (out of GPU memory, driver
            # trouble); the appliance reports a DetectorError with the cause instead.
            raise DetectorError(
                f"TensorRT could not start ({type(exc).__name__}: {exc}). Check free GPU memory "
                "and the NVIDIA driver, or set the detector's fallback to 'onnx'."
            ) from exc
        self._ctx.pop()
        logger.info("TensorRT engine %s loaded", path.name)

    def _allocate(self, trt: Any, cuda: Any) -> list[_Binding]:
        bindings: list[_Binding] = []
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input:
                self.check_input_shape(shape, f"engine input {name!r}")
            if any(d < 0 for d in shape):
                raise DetectorError(
                    f"engine tensor {name!r} has a dynamic shape {shape}; export the ONNX with "
                    "static shapes."
                )
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            host = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            device = cuda.mem_alloc(host.nbytes)
            self._context.set_tensor_address(name, int(device))
            bindings.append(_Binding(name, shape, host, device, is_input))
        if sum(b.is_input for b in bindings) != 1:
            raise DetectorError("the engine must have exactly one input tensor")
        return bindings

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        cuda = self._cuda
        if self._ctx is None:
            raise DetectorError("the TensorRT detector was closed")
        with self._lock:
            self._ctx.push()
            try:
                for b in self._bindings:
                    if b.is_input:
                        np.copyto(b.host, tensor.ravel(), casting="same_kind")
                        cuda.memcpy_htod_async(b.device, b.host, self._stream)
                if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                    raise DetectorError(
                        "TensorRT inference failed: execute_async_v3 returned False"
                    )
                outputs = []
                for b in self._bindings:
                    if not b.is_input:
                        cuda.memcpy_dtoh_async(b.host, b.device, self._stream)
                        outputs.append(b)
                self._stream.synchronize()
                return [b.host.reshape(b.shape).astype(np.float32, copy=True) for b in outputs]
            except DetectorError:
                raise
            except Exception as exc:
                raise DetectorError(
                    f"TensorRT inference failed ({type(exc).__name__}: {exc})"
                ) from exc
            finally:
                self._ctx.pop()

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        with self._lock:
            ctx.push()
            try:
                for b in getattr(self, "_bindings", []):
                    b.device.free()
                self._bindings = []
                self._context = None
                self._engine = None
            finally:
                ctx.pop()
                ctx.detach()
                self._ctx = None

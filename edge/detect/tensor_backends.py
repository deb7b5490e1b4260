"""Batch runners for the well classifier: a batch of crops in, the network's output out.

They only move tensors, like the detector backends: cropping, softmax checks, thresholds and
well calls happen once, in `edge.detect.classifier`. The batch dimension is dynamic (1..384
crops): ONNX Runtime takes it as exported; TensorRT builds its engine with an optimisation
profile over that range (kept in the same engine cache as the detector's engines) and sets the
input shape on every call.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect.errors import BackendUnavailable, DetectorError, ModelError
from edge.detect.onnx_backend import choose_providers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSource:
    """What the TensorRT engine builder and cache need to know about an ONNX file."""

    name: str
    directory: Path
    onnx_path: Path
    sha256: str


class BatchRunner(ABC):
    backend: str = ""

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """`batch` float32 [N, 3, S, S] -> the first output [N, C] as float32."""

    def close(self) -> None:  # noqa: B027 - runners without resources need no close
        pass


class OnnxBatchRunner(BatchRunner):
    backend = "onnx"

    def __init__(
        self,
        onnx_path: Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        allow_spinning: bool = False,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime is not installed. Install the edge extra: pip install "
                "'microplate[edge]'."
            ) from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = choose_providers(device, list(ort.get_available_providers()))
        try:
            self._session: Any = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=providers
            )
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime cannot load {onnx_path} ({str(exc)[:200]}). The file is corrupt "
                "or not an ONNX model: re-copy or re-export it."
            ) from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{onnx_path.name} has {len(inputs)} inputs; the classifier takes one")
        self._input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise DetectorError("the ONNX Runtime classifier was closed")
        out = self._session.run(None, {self._input_name: batch})
        return np.asarray(out[0], dtype=np.float32)

    def close(self) -> None:
        self._session = None


class TensorRTBatchRunner(BatchRunner):
    """A TensorRT 10 engine with a dynamic batch (optimisation profile 1..max_batch)."""

    backend = "tensorrt"

    def __init__(
        self,
        source: EngineSource,
        *,
        input_name: str,
        sample_shape: tuple[int, int, int],
        max_batch: int,
        opt_batch: int,
        engine_cache_dir: Path,
        precision: str = "fp16",
        workspace_mb: int = 1024,
        build_if_missing: bool = True,
    ) -> None:
        from edge.detect.trt_engine import (
            EngineCache,
            ensure_engine,
            import_pycuda,
            import_tensorrt,
            runtime_key,
        )

        if precision != "fp16":
            raise DetectorError(
                "the well classifier runs as an fp16 TensorRT engine; set the detector's "
                "precision to fp16 (int8 calibration needs plate crops, not plate photos)."
            )
        trt = import_tensorrt()
        cuda = import_pycuda()
        self._cuda = cuda
        self._lock = threading.Lock()
        self.max_batch = max_batch
        self._input_name = input_name
        profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
            input_name: (
                (1, *sample_shape),
                (min(opt_batch, max_batch), *sample_shape),
                (max_batch, *sample_shape),
            )
        }
        key = runtime_key(precision, source.sha256, trt=trt, cuda=cuda)
        self._ctx = cuda.Device(0).make_context()
        try:
            self.engine_path = ensure_engine(
                source,  # type: ignore[arg-type]
                EngineCache(engine_cache_dir),
                key,
                build_if_missing=build_if_missing,
                workspace_mb=workspace_mb,
                profile=profile,
                trt=trt,
                cuda=cuda,
            )
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise DetectorError(
                    f"TensorRT cannot load the engine {self.engine_path} (damaged, or built by "
                    "another TensorRT version). Delete it; it is rebuilt at the next start."
                )
            self._context = self._engine.create_execution_context()
            self._allocate(trt, cuda, sample_shape)
            self._stream = cuda.Stream()
        except BaseException as exc:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
            if isinstance(exc, (DetectorError, KeyboardInterrupt, SystemExit)):
                raise
            raise DetectorError(
                f"TensorRT could not start the well classifier ({type(exc).__name__}: {exc}). "
                "Check free GPU memory and the NVIDIA driver, or set the fallback to 'onnx'."
            ) from exc
        self._ctx.pop()
        logger.info("TensorRT classifier engine %s loaded", self.engine_path.name)

    def _allocate(self, trt: Any, cuda: Any, sample_shape: tuple[int, int, int]) -> None:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [self._input_name] or len(outputs) != 1:
            raise DetectorError(
                f"the classifier engine has inputs {inputs} and outputs {outputs}; expected one "
                f"input {self._input_name!r} and one output"
            )
        self._output_name = outputs[0]
        out_shape = tuple(int(d) for d in self._engine.get_tensor_shape(self._output_name))
        if len(out_shape) != 2 or out_shape[1] <= 0:
            raise DetectorError(f"the classifier engine's output shape {out_shape} is not [N, C]")
        self.num_classes = out_shape[1]
        n_in = self.max_batch * int(np.prod(sample_shape))
        self._host_in = cuda.pagelocked_empty(n_in, np.float32)
        self._host_out = cuda.pagelocked_empty(self.max_batch * self.num_classes, np.float32)
        self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
        self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
        self._context.set_tensor_address(self._input_name, int(self._dev_in))
        self._context.set_tensor_address(self._output_name, int(self._dev_out))

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._ctx is None:
            raise DetectorError("the TensorRT classifier was closed")
        n = int(batch.shape[0])
        if not 1 <= n <= self.max_batch:
            raise DetectorError(
                f"{n} crops is outside the engine's batch range 1..{self.max_batch}"
            )
        cuda = self._cuda
        with self._lock:
            self._ctx.push()
            try:
                if not self._context.set_input_shape(self._input_name, tuple(batch.shape)):
                    raise DetectorError(f"TensorRT refused the input shape {tuple(batch.shape)}")
                flat = np.ascontiguousarray(batch, dtype=np.float32).ravel()
                self._host_in[: flat.size] = flat
                cuda.memcpy_htod_async(self._dev_in, self._host_in[: flat.size], self._stream)
                if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                    raise DetectorError(
                        "TensorRT inference failed: execute_async_v3 returned False"
                    )
                size = n * self.num_classes
                cuda.memcpy_dtoh_async(self._host_out[:size], self._dev_out, self._stream)
                self._stream.synchronize()
                out: np.ndarray = self._host_out[:size].reshape(n, self.num_classes).copy()
                return out
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
                for buf in (getattr(self, "_dev_in", None), getattr(self, "_dev_out", None)):
                    if buf is not None:
                        buf.free()
                self._context = None
                self._engine = None
            finally:
                ctx.pop()
                ctx.detach()
                self._ctx = None

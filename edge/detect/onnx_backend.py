"""ONNX Runtime backend: CPU everywhere, the CUDA provider when the installed build has it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge.detect.base import Detector
from edge.detect.errors import BackendUnavailable, DetectorError, ModelError
from edge.detect.model import LoadedModel
from edge.detect.settings import OnnxDetectorSettings

logger = logging.getLogger(__name__)


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for `device` given what this ONNX Runtime build offers."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BackendUnavailable(
            "device is 'cuda' but this ONNX Runtime has no CUDA provider (it offers "
            f"{', '.join(available)}). Install onnxruntime-gpu, or set the detector's device "
            "to 'auto' or 'cpu'."
        )
    return ["CPUExecutionProvider"]


class OnnxDetector(Detector):
    backend = "onnx"

    def __init__(self, settings: OnnxDetectorSettings, model: LoadedModel) -> None:
        super().__init__(settings, model)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime is not installed. Install the edge extra: pip install "
                "'microplate[edge]'."
            ) from exc
        providers = choose_providers(settings.device, list(ort.get_available_providers()))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if settings.threads:
            options.intra_op_num_threads = settings.threads
            options.inter_op_num_threads = 1
        try:
            self._session: Any = ort.InferenceSession(
                str(model.onnx_path), sess_options=options, providers=providers
            )
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime cannot load {model.onnx_path} ({str(exc)[:200]}). The file is "
                "corrupt or not an ONNX model: re-copy or re-export it."
            ) from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise DetectorError(
                f"{model.onnx_path} has {len(inputs)} inputs; a detector takes exactly one image "
                "input. Re-export the model with a single 1x3xHxW input."
            )
        self._input_name: str = inputs[0].name
        self.check_input_shape(tuple(inputs[0].shape), f"{model.onnx_path.name}")  # type: ignore[union-attr]
        self.providers: list[str] = list(self._session.get_providers())
        logger.info("ONNX Runtime session on %s", ", ".join(self.providers))

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self._session.run(None, {self._input_name: tensor})
        return outputs

    def close(self) -> None:
        self._session = None

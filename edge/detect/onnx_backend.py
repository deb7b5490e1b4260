"""ONNX Runtime backend: CPU everywhere, the CUDA provider when the installed build has it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge.detect.base import Detector
from edge.detect.errors import BackendUnavailable, DetectorError, ModelError
from edge.detect.model import LoadedModel, Precision, declared_variants, load_model
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


def resolve_precision(requested: str, *, offered: tuple[str, ...], cpu_only: bool) -> Precision:
    """The variant to run: `auto` takes int8 when the model offers it and inference stays on
    the CPU provider (the quantized graph is tuned and evaluated for it); GPUs keep fp32."""
    if requested == "auto":
        return "int8" if cpu_only and "int8" in offered else "fp32"
    if requested == "int8" and not cpu_only:
        raise DetectorError(
            "precision int8 is for ONNX Runtime's CPU provider, but this detector would run on "
            "CUDA. Set the detector's precision to auto or fp32, or its device to cpu."
        )
    if requested not in ("fp32", "int8"):
        raise DetectorError(f"unknown precision {requested!r}; choose auto, fp32 or int8")
    return "int8" if requested == "int8" else "fp32"


def _available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed. Install the edge extra: pip install 'microplate[edge]'."
        ) from exc
    return list(ort.get_available_providers())


class OnnxDetector(Detector):
    backend = "onnx"

    @classmethod
    def model_for(cls, settings: OnnxDetectorSettings) -> LoadedModel:
        """The manifest's fp32 network or its int8 variant, as `settings.precision` says."""
        providers = choose_providers(settings.device, _available_providers())
        precision = resolve_precision(
            settings.precision,
            offered=declared_variants(settings.model_dir),
            cpu_only=providers == ["CPUExecutionProvider"],
        )
        return load_model(settings.model_dir, precision=precision)

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
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
        )
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
        file_name = model.onnx_path.name if model.onnx_path else "the model"
        if model.precision != "fp32" and self.providers != ["CPUExecutionProvider"]:
            self.close()
            raise DetectorError(
                f"{file_name} is the {model.precision} variant, meant for the CPU "
                f"provider, but ONNX Runtime chose {', '.join(self.providers)}. Set the "
                "detector's precision to fp32 or auto."
            )
        logger.info(
            "ONNX Runtime session on %s, %s model %s",
            ", ".join(self.providers),
            model.precision,
            file_name,
        )

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self._session.run(None, {self._input_name: tensor})
        return outputs

    def close(self) -> None:
        self._session = None

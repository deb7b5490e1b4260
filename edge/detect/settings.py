"""Detector settings: one pydantic model per backend, a discriminated union on `type`.

The edge settings embed `DetectorSettings` (e.g. `MICROPLATE_EDGE_DETECTOR__TYPE=tensorrt`).
Adding a backend means one settings class here, one backend file and one registry line in
`edge.detect.base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.rowdecode import RowDecodeSettings

# The shipped model lives beside the `edge` package in the repository and in an installed wheel.
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "hi-plate"
# The well classifier (task well-classification): reads calibrated plates crop by crop.
SHIPPED_WELLS_DIR = Path(__file__).resolve().parents[2] / "models" / "hi-wells"

WELL_STATES = ("flowing", "agglutinated", "invalid")


class ReviewSettings(BaseModel):
    """The plate-quality gate (`edge.detect.gate`): when a read is marked `needs_review`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_unread_fraction: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="More unread wells than this share of the plate: too_many_unread.",
    )
    max_nowell: int = Field(
        default=4,
        ge=0,
        le=384,
        description="More crops than this with no well centred in them: grid_misfit.",
    )
    not_a_plate_fraction: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="At least this share of crops without a well (or a blank frame): not_a_plate.",
    )
    max_off_centre_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Detector path: more wells than this share whose box centre is over a "
        "quarter pitch from its cell centre: grid_misfit.",
    )
    cross_check_precision: bool = Field(
        default=False,
        description="Run the classifier's fp32 and int8 files on every plate (about twice the "
        "inference time); below min_precision_agreement: precision_disagreement.",
    )
    min_precision_agreement: float = Field(default=0.98, ge=0.0, le=1.0)
    cross_check_detector: bool = Field(
        default=False,
        description="Classifier path: also run the detector on every plate (its inference "
        "time again): its boxes check the grid (off-centre wells: grid_misfit) and its calls "
        "the classifier's (below min_detector_agreement: detector_disagreement).",
    )
    min_detector_agreement: float = Field(default=0.9, ge=0.0, le=1.0)
    blank_frame_std: float = Field(
        default=4.0,
        ge=0.0,
        le=255.0,
        description="A frame whose grey levels vary less than this (standard deviation) is "
        "blank: not_a_plate. Real plate photos measure 25-70; 0 turns the check off.",
    )


class _CommonDetectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path = Field(
        default=SHIPPED_MODEL_DIR,
        description="Directory holding model.onnx and manifest.json (or a user's own ONNX export).",
    )
    wells_model_dir: Path | None = Field(
        default=SHIPPED_WELLS_DIR,
        description="The well classifier (manifest task well-classification) that reads "
        "calibrated plates; None: the detector reads every plate.",
    )
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    row_decode: RowDecodeSettings = Field(
        default_factory=RowDecodeSettings,
        description="Classifier path: decode each row's wells with the HI pattern "
        "(core.rowdecode); a row counts only when its outcome reaches min_posterior.",
    )
    class_map: dict[str, Literal["flowing", "agglutinated", "invalid"]] = Field(
        default_factory=dict,
        description="Model class name -> well state, for names the defaults do not know.",
    )
    min_confidence: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Detections below this score are discarded."
    )
    iou_threshold: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Class-aware NMS overlap threshold."
    )
    max_detections: int = Field(
        default=1000, ge=1, le=100_000, description="Most detections kept per image."
    )
    threads: int | None = Field(
        default=None, ge=1, le=256, description="CPU threads for the runtime (None: its default)."
    )

    @field_validator("class_map")
    @classmethod
    def _names_not_blank(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.strip():
                raise ValueError("class_map has an empty class name")
        return value


class OnnxDetectorSettings(_CommonDetectorSettings):
    """ONNX Runtime: CPU everywhere, the CUDA provider when the installed build has it."""

    type: Literal["onnx"] = "onnx"
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when ONNX Runtime offers it, else CPU."
    )
    precision: Literal["auto", "fp32", "int8"] = Field(
        default="auto",
        description="Which copy of the network to run: int8 is the statically quantized "
        "variant the manifest may name (CPU only); auto = int8 when the model directory ships "
        "one and inference runs on the CPU provider, else fp32.",
    )
    allow_spinning: bool = Field(
        default=False,
        description="Let ONNX Runtime's threads busy-wait between operators: slightly faster "
        "on an idle machine, much slower when the appliance's other work shares the CPUs.",
    )


class TensorRTDetectorSettings(_CommonDetectorSettings):
    """TensorRT 10 with pycuda (Jetson). The engine is built on the device and cached."""

    type: Literal["tensorrt"] = "tensorrt"
    engine_cache_dir: Path = Field(
        default=Path("/var/lib/microplate/engines"),
        description="Where built engines are kept, keyed by TensorRT, GPU, precision and model.",
    )
    precision: Literal["fp16", "int8"] = "fp16"
    calibration_images: Path | None = Field(
        default=None, description="Folder of plate images used to calibrate an INT8 engine."
    )
    workspace_mb: int = Field(default=1024, ge=64, le=65536)
    build_if_missing: bool = Field(
        default=True, description="Build the engine at start-up when the cache has none."
    )
    fallback: Literal["none", "onnx"] = Field(
        default="none",
        description="onnx: start ONNX Runtime (with a warning) when TensorRT cannot start.",
    )


class FakeBox(BaseModel):
    """One scripted detection, in pixels of the frame handed to `detect()`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x1: float
    y1: float
    x2: float
    y2: float
    class_name: str
    confidence: float = Field(default=0.9, ge=0.0, le=1.0)


def _one_empty_frame() -> list[list[FakeBox]]:
    return [[]]


class FakeDetectorSettings(_CommonDetectorSettings):
    """Scripted detections for tests and demos without a model: frame i gets frames[i % n]."""

    type: Literal["fake"] = "fake"
    # Scripted detections are the reading: no classifier unless a test names one.
    wells_model_dir: Path | None = None
    classes: list[str] = Field(default_factory=lambda: list(WELL_STATES), min_length=1)
    frames: list[list[FakeBox]] = Field(default_factory=_one_empty_frame, min_length=1)
    input_size: int = Field(default=512, ge=32, le=4096)


DetectorSettings = Annotated[
    Union[OnnxDetectorSettings, TensorRTDetectorSettings, FakeDetectorSettings],  # noqa: UP007
    Field(discriminator="type"),
]

"""Load and verify a well-classifier directory (`models/hi-wells/`, task `well-classification`).

The manifest (the contract in `docs/edge.md`, "Well classifier"):

    {"name": "hi-wells", "version": "2.0.0", "task": "well-classification",
     "input": {"name": "crops", "size": 48, "crop_scale": 1.0, "mirror_average": false,
               "layout": "NCHW", "channels": "RGB", "range": [0, 1]},
     "output": {"name": "probs", "confidence_given_well": false},
     "modes": {"tilted":   {"classes": [...], "files": {"fp32": {"path", "sha256"},
                                                        "int8": {"path", "sha256",
                                                                 "source_sha256"}}},
               "untilted": {...}},
     "precision_agreement": {"tilted": 0.995, "untilted": 0.998}, ...}

Every class list must map onto `flowing`, `agglutinated`, `invalid` and `nowell` (a crop that
is not centred on a well). Files are checked against their sha256 when loaded; an int8 file
made from another fp32 file (`source_sha256`) is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.detect.errors import ModelError
from edge.detect.model import MANIFEST_NAME, file_sha256

ReadingMode = Literal["tilted", "untilted"]
READING_MODES: tuple[ReadingMode, ...] = ("tilted", "untilted")
WellPrecision = Literal["fp32", "int8"]
WELL_CLASSES = ("flowing", "agglutinated", "invalid", "nowell")
TASK = "well-classification"
MAX_BATCH = 384  # a 384-well plate in one call


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())


class WellsInput(_Strict):
    name: str = "crops"
    size: int = Field(ge=8, le=512)
    crop_scale: float = Field(default=1.0, ge=0.25, le=4.0)
    # Read each crop and its mirror image and average the probabilities (wellcrops.with_mirrors).
    mirror_average: bool = False
    layout: Literal["NCHW"] = "NCHW"
    channels: Literal["RGB"] = "RGB"
    range: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _unit_range(self) -> WellsInput:
        if tuple(self.range) != (0.0, 1.0):
            raise ValueError("range must be [0, 1] (crop_wells gives RGB 0..1)")
        return self


class WellsOutput(_Strict):
    name: str = "probs"
    # A well's confidence is its best state's share of flowing/agglutinated/invalid: the nowell
    # share is set aside for crops that hold a well (wellcrops.given_a_well).
    confidence_given_well: bool = False


class WellsFile(_Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    source_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _plain_name(self) -> WellsFile:
        if Path(self.path).name != self.path:
            raise ValueError(f"path must be a plain file name in the model directory: {self.path}")
        return self


class WellsMode(_Strict):
    classes: list[str] = Field(min_length=2)
    files: dict[str, WellsFile]

    @model_validator(mode="after")
    def _known_classes(self) -> WellsMode:
        unknown = [c for c in self.classes if c not in WELL_CLASSES]
        if unknown:
            raise ValueError(f"classes {unknown} are not among {list(WELL_CLASSES)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("a class is listed twice")
        if "fp32" not in self.files:
            raise ValueError("files needs an fp32 entry")
        return self


class WellsManifest(_Strict):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: Literal["well-classification"]
    input: WellsInput
    output: WellsOutput = WellsOutput()
    modes: dict[str, WellsMode]
    precision_agreement: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _both_modes(self) -> WellsManifest:
        missing = [m for m in READING_MODES if m not in self.modes]
        if missing:
            raise ValueError(f"modes lacks {missing}")
        return self


@dataclass(frozen=True)
class WellsNetwork:
    """One verified file of the classifier: what to run for a (mode, precision)."""

    mode: ReadingMode
    precision: WellPrecision
    onnx_path: Path
    sha256: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class WellsModel:
    directory: Path
    name: str
    version: str
    size: int
    crop_scale: float
    input_name: str
    output_name: str
    manifest: WellsManifest

    @property
    def mirror_average(self) -> bool:
        """Read each crop with its mirror image (the manifest's `input.mirror_average`)."""
        return self.manifest.input.mirror_average

    @property
    def confidence_given_well(self) -> bool:
        """Read a well's confidence with the nowell share set aside (the manifest's
        `output.confidence_given_well`)."""
        return self.manifest.output.confidence_given_well

    def info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    def precisions(self, mode: ReadingMode) -> tuple[str, ...]:
        return tuple(p for p in ("fp32", "int8") if p in self.manifest.modes[mode].files)

    def network(self, mode: ReadingMode, precision: WellPrecision) -> WellsNetwork:
        """The verified file for `mode` at `precision` (sha256 checked now)."""
        spec = self.manifest.modes[mode]
        entry = spec.files.get(precision)
        where = f"modes.{mode}.files"
        if entry is None:
            raise ModelError(
                f"{self.directory / MANIFEST_NAME} offers no {precision} file in {where}. Set the "
                "detector's precision to fp32 (or auto)."
            )
        path = self.directory / entry.path
        if not path.is_file():
            raise ModelError(
                f"{path} is missing (named by {where}.{precision}). Copy the model directory "
                "again from the release."
            )
        actual = file_sha256(path)
        if actual.lower() != entry.sha256.lower():
            raise ModelError(
                f"{path.name} has sha256 {actual[:12]}… but {where}.{precision} expects "
                f"{entry.sha256[:12]}…: the file is corrupt or was replaced. Re-copy the model "
                "directory."
            )
        fp32 = spec.files["fp32"]
        if precision != "fp32" and entry.source_sha256 and entry.source_sha256 != fp32.sha256:
            raise ModelError(
                f"{where}.{precision} was made from another fp32 file (source_sha256 "
                f"{entry.source_sha256[:12]}…, fp32 is {fp32.sha256[:12]}…). Re-export the "
                "model, or set the detector's precision to fp32."
            )
        return WellsNetwork(
            mode=mode,
            precision=precision,
            onnx_path=path,
            sha256=actual,
            classes=tuple(spec.classes),
        )


def is_wells_model(model_dir: Path) -> bool:
    """True when `model_dir` holds a manifest whose task is well classification."""
    try:
        raw = json.loads((Path(model_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and raw.get("task") == TASK


def load_wells_model(model_dir: Path) -> WellsModel:
    """Read and check `model_dir/manifest.json`; `ModelError` says what is wrong and what to do."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{path} does not exist. Point the detector's wells_model_dir at the well "
            "classifier's folder (models/hi-wells), or set it to null to read with the detector."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} cannot be read as JSON ({exc}).") from exc
    try:
        manifest = WellsManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ModelError(
            f"{path} is not a well-classifier manifest ({problems}). Fix it or re-export the model."
        ) from exc
    return WellsModel(
        directory=model_dir,
        name=manifest.name,
        version=manifest.version,
        size=manifest.input.size,
        crop_scale=manifest.input.crop_scale,
        input_name=manifest.input.name,
        output_name=manifest.output.name,
        manifest=manifest,
    )

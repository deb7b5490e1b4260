"""Load and verify a model directory (see the manifest contract in the project docs).

A model directory holds `model.onnx` and `manifest.json`; the manifest may also name other
precisions of the same network under `variants` (today `int8`: a statically quantized copy for
ONNX Runtime on CPU), each with its own file and sha256. A user's own Ultralytics export
without a manifest is accepted too: class names come from the ONNX metadata `names` property,
the output layout from the output shape, and the Ultralytics conventions (centred letterbox,
scale 1/255, RGB) are assumed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.detect.errors import BackendUnavailable, ModelError

logger = logging.getLogger(__name__)

Layout = Literal["yolo_anchors_last", "yolo_anchors_first", "nms_free"]
BoxFormat = Literal["cxcywh", "xyxy"]
LetterboxMode = Literal["center", "topleft"]

MANIFEST_NAME = "manifest.json"

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "images"
    height: int = Field(ge=32, le=4096)
    width: int = Field(ge=32, le=4096)
    channels: Literal["RGB", "BGR"] = "RGB"
    scale: float = Field(default=1 / 255, gt=0)
    letterbox: LetterboxMode = "center"
    pad_value: int = Field(default=114, ge=0, le=255)


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Layout
    box: BoxFormat

    @model_validator(mode="after")
    def _nms_free_is_xyxy(self) -> OutputSpec:
        if self.layout == "nms_free" and self.box != "xyxy":
            raise ValueError("an nms_free output carries xyxy boxes; set output.box to 'xyxy'")
        return self


class Variant(BaseModel):
    """Another precision of the same network: `manifest.variants[<precision>]`.

    Only `file` and `sha256` are needed to run it; `input` when the variant takes another
    input size than the network as trained (same weights, same preprocessing otherwise). The
    rest (how it was made, its measured accuracy) is kept for people and tools, and unknown
    keys are ignored.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    file: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    input: InputSpec | None = None
    # sha256 of the fp32 file it was made from: a variant left over from an earlier model.onnx
    # is refused rather than run with the old weights.
    source_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    command: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _file_stays_in_dir(self) -> Variant:
        if Path(self.file).name != self.file:
            raise ValueError(f"file must be a plain file name in the model directory: {self.file}")
        return self


class Manifest(BaseModel):
    """`manifest.json`; unknown top-level keys are kept out (forward compatible)."""

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    classes: list[str] = Field(min_length=1)
    input: InputSpec
    output: OutputSpec
    trainer: dict[str, Any] | None = None
    generator_version: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    # Optional, so manifests written before it existed stay valid; keys other than the known
    # precisions are ignored (a newer manifest may offer more).
    variants: dict[str, Variant] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _file_stays_in_dir(self) -> Manifest:
        if Path(self.file).name != self.file:
            raise ValueError(f"file must be a plain file name in the model directory: {self.file}")
        return self


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: where its ONNX is and how to feed and decode it."""

    directory: Path
    onnx_path: Path | None
    name: str
    version: str
    sha256: str
    classes: tuple[str, ...]
    input: InputSpec
    output: OutputSpec
    from_manifest: bool
    precision: Precision = "fp32"
    # Precisions the manifest offers besides fp32 (whether or not this one loaded them).
    variants: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def info(self) -> dict[str, str]:
        """The model identity reported with every reading."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def declared_variants(model_dir: Path) -> tuple[str, ...]:
    """Precisions besides fp32 that `model_dir`'s manifest names (without verifying anything:
    `load_model` does that, with proper errors). Empty when there is no readable manifest."""
    try:
        raw = json.loads((Path(model_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return ()
    variants = raw.get("variants") if isinstance(raw, dict) else None
    if not isinstance(variants, dict):
        return ()
    return _offered(variants)


def _offered(variants: Iterable[str]) -> tuple[str, ...]:
    """The known precisions besides fp32 among a manifest's variant names, sorted."""
    return tuple(sorted(k for k in variants if k in PRECISIONS and k != "fp32"))


def load_model(
    model_dir: Path, *, verify: bool = True, precision: Precision = "fp32"
) -> LoadedModel:
    """Load `model_dir`, checking the manifest schema and the ONNX file's sha256.

    `precision` other than fp32 loads that variant from `manifest.variants` (its own file and
    sha256; input, output and classes are the network's). Raises `ModelError` with a message
    that says what to do when anything is off.
    """
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(
            f"Model directory {model_dir} does not exist. Point the detector's model_dir at a "
            "folder holding model.onnx and manifest.json."
        )
    manifest_path = model_dir / MANIFEST_NAME
    if manifest_path.exists():
        return _load_with_manifest(model_dir, manifest_path, verify=verify, precision=precision)
    if precision != "fp32":
        raise ModelError(
            f"{model_dir} has no manifest.json, so it offers no {precision} variant. Set the "
            "detector's precision to fp32 (or auto), or add a manifest with "
            f"variants.{precision} (python -m models.quantize --write-manifest)."
        )
    return _load_user_export(model_dir)


def _load_with_manifest(
    model_dir: Path, manifest_path: Path, *, verify: bool, precision: Precision
) -> LoadedModel:
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"{manifest_path} cannot be read as JSON ({exc}). Restore the model directory from "
            "the release or re-export the model."
        ) from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ModelError(
            f"{manifest_path} does not follow the manifest contract ({problems}). Fix the "
            "manifest or re-export the model."
        ) from exc
    offered = _offered(manifest.variants)
    file_name, expected, spec = manifest.file, manifest.sha256, manifest.input
    if precision != "fp32":
        variant = manifest.variants.get(precision)
        if variant is None:
            raise ModelError(
                f"{manifest_path} offers no {precision} variant (it has: "
                f"{', '.join(('fp32', *offered))}). Set the detector's precision to fp32 or auto, "
                f"or make one: python -m models.quantize --model-dir {model_dir} --write-manifest."
            )
        if variant.source_sha256 and variant.source_sha256.lower() != manifest.sha256.lower():
            made_from, current = variant.source_sha256[:12], manifest.sha256[:12]
            raise ModelError(
                f"variants.{precision} of {manifest_path} was made from another {manifest.file} "
                f"(sha256 {made_from}…, the manifest's is {current}…). Rebuild it (python -m "
                f"models.quantize --model-dir {model_dir} --write-manifest) or set the "
                "detector's precision to fp32."
            )
        file_name, expected = variant.file, variant.sha256
        spec = variant.input or manifest.input
    onnx_path = model_dir / file_name
    where = f"variants.{precision} of " if precision != "fp32" else ""
    if not onnx_path.is_file():
        raise ModelError(
            f"{onnx_path} is missing (named by {where}{manifest_path.name}). Copy the model file "
            "into the model directory"
            + (", or set the detector's precision to fp32." if precision != "fp32" else ".")
        )
    actual = file_sha256(onnx_path)
    if verify and actual.lower() != expected.lower():
        advice = (
            "Re-copy the model directory, or re-run python -m models.quantize --write-manifest "
            "if the variant was rebuilt on purpose."
            if precision != "fp32"
            else "Re-copy the model directory, or update the manifest if the model was changed "
            "on purpose."
        )
        raise ModelError(
            f"{onnx_path.name} has sha256 {actual[:12]}… but {where}{manifest_path.name} "
            f"expects {expected[:12]}…: the file is corrupt or was replaced. {advice}"
        )
    return LoadedModel(
        directory=model_dir,
        onnx_path=onnx_path,
        name=manifest.name,
        version=manifest.version,
        sha256=actual,
        classes=tuple(manifest.classes),
        input=spec,
        output=manifest.output,
        from_manifest=True,
        precision=precision,
        variants=offered,
    )


def _load_user_export(model_dir: Path) -> LoadedModel:
    candidates = sorted(model_dir.glob("*.onnx"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise ModelError(
            f"{model_dir} has no manifest.json and {len(candidates)} ONNX files ({found}). "
            "Keep exactly one .onnx file there, or add a manifest.json."
        )
    onnx_path = candidates[0]
    meta, in_shape, out_shape = _inspect_onnx(onnx_path)
    classes = parse_names(meta.get("names"), onnx_path)
    height, width = _static_hw(in_shape, onnx_path)
    layout = infer_layout(out_shape, len(classes), onnx_path)
    box: BoxFormat = "xyxy" if layout == "nms_free" else "cxcywh"
    logger.info(
        "model %s has no manifest: using %s classes %s, layout %s, input %dx%d",
        onnx_path,
        len(classes),
        classes,
        layout,
        width,
        height,
    )
    return LoadedModel(
        directory=model_dir,
        onnx_path=onnx_path,
        name=onnx_path.stem,
        version=str(meta.get("version", "unknown")),
        sha256=file_sha256(onnx_path),
        classes=tuple(classes),
        input=InputSpec(height=height, width=width),
        output=OutputSpec(layout=layout, box=box),
        from_manifest=False,
    )


def _inspect_onnx(path: Path) -> tuple[dict[str, str], list[Any], list[Any]]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed; it is needed to read a model without a manifest. "
            "Install the edge extra: pip install 'microplate[edge]'."
        ) from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelError(
            f"{path} cannot be loaded by ONNX Runtime ({str(exc)[:200]}): the file is corrupt "
            "or not an ONNX model. Re-export it."
        ) from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return meta, list(session.get_inputs()[0].shape), list(session.get_outputs()[0].shape)


def parse_names(raw: str | None, path: Path) -> list[str]:
    """Class names from Ultralytics' `names` metadata: a dict literal `{0: 'a', 1: 'b'}`."""
    if not raw:
        raise ModelError(
            f"{path} has no manifest.json and no 'names' metadata, so its class names are "
            "unknown. Add a manifest.json (see the model manifest contract)."
        )
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"{path}: metadata 'names' is not readable: {raw[:100]!r}") from exc
    if isinstance(value, dict) and value:
        try:
            ordered = [str(value[i]) for i in range(len(value))]
        except KeyError as exc:
            raise ModelError(
                f"{path}: metadata 'names' ids are not 0..{len(value) - 1}: {raw[:100]!r}"
            ) from exc
        return ordered
    if isinstance(value, (list, tuple)) and value:
        return [str(v) for v in value]
    raise ModelError(f"{path}: metadata 'names' is not a list of class names: {raw[:100]!r}")


def _static_hw(shape: list[Any], path: Path) -> tuple[int, int]:
    if len(shape) != 4:
        raise ModelError(f"{path}: input shape {shape} is not NCHW. Export with a 1x3xHxW input.")
    height, width = shape[2], shape[3]
    if not isinstance(height, int) or not isinstance(width, int):
        raise ModelError(
            f"{path}: input shape {shape} has dynamic height/width. Export with a static size "
            "(e.g. imgsz=640, dynamic=False) or add a manifest.json."
        )
    return height, width


def infer_layout(shape: list[Any], num_classes: int, path: Path) -> Layout:
    """Guess the head layout of an export from its output shape and class count."""
    if len(shape) != 3:
        raise ModelError(f"{path}: output shape {shape} is not [1, A, B]; add a manifest.json.")
    a, b = shape[1], shape[2]
    width = 4 + num_classes
    if a == width and (not isinstance(b, int) or b != width):
        return "yolo_anchors_last"
    if b == 6 and a != 6:
        return "nms_free"
    if b == width:
        return "yolo_anchors_first"
    raise ModelError(
        f"{path}: output shape {shape} matches neither [1, 4+{num_classes}, N] nor [1, N, 6] "
        f"for {num_classes} classes. Add a manifest.json that names the layout."
    )

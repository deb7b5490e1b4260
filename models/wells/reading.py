"""Reading a plate with a hi-wells model the way the product does (evaluation side).

Crops come from ``edge.detect.wellcrops.crop_wells`` with the manifest's size and scale (with
``input.mirror_average`` set, each crop's probabilities are averaged with its mirror image's, as
on the appliance; with ``output.confidence_given_well``, each well's ``nowell`` share is set
aside, ``wellcrops.given_a_well``); a well is called only when its best probability reaches the
threshold (else ``unread``); a ``nowell`` call is an unreadable well (``unread``); rows come from
``core.titre.row_results``.

Two ways to decide the wells, so evaluators can report both side by side: ``per well`` (each
well on its own probabilities, the threshold deciding ``unread``) and ``row decode``
(``core.rowdecode``: the per-well calls settled by the row's HI pattern, a row counted only when
its outcome's posterior reaches ``min_posterior``). :func:`read_calls` does either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from core.rowdecode import RowDecode, RowDecodeSettings, decode_plate, evidence_from_probs
from core.titre import DilutionSettings, RowResult, row_results
from core.wells import DEFAULT_MIN_CONFIDENCE, WellCall, WellState
from edge.detect.wellcrops import crop_wells, read_crops

PRECISIONS: tuple[str, ...] = ("fp32", "int8")


@dataclass
class WellsModel:
    """One mode's network of a hi-wells model directory, in one precision."""

    directory: Path
    mode: str
    precision: str
    classes: list[str]
    size: int
    scale: float
    session: Any
    mirror_average: bool = False
    confidence_given_well: bool = False

    @classmethod
    def load(cls, directory: Path, mode: str, precision: str) -> WellsModel:
        import onnxruntime as ort

        manifest = json.loads((directory / "manifest.json").read_text())
        entry = manifest["modes"][mode]
        path = directory / entry["files"][precision]["path"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return cls(
            directory,
            mode,
            precision,
            list(entry["classes"]),
            int(manifest["input"]["size"]),
            float(manifest["input"]["crop_scale"]),
            session,
            bool(manifest["input"].get("mirror_average", False)),
            bool(manifest.get("output", {}).get("confidence_given_well", False)),
        )

    def probs(self, image_bgr: np.ndarray, grid: CalibrationGrid) -> np.ndarray:
        crops = crop_wells(image_bgr, grid, size=self.size, scale=self.scale)
        name = self.session.get_inputs()[0].name
        return read_crops(  # as the edge classifier reads them
            lambda x: np.asarray(self.session.run(None, {name: x})[0]),
            crops,
            mirror_average=self.mirror_average,
            given_well_classes=self.classes if self.confidence_given_well else None,
        )


def calls_from_probs(
    probs: np.ndarray, classes: list[str], threshold: float = DEFAULT_MIN_CONFIDENCE
) -> dict[str, WellCall]:
    calls: dict[str, WellCall] = {}
    for i, p in enumerate(probs):
        row, col = divmod(i, PLATE_96.cols)
        k = int(np.argmax(p))
        name = classes[k]
        conf = float(p[k])
        state: WellState
        flags: tuple[str, ...] = ()
        if name == "nowell":  # as the edge: no well in the crop, whatever the confidence
            state, flags = "unread", ("no_well",)
        elif conf < threshold:
            state, flags = "unread", ("low_confidence",)
        else:
            state = name  # type: ignore[assignment]
        well_id = PLATE_96.well_id(row, col)
        calls[well_id] = WellCall(
            well_id=well_id,
            row=row,
            col=col,
            state=state,
            confidence=min(1.0, max(0.0, conf)),
            class_name=name,
            flags=flags,  # type: ignore[arg-type]
        )
    return calls


def read_calls(
    probs: np.ndarray,
    classes: list[str],
    threshold: float = DEFAULT_MIN_CONFIDENCE,
    *,
    decode: RowDecodeSettings | None = None,
    dilution: DilutionSettings | None = None,
    skip_matters: bool = False,
) -> tuple[dict[str, WellCall], list[RowDecode]]:
    """The well calls per well (``decode`` None or disabled), or after the row decode; the
    row posteriors (empty per well). ``dilution`` names the test columns the decode reads."""
    calls = calls_from_probs(probs, classes, threshold)
    if decode is None or not decode.enabled:
        return calls, []
    evidence = {
        well_id: evidence_from_probs(dict(zip(classes, map(float, p), strict=True)))
        for well_id, p in zip(calls, probs, strict=True)
    }
    test_columns = (dilution or DilutionSettings()).test_columns(PLATE_96)
    return decode_plate(calls, evidence, PLATE_96, test_columns, decode, skip_matters=skip_matters)


def calls_from_states(states: list[str]) -> dict[str, WellCall]:
    calls: dict[str, WellCall] = {}
    for i, s in enumerate(states):
        row, col = divmod(i, PLATE_96.cols)
        well_id = PLATE_96.well_id(row, col)
        calls[well_id] = WellCall(well_id=well_id, row=row, col=col, state=s)  # type: ignore[arg-type]
    return calls


def rows_of(
    calls: dict[str, WellCall], dilution: DilutionSettings | None = None
) -> list[RowResult]:
    return row_results(calls, PLATE_96, dilution=dilution)

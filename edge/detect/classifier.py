"""`WellClassifier`: one crop per calibrated well -> class probabilities -> well calls.

    crops (wellcrops.crop_wells, the manifest's size and crop_scale)
      -> BatchRunner.run (ONNX Runtime or TensorRT; all wells in one batch; with the manifest's
         input.mirror_average, each crop and its mirror image, probabilities averaged)
      -> probs [N, C] (with output.confidence_given_well, a well's nowell share set aside)
      -> WellCall per well -> row decode (core.rowdecode)

A well is called only when its best probability reaches the well threshold; below it the well
is `unread` + `low_confidence` (class and probability kept for display). `nowell` (the crop is
not centred on a plate well) is `unread` + `no_well`; the count of those feeds the
plate-quality gate (`edge.detect.gate`). Then, unless `row_decode.enabled` is off, each row's
test wells are decoded together with the HI pattern (`core.rowdecode`, rule in
core/README.md): a row whose outcome reaches `row_decode.min_posterior` has its uncertain wells
settled; any other row keeps (at least) one `unread` well, so `core.titre` does not count it.
`ClassifiedWells.well_calls` keeps the per-well calls (what the gate judges). With
`cross_check_precision` the fp32 and int8 files both run and the share of wells on which they
agree is reported with the calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.calibration import CalibrationError, CalibrationGrid
from core.rowdecode import Evidence, RowDecode, RowDecodeSettings, decode_plate
from core.wells import WellCall, WellFlag, WellState
from edge.detect.errors import DetectorError, ModelError
from edge.detect.imageio import reduction_for
from edge.detect.settings import SHIPPED_WELLS_DIR
from edge.detect.tensor_backends import (
    BatchRunner,
    EngineSource,
    OnnxBatchRunner,
    TensorRTBatchRunner,
)
from edge.detect.wellcrops import crop_wells, read_crops, well_boxes
from edge.detect.wells_model import (
    MAX_BATCH,
    READING_MODES,
    ReadingMode,
    WellPrecision,
    WellsModel,
    WellsNetwork,
    load_wells_model,
)

logger = logging.getLogger(__name__)

_STATES: dict[str, WellState] = {
    "flowing": "flowing",
    "agglutinated": "agglutinated",
    "invalid": "invalid",
    "nowell": "unread",
}


@dataclass(frozen=True)
class ClassifiedWells:
    calls: dict[str, WellCall]  # what the read reports: after the row decode when it runs
    mode: ReadingMode
    precision: str
    nowell: int
    # Share of wells whose call the other precision agrees with (None: only one ran).
    agreement: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    well_calls: dict[str, WellCall] = field(default_factory=dict)  # per well, before the decode
    rows: tuple[RowDecode, ...] = ()  # each row's posterior (empty: no row decode)


class WellClassifier:
    """The classifier for both reading modes; one runner per distinct file."""

    def __init__(
        self,
        model: WellsModel,
        networks: dict[tuple[ReadingMode, str], WellsNetwork],
        runners: dict[str, BatchRunner],
        *,
        precision: str,
        cross_precision: str | None = None,
        row_decode: RowDecodeSettings | None = None,
    ) -> None:
        self.model = model
        self.row_decode = row_decode if row_decode is not None else RowDecodeSettings()
        self._networks = networks
        self._runners = runners  # sha256 -> runner
        self.precision = precision
        self.cross_precision = cross_precision
        self.backend = next(iter(runners.values())).backend if runners else "none"

    def info(self, mode: ReadingMode) -> dict[str, str]:
        net = self._networks[(mode, self.precision)]
        return {
            "name": self.model.name,
            "version": self.model.version,
            "sha256": net.sha256,
            "reading": mode,
            "precision": self.precision,
        }

    def _run(self, net: WellsNetwork, crops: np.ndarray) -> np.ndarray:
        return read_crops(
            lambda batch: self._run_batches(net, batch),
            crops,
            mirror_average=self.model.mirror_average,
            given_well_classes=net.classes if self.model.confidence_given_well else None,
        )

    def _run_batches(self, net: WellsNetwork, crops: np.ndarray) -> np.ndarray:
        runner = self._runners[net.sha256]
        probs = np.empty((crops.shape[0], len(net.classes)), dtype=np.float32)
        for start in range(0, crops.shape[0], MAX_BATCH):
            out = runner.run(np.ascontiguousarray(crops[start : start + MAX_BATCH]))
            if out.ndim != 2 or out.shape[1] != len(net.classes):
                raise ModelError(
                    f"{net.onnx_path.name} returned shape {tuple(out.shape)}; the manifest's "
                    f"{net.mode} mode has {len(net.classes)} classes. Fix the manifest or "
                    "re-export the model."
                )
            probs[start : start + out.shape[0]] = out
        return probs

    def warm_up(self) -> None:
        """One crop through every (mode, precision); the output must be [1, C] probabilities
        with C the mode's class count."""
        blank = np.full((1, 3, self.model.size, self.model.size), 0.5, dtype=np.float32)
        for net in self._networks.values():
            probs = self._run(net, blank)
            if not np.all(np.isfinite(probs)) or abs(float(probs.sum()) - 1.0) > 1e-2:
                raise ModelError(
                    f"{net.onnx_path.name} does not output probabilities (a row sums to "
                    f"{float(probs.sum()):.3f}); export the classifier with its Softmax."
                )

    def classify(
        self,
        image_bgr: np.ndarray,
        grid: CalibrationGrid,
        *,
        mode: ReadingMode,
        min_confidence: float,
        test_columns: Sequence[int] | None = None,
        skip_matters: bool = False,
        decode: bool = True,
    ) -> ClassifiedWells:
        """Call every well of `grid` (in full-size pixels); `image_bgr` may be a reduced frame.
        `test_columns`: the plate column numbers of the dilution series, which the row decode
        reads (default: every column); `skip_matters`: the counting policy excludes skipped
        rows, so the decode must be sure of the skip flag too; `decode=False`: no decode."""
        t0 = time.perf_counter()
        crops = crop_wells(image_bgr, grid, size=self.model.size, scale=self.model.crop_scale)
        t1 = time.perf_counter()
        net = self._networks[(mode, self.precision)]
        probs = self._run(net, crops)
        t2 = time.perf_counter()
        well_calls, nowell = calls_from_probs(probs, net.classes, grid, min_confidence)
        calls: dict[str, WellCall] = well_calls
        rows: tuple[RowDecode, ...] = ()
        if decode and self.row_decode.enabled:
            fmt = grid.plate_format
            cols = (
                tuple(test_columns) if test_columns is not None else tuple(range(1, fmt.cols + 1))
            )
            decoded, decodes = decode_plate(
                well_calls,
                evidence_of(probs, net.classes, well_calls),
                fmt,
                cols,
                self.row_decode,
                skip_matters=skip_matters,
            )
            calls, rows = decoded, tuple(decodes)
        agreement = None
        if self.cross_precision is not None:
            other = self._networks[(mode, self.cross_precision)]
            theirs = self._run(other, crops)
            agreement = float(np.mean(probs.argmax(1) == theirs.argmax(1)))
        t3 = time.perf_counter()
        return ClassifiedWells(
            calls=calls,
            mode=mode,
            precision=self.precision,
            nowell=nowell,
            agreement=agreement,
            timings_ms={
                "preprocess": (t1 - t0) * 1e3,
                "infer": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            },
            well_calls=well_calls,
            rows=rows,
        )

    def nowell_moved(
        self,
        image_bgr: np.ndarray,
        grid: CalibrationGrid,
        *,
        mode: ReadingMode,
        min_confidence: float,
    ) -> int | None:
        """The fewest `nowell` crops through the grid moved by half a well (right, down, both;
        left/up where the frame has no room): tells a misplaced grid from a frame that holds
        no plate. The reader runs it only when most crops hold no well, so a good plate never
        pays for it. None when the frame has no room for any move."""
        half_x = (grid.columns[-1] - grid.columns[0]) / (len(grid.columns) - 1) / 2
        half_y = (grid.rows[-1] - grid.rows[0]) / (len(grid.rows) - 1) / 2
        dx = half_x if grid.columns[-1] + half_x <= grid.image_width else -half_x
        dy = half_y if grid.rows[-1] + half_y <= grid.image_height else -half_y
        counts = []
        for sx, sy in ((dx, 0.0), (0.0, dy), (dx, dy)):
            try:
                moved = CalibrationGrid(
                    columns=tuple(x + sx for x in grid.columns),
                    rows=tuple(y + sy for y in grid.rows),
                    image_width=grid.image_width,
                    image_height=grid.image_height,
                )
            except CalibrationError:
                continue  # no room in the frame for this move
            found = self.classify(
                image_bgr, moved, mode=mode, min_confidence=min_confidence, decode=False
            )
            counts.append(found.nowell)
        return min(counts) if counts else None

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners = {}


def classifier_reduction(data: bytes, grid: CalibrationGrid, size: int, scale: float) -> int:
    """The largest JPEG reduction that keeps the smallest well crop at least `size` pixels."""
    side = min(s for _, _, s in well_boxes(grid, scale=scale))
    if side <= 0:
        return 1
    need_w = max(1, round(grid.image_width * size / side))
    need_h = max(1, round(grid.image_height * size / side))
    return reduction_for(data, need_h, need_w)


def calls_from_probs(
    probs: np.ndarray, classes: tuple[str, ...], grid: CalibrationGrid, min_confidence: float
) -> tuple[dict[str, WellCall], int]:
    """Well calls (plate order) from [N, C] probabilities, and the number of `nowell` crops."""
    fmt = grid.plate_format
    best = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    calls: dict[str, WellCall] = {}
    nowell = 0
    for i in range(fmt.n_wells):
        row, col = divmod(i, fmt.cols)
        well_id = fmt.well_id(row, col)
        name = classes[int(best[i])]
        confidence = float(min(max(conf[i], 0.0), 1.0))
        flags: tuple[WellFlag, ...] = ()
        state = _STATES[name]
        if name == "nowell":
            nowell += 1
            flags = ("no_well",)
        elif confidence < min_confidence:
            state, flags = "unread", ("low_confidence",)
        calls[well_id] = WellCall(
            well_id=well_id,
            row=row,
            col=col,
            state=state,
            confidence=confidence,
            box=grid.cell_box(row, col),
            class_name=name,
            flags=flags,
            n_detections=1,
        )
    return calls, nowell


def evidence_of(
    probs: np.ndarray, classes: tuple[str, ...], calls: dict[str, WellCall]
) -> dict[str, Evidence]:
    """Each well's (flowing, agglutinated, invalid) probabilities, renormalised over the three
    (the `nowell` share dropped), in the order of `calls` (the crops' order)."""
    three = np.zeros((probs.shape[0], 3), np.float64)
    for k, name in enumerate(("flowing", "agglutinated", "invalid")):
        if name in classes:  # a model may lack a class: no evidence for it
            three[:, k] = probs[:, classes.index(name)]
    sums = three.sum(axis=1, keepdims=True)
    three = np.divide(three, sums, out=np.full_like(three, 1 / 3), where=sums > 0)
    return {
        well_id: (float(p[0]), float(p[1]), float(p[2]))
        for well_id, p in zip(calls, three, strict=True)
    }


def _wells_dir(settings: Any) -> Path | None:
    """The configured classifier folder; None when there is none to use (the detector reads)."""
    directory = getattr(settings, "wells_model_dir", None)
    if directory is None:
        return None
    directory = Path(directory)
    if not directory.exists() and directory == SHIPPED_WELLS_DIR:
        logger.info("no well classifier at %s: plates are read by the detector", directory)
        return None
    return directory


def _precisions(settings: Any, model: WellsModel, cpu_only: bool) -> tuple[str, str | None]:
    offered = set(model.precisions("tilted")) & set(model.precisions("untilted"))
    requested = getattr(settings, "precision", "auto")
    if settings.type == "tensorrt" or requested == "fp16":
        main = "fp32"  # TensorRT builds its fp16 engine from the fp32 file
    elif requested == "auto":
        main = "int8" if cpu_only and "int8" in offered else "fp32"
    else:
        main = requested
    cross = None
    if getattr(settings.review, "cross_check_precision", False):
        if "int8" not in offered:
            raise DetectorError(
                "review.cross_check_precision needs the classifier's int8 files, but "
                f"{model.directory} offers only fp32 in some mode. Turn the cross-check off."
            )
        cross = "fp32" if main == "int8" else "int8"
    return main, cross


def create_classifier(settings: Any, *, warm_up: bool = True) -> WellClassifier | None:
    """The well classifier the detector settings ask for, or None (read with the detector)."""
    directory = _wells_dir(settings)
    if directory is None:
        return None
    model = load_wells_model(directory)
    cpu_only = settings.type == "fake"
    if settings.type == "onnx":
        from edge.detect.onnx_backend import _available_providers, choose_providers

        cpu_only = choose_providers(settings.device, _available_providers()) == [
            "CPUExecutionProvider"
        ]
    main, cross = _precisions(settings, model, cpu_only)
    networks: dict[tuple[ReadingMode, str], WellsNetwork] = {}
    for mode in READING_MODES:
        for precision in {main, *([cross] if cross else [])}:
            prec: WellPrecision = "int8" if precision == "int8" else "fp32"
            networks[(mode, precision)] = model.network(mode, prec)
    runners: dict[str, BatchRunner] = {}
    try:
        for net in networks.values():
            if net.sha256 not in runners:
                runners[net.sha256] = _runner(settings, model, net)
        classifier = WellClassifier(
            model,
            networks,
            runners,
            precision=main,
            cross_precision=cross,
            row_decode=getattr(settings, "row_decode", None),
        )
        if warm_up:
            classifier.warm_up()
    except BaseException:
        for runner in runners.values():
            runner.close()
        raise
    logger.info(
        "well classifier ready: %s %s, %s %s%s",
        model.name,
        model.version,
        classifier.backend,
        main,
        f" (cross-checked with {cross})" if cross else "",
    )
    return classifier


def _runner(settings: Any, model: WellsModel, net: WellsNetwork) -> BatchRunner:
    threads = getattr(settings, "threads", None)
    if settings.type == "tensorrt" and net.precision == "fp32":
        try:
            return TensorRTBatchRunner(
                EngineSource(
                    name=f"{model.name}-{net.mode}",
                    directory=model.directory,
                    onnx_path=net.onnx_path,
                    sha256=net.sha256,
                ),
                input_name=model.input_name,
                sample_shape=(3, model.size, model.size),
                max_batch=MAX_BATCH,
                opt_batch=96,
                engine_cache_dir=settings.engine_cache_dir,
                precision="fp16",
                workspace_mb=settings.workspace_mb,
                build_if_missing=settings.build_if_missing,
            )
        except ModelError:
            raise
        except DetectorError as exc:
            if settings.fallback != "onnx":
                raise
            logger.warning("TensorRT cannot run the classifier (%s); using ONNX Runtime", exc)
        return OnnxBatchRunner(net.onnx_path, device="cpu", threads=threads)
    device = getattr(settings, "device", "cpu")
    if net.precision == "int8":
        device = "cpu"  # the quantized file is made for the CPU provider
    return OnnxBatchRunner(
        net.onnx_path,
        device=device if settings.type == "onnx" else "cpu",
        threads=threads,
        allow_spinning=getattr(settings, "allow_spinning", False),
    )

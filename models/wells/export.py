"""Package trained hi-wells networks: fp32 ONNX, static int8, agreement check, manifest.

    python -m models.wells.export --run tilted=/tmp/hw/run/tilted \
        --run untilted=/tmp/hw/run/untilted --out models/hi-wells --version 2.0.0

For each reading mode: the run's fp32 ``model.onnx`` is copied to ``<mode>.onnx``; an int8
variant ``<mode>.int8.onnx`` is made by ONNX Runtime static quantization (QDQ, per-channel
7-bit weights as in ``models/quantize.py``, uint8 activations) calibrated on crops of a
generator v2 stream of their own; then both files read an evaluation stream of crops (wells,
near-misses and ``nowell``) and must agree on at least ``--min-agreement`` (0.99) of the calls.
If any mode falls short, the export stops with :class:`AgreementError` and writes **no**
manifest (an older manifest in ``--out`` is removed, so the edge never loads a manifest that
does not describe the files next to it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect.wellcrops import read_crops
from models.synth.look import READING_MODES
from models.wells.dataset import CLASSES, build

logger = logging.getLogger(__name__)

NAME = "hi-wells"
MIN_AGREEMENT = 0.99
# Generator v2 streams by purpose; the training CLI's defaults use 101/102 (tilted) and
# 201/202 (untilted), held-out evaluation 9001+ (models.wells.evaluate).
CALIBRATION_SEEDS = {"tilted": 301, "untilted": 401}
AGREEMENT_SEEDS = {"tilted": 8101, "untilted": 8201}


class AgreementError(RuntimeError):
    """int8 and fp32 disagree on too many well calls: no manifest is written."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def crops_float(seed: int, plates: int, mode: str, size: int, scale: float) -> np.ndarray:
    crops = build(seed, 0, plates, mode, size=size, scale=scale)
    return crops.x.astype(np.float32) / np.float32(255.0)


def run_probs(model_path: Path, x: np.ndarray, batch: int = 384) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


def agreement(fp32: Path, int8: Path, x: np.ndarray, *, mirror_average: bool = False) -> float:
    """Share of crops on which both files make the same call (argmax), read as the manifest
    says (with ``mirror_average``: each crop's probabilities averaged with its mirror's)."""

    def calls(model: Path) -> np.ndarray:
        return read_crops(
            lambda batch: run_probs(model, batch), x, mirror_average=mirror_average
        ).argmax(1)

    return float((calls(fp32) == calls(int8)).mean())


class _Reader:
    def __init__(self, name: str, x: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(prefix="hiwells-q-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            _Reader("crops", calibration),
            quant_format=QuantFormat.QDQ,
            # The softmax stays float: its input is the logits, whose small differences decide
            # the calls near the threshold.
            op_types_to_quantize=["Conv", "MaxPool", "GlobalAveragePool", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return {
        "format": "qdq",
        "per_channel": True,
        "reduce_range": True,
        "calibration_method": "minmax",
        "calibration_crops": len(calibration),
        "onnxruntime": metadata.version("onnxruntime"),
    }


def package(
    runs: dict[str, Path],
    out: Path,
    *,
    version: str,
    min_agreement: float = MIN_AGREEMENT,
    calibration_plates: int = 16,
    agreement_plates: int = 16,
    int8_override: dict[str, Path] | None = None,
    mirror_average: bool = False,
    confidence_given_well: bool = False,
) -> dict[str, Any]:
    """Write ``out`` (model files + manifest); raise :class:`AgreementError` (no manifest)
    when int8 and fp32 disagree. ``int8_override`` replaces a mode's quantized file (tests)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()
    infos = {m: json.loads((runs[m] / "run_info.json").read_text()) for m in runs}
    sizes = {(i["size"], i["crop_scale"]) for i in infos.values()}
    if len(sizes) != 1:
        raise ValueError(f"the runs use different crop sizes/scales: {sorted(sizes)}")
    size, scale = sizes.pop()
    modes: dict[str, Any] = {}
    agree: dict[str, float] = {}
    quant: dict[str, Any] = {}
    for mode, run in runs.items():
        fp32 = out / f"{mode}.onnx"
        int8 = out / f"{mode}.int8.onnx"
        shutil.copyfile(run / "model.onnx", fp32)
        if int8_override and mode in int8_override:
            shutil.copyfile(int8_override[mode], int8)
            quant[mode] = {"override": str(int8_override[mode])}
        else:
            calib = crops_float(CALIBRATION_SEEDS[mode], calibration_plates, mode, size, scale)
            quant[mode] = quantize_int8(fp32, int8, calib)
            quant[mode]["seed"] = CALIBRATION_SEEDS[mode]
        x = crops_float(AGREEMENT_SEEDS[mode], agreement_plates, mode, size, scale)
        agree[mode] = round(agreement(fp32, int8, x, mirror_average=mirror_average), 4)
        logger.info(
            "%s: int8 and fp32 agree on %.2f %% of %d crops", mode, 100 * agree[mode], len(x)
        )
        fp32_sha = sha256_of(fp32)
        modes[mode] = {
            "classes": list(CLASSES),
            "files": {
                "fp32": {"path": fp32.name, "sha256": fp32_sha},
                "int8": {"path": int8.name, "sha256": sha256_of(int8), "source_sha256": fp32_sha},
            },
        }
    short = {m: a for m, a in agree.items() if a < min_agreement}
    if short:
        raise AgreementError(
            "int8 and fp32 disagree on too many well calls ("
            + ", ".join(f"{m}: {100 * a:.2f} % agree" for m, a in short.items())
            + f", need {100 * min_agreement:.1f} %): no manifest written"
        )
    manifest = {
        "name": NAME,
        "version": version,
        "task": "well-classification",
        "input": {
            "name": "crops",
            "size": size,
            "crop_scale": scale,
            "mirror_average": mirror_average,
            "layout": "NCHW",
            "channels": "RGB",
            "range": [0, 1],
        },
        "output": {"name": "probs", "confidence_given_well": confidence_given_well},
        "modes": modes,
        "precision_agreement": agree,
        "trainer": {
            "runs": {
                m: {
                    k: i.get(k)
                    for k in (
                        "generator_version",
                        "init",
                        "seed",
                        "plates",
                        "epochs",
                        "width",
                        "batch",
                        "lr",
                        "train_crops",
                        "train_seconds",
                        "torch",
                    )
                }
                for m, i in infos.items()
            },
            "quantization": quant,
            "agreement_plates": agreement_plates,
            "agreement_seeds": {m: AGREEMENT_SEEDS[m] for m in runs},
        },
        "metrics": {
            "validation_accuracy": {m: round(float(i["val_accuracy"]), 4) for m, i in infos.items()}
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.wells.export", description=__doc__)
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="MODE=DIR",
        help="a training run's output folder for one reading mode",
    )
    parser.add_argument("--out", type=Path, default=Path("models/hi-wells"))
    parser.add_argument("--version", default="2.0.0")
    parser.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    parser.add_argument(
        "--mirror-average",
        action="store_true",
        help="the manifest asks readers to average each crop's probabilities with its mirror's",
    )
    parser.add_argument(
        "--confidence-given-well",
        action="store_true",
        help="the manifest asks readers to set each well's nowell share aside before the "
        "threshold (wellcrops.given_a_well)",
    )
    args = parser.parse_args(argv)
    runs: dict[str, Path] = {}
    for item in args.run:
        mode, _, path = item.partition("=")
        if mode not in READING_MODES or not path:
            parser.error(f"--run {item!r}: expected MODE=DIR with MODE one of {READING_MODES}")
        runs[mode] = Path(path)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        package(
            runs,
            args.out,
            version=args.version,
            min_agreement=args.min_agreement,
            mirror_average=args.mirror_average,
            confidence_given_well=args.confidence_given_well,
        )
    except AgreementError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Static INT8 quantization of the shipped network for ONNX Runtime on CPU.

    python -m models.quantize --height 288 --width 384 --plates 96 --method percentile \
        --reduce-range --write-manifest

Calibration plates come from their own generator stream (seed 2; training uses seed 1, the
bundled samples seed 7, evaluation seed 1000), so calibration never sees an evaluation plate.
Each plate is prepared exactly as the edge prepares a photo: the JPEG decoded at reduced size
(`edge.detect.imageio`), letterboxed and normalised (`edge.detect.processing`).

What gets quantized: every convolution of the backbone, neck and head (weights per channel,
symmetric int8 in a 7-bit range; activations uint8, their ranges from percentile calibration,
the default: with the ReLU network MinMax let a few extreme activations stretch the 8-bit
ranges, 99.63 % of evaluation wells against 99.70 %), the activations (a ReLU folds into its
convolution's output range; a SiLU network's sigmoids and multiplies are quantized as they
are), adds and concats, in ONNX Runtime's QDQ format (QOperator measured the same speed here;
QDQ is the format ONNX Runtime recommends). The five 2x2 average pools are first
rewritten as the depthwise convolutions they equal (exactly, in float): ONNX Runtime's int8
average pool cost about 1.3 ms per plate, the int8 depthwise convolution a fraction of that.
What stays float: the head's decoding tail (the per-level concat of box distributions and
class logits, DFL softmax, anchor arithmetic, sigmoid scores): it mixes box pixels (0..512) with
scores (0..1) in one tensor, which a single 8-bit scale would ruin, and it is cheap. The final
1x1 convolutions that produce box distributions and class logits stay float too
(`--quantize-head-outputs` quantizes them): their outputs decide scores near the threshold.

Why 7-bit weights (`reduce_range`, the default): on x86 CPUs without VNNI (AVX2 only, e.g. AMD
Zen 3) ONNX Runtime multiplies uint8 activations by int8 weights with VPMADDUBSW, which adds
pairs of products into a saturating int16; with full-range weights those sums overflow. The
first int8 file, made with full-range weights, read 574/576 of the bundled wells on an
AVX-512 VNNI machine (Zen 4) and 563/576 on an AVX2 one (Zen 3). With 7-bit weights no pair
sum can overflow, so an AVX2 CPU computes the same integers as a VNNI one (574/576 measured on
AVX2); uint8 weights (`--weight-type uint8`) also avoid it but ran 20 % slower on AVX2.

The result is written next to the FP32 model and described in `manifest.json` under
`variants.int8` (file, sha256, the command that made it, calibration data, and the accuracy
`models.evaluate --precision int8` measured), which the edge's ONNX Runtime backend reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect.model import InputSpec

logger = logging.getLogger(__name__)

CALIBRATION_SEED = 2
RESERVED_SEEDS = {1: "training", 7: "bundled samples", 1000: "evaluation"}
INT8_FILE = "model.int8.onnx"
# The graph's decoding tail starts at the three per-level concats of (box distribution, class
# logits); everything downstream of them stays float.
HEAD_CONCAT_PREFIX = "/inner/head/Concat"


def calibration_tensors(
    spec: InputSpec, seed: int, plates: int, start: int = 0
) -> Iterator[np.ndarray]:
    """Letterboxed, normalised NCHW float32 tensors of freshly rendered plates, prepared the
    way `edge.detect.reader.PlateReader.read_bytes` prepares a photo for input `spec`."""
    from edge.detect.imageio import decode_image, reduction_for
    from edge.detect.processing import prepare_input
    from models.synth import render_plate

    for index in range(start, start + plates):
        jpeg = render_plate(seed, index).jpeg
        image = decode_image(jpeg, reduce=reduction_for(jpeg, spec.height, spec.width))
        yield prepare_input(image, spec)[0]


def float_tail(model_path: Path, *, keep_head_outputs_float: bool) -> list[str]:
    """Names of the nodes that stay float: the decoding tail (and the head's last convs)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    starts = [n for n in graph.node if n.op_type == "Concat" and _is_head_concat(n.name)]
    if len(starts) != 3:
        raise SystemExit(
            f"{model_path}: expected 3 head concats named {HEAD_CONCAT_PREFIX}[_1|_2], found "
            f"{[n.name for n in starts]}; this script knows the LibreYOLO9 export only"
        )
    tail: set[str] = set()
    frontier = [out for n in starts for out in n.output]
    tail.update(n.name for n in starts)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.name not in tail:
                tail.add(node.name)
                frontier.extend(node.output)
    if keep_head_outputs_float:
        for node in starts:
            for name in node.input:
                producer = producers.get(name)
                if producer is not None and producer.op_type == "Conv":
                    tail.add(producer.name)
    return sorted(tail)


def pools_to_depthwise(model_path: Path) -> int:
    """Rewrite each AveragePool as the depthwise convolution it equals (weights 1/k², one group
    per channel), in place; returns how many. In float the two compute the same numbers; once
    quantized, ONNX Runtime's QLinearConv is much faster than its QLinearAveragePool."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(model_path)))
    channels = {
        vi.name: vi.type.tensor_type.shape.dim[1].dim_value
        for vi in [*model.graph.value_info, *model.graph.input]
        if len(vi.type.tensor_type.shape.dim) == 4
    }
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        simple = attrs.get("ceil_mode", 0) == 0 and attrs.get("auto_pad", b"NOTSET") == b"NOTSET"
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if node.op_type != "AveragePool" or not simple or not channels.get(node.input[0]):
            nodes.append(node)
            continue
        if any(pads) and not attrs.get("count_include_pad", 0):
            nodes.append(node)  # padded edges would be averaged over fewer pixels
            continue
        kh, kw = attrs["kernel_shape"]
        c = channels[node.input[0]]
        weight = np.full((c, 1, kh, kw), 1.0 / (kh * kw), dtype=np.float32)
        model.graph.initializer.append(numpy_helper.from_array(weight, f"{node.name}_dw_weight"))
        nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], f"{node.name}_dw_weight"],
                list(node.output),
                name=f"{node.name}_dw",
                group=c,
                kernel_shape=[kh, kw],
                strides=list(attrs.get("strides", [1, 1])),
                pads=pads,
            )
        )
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(model_path))
    return count


def _is_head_concat(name: str) -> bool:
    return name in (HEAD_CONCAT_PREFIX, f"{HEAD_CONCAT_PREFIX}_1", f"{HEAD_CONCAT_PREFIX}_2")


class PlateCalibration:
    """`onnxruntime.quantization.CalibrationDataReader` over prepared plate tensors."""

    def __init__(self, input_name: str, tensors: list[np.ndarray]) -> None:
        self.input_name = input_name
        self._items = iter(tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._items, None)
        return None if tensor is None else {self.input_name: tensor}


def quantize(
    model_dir: Path,
    out: Path,
    *,
    seed: int,
    plates: int,
    quant_format: str,
    method: str,
    quantize_head_outputs: bool,
    height: int | None = None,
    width: int | None = None,
    pools_as_convs: bool = True,
    weight_type: str = "int8",
    reduce_range: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )
    from rich.progress import track

    from edge.detect.model import load_model

    model = load_model(model_dir)
    assert model.onnx_path is not None
    spec = model.input.model_copy(
        update={"height": height or model.input.height, "width": width or model.input.width}
    )
    resized = spec != model.input
    started = time.perf_counter()
    tensors = list(
        track(
            calibration_tensors(spec, seed, plates),
            total=plates,
            description="rendering calibration plates",
            disable=not progress,
        )
    )
    logger.info("%d calibration tensors in %.0f s", len(tensors), time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        source = model.onnx_path
        if resized:
            import onnx

            from models.resize_input import resize_graph

            source = Path(tmp) / "resized.onnx"
            graph = resize_graph(onnx.load(str(model.onnx_path)), spec.height, spec.width)
            onnx.save(graph, str(source))
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + ONNX Runtime's own graph fusions before placing Q/DQ nodes, as its
        # documentation recommends; node names of the decoding tail survive it.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if pools_as_convs:
            rewritten = pools_to_depthwise(prepared)
            logger.info("%d average pools rewritten as depthwise convs", rewritten)
        excluded = float_tail(prepared, keep_head_outputs_float=not quantize_head_outputs)
        logger.info("quantizing with %d nodes kept float", len(excluded))
        quantize_static(
            str(prepared),
            str(out),
            PlateCalibration(model.input.name, tensors),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=None,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
            reduce_range=reduce_range,
            nodes_to_exclude=excluded,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy,
            }[method],
        )
    info: dict[str, Any] = {"input": spec.model_dump()} if resized else {}
    return {
        **info,
        "seed": seed,
        "plates": plates,
        "format": quant_format,
        "calibration_method": method,
        "float_nodes": len(excluded),
        "pools_as_convs": pools_as_convs,
        "weight_type": weight_type,
        "reduce_range": reduce_range,
        "source_sha256": model.sha256,
        "onnxruntime": metadata.version("onnxruntime"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.quantize", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("models/hi-plate"))
    parser.add_argument("--out", type=Path, help=f"output file (default MODEL_DIR/{INT8_FILE})")
    parser.add_argument("--plates", type=int, default=96, help="calibration plates")
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="calibration stream")
    parser.add_argument("--format", choices=("qdq", "qoperator"), default="qdq")
    parser.add_argument(
        "--method",
        choices=("minmax", "percentile", "entropy"),
        default="percentile",
        help="activation range calibration (percentile: clips the rare extreme activations)",
    )
    parser.add_argument("--quantize-head-outputs", action="store_true")
    parser.add_argument(
        "--height", type=int, help="input height of the variant (default: the network's)"
    )
    parser.add_argument("--width", type=int, help="input width of the variant")
    parser.add_argument(
        "--keep-average-pools",
        action="store_true",
        help="do not rewrite average pools as depthwise convolutions (about 1 ms slower here)",
    )
    parser.add_argument(
        "--write-manifest",
        action="store_true",
        help="record the file, sha256 and command under variants.int8 in manifest.json",
    )
    parser.add_argument("--weight-type", choices=("int8", "uint8"), default="int8")
    parser.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="7-bit weights (default): no int16 saturation on CPUs without VNNI",
    )
    args = parser.parse_args(argv)
    if args.seed in RESERVED_SEEDS:
        parser.error(f"seed {args.seed} is the {RESERVED_SEEDS[args.seed]} stream; use another")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or args.model_dir / INT8_FILE
    info = quantize(
        args.model_dir,
        out,
        seed=args.seed,
        plates=args.plates,
        quant_format=args.format,
        method=args.method,
        quantize_head_outputs=args.quantize_head_outputs,
        height=args.height,
        width=args.width,
        pools_as_convs=not args.keep_average_pools,
        weight_type=args.weight_type,
        reduce_range=args.reduce_range,
    )
    command = "python -m models.quantize " + shlex.join(argv if argv is not None else sys.argv[1:])
    logger.info("wrote %s (%.1f MB) in %.0f s", out, out.stat().st_size / 1e6, info["seconds"])
    if args.write_manifest:
        write_manifest_variant(args.model_dir, out, command=command, info=info)
    return 0


def write_manifest_variant(
    model_dir: Path, out: Path, *, command: str, info: dict[str, Any]
) -> None:
    """Record `out` as the manifest's `variants.int8` (keeping its measured metrics if the
    file did not change)."""
    from edge.detect.model import MANIFEST_NAME, file_sha256

    if out.parent.resolve() != model_dir.resolve():
        raise SystemExit(f"{out} is not inside {model_dir}; a manifest names files beside it")
    path = model_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    sha = file_sha256(out)
    variants = manifest.setdefault("variants", {})
    old = variants.get("int8", {})
    metrics = old.get("metrics", {}) if old.get("sha256") == sha else {}
    entry: dict[str, Any] = {"file": out.name, "sha256": sha}
    if "source_sha256" in info:
        entry["source_sha256"] = info["source_sha256"]
    if "input" in info:
        entry["input"] = info["input"]
    entry.update(
        {
            "precision": "int8",
            "device": "cpu",
            "command": command,
            "calibration": {k: v for k, v in info.items() if k not in ("input", "source_sha256")},
            "metrics": metrics,
        }
    )
    variants["int8"] = entry
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("manifest: variants.int8 = %s (%s)", out.name, sha[:12])


if __name__ == "__main__":
    sys.exit(main())

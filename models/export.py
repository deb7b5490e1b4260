"""Export a trained LibreYOLO9 checkpoint to the committed ONNX graph and write its manifest.

Runs in the training venv:

    /work/venv-train/bin/python -m models.export --weights RUN/weights/best.pt --out models/hi-plate

LibreYOLO's native head emits `[1, 4+nc, N]` with corner boxes (x1, y1, x2, y2). The shipped
graph wraps it so the output is the Ultralytics YOLOv8/11 layout every consumer knows:
`[1, 4+nc, N]`, centre boxes (cx, cy, w, h) in letterboxed input pixels, then one sigmoid score
per class, no objectness (manifest: `yolo_anchors_last`, `cxcywh`). Input: `images`, static
1x3x512x512 float32 RGB scaled by 1/255, centred letterbox with pad value 114 (the model was
trained with `letterbox_pad="center"`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OPSET = 17
# The shipped weights' version: bump it whenever new weights are exported (the edge stores it
# with every run, so results stay traceable to the network that read them).
# 1.0.0: LibreYOLO9-t with YOLOv9's SiLU; 1.1.0: the same architecture with ReLU.
MODEL_VERSION = "1.1.0"


def trained_activation(run_info: dict[str, Any]) -> str:
    """The activation the run trained with; runs recorded before the option existed trained
    YOLOv9's own SiLU."""
    return str(run_info.get("settings", {}).get("activation", "silu"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_onnx(weights: Path, onnx_path: Path, imgsz: int, activation: str = "silu") -> list[str]:
    import torch
    from libreyolo import LibreYOLO9

    from models.train import check_activation, use_activation

    # A checkpoint holds weights only; the activation comes from the run that trained them.
    use_activation(activation)
    wrapper = LibreYOLO9(str(weights), size="t", nb_classes=3, device="cpu")
    check_activation(wrapper.model, activation)
    if getattr(wrapper, "letterbox_pad", "center") != "center":
        raise SystemExit(f"checkpoint letterbox is {wrapper.letterbox_pad!r}, expected 'center'")
    net = wrapper.model.eval()
    net.fuse()
    net.head.export = True
    names = [wrapper.names[i] for i in range(wrapper.nb_classes)]

    class CentreBoxes(torch.nn.Module):
        """xyxy -> cxcywh so the graph matches the Ultralytics head layout."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            out = self.inner(images)
            xy1, xy2, scores = out[:, 0:2], out[:, 2:4], out[:, 4:]
            return torch.cat(((xy1 + xy2) * 0.5, xy2 - xy1, scores), 1)

    model = CentreBoxes(net).eval()
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(onnx_path),
            input_names=["images"],
            output_names=["output0"],
            opset_version=OPSET,
            dynamic_axes=None,
            dynamo=False,
        )
    import onnx

    proto = onnx.load(str(onnx_path))
    # Ultralytics-style metadata so a reader without the manifest still finds the class names.
    meta = {
        # Written exactly as Ultralytics does (a Python dict repr), so readers that parse
        # Ultralytics metadata with ast.literal_eval read ours too.
        "names": str(dict(enumerate(names))),
        "imgsz": str([imgsz, imgsz]),
        "stride": "32",
        "task": "detect",
        "batch": "1",
        "letterbox": "center",
        "box": "cxcywh",
        "trainer": "libreyolo",
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))
    return names


def write_manifest(
    out: Path,
    names: list[str],
    imgsz: int,
    run_info: dict[str, Any],
    metrics: dict[str, Any],
    version: str = MODEL_VERSION,
) -> dict[str, Any]:
    from models.synth import GENERATOR_VERSION

    onnx_path = out / "model.onnx"
    manifest = {
        "name": "microplate-hi-plate",
        "version": version,
        "file": "model.onnx",
        "sha256": sha256_file(onnx_path),
        "classes": names,
        "input": {
            "name": "images",
            "height": imgsz,
            "width": imgsz,
            "channels": "RGB",
            "scale": 1.0 / 255.0,
            "letterbox": "center",
            "pad_value": 114,
        },
        "output": {"layout": "yolo_anchors_last", "box": "cxcywh"},
        "trainer": {
            "name": "libreyolo",
            "version": run_info.get("trainer", {}).get("version", metadata.version("libreyolo")),
            "licence": "MIT",
            "command": run_info.get("command", ""),
            "activation": trained_activation(run_info),
        },
        "generator_version": run_info.get("generator_version", GENERATOR_VERSION),
        "metrics": metrics,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.export", description=__doc__)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("models/hi-plate"))
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--run-info", type=Path, help="run_info.json written by models.train")
    parser.add_argument("--version", default=MODEL_VERSION, help="the manifest's model version")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_info: dict[str, Any] = {}
    if args.run_info and args.run_info.exists():
        run_info = json.loads(args.run_info.read_text())
    names = export_onnx(
        args.weights, args.out / "model.onnx", args.imgsz, trained_activation(run_info)
    )
    metrics: dict[str, Any] = {}
    existing = args.out / "manifest.json"
    if existing.exists():
        # Measured accuracy belongs to the file it was measured on: kept when the export gave
        # the same bytes again, dropped for new weights (`models.evaluate --write-manifest`
        # measures them; so does `models.quantize` for the int8 variant, which is dropped too).
        previous = json.loads(existing.read_text())
        if previous.get("sha256") == sha256_file(args.out / "model.onnx"):
            metrics = previous.get("metrics", {})
    manifest = write_manifest(args.out, names, args.imgsz, run_info, metrics, args.version)
    size_mb = (args.out / "model.onnx").stat().st_size / 1e6
    logger.info(
        "wrote %s (%.1f MB, sha256 %s)", args.out / "model.onnx", size_mb, manifest["sha256"][:12]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Interpolate two hi-wells networks of one architecture, weight by weight (torch; training only).

    PYTHONPATH=. /path/to/torch-venv/bin/python -m models.wells.interpolate --alpha 0.5 \
        --tuned runs/ft3 --base models/hi-wells --out runs/w5

For each reading mode: ``alpha * tuned + (1 - alpha) * base`` over every weight, where ``tuned``
is a training run's folder (``<mode>/model.onnx`` and ``run_info.json``) fine-tuned from
``base`` (a model folder: ``<mode>.onnx``), as ``train.py --init BASE.onnx --freeze-bn`` does.
A fine-tune from the same start stays in the same basin, so the interpolation is a working
network that keeps part of what the base knew and part of what the fine-tune learnt (weight-space
ensembles, "WiSE-FT", Wortsman et al. 2022). Writes ``<mode>/model.onnx`` and ``run_info.json``
into ``--out``: a run folder ``models.wells.export`` packages like any other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models.synth.look import READING_MODES
from models.wells.dataset import CLASSES
from models.wells.net import WellNet
from models.wells.train import export_onnx, load_onnx_weights


def interpolate(tuned: Path, base: Path, alpha: float, width: int = 8) -> WellNet:
    a, b = WellNet(len(CLASSES), width), WellNet(len(CLASSES), width)
    load_onnx_weights(a, tuned)
    load_onnx_weights(b, base)
    sa, sb = a.state_dict(), b.state_dict()
    a.load_state_dict(
        {
            k: alpha * sa[k] + (1.0 - alpha) * sb[k] if sa[k].is_floating_point() else sa[k]
            for k in sa
        }
    )
    return a


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.wells.interpolate", description=__doc__)
    parser.add_argument("--tuned", type=Path, required=True, help="run folder: <mode>/model.onnx")
    parser.add_argument("--base", type=Path, required=True, help="model folder: <mode>.onnx")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", choices=(*READING_MODES, "both"), default="both")
    args = parser.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error("--alpha must be between 0 and 1")
    for mode in READING_MODES if args.mode == "both" else (args.mode,):
        info = json.loads((args.tuned / mode / "run_info.json").read_text())
        tuned, base = args.tuned / mode / "model.onnx", args.base / f"{mode}.onnx"
        model = interpolate(tuned, base, args.alpha)
        (args.out / mode).mkdir(parents=True, exist_ok=True)
        export_onnx(model, args.out / mode / "model.onnx", int(info["size"]))
        info["init"] = (
            f"{args.alpha:g} x {args.tuned / mode} + {1.0 - args.alpha:g} x "
            f"{args.base / (mode + '.onnx')} (weight interpolation)"
        )
        (args.out / mode / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())

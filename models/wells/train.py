"""Train one hi-wells network for one reading mode on generator v2 crops (CPU, torch).

    PYTHONPATH=. /path/to/torch-venv/bin/python -m models.wells.train --mode tilted \
        --plates 500 --seed 111 --out /tmp/hiwells-run/tilted [--init WEIGHTS.pt]

(the exact calls that made the shipped files are in ``models/hi-wells/MODEL_CARD.md``).

Writes ``weights.pt`` (state dict), ``model.onnx`` (fp32, opset 17, dynamic batch, probabilities
out) and ``run_info.json`` into ``--out``. Data: crops of ``--plates`` plates of stream
``--seed`` (cached as ``.npz`` under ``--cache``; a second run with the same arguments reuses
them). Validation: crops of plates from the separate stream ``--seed + 1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.synth.look import READING_MODES
from models.wells.dataset import CLASSES, CropSet, build
from models.wells.net import WellNet

logger = logging.getLogger(__name__)


def cached_crops(cache: Path, seed: int, n: int, mode: str, size: int, scale: float) -> CropSet:
    from models.synth.render2 import GENERATOR_V2_VERSION

    name = f"crops_g{GENERATOR_V2_VERSION}_{mode}_s{seed}_n{n}_{size}px_x{scale:g}.npz"
    path = cache / name
    if path.exists():
        return CropSet.load(path)
    t0 = time.monotonic()
    crops = build(seed, 0, n, mode, size=size, scale=scale)
    crops.save(path)
    logger.info(
        "%s: %d crops from %d plates in %.0f s", path.name, len(crops), n, time.monotonic() - t0
    )
    return crops


def loss_weights(counts: np.ndarray, invalid_weight: float = 1.0) -> np.ndarray:
    """Per-class loss weights: square-root inverse frequency, so rare classes (invalid) weigh
    more; the invalid class's then times ``invalid_weight`` (an invalid well read as readable
    is what lets a wrong titre count)."""
    if invalid_weight <= 0:
        raise ValueError(f"invalid_weight must be positive, got {invalid_weight}")
    weights: np.ndarray = (counts.sum() / (len(CLASSES) * np.maximum(counts, 1))) ** 0.5
    weights[CLASSES.index("invalid")] *= invalid_weight
    return weights


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Photometric jitter per crop and mirror images; the generator already varies geometry."""
    n = x.shape[0]
    gain = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)
    tint = 0.92 + 0.16 * torch.rand(n, 3, 1, 1, generator=gen)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)
    x = (x - mean) * contrast + mean
    x = x * gain * tint
    x = x + 0.02 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.clamp(0.0, 1.0)


def evaluate(model: nn.Module, crops: CropSet, batch: int = 1024) -> tuple[float, np.ndarray]:
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            xb = torch.from_numpy(crops.x[i : i + batch]).float() / 255.0
            preds.append(model.logits(xb).argmax(1).numpy())
    pred = np.concatenate(preds)
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    np.add.at(conf, (crops.y, pred), 1)
    return float((pred == crops.y).mean()), conf


def export_onnx(model: nn.Module, path: Path, size: int) -> None:
    model.eval()
    dummy = torch.zeros(2, 3, size, size)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["crops"],
        output_names=["probs"],
        dynamic_axes={"crops": {0: "n"}, "probs": {0: "n"}},
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )


def load_onnx_weights(model: WellNet, path: Path) -> None:
    """Start from an exported network (BN folded into its convolutions).

    Each convolution takes the folded kernel; its BatchNorm becomes the identity plus the folded
    bias (running mean 0, running variance 1 - eps, scale 1). Train such a model with
    ``freeze_bn`` so the batch statistics do not replace that identity."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    blocks = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != len(blocks):
        raise ValueError(f"{path}: {len(convs)} convolutions, the network has {len(blocks)}")
    with torch.no_grad():
        for node, conv, bn in zip(convs, blocks, norms, strict=True):
            weight, bias = (torch.from_numpy(inits[name].copy()) for name in node.input[1:3])
            if weight.shape != conv.weight.shape:
                raise ValueError(f"{path}: kernel {tuple(weight.shape)} for {conv}")
            conv.weight.copy_(weight)
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        gemm = next(n for n in graph.node if n.op_type == "Gemm")
        model.head.weight.copy_(torch.from_numpy(inits[gemm.input[1]].copy()))
        model.head.bias.copy_(torch.from_numpy(inits[gemm.input[2]].copy()))


def _train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def train(args: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = cached_crops(args.cache, args.seed, args.plates, args.mode, args.size, args.scale)
    val = cached_crops(args.cache, args.seed + 1, args.val_plates, args.mode, args.size, args.scale)
    counts = np.bincount(data.y, minlength=len(CLASSES))
    logger.info("train crops %d %s, val crops %d", len(data), counts.tolist(), len(val))
    model = WellNet(len(CLASSES), args.width)
    if args.init is not None and args.init.suffix == ".onnx":
        load_onnx_weights(model, args.init)
    elif args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu"))
    # Rare classes (invalid) weigh more, so the loss does not ignore them.
    weights = torch.tensor(loss_weights(counts, args.invalid_weight), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(data) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=steps, pct_start=0.15
    )
    x_all = torch.from_numpy(data.x)
    y_all = torch.from_numpy(data.y)
    t0 = time.monotonic()
    history = []
    for epoch in range(args.epochs):
        _train_mode(model, args.freeze_bn)
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            xb = augment(x_all[idx].float() / 255.0, gen)
            loss = loss_fn(model.logits(xb), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc, _ = evaluate(model, val)
        history.append({"epoch": epoch + 1, "loss": total / len(data), "val_acc": acc})
        logger.info(
            "epoch %d: loss %.4f, val %.4f (%.0f s)",
            epoch + 1,
            total / len(data),
            acc,
            time.monotonic() - t0,
        )
    acc, conf = evaluate(model, val)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "weights.pt")
    export_onnx(model, args.out / "model.onnx", args.size)
    from models.synth.render2 import GENERATOR_V2_VERSION

    info: dict[str, object] = {
        "mode": args.mode,
        "generator_version": GENERATOR_V2_VERSION,
        "classes": list(CLASSES),
        "size": args.size,
        "crop_scale": args.scale,
        "width": args.width,
        "seed": args.seed,
        "plates": args.plates,
        "val_plates": args.val_plates,
        "epochs": args.epochs,
        "init": str(args.init) if args.init is not None else None,
        "freeze_bn": args.freeze_bn,
        "batch": args.batch,
        "lr": args.lr,
        "invalid_weight": args.invalid_weight,
        "threads": args.threads,
        "train_crops": len(data),
        "train_class_counts": counts.tolist(),
        "val_accuracy": acc,
        "val_confusion": conf.tolist(),
        "train_seconds": round(time.monotonic() - t0, 1),
        "history": history,
        "torch": torch.__version__,
    }
    (args.out / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.wells.train", description=__doc__)
    parser.add_argument("--mode", choices=READING_MODES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hiwells-data")
    parser.add_argument("--plates", type=int, default=600)
    parser.add_argument("--val-plates", type=int, default=40)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--invalid-weight",
        type=float,
        default=1.0,
        help="multiply the invalid class's loss weight (after the square-root inverse frequency)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these weights: a weights.pt state dict, or an exported .onnx",
    )
    parser.add_argument(
        "--freeze-bn",
        action="store_true",
        help="keep BatchNorm statistics fixed (use with an --init .onnx, whose BN is folded)",
    )
    args = parser.parse_args(argv)
    if args.plates < 1 or args.val_plates < 1 or args.epochs < 1:
        parser.error("--plates, --val-plates and --epochs must be at least 1")
    if args.invalid_weight <= 0:
        parser.error("--invalid-weight must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    info = train(args)
    logger.info("val accuracy %.4f", info["val_accuracy"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

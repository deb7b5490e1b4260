"""Fine-tune hi-wells from the shipped model on generator plates mixed with field plates, and
gate the candidate against the shipped model.

Field plates come from ``microplate-cloud dataset export`` (``manifest.json``, raw photos,
YOLO labels built from the operators' final calls and the calibration grid); each labelled box
is cut into a crop exactly as the appliance cuts a well (``edge.detect.wellcrops.crop_square``).

The **evaluation gate** compares the candidate with the shipped model, per reading mode, on
three held-out sets and accepts it only if it beats or matches the shipped model (within
``--tolerance``) on every one:

- ``field_plates``: field plates held out at random (split by plate: no crop of a training
  plate is in it);
- ``field_sites``: every plate of the held-out site(s) (split by site: a lab the candidate never
  saw; by default the site with the fewest plates when there are two or more);
- ``generator``: fresh generator plates of a stream the training never used.

Both models are scored as ONNX files through ONNX Runtime, the way the appliances run them. The
report goes into the candidate's ``manifest.json`` as ``gate`` (the schema of
``core.ota.GateReport``), which ``microplate-cloud models publish`` signs with the release and
refuses to publish when it says rejected.

The data, split and gate parts need numpy and OpenCV only; training imports torch (the
``[train]`` environment) when it starts::

    python -m models.finetune --field export/ --out candidate/ --version 2.2.0 \\
        --generator-plates 200 --epochs 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.detect.wellcrops import crop_square, read_crops
from models.wells.dataset import CLASS_ID, CLASSES, CropSet

logger = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parent / "hi-wells"
# The dataset export's YOLO classes, in its order (cloud.dataset.CLASSES).
FIELD_CLASSES = ("flowing", "agglutinated", "invalid")
_FIELD_TO_NET = np.array([CLASS_ID[c] for c in FIELD_CLASSES], np.int64)


class FinetuneError(RuntimeError):
    """Bad input or a gate that cannot be computed (the message is safe to show)."""


# --- field data ---------------------------------------------------------------------------


@dataclass
class FieldPlate:
    run_id: str
    site: str
    mode: str | None
    crops: CropSet


def read_yolo(path: Path) -> list[tuple[int, float, float, float, float]]:
    """``(class, cx, cy, w, h)`` per line of a YOLO label file (normalised coordinates)."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise FinetuneError(f"{path}:{n}: expected 'class cx cy w h'")
        cls = int(parts[0])
        if not 0 <= cls < len(FIELD_CLASSES):
            raise FinetuneError(
                f"{path}:{n}: class {cls} is not one of 0..{len(FIELD_CLASSES) - 1}"
            )
        cx, cy, w, h = (float(p) for p in parts[1:])
        out.append((cls, cx, cy, w, h))
    return out


def load_field_dataset(directory: Path, *, size: int = 32, scale: float = 1.0) -> list[FieldPlate]:
    """Every plate of an exported dataset as crops and hi-wells class ids."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"{directory}: no readable manifest.json ({exc})") from None
    plates = []
    for entry in manifest.get("plates", []):
        data = (directory / entry["image"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise FinetuneError(f"{entry['image']}: sha256 differs from the manifest")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise FinetuneError(f"{entry['image']}: not a readable image")
        height, width = image.shape[:2]
        labels = read_yolo(directory / entry["labels"])
        if not labels:
            continue
        crops = []
        for _, cx, cy, w, h in labels:
            side = max(w * width, h * height) * scale
            crops.append(crop_square(image, cx * width, cy * height, side, size))
        x = np.ascontiguousarray(np.stack(crops)[..., ::-1].transpose(0, 3, 1, 2))
        y = _FIELD_TO_NET[np.array([c for c, *_ in labels], np.int64)]
        plates.append(
            FieldPlate(entry["run_id"], entry["site"], entry.get("reading"), CropSet(x, y))
        )
    return plates


@dataclass
class FieldSplit:
    train: list[FieldPlate]
    by_plate: list[FieldPlate]
    by_site: list[FieldPlate]


def split_field(
    plates: Sequence[FieldPlate],
    *,
    holdout_sites: Sequence[str] | None = None,
    plate_fraction: float = 0.25,
    seed: int = 0,
) -> FieldSplit:
    """Hold out whole sites, then a share of the other plates; train on the rest."""
    sites: dict[str, int] = {}
    for p in plates:
        sites[p.site] = sites.get(p.site, 0) + 1
    if holdout_sites is None:
        # The smallest site (then by name), when there is another one to train on.
        holdout_sites = [min(sites, key=lambda s: (sites[s], s))] if len(sites) >= 2 else []
    unknown = sorted(set(holdout_sites) - set(sites))
    if unknown:
        raise FinetuneError(f"held-out site(s) {', '.join(unknown)} have no plate in the dataset")
    by_site = [p for p in plates if p.site in holdout_sites]
    rest = sorted((p for p in plates if p.site not in holdout_sites), key=lambda p: p.run_id)
    rng = np.random.default_rng(seed)
    n_hold = round(plate_fraction * len(rest))
    # At least one plate held out, at least one left to train on.
    n_hold = min(max(n_hold, 1), len(rest) - 1) if len(rest) >= 2 else 0
    held = set(rng.choice(len(rest), size=n_hold, replace=False).tolist()) if n_hold else set()
    return FieldSplit(
        train=[p for i, p in enumerate(rest) if i not in held],
        by_plate=[p for i, p in enumerate(rest) if i in held],
        by_site=by_site,
    )


def crops_of(plates: Sequence[FieldPlate], mode: str) -> CropSet | None:
    parts = [p.crops for p in plates if p.mode in (mode, None)]
    return CropSet.concat(parts) if parts else None


# --- the gate -----------------------------------------------------------------------------


def gate_report(
    scores: Mapping[str, tuple[float, float, int]],
    *,
    baseline_version: str,
    tolerance: float = 0.0,
    notes: str = "",
) -> dict[str, Any]:
    """``scores``: check name -> (candidate, baseline, number of crops). A check with no crop
    is left out; the candidate is accepted only if every check passed (``core.ota.GateReport``)."""
    checks = []
    for name, (cand, base, n) in sorted(scores.items()):
        if n <= 0:
            continue
        checks.append(
            {
                "name": name,
                "candidate": round(float(cand), 6),
                "baseline": round(float(base), 6),
                "tolerance": tolerance,
                "n": int(n),
                "passed": round(float(cand), 6) >= round(float(base), 6) - tolerance,
            }
        )
    if not checks:
        raise FinetuneError("nothing to gate on: every held-out set is empty")
    return {
        "accepted": all(c["passed"] for c in checks),
        "checks": checks,
        "baseline_version": baseline_version,
        "notes": notes,
    }


def onnx_accuracy(
    path: Path, crops: CropSet, *, mirror_average: bool = False, batch: int = 1024
) -> float:
    """Share of crops whose argmax class through ONNX Runtime is the label, each crop read the
    way the manifest says the appliance reads it (``mirror_average``: its probabilities averaged
    with its mirror image's, ``wellcrops.read_crops``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    preds = []
    for i in range(0, len(crops), batch):
        x = crops.x[i : i + batch].astype(np.float32) / 255.0
        probs = read_crops(
            lambda b: session.run(None, {"crops": b})[0], x, mirror_average=mirror_average
        )
        preds.append(probs.argmax(1))
    return float((np.concatenate(preds) == crops.y).mean())


# --- training (torch) ---------------------------------------------------------------------


def net_from_onnx(path: Path, width: int = 8) -> Any:
    """The shipped ONNX graph as a trainable WellNet: each Conv (batch norm folded in) gives its
    weights to the conv and its bias to an identity batch norm; Gemm gives the head."""
    import onnx
    import torch
    from onnx import numpy_helper

    from models.wells.net import WellNet

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    net = WellNet(len(CLASSES), width)
    layers = [m for m in net.features if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    if len(convs) != len(layers) // 2 or len(gemms) != 1:
        raise FinetuneError(
            f"{path}: not a hi-wells graph (Conv x{len(convs)}, Gemm x{len(gemms)})"
        )
    with torch.no_grad():
        for node, conv, bn in zip(convs, layers[0::2], layers[1::2], strict=True):
            conv.weight.copy_(torch.from_numpy(np.array(inits[node.input[1]])))
            bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(conv.out_channels)
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(bias, np.float32)))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        gemm = gemms[0]
        weight = inits[gemm.input[1]]
        trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
        net.head.weight.copy_(torch.from_numpy(np.array(weight if trans_b else weight.T)))
        net.head.bias.copy_(torch.from_numpy(np.array(inits[gemm.input[2]])))
    return net


def train_candidate(
    net: Any, data: CropSet, *, epochs: int, lr: float, batch: int, seed: int
) -> dict[str, Any]:
    import torch
    from torch import nn

    from models.wells.train import augment

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    counts = np.bincount(data.y, minlength=len(CLASSES))
    weights = torch.tensor(
        (counts.sum() / (len(CLASSES) * np.maximum(counts, 1))) ** 0.5, dtype=torch.float32
    )
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.02)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    x_all, y_all = torch.from_numpy(data.x), torch.from_numpy(data.y)
    history = []
    t0 = time.monotonic()
    for epoch in range(epochs):
        net.train()
        # The shipped graph has its batch norms folded into the convs: they start as identity
        # layers with fixed statistics, and stay so (batch statistics would change the model
        # the first step, before it learnt anything). Their scale and shift still train.
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = loss_fn(net.logits(augment(x_all[idx].float() / 255.0, gen)), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch + 1, "loss": round(total / max(len(data), 1), 5)})
        logger.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, total / max(len(data), 1))
    return {"history": history, "train_seconds": round(time.monotonic() - t0, 1)}


# --- the command --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.finetune", description=__doc__.split("\n")[0]
    )
    p.add_argument("--field", type=Path, required=True, help="a `dataset export` directory")
    p.add_argument("--out", type=Path, required=True, help="candidate release directory (new)")
    p.add_argument("--version", required=True, help="the candidate's version, e.g. 2.2.0")
    p.add_argument("--shipped", type=Path, default=SHIPPED, help="the shipped hi-wells directory")
    p.add_argument("--modes", nargs="+", default=["tilted", "untilted"])
    p.add_argument("--generator-plates", type=int, default=200)
    p.add_argument("--generator-seed", type=int, default=131)
    p.add_argument("--holdout-generator-plates", type=int, default=30)
    p.add_argument("--holdout-generator-seed", type=int, default=9101)
    p.add_argument("--holdout-site", action="append", default=None, dest="holdout_sites")
    p.add_argument("--holdout-plate-fraction", type=float, default=0.25)
    p.add_argument("--field-repeat", type=int, default=4, help="field crops count this many times")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed drop per gate check")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from models.wells.dataset import build
    from models.wells.train import export_onnx

    torch.set_num_threads(args.threads)
    shipped = json.loads((args.shipped / "manifest.json").read_text(encoding="utf-8"))
    size, scale = int(shipped["input"]["size"]), float(shipped["input"]["crop_scale"])
    # The candidate ships with the shipped model's input block, so both are scored as read.
    mirror = bool(shipped["input"].get("mirror_average", False))
    if args.out.exists() and any(args.out.iterdir()):
        raise FinetuneError(f"{args.out} is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    field = load_field_dataset(args.field, size=size, scale=scale)
    split = split_field(
        field,
        holdout_sites=args.holdout_sites,
        plate_fraction=args.holdout_plate_fraction,
        seed=args.seed,
    )
    logger.info(
        "field plates: %d train, %d held out by plate, %d by site",
        len(split.train),
        len(split.by_plate),
        len(split.by_site),
    )
    scores: dict[str, tuple[float, float, int]] = {}
    trainer: dict[str, Any] = {"torch": torch.__version__, "modes": {}}
    for mode in args.modes:
        shipped_path = args.shipped / shipped["modes"][mode]["files"]["fp32"]["path"]
        logger.info("%s: rendering %d generator plates", mode, args.generator_plates)
        gen_train = build(
            args.generator_seed, 0, args.generator_plates, mode, size=size, scale=scale
        )
        parts = [gen_train]
        field_train = crops_of(split.train, mode)
        if field_train is not None:
            parts += [field_train] * max(1, args.field_repeat)
        data = CropSet.concat(parts)
        net = net_from_onnx(shipped_path)
        logger.info("%s: training on %d crops, %d epochs", mode, len(data), args.epochs)
        info = train_candidate(
            net, data, epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed
        )
        candidate = args.out / f"{mode}.onnx"
        export_onnx(net, candidate, size)
        logger.info("%s: scoring the candidate and the shipped model on the held-out sets", mode)
        held = {
            "field_plates": crops_of(split.by_plate, mode),
            "field_sites": crops_of(split.by_site, mode),
            "generator": build(
                args.holdout_generator_seed,
                0,
                args.holdout_generator_plates,
                mode,
                size=size,
                scale=scale,
                clutter_every=0,
            ),
        }
        for name, crops in held.items():
            if crops is None or not len(crops):
                continue
            scores[f"{mode}.{name}.wells_right"] = (
                onnx_accuracy(candidate, crops, mirror_average=mirror),
                onnx_accuracy(shipped_path, crops, mirror_average=mirror),
                len(crops),
            )
        trainer["modes"][mode] = {
            **info,
            "generator_plates": args.generator_plates,
            "generator_seed": args.generator_seed,
            "field_train_crops": 0 if field_train is None else len(field_train),
            "train_crops": len(data),
        }
    for mode in shipped["modes"]:
        if mode not in args.modes:  # the modes not fine-tuned ship unchanged
            src = args.shipped / shipped["modes"][mode]["files"]["fp32"]["path"]
            shutil.copy(src, args.out / f"{mode}.onnx")
    gate = gate_report(
        scores,
        baseline_version=str(shipped["version"]),
        tolerance=args.tolerance,
        notes=(
            f"field: {len(split.train)} training plates, {len(split.by_plate)} held out by "
            f"plate, {len(split.by_site)} by site; generator hold-out stream "
            f"{args.holdout_generator_seed} ({args.holdout_generator_plates} plates per mode)"
        ),
    )
    manifest = {
        "name": shipped["name"],
        "version": args.version,
        "base_version": shipped["version"],
        "input": shipped["input"],
        "classes": list(CLASSES),
        "metrics": {name: {"candidate": c, "baseline": b} for name, (c, b, _) in scores.items()},
        "gate": gate,
        "trainer": trainer,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("error: training needs torch: run this in the [train] environment", file=sys.stderr)
        return 2
    try:
        manifest = run(args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gate = manifest["gate"]
    for c in gate["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        print(
            f"{mark} {c['name']}: candidate {c['candidate']:.4f}, "
            f"shipped {c['baseline']:.4f} (n={c['n']})"
        )
    print(f"gate: {'accepted' if gate['accepted'] else 'rejected'}; manifest in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

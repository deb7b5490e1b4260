"""Train the plate detector with LibreYOLO (MIT) on synthetic plates, on CPU.

Runs in the training venv (torch + libreyolo), never in the app venv:

    /work/venv-train/bin/python -m models.train --data-dir /work/data/train1 --out /work/runs

It (1) generates the dataset unless it already exists, (2) trains LibreYOLO9-t from scratch with
the settings that made a dense 96-box scene fast on two CPU cores (see TRAINING-NOTES): input
512, `aux_weight=0`, `no_aug_epochs=5`, `workers=0`, `cache="ram"`, centred letterbox, and
(3) writes `run_info.json` beside the weights: the exact command, seeds and package versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Stored training photos are shrunk to this long side: the input is 512 and mosaic scales up to
# 1.5, so 1024 loses nothing the network sees, while full-size frames made each step 6x slower.
MAX_SIDE = 1024

DEFAULTS: dict[str, Any] = {
    "size": "t",
    "imgsz": 512,
    "epochs": 30,
    "batch": 8,
    "lr0": 0.01,
    "no_aug_epochs": 5,
    "aux_weight": 0.0,
    "letterbox_pad": "center",
    "activation": "relu",
}
ACTIVATIONS = ("relu", "silu")


def use_activation(name: str) -> None:
    """Make LibreYOLO9 build every convolution block with activation `name`.

    YOLOv9's own activation is SiLU. The shipped network uses ReLU: on CPU, ONNX Runtime's int8
    path folds a ReLU into the quantized convolution's output range for free, while each of the
    179 SiLUs stays a separate element-wise pass (the retrained ReLU network's int8 file runs in
    8.4 ms instead of 12.9 on an AVX-512 VNNI Xeon; see the model card's "Speed"). LibreYOLO9
    builds its activations through `create_activation` in its `nn` module, looked up at build
    time, so replacing that function before the model is made (here, and again in
    `models.export` before the checkpoint is loaded) switches all of them and nothing else: the
    head's last convolutions are built without an activation and stay so.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, not {name!r}")
    import libreyolo.models.yolo9.nn as yolo9_nn
    import torch.nn as nn

    original = getattr(yolo9_nn, "_yolo9_create_activation", yolo9_nn.create_activation)
    yolo9_nn._yolo9_create_activation = original
    if name == "silu":
        yolo9_nn.create_activation = original
        return

    def create_activation(activation: Any = True) -> nn.Module:
        if activation is True or (isinstance(activation, str) and activation == "SiLU"):
            return nn.ReLU(inplace=True)
        return original(activation)

    yolo9_nn.create_activation = create_activation


def check_activation(net: Any, name: str) -> None:
    """Refuse a network that does not use `name` throughout (a LibreYOLO update could build an
    activation some other way, and a silently mixed network would not match its manifest)."""
    import torch.nn as nn

    kinds = {type(m).__name__ for m in net.modules() if isinstance(m, (nn.SiLU, nn.ReLU))}
    expected = {"relu": "ReLU", "silu": "SiLU"}[name]
    if kinds != {expected}:
        raise SystemExit(f"network activations are {sorted(kinds)}, expected only {expected}")


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "absent"


def ensure_dataset(data_dir: Path, n: int, seed: int, val_fraction: float) -> Path:
    yaml_path = data_dir / "data.yaml"
    if yaml_path.exists():
        logger.info("dataset exists: %s", yaml_path)
        return yaml_path
    from rich.progress import track

    from models.synth.dataset import generate

    for _ in track(
        generate(data_dir, n, seed, val_fraction=val_fraction, max_side=MAX_SIDE),
        total=n,
        description="rendering plates",
    ):
        pass
    return yaml_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="runs folder")
    parser.add_argument("--name", default="hi-plate")
    parser.add_argument("--plates", type=int, default=320, help="plates to generate if absent")
    parser.add_argument("--data-seed", type=int, default=1)
    parser.add_argument("--val-fraction", type=float, default=0.0625)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--imgsz", type=int, default=DEFAULTS["imgsz"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu (the recipe) or cuda")
    parser.add_argument("--workers", type=int, default=0, help="data workers (0 on CPU)")
    parser.add_argument(
        "--warmup-epochs", type=int, default=None, help="LR warm-up (LibreYOLO9 default: 3)"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        help="continue this run's last.pt; --epochs may shorten the schedule (recorded)",
    )
    parser.add_argument("--eval-interval", type=int, default=5)
    parser.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        default=DEFAULTS["activation"],
        help="activation of every conv block (relu: fast int8 on CPU; silu: YOLOv9's own)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    from libreyolo import LibreYOLO9

    use_activation(args.activation)

    yaml_path = ensure_dataset(args.data_dir, args.plates, args.data_seed, args.val_fraction)
    run_dir = args.out / args.name
    info: dict[str, Any] = {
        "command": "python -m models.train "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "trainer": {"name": "libreyolo", "version": _version("libreyolo"), "licence": "MIT"},
        "torch": _version("torch"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {args.device}",
        "data": str(yaml_path),
        "data_seed": args.data_seed,
        "plates": args.plates,
        "seed": args.seed,
        "settings": {
            **DEFAULTS,
            "epochs": args.epochs,
            "batch": args.batch,
            "imgsz": args.imgsz,
            "warmup_epochs": args.warmup_epochs,
            "activation": args.activation,
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from models.synth import GENERATOR_VERSION

    info["generator_version"] = GENERATOR_VERSION
    if args.resume and (run_dir / "run_info.json").exists():
        info["resumed_from"] = json.loads((run_dir / "run_info.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    # Written before training too, so a run cut short still says how it was started.
    (run_dir / "run_info.json").write_text(json.dumps({**info, "status": "running"}, indent=2))
    if args.resume:
        model = LibreYOLO9(
            str(args.resume), size=DEFAULTS["size"], nb_classes=3, device=args.device
        )
    else:
        model = LibreYOLO9(None, size=DEFAULTS["size"], nb_classes=3, device=args.device)
    check_activation(model.model, args.activation)
    t0 = time.monotonic()
    results = model.train(
        data=str(yaml_path),
        epochs=args.epochs,
        batch=args.batch,
        imgsz=args.imgsz,
        lr0=DEFAULTS["lr0"],
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        project=str(args.out),
        name=args.name,
        exist_ok=True,
        amp=args.device != "cpu",
        cache="ram",
        aux_weight=DEFAULTS["aux_weight"],
        no_aug_epochs=DEFAULTS["no_aug_epochs"],
        letterbox_pad=DEFAULTS["letterbox_pad"],
        eval_interval=args.eval_interval,
        **({"resume": True} if args.resume else {}),
        **({"warmup_epochs": args.warmup_epochs} if args.warmup_epochs is not None else {}),
    )
    info["train_seconds"] = round(time.monotonic() - t0, 1)
    info["results"] = {k: v for k, v in (results or {}).items() if isinstance(v, (int, float, str))}
    info["status"] = "finished"
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2))
    logger.info("done in %.0f s; run info in %s", info["train_seconds"], run_dir / "run_info.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

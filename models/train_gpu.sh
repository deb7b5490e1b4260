#!/usr/bin/env bash
# The training recipe on a GPU machine (the project's lent H100/H200), in one short command.
#
# The recipe is the CPU one (models/train.py: same data stream, model, input, settings); only
# the device and the number of data workers differ. On the lent machine `python3` holds CUDA
# torch, numpy, OpenCV, rich and PyYAML; LibreYOLO and two of its needs travel as wheels:
#
#   here, once:   echo /.whl/ >> .git/info/exclude && models/train_gpu.sh --fetch-wheels
#   device run:   carry [".whl"], command "bash models/train_gpu.sh", timeout_s 560
#
# It renders the 320 training plates (seed 1; 300 train / 20 val, byte-identical to the CPU
# recipe's), trains, exports models/hi-plate-style files into $OUT (model.onnx, manifest.json,
# run_info.json, train.log). Copy model.onnx and manifest.json into models/hi-plate, then run
# `python -m models.evaluate ... --write-manifest --card ...` here (see MODEL_CARD.md).
set -euo pipefail

PLATES=320
EPOCHS=${EPOCHS:-30}
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-330}

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl libreyolo==1.6.0 pycocotools==2.0.11 mss==10.2.0
  ls -la .whl
  exit 0
fi

OUT=${OUT:-/tmp/hi-plate-out}
DATA=/tmp/hi-plate-data
RUNS=/tmp/hi-plate-runs
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

# 1. Render the plates in 8 processes: plates 0..279 train, 280..319 half train, half val.
t0=$(date +%s)
for k in 0 1 2 3 4 5 6; do
  python3 -m models.synth --out "$DATA" --n 40 --seed 1 --start $((k * 40)) --max-side 1024 >/dev/null 2>&1 &
done
python3 -m models.synth --out "$DATA" --n 40 --seed 1 --start 280 --val-fraction 0.5 --max-side 1024 >/dev/null 2>&1 &
wait
sed -i 's#^val: .*#val: images/val#' "$DATA/data.yaml"
echo "rendered $(ls "$DATA/images/train" | wc -l) train + $(ls "$DATA/images/val" | wc -l) val plates in $(( $(date +%s) - t0 )) s"

# 2. Train (a time guard keeps the whole command inside the device's limit; weights are saved
#    every epoch, so a cut-short run still exports its best checkpoint).
set +e
timeout "$TRAIN_BUDGET_S" python3 -m models.train --data-dir "$DATA" --out "$RUNS" --name hi-plate \
  --plates "$PLATES" --epochs "$EPOCHS" --eval-interval 5 --device cuda --workers 8 \
  2>&1 | tee "$OUT/train.log" | grep -E "Epoch|mAP|done|Error|error" 
echo "train exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
set -e

# 3. Export the best checkpoint (last.pt when no best was written).
W="$RUNS/hi-plate/weights/best.pt"
[[ -f "$W" ]] || W="$RUNS/hi-plate/weights/last.pt"
python3 -m models.export --weights "$W" --run-info "$RUNS/hi-plate/run_info.json" --out "$OUT"
cp "$RUNS/hi-plate/run_info.json" "$OUT/" 2>/dev/null || true
ls -la "$OUT"

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
# It renders the training plates (stream seed 1; by default 320: 300 train / 20 val, as the CPU
# recipe; other numpy/OpenCV versions there may change pixels slightly, never labels), trains,
# and writes models/hi-plate-style files into $OUT (model.onnx, manifest.json, run_info.json,
# train.log, weights.pt). Copy model.onnx, manifest.json and weights.pt into models/hi-plate,
# then rebuild the int8 variant and evaluate here (models/README.md, "Rebuilding the model").
# The shipped 1.1.0 weights came from one call of
#   PER_PROC=112 EPOCHS=25 BATCH=16 WORKERS=12 TRAIN_BUDGET_S=400 bash models/train_gpu.sh
# on an H100 (896 plates; 481 s: 151 s rendering, 288 s training; timeout_s 540).
set -euo pipefail

# Overridable for a dry run of the flow on a CPU machine, e.g.
#   PY=/work/venv-train/bin/python DEVICE=cpu PER_PROC=1 EPOCHS=1 SKIP_WHEELS=1 OUT=/tmp/o models/train_gpu.sh
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PER_PROC=${PER_PROC:-40}
PLATES=$((8 * PER_PROC))
EPOCHS=${EPOCHS:-30}
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-330}
WORKERS=${WORKERS:-8}
BATCH=${BATCH:-8}
ACTIVATION=${ACTIVATION:-relu}

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
if [[ -z "${SKIP_WHEELS:-}" ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD"
rm -rf "$DATA" "$RUNS"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

# 1. Render the plates in 8 processes; the last process's second half is the val split
#    (for 320 plates: 0..299 train, 300..319 val, as in the CPU recipe).
t0=$(date +%s)
for k in 0 1 2 3 4 5 6; do
  "$PY" -m models.synth --out "$DATA" --n "$PER_PROC" --seed 1 --start $((k * PER_PROC)) \
    --max-side 1024 >/dev/null &
done
"$PY" -m models.synth --out "$DATA" --n "$PER_PROC" --seed 1 --start $((7 * PER_PROC)) \
  --val-fraction 0.5 --max-side 1024 >/dev/null &
wait
sed -i 's#^val: .*#val: images/val#' "$DATA/data.yaml"
echo "rendered $(ls "$DATA/images/train" | wc -l) train + $(ls "$DATA/images/val" | wc -l) val plates in $(( $(date +%s) - t0 )) s"

# 2. Train (a time guard keeps the whole command inside the device's limit; weights are saved
#    every epoch, so a cut-short run still exports its best checkpoint).
set +e
timeout "$TRAIN_BUDGET_S" "$PY" -m models.train --data-dir "$DATA" --out "$RUNS" --name hi-plate \
  --plates "$PLATES" --epochs "$EPOCHS" --eval-interval 5 --device "$DEVICE" --workers "$WORKERS" \
  --batch "$BATCH" --activation "$ACTIVATION" \
  2>&1 | tee "$OUT/train.log" | grep -E "Epoch|mAP|done|Error|error"
echo "train exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
set -e

# 3. Keep and export the best checkpoint (last.pt when no best was written).
W="$RUNS/hi-plate/weights/best.pt"
[[ -f "$W" ]] || W="$RUNS/hi-plate/weights/last.pt"
# First the checkpoint's weights alone (no optimizer state), to fine-tune from later or export here
# if the export below fails there.
"$PY" -c "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); \
torch.save({k: v for k, v in c.items() if k not in ('optimizer', 'train_model', 'ema', 'rng_state')}, sys.argv[2])" \
  "$W" "$OUT/weights.pt" || true
"$PY" -m models.export --weights "$W" --run-info "$RUNS/hi-plate/run_info.json" --out "$OUT"
cp "$RUNS/hi-plate/run_info.json" "$OUT/" 2>/dev/null || true
ls -la "$OUT"

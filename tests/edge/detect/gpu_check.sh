#!/usr/bin/env bash
# One-shot check of the TensorRT path, for a machine with an NVIDIA GPU, TensorRT 10 and pycuda
# (a Jetson with JetPack 6, or an x86 host with `pip install tensorrt pycuda`). Run from the
# repository root:  bash tests/edge/detect/gpu_check.sh   (PYTHON=... to pick the interpreter)
# Writes its log and engines under $OUT (default: a temp dir). Exit 77: nothing to check here.
set -uo pipefail
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT/engines"
export PYTHONUNBUFFERED=1
status=0

echo "== device"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi; on a Jetson see tegrastats)"
if ! "$PY" - <<'PYEOF'
import importlib.util, sys
missing = [m for m in ("tensorrt", "pycuda", "onnxruntime", "cv2") if importlib.util.find_spec(m) is None]
if missing:
    print(f"SKIP: {', '.join(missing)} not importable; the TensorRT path cannot be checked here")
    sys.exit(1)
import tensorrt, pycuda.driver as cuda
cuda.init()
print("tensorrt", tensorrt.__version__, "| GPU", cuda.Device(0).name(),
      "sm%d%d" % cuda.Device(0).compute_capability())
PYEOF
then exit 77; fi

if [ ! -f models/hi-plate/manifest.json ] || ! ls models/samples/*.jpg >/dev/null 2>&1; then
  echo "FAIL: models/hi-plate (model.onnx + manifest.json) and models/samples/*.jpg are needed"
  exit 1
fi

echo "== 1. gpu-marked tests (real TensorRT vs ONNX Runtime on the sample plates, fp16 + int8)"
"$PY" -m pytest -m gpu -rs -v -p no:cacheprovider tests/edge/detect || status=1

echo "== 2. the whole detect suite with the real tensorrt module importable"
"$PY" -m pytest -q -p no:cacheprovider tests/edge/detect tests/edge/services/test_analyze.py || status=1

echo "== 3. engine builder: build, then a cache hit"
"$PY" -m models.build_engine --model models/hi-plate --precision fp16 --cache-dir "$OUT/engines" || status=1
"$PY" -m models.build_engine --model models/hi-plate --precision fp16 --cache-dir "$OUT/engines" | tee "$OUT/second.txt"
grep -q "up to date" "$OUT/second.txt" || { echo "FAIL: second build did not hit the cache"; status=1; }

echo "== 4. analyze through TensorRT (the well classifier's fp16 engine on calibrated plates)"
for img in models/samples/*.jpg; do
  reading=$("$PY" -c "import json,sys; print(next((e.get('reading','tilted') for e in json.load(open('models/samples/index.json')) if e['image']==sys.argv[1]), 'tilted'))" "$(basename "$img")")
  common=(--calibration "${img%.jpg}.calibration.json" --reading "$reading" --json)
  "$PY" -m edge.services.analyze analyze "$img" --backend tensorrt --engine-cache "$OUT/engines" \
    "${common[@]}" >> "$OUT/analyze-tensorrt.jsonl" || status=1
  "$PY" -m edge.services.analyze analyze "$img" --backend onnx "${common[@]}" \
    >> "$OUT/analyze-onnx.jsonl" || status=1
done
"$PY" - "$OUT/analyze-tensorrt.jsonl" "$OUT/analyze-onnx.jsonl" <<'PYEOF' || status=1
import json, sys
from pathlib import Path
trt = [json.loads(line) for line in open(sys.argv[1])]
ort = [json.loads(line) for line in open(sys.argv[2])]
same = total = right = 0
for a, b in zip(trt, ort, strict=True):
    truth = json.loads(Path(a["image"]).with_name(Path(a["image"]).stem + ".truth.json").read_text())
    for well in truth["wells"]:
        total += 1
        same += a["wells"][well["well_id"]]["call"] == b["wells"][well["well_id"]]["call"]
        right += a["wells"][well["well_id"]]["call"] == well["state"]
print(f"TensorRT vs ONNX Runtime well calls: {same}/{total} agree; TensorRT vs truth: {right}/{total}")
sys.exit(0 if total and same / total >= 0.98 else 1)
PYEOF

echo "== 5. speed: TensorRT and ONNX Runtime per plate (same run)"
"$PY" bench/inference.py --backend tensorrt --engine-cache "$OUT/engines" --repeat 20 || status=1
"$PY" bench/inference.py --backend onnx --repeat 20 || status=1

echo "== result: $([ $status -eq 0 ] && echo PASS || echo FAIL) (log and engines in $OUT)"
exit $status

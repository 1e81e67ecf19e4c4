#!/usr/bin/env bash
# Side-by-side quantization wall time and peak RSS: onnxq against
# onnxruntime's quantize_static, same model, same calibration data, one run.
#
#   benches/vs_ort.sh ONNXQ_BIN PYTHON MODEL.onnx CALIB_NPZ_DIR [METHOD]
#
# METHOD is onnxq's name (minmax, entropy, percentile); onnxruntime gets the
# matching CalibrationMethod. PYTHON must have onnxruntime and numpy. Prints
# one line per tool: wall seconds and peak RSS (from /usr/bin/time -v).
set -euo pipefail
BIN="$1"; PY="$2"; MODEL="$3"; CALIB="$4"; METHOD="${5:-minmax}"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT

cat > "$TMP/ort.py" <<'PY'
import sys, glob, numpy as np
from onnxruntime.quantization import (quantize_static, CalibrationDataReader, QuantFormat,
                                      QuantType, CalibrationMethod)
model, calib, out, method = sys.argv[1:5]
files = sorted(glob.glob(calib + "/*.npz"))
class R(CalibrationDataReader):
    def __init__(self): self.it = iter(files)
    def get_next(self):
        f = next(self.it, None)
        return None if f is None else dict(np.load(f))
m = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
     "percentile": CalibrationMethod.Percentile}[method]
quantize_static(model, out, R(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=m)
PY

measure() {  # measure LABEL CMD...
    local label="$1"; shift
    /usr/bin/time -v "$@" > "$TMP/log" 2>&1 || { echo "$label: failed"; tail -3 "$TMP/log"; return 0; }
    local wall rss
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$TMP/log")"
    rss="$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$TMP/log")"
    printf '%-10s %-10s wall %s  peak RSS %s MB\n' "$label" "$METHOD" "$wall" "$rss"
    grep -E '^  time:' "$TMP/log" || true
}
measure onnxruntime "$PY" "$TMP/ort.py" "$MODEL" "$CALIB" "$TMP/ort.onnx" "$METHOD"
measure onnxq "$BIN" quantize "$MODEL" --calib "$CALIB" -o "$TMP/onnxq.onnx" --method "$METHOD"

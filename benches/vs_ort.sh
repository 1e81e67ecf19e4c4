#!/usr/bin/env bash
# Side-by-side quantization wall time and peak RSS: onnxq against
# onnxruntime's quantize_static, same model, same calibration data, one run.
#
#   benches/vs_ort.sh ONNXQ_BIN PYTHON MODEL.onnx CALIB_NPZ_DIR [METHOD] [ROUNDS]
#
# METHOD is onnxq's name (minmax, entropy, percentile); onnxruntime gets the
# matching CalibrationMethod. PYTHON must have onnxruntime and numpy. Prints
# one line per tool and round: wall seconds and peak RSS (from
# /usr/bin/time -v), onnxq's own phase times, then the ratio onnxq/ORT of
# each round and their median. Rounds alternate the two tools, so both see
# the same machine state (on the VMs we measure on, wall times of either
# tool vary by up to 2x from run to run: freshly touched memory is slow at
# times).
set -euo pipefail
BIN="$1"; PY="$2"; MODEL="$3"; CALIB="$4"; METHOD="${5:-minmax}"; ROUNDS="${6:-1}"
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

measure() {  # measure LABEL CMD... ; sets WALL (seconds, empty on failure)
    local label="$1"; shift
    WALL=""
    /usr/bin/time -v "$@" > "$TMP/log" 2>&1 || { echo "$label: failed"; tail -3 "$TMP/log"; return 0; }
    local wall rss
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$TMP/log")"
    WALL="$(echo "$wall" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')"
    rss="$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$TMP/log")"
    printf '%-10s %-10s wall %s  peak RSS %s MB\n' "$label" "$METHOD" "$wall" "$rss"
    grep -E '^  time:' "$TMP/log" || true
}
RATIOS=()
for _ in $(seq "$ROUNDS"); do
    measure onnxruntime "$PY" "$TMP/ort.py" "$MODEL" "$CALIB" "$TMP/ort.onnx" "$METHOD"
    ORT="$WALL"
    measure onnxq "$BIN" quantize "$MODEL" --calib "$CALIB" -o "$TMP/onnxq.onnx" --method "$METHOD"
    if [ -n "$ORT" ] && [ -n "$WALL" ]; then
        RATIOS+=("$(awk -v a="$WALL" -v b="$ORT" 'BEGIN { printf "%.2f", a / b }')")
    fi
done
if [ ${#RATIOS[@]} -gt 0 ]; then
    printf 'ratio onnxq/onnxruntime: %s  median %s\n' "${RATIOS[*]}" \
        "$(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
fi

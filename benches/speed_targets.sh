#!/usr/bin/env bash
# Speed side by side: quantizes MODEL for each target and times every file
# against the float model in onnxruntime and in tract, in one process per
# runtime, alternating rounds (`onnxq bench`). Prints the two tables.
#
#   benches/speed_targets.sh ONNXQ_BIN MODEL.onnx CALIB_DIR [DATA_DIR]
#
# onnxruntime is loaded from ORT_DYLIB_PATH (or --ort-lib through
# ONNXQ_ORT_LIB); .ci/run's venv ships one:
#   ORT_DYLIB_PATH=$(ls ~/.cache/onnxq-ci/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*) \
#     benches/speed_targets.sh target/release/onnxq testdata/ppocr_cls/model.onnx testdata/ppocr_cls/calib
set -euo pipefail
BIN="$1"; MODEL="$2"; CALIB="$3"; DATA="${4:-$3}"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
ORT_ARGS=()
[ -n "${ONNXQ_ORT_LIB:-}" ] && ORT_ARGS=(--ort-lib "$ONNXQ_ORT_LIB")
FILES=()
for t in ort-cpu tract portable; do
    "$BIN" quantize "$MODEL" --calib "$CALIB" --target "$t" -q --val-samples 0 \
        "${ORT_ARGS[@]}" -o "$TMP/$t.onnx" >/dev/null 2>&1
    FILES+=("$TMP/$t.onnx")
done
"$BIN" quantize "$MODEL" --mode dynamic -q --val-samples 0 -o "$TMP/dynamic.onnx" >/dev/null 2>&1
FILES+=("$TMP/dynamic.onnx")
echo "== onnxruntime CPU (1 thread)"
"$BIN" bench "$MODEL" "${FILES[@]}" --data "$DATA" --runtime ort "${ORT_ARGS[@]}"
echo "== tract"
"$BIN" bench "$MODEL" "${FILES[@]}" --data "$DATA" --runtime tract

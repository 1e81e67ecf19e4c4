#!/usr/bin/env bash
# tests/corpus_quantize.sh BIN NODE_DIR [--own-data]: every model of ONNX's
# backend node tests through `onnxq quantize MODEL -o OUT --calib-random 2
# --val-samples 0` (with --own-data: `--calib` its own test_data_set_*
# inputs instead), as a new user would. Passes when every run exits 0 or 2:
# a crash (panic: 101, or a signal) or a hang (60 s) fails, naming the models.
# Speed selection is left to its cost model (no onnxruntime library in the
# environment), so the run times nothing.
set -uo pipefail
BIN="$1"; NODE_DIR="$2"; MODE="${3:-}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export BIN OUT MODE NODE_DIR
run_one() {
  t="$1"
  if [ "$MODE" = "--own-data" ]; then data=(--calib "$NODE_DIR/$t"); else data=(--calib-random 2); fi
  env -u ORT_DYLIB_PATH -u VIRTUAL_ENV timeout 60 "$BIN" quantize "$NODE_DIR/$t/model.onnx" \
    "${data[@]}" --val-samples 0 -q -o "$OUT/$t.onnx" > "$OUT/$t.log" 2>&1
  echo "$t $?"
  rm -f "$OUT/$t.onnx"
}
export -f run_one
ls "$NODE_DIR" | xargs -P "$(nproc)" -I{} bash -c 'run_one {}' > "$OUT/codes.txt"
echo "exit codes over $(wc -l < "$OUT/codes.txt") models:"
awk '{print $2}' "$OUT/codes.txt" | sort | uniq -c
bad="$(awk '$2 != 0 && $2 != 2 {print $1 " (exit " $2 ")"}' "$OUT/codes.txt")"
if [ -n "$bad" ]; then
  echo "crashed or hung (neither quantized nor refused with a message):"
  for t in $(awk '$2 != 0 && $2 != 2 {print $1}' "$OUT/codes.txt"); do
    echo "  $t: $(tail -2 "$OUT/$t.log" | tr '\n' ' ' | cut -c1-200)"
  done
  exit 1
fi

#!/usr/bin/env bash
# A model past protobuf's 2 GB limit, quantized: a chain of 2048×2048
# MatMuls with ~3 GB of float weights in external data (generated, not
# committed), through weight-only int8 and static int8 with a few random
# calibration samples. Prints wall time and peak RSS of each, checks that
# each output went to external data on its own, and loads both in tract
# (`onnxq run`) and, when the CI venv has it, onnxruntime.
#
#   benches/past_2gb.sh [SIZE_MB]     (default 3000; needs ~4×SIZE of disk)
#
# Needs GNU time at /usr/bin/time. Budgets are printed beside the numbers,
# not enforced by a timed unit test.
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-3000}"
WORK="${ONNXQ_BENCH_DIR:-target/past-2gb}"
VENV="${ONNXQ_CI_VENV:-$HOME/.cache/onnxq-ci/venv}"
rm -rf "$WORK"
mkdir -p "$WORK"
cargo build --release --quiet --bin onnxq --example make_big_model
BIN=target/release/onnxq
target/release/examples/make_big_model "$WORK/big.onnx" --mb "$MB" --external
echo "model: $(du -b "$WORK/big.onnx" | cut -f1) bytes + data $(du -b "$WORK/big.onnx.data" | cut -f1) bytes"

run() {
    local name="$1"; shift
    local log="$WORK/$name.time"
    local t0=$SECONDS
    if ! /usr/bin/time -v "$BIN" "$@" -q 2>"$log" >/dev/null; then
        echo "$name: FAILED"; tail -5 "$log"; return 1
    fi
    local rss
    rss=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$log")
    echo "$name: wall $((SECONDS - t0)) s, peak RSS $((rss / 1024)) MiB"
}

run weights-int8 quantize "$WORK/big.onnx" --mode weights --val-samples 0 -o "$WORK/w8.onnx"
run static-int8 quantize "$WORK/big.onnx" --calib-random 2 --method minmax --no-speed-select \
    --target portable --val-samples 1 -o "$WORK/s8.onnx"
echo "largest weight: $((2048 * 2048 * 4 / 1048576)) MiB"
for f in w8 s8; do
    out="$WORK/$f.onnx"
    [ -f "$out.data" ] && echo "$f: external data $(du -b "$out.data" | cut -f1) bytes, model $(du -b "$out" | cut -f1) bytes" \
        || echo "$f: one file of $(du -b "$out" | cut -f1) bytes"
    "$VENV/bin/python" -c 'import numpy as np; np.save("'"$WORK"'/x.npy", np.ones((1, 2048), np.float32))' 2>/dev/null \
        || true
    if [ -f "$WORK/x.npy" ]; then
        /usr/bin/time -f "$f in tract: %e s, peak RSS %M KiB" "$BIN" run "$out" --input "x=$WORK/x.npy" -o "$WORK/$f.out.npz" >/dev/null
    fi
    if "$VENV/bin/python" -c 'import onnxruntime' 2>/dev/null; then
        /usr/bin/time -f "$f in onnxruntime: %e s, peak RSS %M KiB" "$VENV/bin/python" -c '
import numpy as np, onnxruntime as ort, sys
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
y = s.run(None, {s.get_inputs()[0].name: np.ones((1, 2048), np.float32)})[0]
print("finite:", bool(np.isfinite(y).all()))' "$out"
    fi
done

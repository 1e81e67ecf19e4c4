#!/usr/bin/env bash
# What each way of shrinking a model buys, side by side on one model: file
# bytes and deflated bytes (what a download costs) of the float model,
# int8, 4-bit codebook weights, pruning + int8 and pruning + codebook, each
# with its worst output SQNR on the validation samples, then the latency of
# each against float in tract and, when a libonnxruntime is found
# (ORT_DYLIB_PATH), in onnxruntime (`onnxq bench`, alternating rounds).
#
#   benches/sizes.sh [MODEL CALIB_DIR [EXTRA_OPTIONS...]]
#                                   (default: testdata/ppocr_cls)
#
# Every number comes from the quantize report; nothing is enforced here.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-testdata/ppocr_cls/model.onnx}"
CALIB="${2:-testdata/ppocr_cls/calib}"
shift 2 || true
WORK="${ONNXQ_BENCH_DIR:-target/sizes}"
rm -rf "$WORK"
mkdir -p "$WORK"
cargo build --release --quiet --bin onnxq
BIN=target/release/onnxq

variant() {
    local name="$1"; shift
    if ! "$BIN" quantize "$MODEL" --calib "$CALIB" -q "$@" -o "$WORK/$name.onnx" \
        --report "$WORK/$name.json" >"$WORK/$name.log" 2>&1; then
        echo "$name: FAILED"; tail -5 "$WORK/$name.log"; return 1
    fi
}

variant int8 "$@"
variant codebook4 --mode codebook --bits 4 "$@"
variant prune36-int8 --prune 36 "$@"
variant prune36-codebook4 --mode codebook --bits 4 --prune 36 "$@"

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
rows = []
for name in ["int8", "codebook4", "prune36-int8", "prune36-codebook4"]:
    r = json.load(open(f"{work}/{name}.json"))
    if not rows:
        rows.append(("float", r["float_bytes"], r.get("float_compressed_bytes"), None, None))
    sq = min(o["sqnr_db"] for o in r["validation"]["outputs"])
    sp = r.get("pruning")
    sp = sp["zeros"] / max(sp["total"], 1) if sp else None
    rows.append((name, r["quantized_bytes"], r.get("quantized_compressed_bytes"), sq, sp))
fb, fc = rows[0][1], rows[0][2]
print(f"{'variant':18s} {'file bytes':>11s} {'x float':>8s} {'deflated':>10s} {'x float':>8s} {'SQNR dB':>8s} {'sparsity':>8s}")
for name, b, c, sq, sp in rows:
    print(f"{name:18s} {b:11d} {b / fb:8.3f} {c or 0:10d} {(c or 0) / (fc or 1):8.3f} "
          f"{'' if sq is None else f'{sq:8.2f}':>8s} {'' if sp is None else f'{100 * sp:7.1f}%':>8s}")
PY
FILES=()
for v in int8 codebook4 prune36-int8 prune36-codebook4; do FILES+=("$WORK/$v.onnx"); done
"$BIN" bench "$MODEL" "${FILES[@]}" --data "$CALIB" || true
if [ -n "${ORT_DYLIB_PATH:-}" ]; then
    "$BIN" bench --runtime ort "$MODEL" "${FILES[@]}" --data "$CALIB" || true
fi

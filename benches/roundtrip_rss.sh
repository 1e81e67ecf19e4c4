#!/usr/bin/env bash
# Peak memory of a whole-model round trip (import + `dce` + export) against
# the model's size. Not a timed benchmark: it checks the design promise that
# weights are shared or memory-mapped, never copied wholesale.
#
#   benches/roundtrip_rss.sh [SIZE_MB]        (default 450)
#
# Budgets (fail with exit 1 when missed):
#   inline weights:   peak RSS <= 2.2 x model file size
#   external weights: peak RSS <  300 MB (the data file must not be faulted
#                     into memory; ExternalSpan::copy_to streams it with pread)
#
# Needs a release build (`cargo build --release --examples --bins`; this
# script runs it) and GNU time at /usr/bin/time.
set -euo pipefail

cd "$(dirname "$0")/.."
MB="${1:-450}"
WORK="${ONNXQ_BENCH_DIR:-target/rss-bench}"
rm -rf "$WORK"
mkdir -p "$WORK/inline" "$WORK/external" "$WORK/out"

cargo build --release --quiet --bin onnxq --example make_big_model
BIN=target/release/onnxq
GEN=target/release/examples/make_big_model

"$GEN" "$WORK/inline/big.onnx" --mb "$MB"
"$GEN" "$WORK/external/big.onnx" --mb "$MB" --external

# Peak RSS in bytes of one command, via GNU time.
peak_rss() {
    local log="$WORK/time.log"
    /usr/bin/time -v "$@" 2>"$log" >/dev/null || { cat "$log" >&2; return 1; }
    awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 * 1024 }' "$log"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

fail=0
# check NAME RSS LIMIT_BYTES SIZE_BYTES
check() {
    local name="$1" rss="$2" limit="$3" size="$4" verdict="ok"
    if [ "$rss" -gt "$limit" ]; then verdict="OVER BUDGET"; fail=1; fi
    printf '%-34s file %12s  peak RSS %12s  (%.2fx file; budget %s)  %s\n' \
        "$name" "$(mib "$size")" "$(mib "$rss")" "$(awk -v r="$rss" -v s="$size" 'BEGIN { print r / s }')" \
        "$(mib "$limit")" "$verdict"
}

inline_size=$(stat -c %s "$WORK/inline/big.onnx")
ext_size=$(( $(stat -c %s "$WORK/external/big.onnx") + $(stat -c %s "$WORK/external/big.onnx.data") ))
inline_budget=$(awk -v s="$inline_size" 'BEGIN { printf "%d", s * 2.2 }')
ext_budget=$((300 * 1024 * 1024))

# Drop nothing from the page cache on purpose: RSS counts only this
# process's mapped and allocated pages, whatever the cache holds.
rss=$(peak_rss "$BIN" opt "$WORK/inline/big.onnx" -o "$WORK/out/inline.onnx" -p dce)
check "inline -> inline" "$rss" "$inline_budget" "$inline_size"

rss=$(peak_rss "$BIN" opt "$WORK/inline/big.onnx" -o "$WORK/out/inline-ext.onnx" -p dce --external-data)
check "inline -> --external-data" "$rss" "$inline_budget" "$inline_size"

rss=$(peak_rss "$BIN" opt "$WORK/external/big.onnx" -o "$WORK/out/ext-ext.onnx" -p dce --external-data)
check "external -> --external-data" "$rss" "$ext_budget" "$ext_size"

rss=$(peak_rss "$BIN" opt "$WORK/external/big.onnx" -o "$WORK/out/ext-inline.onnx" -p dce)
check "external -> inline" "$rss" "$ext_budget" "$ext_size"

# Streaming external tensors back inline must give the very bytes that
# inline -> inline gives (same tensors, same order, same encoding).
if cmp -s "$WORK/out/inline.onnx" "$WORK/out/ext-inline.onnx"; then
    echo "external -> inline output is byte-identical to inline -> inline"
else
    echo "external -> inline output DIFFERS from inline -> inline"
    fail=1
fi

rm -rf "$WORK"
if [ "$fail" -ne 0 ]; then
    echo "roundtrip_rss: FAILED (a peak RSS is over budget)"
    exit 1
fi
echo "roundtrip_rss: ok"

#!/usr/bin/env bash
# Runs every fuzz target for a while: `fuzz/run.sh [SECONDS_PER_TARGET]`
# (default 120; RUNS=N also stops each after N executions). Needs a
# nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seed
# corpora come from testdata/, the tests' text IR and pipelines, and ONNX's
# backend node tests when the CI venv has them; they are built under
# fuzz/corpus/ (not committed). A crash is saved under fuzz/artifacts/;
# once fixed, it joins the bad-input catalogue (testdata/bad/), which the
# normal suite replays. SANITIZER=none runs without AddressSanitizer
# (several times faster; Rust code is memory-safe outside `unsafe`).
set -euo pipefail
cd "$(dirname "$0")"
SECS="${1:-120}"
ROOT=..
VENV="${ONNXQ_CI_VENV:-$HOME/.cache/onnxq-ci/venv}"
seed() { mkdir -p "corpus/$1"; }
for t in import_model text_ir pipeline npy npz pb stats; do seed "$t"; done
cp "$ROOT"/testdata/ppocr_cls/model.onnx corpus/import_model/ 2>/dev/null || true
find "$ROOT"/testdata/bad -maxdepth 1 -name '*.onnx' -exec cp {} corpus/import_model/ \;
NODE_DIR="$("$VENV/bin/python" -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/node"))' 2>/dev/null || true)"
if [ -n "$NODE_DIR" ] && [ -d "$NODE_DIR" ]; then
    i=0
    for m in "$NODE_DIR"/*/model.onnx; do
        i=$((i + 1))
        [ $((i % 4)) -eq 0 ] || continue  # a quarter of the 1765 models
        cp "$m" "corpus/import_model/node_$i.onnx"
        pb="$(dirname "$m")/test_data_set_0/input_0.pb"
        [ -f "$pb" ] && cp "$pb" "corpus/pb/node_$i.pb"
    done
fi
find "$ROOT"/tests/passes -name '*.onnxtxt' -exec cp {} corpus/text_ir/ \;
cp "$ROOT"/testdata/tiny/*.onnxtxt corpus/text_ir/ 2>/dev/null || true
grep -h '^# RUN:' "$ROOT"/tests/passes/*/*.onnxtxt | sed 's/^# RUN: //' | sort -u | split -l 1 - corpus/pipeline/run_
cp "$ROOT"/testdata/ppocr_cls/calib/*.npz corpus/npz/
for f in "$ROOT"/testdata/bad/calib_*/*.npz; do cp "$f" "corpus/npz/$(basename "$(dirname "$f")").npz"; done
for f in "$ROOT"/testdata/bad/calib_*/*.npy; do cp "$f" "corpus/npy/$(basename "$(dirname "$f")").npy"; done
"$VENV/bin/python" - <<'PY' 2>/dev/null || true
import numpy as np, io, zipfile, glob
for p in glob.glob("corpus/npz/sample_*.npz")[:2]:
    with zipfile.ZipFile(p) as z:
        for n in z.namelist():
            open(f"corpus/npy/{n}", "wb").write(z.read(n))
for i, (dt, shape) in enumerate([(np.float32, (2, 3)), (np.float16, (4,)), (np.int64, (1, 2, 2)), (np.uint8, ())]):
    np.save(f"corpus/npy/small_{i}.npy", np.arange(int(np.prod(shape))).astype(dt).reshape(shape))
PY
cp "$ROOT"/testdata/bad/stats_*.json corpus/stats/
if [ ! -f corpus/stats/cls.json ]; then
    cargo run --quiet --release --manifest-path "$ROOT/Cargo.toml" -- calibrate "$ROOT/testdata/ppocr_cls/model.onnx" \
        --calib "$ROOT/testdata/ppocr_cls/calib" --calib-limit 2 -q -o corpus/stats/cls.json
fi
mkdir -p logs
for t in pipeline npy stats pb npz text_ir import_model; do
    echo "==> $t"
    # Each target stops after SECONDS, or after RUNS executions if given.
    args=(-rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 "-max_total_time=$SECS")
    if [ -n "${RUNS:-}" ]; then args+=("-runs=$RUNS"); fi
    cargo +nightly fuzz run --release ${SANITIZER:+-s "$SANITIZER"} "$t" "corpus/$t" -- "${args[@]}" >"logs/$t.log" 2>&1 || true
    grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|ERROR|SUMMARY' "logs/$t.log" || true
done

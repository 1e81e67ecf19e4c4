#!/usr/bin/env python3
"""Peak RSS of calibrating from a Python iterator: 10 samples against 100.

The Python package writes each sample to a temporary directory as it
arrives, and the core reads them back one at a time, so memory should not
grow with the number of samples (the goal: 100 samples within 1.2x of 10).
Each count runs in a fresh process (peak RSS is per process), side by side,
and the script prints both and the ratio.

    python benches/python_calib_rss.py [MODEL --shape D0,D1,...] [--counts 10,100]

Needs the package installed (`pip install .`) and numpy. MODEL (one float
input) defaults to testdata/ppocr_cls/model.onnx with --shape 16,3,48,192:
1.8 MB a sample, 180 MB for 100 held at once.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys
import numpy as np
import onnxq

model, count, shape, stats = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
(name,) = [i["name"] for i in onnxq.inspect(model)["inputs"]]
shape = [int(d) for d in shape.split(",")]

def samples():
    rng = np.random.default_rng(0)
    for _ in range(count):
        yield {name: rng.standard_normal(shape).astype(np.float32)}

r = onnxq.calibrate(model, samples(), stats)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"samples": r.samples, "peak_mb": peak_kb / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=os.path.join(ROOT, "testdata", "ppocr_cls", "model.onnx"))
    ap.add_argument("--shape", default="16,3,48,192")
    ap.add_argument("--counts", default="10,100")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, args.model, str(n), args.shape, os.path.join(tmp, f"{n}.json")],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                sys.exit(f"calibration with {n} samples failed:\n{out.stderr}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[n] = r["peak_mb"]
            print(f"{r['samples']:>5} samples from a Python iterator: peak RSS {r['peak_mb']:.1f} MB")
    lo, hi = min(counts), max(counts)
    print(f"ratio {hi}/{lo} samples: {peaks[hi] / peaks[lo]:.3f} (goal <= 1.2)")


if __name__ == "__main__":
    main()

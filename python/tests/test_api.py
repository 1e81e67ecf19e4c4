"""The Python package on the testdata model (PP-OCR's text direction
classifier, 8 calibration samples): every way of giving data writes the
bytes the command line writes, errors arrive as typed exceptions with the
command's messages, and the result runs in onnxruntime.

Run: ``pytest python/tests`` in a venv where the package is installed
(``pip install .``) with onnxruntime and onnx. ``ONNXQ_BIN`` names the Rust
binary to compare with (default: the ``onnxq`` command the package
installs).
"""

import glob
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import onnxq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "testdata", "ppocr_cls", "model.onnx")
CALIB = os.path.join(ROOT, "testdata", "ppocr_cls", "calib")
VAL = os.path.join(ROOT, "testdata", "ppocr_cls", "val")
# Fast and deterministic: no speed measurement, one method.
FAST = dict(method="minmax", speed_select=False, target="portable")
FAST_FLAGS = ["--method", "minmax", "--no-speed-select", "--target", "portable"]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def samples(directory):
    for path in sorted(glob.glob(os.path.join(directory, "*.npz"))):
        with np.load(path) as z:
            yield {k: z[k] for k in z.files}


def cli(*args):
    exe = os.environ.get("ONNXQ_BIN") or shutil.which("onnxq")
    assert exe, "no onnxq command: install the package or set ONNXQ_BIN"
    return subprocess.run([exe, *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory):
    """What `onnxq quantize` writes for FAST options."""
    out = str(tmp_path_factory.mktemp("cli") / "cli.onnx")
    r = cli("quantize", MODEL, "--calib", CALIB, "-o", out, "-q", *FAST_FLAGS)
    assert r.returncode == 0, r.stderr
    return out


def test_quantize_from_directory_matches_the_cli_and_runs_in_onnxruntime(tmp_path, cli_output):
    ort = pytest.importorskip("onnxruntime")
    out = str(tmp_path / "m.onnx")
    report = onnxq.quantize(MODEL, out, calib=CALIB, **FAST)
    assert sha256(out) == sha256(cli_output)
    assert isinstance(report, onnxq.Report)
    assert report.output == out
    assert report.calibration_samples == 8
    assert any(n["quantized"] for n in report.nodes)
    assert report.sqnr_db is not None and report.sqnr_db > 20
    assert 0 < report.size_ratio < 0.5
    assert report.to_dict()["pipeline"] == report.pipeline
    assert "onnxq quantize:" in report.summary
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    sample = next(samples(VAL))
    (y,) = session.run(None, sample)
    assert np.isfinite(y).all()


def test_list_of_dicts_iterator_and_reader_give_the_cli_bytes(tmp_path, cli_output):
    want = sha256(cli_output)
    out = str(tmp_path / "list.onnx")
    onnxq.quantize(MODEL, out, list(samples(CALIB)), **FAST)
    assert sha256(out) == want
    out = str(tmp_path / "iter.onnx")
    onnxq.quantize(MODEL, out, samples(CALIB), **FAST)
    assert sha256(out) == want


def test_calibration_data_reader_as_in_onnxruntimes_docs(tmp_path, cli_output):
    quantization = pytest.importorskip("onnxruntime.quantization")
    ort = pytest.importorskip("onnxruntime")

    # onnxruntime's example reader (resnet50_data_reader.py), reading .npz
    # samples where it reads images.
    class DataReader(quantization.CalibrationDataReader):
        def __init__(self, calibration_folder, model_path):
            self.enum_data = None
            session = ort.InferenceSession(model_path, None)
            self.input_name = session.get_inputs()[0].name
            self.data_list = [s[self.input_name] for s in samples(calibration_folder)]

        def get_next(self):
            if self.enum_data is None:
                self.enum_data = iter([{self.input_name: d} for d in self.data_list])
            return next(self.enum_data, None)

        def rewind(self):
            self.enum_data = None

    out = str(tmp_path / "reader.onnx")
    onnxq.quantize(MODEL, out, DataReader(CALIB, MODEL), **FAST)
    assert sha256(out) == sha256(cli_output)


def test_onnxruntime_keywords_mean_the_same_options(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    a = str(tmp_path / "ort_kw.onnx")
    onnxq.quantize(
        MODEL,
        a,
        CALIB,
        speed_select=False,
        target="portable",
        calibrate_method=quantization.CalibrationMethod.MinMax,
        per_channel=False,
        nodes_to_exclude=["Conv"],
        activation_type=quantization.QuantType.QUInt8,
    )
    b = str(tmp_path / "flags.onnx")
    r = cli("quantize", MODEL, "--calib", CALIB, "-o", b, "-q", "--no-speed-select", "--target",
            "portable", "--method", "minmax", "--per-tensor", "--exclude", "Conv",
            "--activations", "u8")
    assert r.returncode == 0, r.stderr
    assert sha256(a) == sha256(b)
    with pytest.raises(onnxq.BadInputError, match="QOperator"):
        onnxq.quantize(MODEL, a, CALIB, quant_format=quantization.QuantFormat.QOperator)
    with pytest.raises(TypeError, match="no_such_option"):
        onnxq.quantize(MODEL, a, CALIB, no_such_option=1)


def test_model_as_bytes_or_modelproto(tmp_path, cli_output):
    want = sha256(cli_output)
    with open(MODEL, "rb") as f:
        data = f.read()
    out = str(tmp_path / "bytes.onnx")
    onnxq.quantize(data, out, CALIB, **FAST)
    assert sha256(out) == want
    onnx = pytest.importorskip("onnx")
    out = str(tmp_path / "proto.onnx")
    onnxq.quantize(onnx.load(MODEL), out, CALIB, **FAST)
    assert sha256(out) == want


def test_errors_are_typed_and_carry_the_cli_message(tmp_path):
    out = str(tmp_path / "x.onnx")
    missing = str(tmp_path / "missing.onnx")
    with pytest.raises(onnxq.BadInputError) as e:
        onnxq.quantize(missing, out, CALIB)
    assert e.value.code == 2
    assert "missing.onnx" in str(e.value)
    r = cli("quantize", missing, "--calib", CALIB, "-o", out)
    assert r.returncode == 2
    assert e.value.message in r.stderr
    # A bad option value, checked before any model is read.
    with pytest.raises(onnxq.BadInputError, match="--target 'gpu'"):
        onnxq.quantize(MODEL, out, CALIB, target="gpu")
    # The input is never overwritten unless asked.
    with pytest.raises(onnxq.BadInputError, match="in-place"):
        onnxq.quantize(MODEL, MODEL, CALIB)
    # Samples that do not fit the model name the input.
    with pytest.raises(onnxq.BadInputError, match="not_an_input"):
        onnxq.quantize(MODEL, out, [{"not_an_input": np.zeros((1, 3, 48, 192), np.float32)}])
    with pytest.raises(onnxq.BadInputError, match="no samples"):
        onnxq.quantize(MODEL, out, [])
    with pytest.raises(TypeError, match="single dict"):
        onnxq.quantize(MODEL, out, {"x": np.zeros(1)})
    assert not os.path.exists(out)
    assert isinstance(e.value, ValueError) and isinstance(e.value, onnxq.OnnxqError)


def test_progress_callback_sees_every_step(tmp_path):
    seen = []
    onnxq.quantize(MODEL, str(tmp_path / "p.onnx"), CALIB, progress=lambda *a: seen.append(a), **FAST)
    calibrating = [s for s in seen if s[0] == "calibrating"]
    assert calibrating, seen
    assert calibrating[-1][1] == calibrating[-1][2] == 8


def test_an_exception_in_the_callback_is_raised(tmp_path):
    def boom(what, done, total):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        onnxq.quantize(MODEL, str(tmp_path / "p.onnx"), CALIB, progress=boom, **FAST)


def test_validate_calibrate_inspect_profile(tmp_path, cli_output):
    v = onnxq.validate(MODEL, cli_output, VAL)
    assert v.sqnr_db is not None and v.sqnr_db > 20
    assert v.validation["samples"] > 0
    assert "validation on" in v.text
    with pytest.raises(onnxq.CheckFailedError) as e:
        onnxq.validate(MODEL, cli_output, VAL, min_sqnr=500)
    assert e.value.code == 1 and "below --min-sqnr 500" in e.value.message
    assert e.value.result.sqnr_db == pytest.approx(v.sqnr_db)

    stats = str(tmp_path / "stats.json")
    c = onnxq.calibrate(MODEL, samples(CALIB), stats)
    assert c.samples == 8 and c.tensors > 0 and os.path.exists(stats)
    out = str(tmp_path / "from_stats.onnx")
    onnxq.quantize(MODEL, out, stats=stats, **FAST)
    assert sha256(out) == sha256(cli_output)

    info = onnxq.inspect(MODEL)
    assert info["opsets"]["ai.onnx"] == 11 and info["inputs"][0]["name"] == "x"
    assert "Conv" in onnxq.inspect(MODEL, ir=True)

    p = onnxq.profile(MODEL, CALIB, runs=2)
    assert p.to_dict()["model"] == MODEL
    assert "Conv" in p.text


def test_the_command_the_wheel_installs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "onnxq", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("onnxq ")
    r = subprocess.run([sys.executable, "-m", "onnxq", "quantize", str(tmp_path / "no.onnx"),
                        "-o", str(tmp_path / "o.onnx")], capture_output=True, text=True)
    assert r.returncode == 2 and "no.onnx" in r.stderr


def test_help_reads_well():
    doc = onnxq.quantize.__doc__
    assert "CalibrationDataReader" in doc and "target_sqnr" in doc
    assert onnxq.__version__

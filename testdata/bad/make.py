"""Writes the malformed inputs of testdata/bad/ (run from anywhere:
`python testdata/bad/make.py`, needs numpy and onnx). The files are
committed; this script says how each was made. MANIFEST lists every case,
the command it is fed to and why it must be refused."""

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def conv_model(w: TensorProto | None = None, opset: int = 13, **graph_kw) -> onnx.ModelProto:
    """x[1,1,4,4] -> Conv(w[2,1,2,2]) -> y: a tiny model to break."""
    if w is None:
        w = numpy_helper.from_array(np.ones((2, 1, 2, 2), np.float32), "w")
    g = helper.make_graph(
        graph_kw.pop("nodes", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]),
        "g",
        graph_kw.pop("inputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])]),
        graph_kw.pop("outputs", [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])]),
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def save(name: str, m: onnx.ModelProto) -> None:
    (HERE / name).write_bytes(m.SerializeToString())


def raw_weight(dims, raw: bytes, dtype=TensorProto.FLOAT) -> TensorProto:
    t = TensorProto(name="w", data_type=dtype, dims=dims)
    t.raw_data = raw
    return t


def external_weight(location: str, offset: int, length: int) -> TensorProto:
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 1, 2, 2])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def npy_bytes(header: str, data: bytes) -> bytes:
    h = header.encode("latin1")
    pad = (64 - (10 + len(h) + 1) % 64) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


def npz(path: Path, entries: dict[str, bytes], deflate: bool = False) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        for k, v in entries.items():
            z.writestr(k, v)


def calib_dir(name: str, files: dict[str, bytes]) -> None:
    d = HERE / name
    d.mkdir(exist_ok=True)
    for f, b in files.items():
        (d / f).write_bytes(b)


def main() -> None:
    good = conv_model()
    raw = good.SerializeToString()
    # --- models: bytes
    (HERE / "empty.onnx").write_bytes(b"")
    (HERE / "garbage.onnx").write_bytes(bytes(range(256)) * 4)
    (HERE / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    (HERE / "text_not_protobuf.onnx").write_text("this is a README, not an ONNX model\n")
    (HERE / "length_past_end.onnx").write_bytes(b"\x3a\xff\xff\xff\x7f" + b"\x00" * 16)
    # --- models: lying sizes
    save("dims_overflow.onnx", conv_model(raw_weight([1 << 40, 1 << 40, 1, 1], b"\0" * 32)))
    save("trillion_elements.onnx", conv_model(raw_weight([1000000, 1000000, 1, 1], b"\0" * 32)))
    save("empty_dims_overflow.onnx", conv_model(raw_weight([0, 1 << 32, 1 << 32, 1], b"")))
    save("negative_dim.onnx", conv_model(raw_weight([2, -1, 2, 2], b"\0" * 32)))
    save("raw_data_short.onnx", conv_model(raw_weight([2, 1, 2, 2], b"\0" * 12)))
    save("raw_data_long.onnx", conv_model(raw_weight([2, 1, 2, 2], b"\0" * 64)))
    float_short = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 1, 2, 2], float_data=[1.0, 2.0])
    save("float_data_short.onnx", conv_model(float_short))
    save("unknown_dtype.onnx", conv_model(raw_weight([2, 1, 2, 2], b"\0" * 32, dtype=99)))
    # --- models: external data
    (HERE / "weights.bin").write_bytes(b"\0" * 32)
    save("external_missing_file.onnx", conv_model(external_weight("no_such_file.bin", 0, 32)))
    save("external_offset_past_end.onnx", conv_model(external_weight("weights.bin", 4096, 32)))
    save("external_length_past_end.onnx", conv_model(external_weight("weights.bin", 16, 32)))
    save("external_escapes_dir.onnx", conv_model(external_weight("../../../etc/passwd", 0, 32)))
    save("external_length_lies.onnx", conv_model(external_weight("weights.bin", 0, 1 << 40)))
    # --- models: graph structure
    save("undefined_input.onnx", conv_model(nodes=[helper.make_node("Conv", ["nowhere", "w"], ["y"], name="conv")]))
    save(
        "cycle.onnx",
        conv_model(
            nodes=[
                helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                helper.make_node("Relu", ["a"], ["b"], name="second"),
                helper.make_node("Conv", ["b", "w"], ["y"], name="conv"),
            ]
        ),
    )
    save(
        "duplicate_output.onnx",
        conv_model(
            nodes=[
                helper.make_node("Relu", ["x"], ["r"], name="one"),
                helper.make_node("Sigmoid", ["x"], ["r"], name="two"),
                helper.make_node("Conv", ["r", "w"], ["y"], name="conv"),
            ]
        ),
    )
    save("no_outputs.onnx", conv_model(outputs=[]))
    save("output_never_made.onnx", conv_model(outputs=[helper.make_tensor_value_info("zz", TensorProto.FLOAT, [1])]))
    save("future_opset.onnx", conv_model(opset=1000))
    no_graph = onnx.ModelProto(ir_version=8)
    no_graph.opset_import.add().version = 13
    save("no_graph.onnx", no_graph)
    save("unknown_op.onnx", conv_model(nodes=[helper.make_node("FrobnicateTensor", ["x", "w"], ["y"], name="frob")]))
    save("conv_weight_rank.onnx", conv_model(numpy_helper.from_array(np.ones((2, 2), np.float32), "w")))
    save("string_input.onnx", conv_model(inputs=[helper.make_tensor_value_info("x", TensorProto.STRING, [1, 1, 4, 4])]))
    # A model already quantized (QDQ): quantize refuses to quantize twice.
    qdq = conv_model(
        nodes=[
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
            helper.make_node("Conv", ["xd", "w"], ["y"], name="conv"),
        ]
    )
    qdq.graph.initializer.extend([numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")])
    save("already_quantized.onnx", qdq)
    # --- calibration data (for the good testdata classifier, input "x" [?,3,48,192])
    calib_dir("calib_bad_magic", {"sample.npy": b"NOTNUMPY" + b"\0" * 120})
    calib_dir("calib_npy_truncated", {"x.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 48, 192), }", b"\0" * 100)})
    calib_dir("calib_npy_trillion", {"x.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }", b"\0" * 64)})
    calib_dir("calib_npy_shape_overflow", {"x.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", b"")})
    # Found by fuzzing: nothing to hold, but no array can have the shape.
    calib_dir("calib_npy_empty_overflow", {"x.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }", b"")})
    calib_dir("calib_npy_bad_header", {"x.npy": npy_bytes("{'descr': '<f4', 'shape': (1, oops", b"")})
    calib_dir("calib_npy_object_dtype", {"x.npy": npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8)})
    calib_dir("calib_npz_not_zip", {"sample.npz": b"PK\x03\x04 definitely not a zip archive"})
    b = io.BytesIO()
    np.save(b, np.zeros((1, 3, 48, 192), np.float32))
    calib_dir("calib_npz_wrong_name", {})
    npz(HERE / "calib_npz_wrong_name" / "sample.npz", {"not_the_input.npy": b.getvalue()})
    b = io.BytesIO()
    np.save(b, np.zeros((1, 3, 48, 192), np.int32))
    calib_dir("calib_npz_wrong_dtype", {})
    npz(HERE / "calib_npz_wrong_dtype" / "sample.npz", {"x.npy": b.getvalue()})
    b = io.BytesIO()
    np.save(b, np.zeros((1, 5, 48, 192), np.float32))
    calib_dir("calib_npz_wrong_shape", {})
    npz(HERE / "calib_npz_wrong_shape" / "sample.npz", {"x.npy": b.getvalue()})
    # A zip bomb: one deflated member claiming 1 GiB of float32 (its
    # 256 MiB of zeros deflate to 256 KiB).
    calib_dir("calib_npz_bomb", {})
    header = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (268435456,), }", b"")
    chunk = b"\0" * (1 << 20)
    zi = zipfile.ZipInfo("x.npy")
    zi.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(HERE / "calib_npz_bomb" / "sample.npz", "w") as z:
        # Written member by member so the 1 GiB never exists uncompressed.
        with z.open(zi, "w", force_zip64=True) as w:
            w.write(header)
            for _ in range(256):
                w.write(chunk)
    calib_dir("calib_pb_garbage", {})
    (HERE / "calib_pb_garbage" / "test_data_set_0").mkdir(exist_ok=True)
    (HERE / "calib_pb_garbage" / "test_data_set_0" / "input_0.pb").write_bytes(bytes(range(200)))
    # --- pipelines (for `onnxq opt`)
    pipes = {
        "pipeline_unknown_pass.txt": "fold-constants,make-it-fast",
        "pipeline_unbalanced.txt": "insert-qdq{target=portable",
        "pipeline_bad_option_type.txt": "calibrate,fold-calibration{method=42}",
        "pipeline_unknown_option.txt": "dce{aggressive=true}",
        "pipeline_empty_item.txt": "dce,,dce",
        "pipeline_needs_calibration.txt": "fold-calibration,insert-qdq",
    }
    for f, p in pipes.items():
        (HERE / f).write_text(p + "\n")
    # --- statistics files
    (HERE / "stats_not_json.json").write_text("histograms go here\n")
    (HERE / "stats_truncated.json").write_text('{"version": 1, "tensors": {"x": {"min": 0.0, "max"')
    (HERE / "stats_wrong_shape.json").write_text('{"version": 1, "tensors": [1, 2, 3]}\n')
    (HERE / "stats_empty.json").write_text("")


if __name__ == "__main__":
    main()

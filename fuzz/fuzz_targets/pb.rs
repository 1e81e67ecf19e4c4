//! Serialized `TensorProto` samples (`test_data_set_*/input_*.pb`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onnxq::tensorio::pb_from_bytes(data, "fuzz.pb");
});

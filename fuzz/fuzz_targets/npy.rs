//! `.npy` calibration samples.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onnxq::tensorio::npy_from_bytes(data, "fuzz.npy");
});

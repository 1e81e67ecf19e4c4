//! `.npz` archives of samples (zip, stored or deflated).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onnxq::tensorio::npz_from_bytes(data, "fuzz.npz");
});

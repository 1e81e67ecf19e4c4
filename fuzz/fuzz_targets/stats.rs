//! Statistics files (`onnxq calibrate`, `--save-stats`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onnxq::calib::Stats::from_bytes(data, "fuzz.json");
});

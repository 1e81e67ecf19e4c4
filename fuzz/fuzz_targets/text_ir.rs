//! The text IR parser (`.onnxtxt`): what parses prints and parses again.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = onnxq::ir::text::parse_model(text) {
        let printed = onnxq::ir::text::print_model(&m);
        onnxq::ir::text::parse_model(&printed).expect("printed IR parses");
    }
});

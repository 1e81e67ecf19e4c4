//! The pipeline parser (`-p "pass{opt=…},…"`): what parses prints as a
//! pipeline that parses again.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = onnxq::passes::Pipeline::parse(text) {
        onnxq::passes::Pipeline::parse(&p.to_string()).expect("a printed pipeline parses");
    }
});

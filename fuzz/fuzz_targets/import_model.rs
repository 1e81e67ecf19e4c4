//! ONNX bytes → IR; what imports must export and import again, with
//! the same text IR.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = onnxq::onnx::import::from_bytes(bytes::Bytes::copy_from_slice(data), None, "fuzz")
    else {
        return;
    };
    let first = onnxq::ir::text::print_model(&m);
    let again = onnxq::onnx::import::from_bytes(
        onnxq::onnx::export::to_bytes(&m).into(),
        None,
        "fuzz",
    )
    .expect("an imported model exports to one that imports");
    assert_eq!(first, onnxq::ir::text::print_model(&again));
});

//! Compiles `proto/onnx.proto` into Rust with protox (a pure-Rust protobuf
//! compiler), so building onnxq needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    // `bytes::Bytes` for every bytes field: decoding from a `Bytes` buffer
    // (an mmap of the model) then slices instead of copying tensor data.
    config.bytes(["."]);
    config.compile_fds(fds)?;
    Ok(())
}

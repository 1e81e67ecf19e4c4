//! The quantization report as one self-contained HTML page.

use crate::quantize::QuantizeReport;

/// Renders the report (no external resources).
pub fn render(r: &QuantizeReport) -> String {
    let json = serde_json::to_string(r).expect("invariant: report serializes");
    format!("<!doctype html><meta charset=utf-8><title>onnxq report</title><pre>{}</pre>", escape(&json))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

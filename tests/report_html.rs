//! The HTML report (`onnxq quantize --report FILE.html`), from a real run on
//! the PP-OCR text direction classifier in `testdata/ppocr_cls`.
//!
//! What readers of the page rely on, each checked here:
//! * every section is there, with a chart per activation histogram, the
//!   op-type and per-layer charts, and the hotspot and decision tables;
//! * names are escaped wherever they appear (tensor names can hold `<`, `&`,
//!   quotes);
//! * the page loads nothing: no script, no `http` reference of any kind;
//! * rendering is deterministic;
//! * the fallback section shows a copyable `--exclude` command line.
//!
//! That the page also *renders* (and how it looks) is checked in a browser by
//! `tests/check_report_browser.sh`, which CI runs where chromium exists; this
//! file needs no browser.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use onnxq::quantize::{quantize_file, Fallback, FidelityTarget, QuantizeOptions, QuantizeReport};
use onnxq::report::html::render;
use onnxq::sensitivity::NodeSensitivity;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// One detailed quantization run, shared by the tests (a few seconds).
fn report() -> &'static QuantizeReport {
    static REPORT: OnceLock<QuantizeReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let opts = QuantizeOptions {
            calib: Some(testdata("ppocr_cls/calib")),
            calib_limit: Some(4),
            val: Some(testdata("ppocr_cls/val")),
            val_samples: 4,
            progress: false,
            detailed_report: true,
            speed_select: false,
            ..QuantizeOptions::default()
        };
        quantize_file(
            &testdata("ppocr_cls/model.onnx"),
            &dir.path().join("model.int8.onnx"),
            &opts,
        )
        .expect("quantization succeeds")
    })
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Opening and closing tags of the containers the page uses balance.
fn assert_balanced(html: &str) {
    for tag in ["svg", "table", "details", "section", "figure", "g", "tr"] {
        let open = count(html, &format!("<{tag}>")) + count(html, &format!("<{tag} "));
        let close = count(html, &format!("</{tag}>"));
        assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
    }
}

#[test]
fn the_detailed_run_fills_what_the_page_shows() {
    let r = report();
    assert!(r.validation.is_some(), "validation ran");
    assert!(r.profile.is_some(), "profile measured");
    assert!(!r.tensor_errors.is_empty(), "tensor errors measured");
    assert!(!r.activations.is_empty(), "activation histograms kept");
}

#[test]
fn every_section_is_there() {
    let r = report();
    let html = render(r);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    for id in [
        "validation",
        "profile",
        "hotspots",
        "layers",
        "activations",
        "decisions",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
        assert!(
            html.contains(&format!("href=\"#{id}\"")),
            "nav link to {id}"
        );
    }
    // No fallback was asked for: no section, no link.
    assert!(!html.contains("id=\"fallback\""));
    assert_balanced(&html);

    // Header: files, method, sizes, samples, timings.
    assert!(html.contains("ppocr_cls/model.onnx"));
    assert!(html.contains("model.int8.onnx"));
    assert!(html.contains("range method auto: "));
    assert!(html.contains("4 sample(s)"));
    assert!(html.contains("Time per phase"));

    // One histogram chart per activation, each with its clip lines.
    assert_eq!(count(&html, "<svg class=\"hist\""), r.activations.len());
    assert_eq!(
        count(&html, "<line class=\"clip\""),
        2 * r.activations.len()
    );
    for a in &r.activations {
        assert!(html.contains(&format!("<div class=\"tname\" title=\"{}\">", a.tensor)));
    }

    // Op-type bars, one per op type; hotspot rows; per-layer columns.
    let p = r.profile.as_ref().unwrap();
    let profile =
        &html[html.find("id=\"profile\"").unwrap()..html.find("id=\"hotspots\"").unwrap()];
    assert_eq!(count(profile, "<svg class=\"bars\""), 1);
    assert_eq!(count(profile, "<g><title>"), p.op_types.len());
    let hot = &html[html.find("<table class=\"hot\">").unwrap()..];
    let hot = &hot[..hot.find("</table>").unwrap()];
    assert_eq!(count(hot, "<td class=\"name\""), p.rows.len().min(30));
    assert!(hot.contains(&p.rows[0].name));
    let layers = &html[html.find("id=\"layers\"").unwrap()..];
    assert_eq!(count(layers, "<svg class=\"cols\""), 1);
    let cols = &layers[layers.find("<svg class=\"cols\"").unwrap()..];
    let cols = &cols[..cols.find("</svg>").unwrap()];
    assert_eq!(count(cols, "<rect "), r.tensor_errors.len());

    // Validation row per output; decisions collapsible, one row per node.
    let v = r.validation.as_ref().unwrap();
    for o in &v.outputs {
        assert!(html.contains(&format!("<tr><td><code>{}</code></td>", o.name)));
    }
    assert!(html.contains("<details><summary>All "));
    assert_eq!(
        count(&html, "<span class=\"pill q\">") + count(&html, "<span class=\"pill f\">"),
        r.nodes.len()
    );
}

#[test]
fn the_page_loads_nothing() {
    let html = render(report());
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("http"),
        "no http(s) reference, not even xmlns"
    );
    assert!(!html.contains("src="), "no src attribute");
    assert!(
        !html.contains("@import") && !html.contains("url("),
        "no CSS loads"
    );
    // Links are in-page anchors only.
    for (i, _) in html.match_indices("href=\"") {
        assert_eq!(&html[i + 6..i + 7], "#", "in-page link at byte {i}");
    }
}

#[test]
fn rendering_is_deterministic() {
    let r = report();
    assert_eq!(render(r), render(&r.clone()));
}

#[test]
fn names_are_escaped_everywhere() {
    let mut r = report().clone();
    let evil = r#"x<y>&"z'"#;
    let escaped = "x&lt;y&gt;&amp;&quot;z&#39;";
    r.input = format!("/models/{evil}.onnx");
    r.activations[0].tensor = evil.into();
    r.tensor_errors[0].tensor = evil.into();
    r.tensor_errors[0].sqnr_db = -3.0; // worst, so also in the table
    r.nodes[0].node = evil.into();
    r.nodes[0].quantized = false;
    r.nodes[0].reason = format!("because <{evil}>");
    r.warnings.push(format!("warning about {evil}"));
    r.profile.as_mut().unwrap().rows[0].name = evil.into();
    r.profile.as_mut().unwrap().op_types[0].op = evil.into();
    r.validation.as_mut().unwrap().outputs[0].name = evil.into();
    let html = render(&r);
    assert!(!html.contains(evil), "raw name leaked");
    assert!(!html.contains("<y>"), "raw tag leaked");
    // Title, header, histogram card, layer table, decisions, warnings,
    // hotspots, op types, validation.
    assert!(
        count(&html, escaped) >= 10,
        "escaped name in every place: {}",
        count(&html, escaped)
    );
    assert_balanced(&html);
}

#[test]
fn fallback_section_gives_a_copyable_exclude_line() {
    let mut r = report().clone();
    // A fallback section without running the (slow) sensitivity search:
    // its shape is what matters here; the browser script runs a real one.
    let sensitivity: Vec<NodeSensitivity> = r
        .nodes
        .iter()
        .filter(|d| d.quantized)
        .take(12)
        .enumerate()
        .map(|(i, d)| NodeSensitivity {
            node: d.node.clone(),
            op: d.op.clone(),
            output_sqnr_db: 15.0 + 5.0 * i as f64,
            cosine_mean: Some(0.99),
        })
        .collect();
    let mut excluded: Vec<String> = sensitivity.iter().take(2).map(|s| s.node.clone()).collect();
    excluded.push("it's".into());
    r.fallback = Some(Fallback {
        target: FidelityTarget {
            min_sqnr_db: Some(30.0),
            min_cosine: None,
        },
        reached: true,
        excluded: excluded.clone(),
        promoted: false,
        eight_bit_weights: false,
        sensitivity: sensitivity.clone(),
        trials: vec![
            (0, Some(25.0), Some(0.98)),
            (12, Some(60.0), Some(1.0)),
            (3, Some(31.0), Some(0.995)),
        ],
        speed_ratio: Some(1.4),
    });
    let html = render(&r);
    assert!(html.contains("<section id=\"fallback\">"));
    assert!(html.contains("href=\"#fallback\""));
    let flags = format!(
        "--exclude &#39;{}&#39; --exclude &#39;{}&#39; --exclude &#39;it&#39;\\&#39;&#39;s&#39;",
        excluded[0], excluded[1]
    );
    assert!(html.contains(&flags), "exclude line: {flags}");
    assert!(html.contains("met by keeping 3 node(s) in float"));
    assert!(html.contains("<tr class=\"chosen\"><td class=\"n\">3</td>"));
    // Isolated sensitivity: one bar per node.
    assert!(html.contains("Isolated sensitivity"));
    let layers = &html[html.find("id=\"layers\"").unwrap()..];
    let sens = &layers[layers.find("Isolated sensitivity").unwrap()..];
    assert_eq!(count(sens, "<g><title>"), sensitivity.len());
    assert_balanced(&html);
}

#[test]
fn a_plain_report_renders_without_the_detail_sections_data() {
    let mut r = report().clone();
    r.profile = None;
    r.tensor_errors.clear();
    r.activations.clear();
    r.validation = None;
    let html = render(&r);
    assert!(html.contains("No profile was collected"));
    assert!(html.contains("No per-tensor errors were collected"));
    assert!(html.contains("No activation histograms were collected"));
    assert!(html.contains("Not validated"));
    assert_balanced(&html);
}

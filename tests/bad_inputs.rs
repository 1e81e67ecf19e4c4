//! The bad-input catalogue (`testdata/bad/MANIFEST`): every malformed
//! model, calibration set, pipeline and statistics file is refused with
//! exit 2 and a message naming it, without a panic, without leaving an
//! output or temporary file, and within 200 MB however large the sizes
//! it claims. The messages are snapshotted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Case {
    name: String,
    command: String,
    why: String,
}

fn manifest() -> Vec<Case> {
    let text = std::fs::read_to_string(root().join("testdata/bad/MANIFEST")).expect("MANIFEST");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(parts.len(), 3, "MANIFEST line: {l}");
            Case {
                name: parts[0].into(),
                command: parts[1].into(),
                why: parts[2].into(),
            }
        })
        .collect()
}

/// Appends a protobuf length-delimited field header (tag, length).
fn len_header(field: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |mut v: u64| loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    };
    put(((field as u64) << 3) | 2);
    put(len as u64);
    out
}

/// A ModelProto whose graph nests 10^6 messages deep: graph → node →
/// attribute → graph → … (each the last field of its parent, so the
/// headers are computed inside out and written outside in).
fn deep_model() -> Vec<u8> {
    const LEVELS: usize = 333_334;
    // (field of the parent that holds the child): GraphProto.node = 1,
    // NodeProto.attribute = 5, AttributeProto.g = 6.
    let mut headers: Vec<Vec<u8>> = Vec::with_capacity(3 * LEVELS + 1);
    let mut size = 0usize;
    for i in 0..3 * LEVELS {
        let field = [6, 5, 1][i % 3];
        let h = len_header(field, size);
        size += h.len();
        headers.push(h);
    }
    headers.push(len_header(7, size)); // ModelProto.graph
    headers.into_iter().rev().flatten().collect()
}

/// Makes the `@` cases in `dir`.
fn generated(name: &str, dir: &Path) -> PathBuf {
    let p = dir.join(&name[1..]);
    if name == "@calib_empty_dir" {
        std::fs::create_dir_all(&p).expect("empty dir");
        return p;
    }
    let bytes: Vec<u8> = match name {
        "@deep_nesting.onnx" => deep_model(),
        // Command-line arguments stop at 128 KiB: 60,000 levels.
        "@pipeline_deep_braces.txt" => {
            format!("dce{{a={}{}}}", "[".repeat(60_000), "]".repeat(60_000)).into_bytes()
        }
        "@stats_deep_nesting.json" => format!(
            "{{\"ignored\": {}{}}}",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        )
        .into_bytes(),
        other => panic!("no generator for {other}"),
    };
    std::fs::write(&p, bytes).expect("generated case written");
    p
}

/// Peak RSS (MB) of every child process waited for so far.
#[allow(unsafe_code)]
fn children_peak_mb() -> i64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct,
    // and getrusage only fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss / 1024
}

#[test]
fn every_bad_input_is_refused_cleanly() {
    let cases = manifest();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-inputs");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let model = root().join("testdata/ppocr_cls/model.onnx");
    let calib = root().join("testdata/ppocr_cls/calib");
    let mut snapshot = String::new();
    let mut failures = Vec::new();
    for c in &cases {
        let file = if c.name.starts_with('@') {
            generated(&c.name, &work)
        } else {
            root().join("testdata/bad").join(&c.name)
        };
        let out_dir = work.join(format!("out-{}", c.name.trim_start_matches('@')));
        std::fs::create_dir_all(&out_dir).expect("out dir");
        let out = out_dir.join("q.onnx");
        let text = if c.name.ends_with(".txt") {
            std::fs::read_to_string(&file)
                .expect("pipeline text")
                .trim()
                .to_string()
        } else {
            String::new()
        };
        let mut args: Vec<String> = c
            .command
            .split_whitespace()
            .map(|a| {
                a.replace("{file}", file.to_str().unwrap())
                    .replace("{model}", model.to_str().unwrap())
                    .replace("{calib}", calib.to_str().unwrap())
                    .replace("{out}", out.to_str().unwrap())
                    .replace("{text}", &text)
            })
            .collect();
        if matches!(args[0].as_str(), "quantize" | "opt") {
            args.push("-q".into());
        }
        let o = Command::new(env!("CARGO_BIN_EXE_onnxq"))
            .args(&args)
            .output()
            .expect("the onnxq binary runs");
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        let mut problems = Vec::new();
        if o.status.code() != Some(2) {
            problems.push(format!("exit {:?}", o.status.code()));
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push("panicked".into());
        }
        // The message names the file (pipelines come as text: their
        // message quotes the pipeline or names the pass).
        let base = file.file_name().unwrap().to_string_lossy().to_string();
        if !c.name.ends_with(".txt") && !stderr.contains(&base) {
            problems.push(format!("the message does not name {base}"));
        }
        let left: Vec<_> = std::fs::read_dir(&out_dir)
            .expect("out dir")
            .map(|e| e.unwrap().file_name())
            .collect();
        if !left.is_empty() {
            problems.push(format!("left {left:?}"));
        }
        // Nothing beside the input either: no temporary file in its folder.
        if let Some(dir) = file.parent() {
            for e in std::fs::read_dir(dir).expect("case dir") {
                let n = e.unwrap().file_name().to_string_lossy().to_string();
                if n.contains(".tmp-") {
                    problems.push(format!("temporary file {n} beside the input"));
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n{stderr}",
                c.name,
                c.why,
                problems.join(", ")
            ));
        }
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
            .replace(work.to_str().unwrap(), "<work>")
            .replace(root().to_str().unwrap(), "<repo>");
        // Long messages (a list of every pass) are cut for the snapshot.
        let first: String = first.chars().take(240).collect();
        writeln!(snapshot, "{}: {}\n  {first}", c.name, c.why).unwrap();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let peak = children_peak_mb();
    assert!(peak < 200, "a bad input took {peak} MB");
    insta::assert_snapshot!("bad_inputs", snapshot);
}

/// A memory limit the model's runs cannot fit in is refused before any
/// run, with the estimate and what to do; nothing is written.
#[test]
fn a_memory_limit_too_small_is_refused_before_running() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("max-memory");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("q.onnx");
    let o = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .arg("quantize")
        .arg(root().join("testdata/ppocr_cls/model.onnx"))
        .arg("--calib")
        .arg(root().join("testdata/ppocr_cls/calib"))
        .args(["-q", "--max-memory", "100K", "-o"])
        .arg(&out)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-memory") && stderr.contains("of weights"),
        "{stderr}"
    );
    assert!(!out.exists());
    // A bad size is a usage error.
    let o = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .arg("quantize")
        .arg(root().join("testdata/ppocr_cls/model.onnx"))
        .args(["--calib-random", "1", "--max-memory", "lots", "-o"])
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected a size"));
}

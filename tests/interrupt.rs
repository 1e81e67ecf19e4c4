//! Interrupted runs: SIGINT (or SIGTERM) at a random moment of a quantize
//! stops it with exit 130 and leaves neither the output, nor the report,
//! nor any temporary file behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// Starts a quantize of the testdata classifier writing into `dir`.
fn start(dir: &Path) -> std::process::Child {
    let m = testdata("ppocr_cls/model.onnx");
    let calib = testdata("ppocr_cls/calib");
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(["quantize", m.to_str().unwrap(), "--calib"])
        .arg(&calib)
        .args(["-q", "--method", "minmax", "--no-speed-select", "-o"])
        .arg(dir.join("q.onnx"))
        .arg("--report")
        .arg(dir.join("r.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the onnxq binary runs")
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} failed");
}

/// Every file in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch dir");
}

#[test]
fn interrupted_quantize_leaves_nothing_and_exits_130() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interrupt");
    // How long a whole run takes here, to signal inside it.
    let d0 = root.join("whole");
    fresh(&d0);
    let t = Instant::now();
    let out = start(&d0).wait_with_output().expect("runs");
    let whole = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing(&d0), vec!["q.onnx", "r.json"]);

    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut interrupted = 0;
    for trial in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Uniform over [2%, 90%] of a whole run.
        let frac = 0.02 + 0.88 * ((seed >> 11) as f64 / (1u64 << 53) as f64);
        let dir = root.join(format!("trial{trial}"));
        fresh(&dir);
        let child = start(&dir);
        std::thread::sleep(whole.mul_f64(frac));
        let sig = if trial % 5 == 4 { "-TERM" } else { "-INT" };
        signal(&child, sig);
        let t = Instant::now();
        let out = child.wait_with_output().expect("exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "trial {trial}: took {:?} to stop after {sig}",
            t.elapsed()
        );
        match out.status.code() {
            Some(130) => {
                interrupted += 1;
                assert!(stderr.contains("interrupted"), "trial {trial}: {stderr}");
                let left = listing(&dir);
                // The report is written after the model: a run stopped
                // between the two keeps a whole model and no report.
                assert!(
                    left.is_empty() || left == ["q.onnx"],
                    "trial {trial} at {frac:.2} left {left:?}"
                );
                if left == ["q.onnx"] {
                    onnxq::onnx::import::read_model(&dir.join("q.onnx"))
                        .expect("a model left behind is whole");
                }
            }
            // Finished before the signal arrived: everything whole.
            Some(0) => assert_eq!(listing(&dir), vec!["q.onnx", "r.json"]),
            other => panic!("trial {trial}: exit {other:?} after {sig}: {stderr}"),
        }
    }
    assert!(
        interrupted >= 15,
        "only {interrupted} of 20 runs were interrupted"
    );
}

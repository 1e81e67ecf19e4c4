//! The top of the page: header with summary cards, time per phase, warnings
//! and pass remarks, and the navigation bar.

use std::fmt::Write;

use super::fmt::{esc, file_name, human_bytes, num};
use super::svg::{svg_bar_chart, Bar, Scale};
use crate::passes::context::Remark;
use crate::report::quantize::QuantizeReport;
use crate::validate::Validation;

/// Remarks shown before the rest fold into `<details>`.
const REMARKS_SHOWN: usize = 12;

/// The page header: files, summary cards, pipeline, timings, warnings and
/// pass remarks.
pub(super) fn header(r: &QuantizeReport) -> String {
    let mut s = String::new();
    put!(
        s,
        "<header>\n<h1>Quantization report <span class=\"dim\">{}</span></h1>\n\
         <p class=\"files\"><code>{}</code> <span class=\"arrow\">→</span> <code>{}</code></p>\n",
        esc(&file_name(&r.input)),
        esc(&r.input),
        esc(&r.output)
    );
    cards(&mut s, r);

    put!(
        s,
        "<details class=\"pipeline\"><summary>Pipeline</summary><pre>{}</pre></details>\n",
        esc(&r
            .pipeline
            .replace("},", "},\n")
            .replace(",calibrate", ",\ncalibrate"))
    );
    s.push_str(&timings(r));
    for w in &r.warnings {
        put!(s, "<p class=\"warning\"><b>Warning:</b> {}</p>\n", esc(w));
    }
    remarks(&mut s, &r.remarks);
    s.push_str("</header>\n");
    s
}

/// The row of summary cards: size, nodes, calibration, worst SQNR, the
/// fallback's verdict (after one) and total time.
fn cards(s: &mut String, r: &QuantizeReport) {
    let quantized = r.nodes.iter().filter(|d| d.quantized).count();
    s.push_str("<div class=\"cards\">\n");
    let ratio = r.quantized_bytes as f64 / r.float_bytes.max(1) as f64;
    card(
        s,
        "Size",
        &format!(
            "{} → {}",
            human_bytes(r.float_bytes),
            human_bytes(r.quantized_bytes)
        ),
        &format!(
            "{}× the float file ({} → {} bytes)",
            num(ratio, 3),
            r.float_bytes,
            r.quantized_bytes
        ),
    );
    if let (Some(f), Some(q)) = (r.float_compressed_bytes, r.quantized_compressed_bytes) {
        card(
            s,
            "Download (deflate)",
            &format!("{} → {}", human_bytes(f), human_bytes(q)),
            &format!(
                "{}× the float file compressed, as a download is ({f} → {q} bytes)",
                num(q as f64 / f.max(1) as f64, 3)
            ),
        );
    }
    if let Some(p) = &r.pruning {
        card(
            s,
            "Pruned",
            &format!("{}%", num(100.0 * p.sparsity(), 1)),
            &if p.searched && p.zeros == 0 {
                "no pruning level met the fidelity target: nothing pruned".to_string()
            } else {
                format!(
                    "{} of {} weight values zeroed at {} dB per layer{}",
                    p.zeros,
                    p.total,
                    p.db,
                    if p.searched {
                        " (the most the fidelity target allowed)"
                    } else {
                        ""
                    }
                )
            },
        );
    }
    if let Some(c) = &r.channel_pruning {
        let share = c.share();
        card(
            s,
            "Fewer MACs",
            &format!("{}%", num(100.0 * share, 1)),
            &if c.channels_removed == 0 {
                "structured pruning removed no channel (see the remarks)".to_string()
            } else {
                format!(
                    "{} of {} prunable channels removed in {} of {} groups ({} → {} MACs){}: a narrower network, faster in every runtime",
                    c.channels_removed,
                    c.channels_prunable,
                    c.groups_pruned,
                    c.groups,
                    c.macs_before,
                    c.macs_after,
                    if c.searched {
                        " (the most the fidelity target allowed)"
                    } else {
                        ""
                    }
                )
            },
        );
    }
    card(
        s,
        "Nodes quantized",
        &format!("{quantized} / {}", r.nodes.len()),
        &format!("{} kept in float", r.nodes.len() - quantized),
    );
    card(
        s,
        "Calibration",
        &format!("{} sample(s)", r.calibration_samples),
        &format!("range method {}", r.method),
    );
    let worst = r.validation.as_ref().and_then(Validation::min_sqnr);
    card(
        s,
        "Worst output SQNR",
        &worst.map_or("–".into(), |db| format!("{} dB", num(db, 4))),
        &r.validation.as_ref().map_or("not validated".into(), |v| {
            format!("on {} sample(s)", v.samples)
        }),
    );
    if let Some(fb) = &r.fallback {
        card(
            s,
            "Fallback",
            if fb.reached {
                "target met"
            } else {
                "target missed"
            },
            &format!("{} node(s) kept {}", fb.excluded.len(), fb.relief()),
        );
    }
    card(
        s,
        "Total time",
        &format!("{} s", num(r.seconds.total, 3)),
        "wall clock, this run",
    );
    s.push_str("</div>\n");
}

fn card(s: &mut String, label: &str, value: &str, note: &str) {
    put!(
        s,
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div>\
         <div class=\"note\">{}</div></div>\n",
        esc(label),
        esc(value),
        esc(note)
    );
}

/// Seconds per phase as bars; phases that did not run are left out.
fn timings(r: &QuantizeReport) -> String {
    let t = &r.seconds;
    let phases = [
        ("prepare", t.prepare, "#868e96"),
        ("calibrate", t.calibrate, "#4c6ef5"),
        ("quantize", t.quantize, "#7950f2"),
        ("fallback", t.fallback, "#f08c00"),
        ("validate", t.validate, "#12b886"),
        ("report", t.report, "#e64980"),
    ];
    let bars: Vec<Bar> = phases
        .iter()
        .filter(|p| p.1 > 0.0)
        .map(|&(name, secs, color)| Bar {
            label: name.to_string(),
            value: secs,
            text: format!("{} s", num(secs, 3)),
            color,
            title: format!("{name}: {secs:.3} s"),
        })
        .collect();
    if bars.is_empty() {
        return String::new();
    }
    format!(
        "<h3>Time per phase</h3>\n<div class=\"chart\">{}</div>\n<p class=\"caption\">Total {} s \
         (also reading and writing the model files).</p>\n",
        svg_bar_chart(&bars, Scale::zero_to(t.total), 110, 420),
        num(t.total, 3)
    )
}

/// Pass remarks, the first [`REMARKS_SHOWN`] in view and the rest folded.
fn remarks(s: &mut String, all: &[Remark]) {
    if all.is_empty() {
        return;
    }
    s.push_str("<h3>Remarks</h3>\n");
    let list = |rs: &[Remark]| {
        let mut l = String::from("<ul class=\"remarks\">\n");
        for m in rs {
            put!(
                l,
                "<li><span class=\"pill\">{}</span> <code>{}</code> {}</li>\n",
                esc(&m.pass),
                esc(&m.node),
                esc(&m.message)
            );
        }
        l.push_str("</ul>\n");
        l
    };
    let shown = all.len().min(REMARKS_SHOWN);
    s.push_str(&list(&all[..shown]));
    if all.len() > shown {
        put!(
            s,
            "<details><summary>{} more remarks</summary>{}</details>\n",
            all.len() - shown,
            list(&all[shown..])
        );
    }
}

/// Links to the sections below, the fallback's only when there is one.
pub(super) fn nav(r: &QuantizeReport) -> String {
    let mut links = vec![("validation", "Validation")];
    if r.fallback.is_some() {
        links.push(("fallback", "Fallback"));
    }
    links.extend([
        ("profile", "Time per op type"),
        ("hotspots", "Hotspots"),
        ("layers", "Per-layer SQNR"),
        ("activations", "Activation ranges"),
        ("decisions", "Node decisions"),
    ]);
    let mut s = String::from("<nav>");
    for (id, text) in links {
        put!(s, "<a href=\"#{id}\">{text}</a>");
    }
    s.push_str("</nav>\n");
    s
}

//! How far the quantized model is from the float one: validation per output,
//! the automatic fallback, per-layer SQNR and isolated sensitivity, and the
//! SQNR colour bands they share.

use std::fmt::Write;

use super::fmt::{esc, num, pct, sci, shell_quote};
use super::svg::{svg_bar_chart, svg_column_chart, Bar, Column, Scale};
use crate::report::quantize::{Fallback, QuantizeReport};
use crate::validate::{Validation, IDENTICAL_DB};

/// Isolated-sensitivity bars shown before the rest fold into `<details>`.
const SENSITIVITY_BARS: usize = 40;

/// Output by output, the quantized model against the float one.
pub(super) fn validation(v: Option<&Validation>) -> String {
    let mut s = String::from("<section id=\"validation\">\n<h2>Validation</h2>\n");
    let Some(v) = v else {
        s.push_str(
            "<p class=\"empty\">Not validated (<code>--val-samples 0</code>).</p>\n</section>\n",
        );
        return s;
    };
    put!(
        s,
        "<p class=\"caption\">Quantized model as written against the float original, on {} \
         sample(s) of <code>{}</code>. SQNR is pooled over samples ({} dB: identical).</p>\n",
        v.samples,
        esc(&v.data),
        IDENTICAL_DB
    );
    s.push_str(
        "<table>\n<thead><tr><th>Output</th><th class=\"n\">SQNR dB</th><th class=\"n\">cosine mean</th>\
         <th class=\"n\">cosine min</th><th class=\"n\">max |err|</th><th class=\"n\">top-1 agreement</th></tr></thead>\n<tbody>\n",
    );
    let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("–".to_string(), f);
    for o in &v.outputs {
        put!(s, "<tr><td><code>{}</code></td>", esc(&o.name));
        if let Some(e) = o.exact_match {
            put!(
                s,
                "<td class=\"n\" colspan=\"5\">integer output: exact match on {}</td></tr>\n",
                pct(e)
            );
            continue;
        }
        put!(
            s,
            "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            opt(o.sqnr_db, &|db| format!(
                "<span class=\"swatch\" style=\"background:{}\"></span>{}",
                band(db).0,
                num(db, 4)
            )),
            opt(o.cosine_mean, &|c| format!("{c:.6}")),
            opt(o.cosine_min, &|c| format!("{c:.6}")),
            opt(o.max_abs_err, &|e| sci(e)),
            opt(o.top1_agreement, &pct),
        );
    }
    s.push_str("</tbody>\n</table>\n</section>\n");
    s
}

/// The fallback's target and verdict, the `--exclude` flags that pin its
/// selection, and its trials.
pub(super) fn fallback(fb: &Fallback) -> String {
    let mut s = String::from("<section id=\"fallback\">\n<h2>Automatic fallback</h2>\n");
    let goal = [
        fb.target
            .min_sqnr_db
            .map(|x| format!("worst output SQNR ≥ {x} dB")),
        fb.target
            .min_cosine
            .map(|x| format!("worst mean cosine ≥ {x}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" and ");
    let how = fb.relief();
    let (class, verdict) = match (fb.reached, fb.excluded.is_empty()) {
        (true, true) => ("ok", "met with every candidate quantized".to_string()),
        (true, false) => (
            "ok",
            format!("met by keeping {} node(s) {how}", fb.excluded.len()),
        ),
        (false, _) => ("bad", format!("NOT met, even with every candidate {how}")),
    };
    put!(
        s,
        "<p>Target: {}. <span class=\"verdict {class}\">{}</span></p>\n",
        esc(&goal),
        esc(&verdict)
    );
    if !fb.excluded.is_empty() && !fb.promoted && !fb.eight_bit_weights {
        let flags = fb
            .excluded
            .iter()
            .map(|e| format!("--exclude {}", shell_quote(e)))
            .collect::<Vec<_>>()
            .join(" ");
        s.push_str(
            "<p class=\"caption\">To pin this selection without searching again, add these flags to \
             <code>onnxq quantize</code> (most sensitive first):</p>\n",
        );
        put!(s, "<pre class=\"cmd\">{}</pre>\n", esc(&flags));
        if fb.excluded.iter().any(|e| e.contains('*')) {
            s.push_str(
                "<p class=\"warning\">A name above contains <code>*</code>, which <code>--exclude</code> \
                 reads as a glob: it may keep more nodes in float than the search did.</p>\n",
            );
        }
    }
    trials(&mut s, fb);
    s.push_str("</section>\n");
    s
}

/// The bisection trials: how many nodes were kept in float, the scores
/// reached, and the one chosen.
fn trials(s: &mut String, fb: &Fallback) {
    if fb.trials.is_empty() {
        return;
    }
    s.push_str(
        "<h3>Trials</h3>\n<table class=\"narrow\">\n<thead><tr><th class=\"n\">kept in float</th>\
         <th class=\"n\">worst SQNR dB</th><th class=\"n\">worst cosine</th><th>target</th></tr></thead>\n<tbody>\n",
    );
    for &(k, sqnr, cos) in &fb.trials {
        let met = fb
            .target
            .min_sqnr_db
            .is_none_or(|t| sqnr.is_none_or(|x| x >= t))
            && fb
                .target
                .min_cosine
                .is_none_or(|t| cos.is_none_or(|x| x >= t));
        let chosen = fb.reached && k == fb.excluded.len();
        put!(
            s,
            "<tr{}><td class=\"n\">{k}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}{}</td></tr>\n",
            if chosen { " class=\"chosen\"" } else { "" },
            sqnr.map_or("–".into(), |x| num(x, 4)),
            cos.map_or("–".into(), |x| format!("{x:.6}")),
            if met { "met" } else { "missed" },
            if chosen { " (chosen)" } else { "" }
        );
    }
    s.push_str("</tbody>\n</table>\n");
}

/// Every shared tensor's SQNR in graph order, the worst by name, and after a
/// fallback the isolated sensitivity of each node.
pub(super) fn layer_errors(r: &QuantizeReport) -> String {
    let mut s = String::from("<section id=\"layers\">\n<h2>Per-layer SQNR</h2>\n");
    s.push_str(&legend());
    if r.tensor_errors.is_empty() {
        s.push_str("<p class=\"empty\">No per-tensor errors were collected.</p>\n");
    } else {
        put!(
            s,
            "<p class=\"caption\">SQNR of each of the {} float tensors both models compute, in graph \
             order, on the validation data: error as it accumulates through the network. Hover a \
             bar for its name; bars above the axis are clipped.</p>\n",
            r.tensor_errors.len()
        );
        let finite_max = r
            .tensor_errors
            .iter()
            .map(|t| t.sqnr_db)
            .filter(|&db| db.is_finite() && db < IDENTICAL_DB)
            .fold(0.0, f64::max);
        let top = axis_top(finite_max);
        let cols: Vec<Column> = r
            .tensor_errors
            .iter()
            .enumerate()
            .map(|(i, t)| Column {
                value: t.sqnr_db,
                color: band(t.sqnr_db).0,
                title: format!("#{i} {} ({}): {} dB", t.tensor, t.op, num(t.sqnr_db, 4)),
            })
            .collect();
        put!(
            s,
            "<div class=\"chart scroll\">{}</div>\n",
            svg_column_chart(&cols, top, 200)
        );
        // The worst few by name, since a chart of hundreds cannot label them.
        let mut worst: Vec<(usize, &crate::sensitivity::TensorError)> =
            r.tensor_errors.iter().enumerate().collect();
        worst.sort_by(|a, b| a.1.sqnr_db.total_cmp(&b.1.sqnr_db).then(a.0.cmp(&b.0)));
        s.push_str(
            "<details><summary>Worst 10 tensors</summary>\n<table class=\"narrow\">\n<thead><tr>\
             <th class=\"n\">#</th><th>Tensor</th><th>Op</th><th class=\"n\">SQNR dB</th></tr></thead>\n<tbody>\n",
        );
        for (i, t) in worst.iter().take(10) {
            put!(
                s,
                "<tr><td class=\"n\">{i}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">\
                 <span class=\"swatch\" style=\"background:{}\"></span>{}</td></tr>\n",
                esc(&t.tensor),
                esc(&t.op),
                band(t.sqnr_db).0,
                num(t.sqnr_db, 4)
            );
        }
        s.push_str("</tbody>\n</table>\n</details>\n");
    }
    if !r.diagnoses.is_empty() {
        s.push_str(
            "<h3>Why the worst tensors stay poor</h3>\n<table class=\"narrow\">\n<thead><tr>\
             <th>Tensor</th><th>Op</th><th class=\"n\">SQNR dB</th><th>Cause</th><th>Remedy</th></tr></thead>\n<tbody>\n",
        );
        for d in &r.diagnoses {
            if d.causes.is_empty() {
                put!(
                    s,
                    "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td colspan=\"2\">\
                     no cause the statistics show</td></tr>\n",
                    esc(&d.tensor),
                    esc(&d.op),
                    num(d.sqnr_db, 4)
                );
            }
            for c in &d.causes {
                put!(
                    s,
                    "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}: {}</td><td>{}</td></tr>\n",
                    esc(&d.tensor),
                    esc(&d.op),
                    num(d.sqnr_db, 4),
                    esc(&c.kind),
                    esc(&c.detail),
                    esc(&c.remedy)
                );
            }
        }
        s.push_str("</tbody>\n</table>\n");
    }
    if let Some(fb) = r.fallback.as_ref().filter(|f| !f.sensitivity.is_empty()) {
        s.push_str(&sensitivity(fb));
    }
    s.push_str("</section>\n");
    s
}

/// Isolated sensitivity bars, worst first; those past [`SENSITIVITY_BARS`]
/// fold into `<details>`.
fn sensitivity(fb: &Fallback) -> String {
    let scale = sensitivity_scale(fb.sensitivity.iter().map(|n| n.output_sqnr_db));
    let mut s = String::from("<h3>Isolated sensitivity</h3>\n");
    put!(
        s,
        "<p class=\"caption\">Worst output SQNR of the float model with only that node quantized, \
         worst first ({} nodes). The fallback keeps the worst in float; they are marked “float”.{}</p>\n",
        fb.sensitivity.len(),
        if scale.lo > 0.0 {
            format!(" Bars start at {} dB, not 0, to show the differences.", num(scale.lo, 4))
        } else {
            String::new()
        }
    );
    let excluded: std::collections::BTreeSet<&str> =
        fb.excluded.iter().map(String::as_str).collect();
    let bars: Vec<Bar> = fb
        .sensitivity
        .iter()
        .map(|n| {
            let kept = excluded.contains(n.node.as_str());
            Bar {
                label: format!("{} ({})", n.node, n.op),
                value: n.output_sqnr_db,
                text: format!(
                    "{} dB{}",
                    num(n.output_sqnr_db, 4),
                    if kept { " · float" } else { "" }
                ),
                color: band(n.output_sqnr_db).0,
                title: format!(
                    "{} ({}): output SQNR {} dB, mean cosine {}{}",
                    n.node,
                    n.op,
                    num(n.output_sqnr_db, 4),
                    n.cosine_mean.map_or("–".into(), |c| format!("{c:.6}")),
                    if kept { "; kept in float" } else { "" }
                ),
            }
        })
        .collect();
    let shown = bars.len().min(SENSITIVITY_BARS);
    put!(
        s,
        "<div class=\"chart\">{}</div>\n",
        svg_bar_chart(&bars[..shown], scale, 230, 520)
    );
    if bars.len() > shown {
        put!(
            s,
            "<details><summary>{} more nodes</summary><div class=\"chart\">{}</div></details>\n",
            bars.len() - shown,
            svg_bar_chart(&bars[shown..], scale, 230, 520)
        );
    }
    s
}

/// The chart's SQNR axis: a round number just above the largest value that
/// is not "identical", at least 40 dB and at most 100 dB, so a few identical
/// tensors (200 dB) do not flatten everything else.
fn axis_top(finite_max: f64) -> f64 {
    ((finite_max / 10.0).ceil() * 10.0).clamp(40.0, 100.0)
}

/// The axis of the isolated-sensitivity bars: up to a round number above
/// the largest value; from 0, unless every value sits in the top half, where
/// bars from 0 would all look alike (the caption then says where they start).
fn sensitivity_scale(values: impl Iterator<Item = f64>) -> Scale {
    let (mut min, mut max) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        min = min.min(v);
        max = max.max(v);
    }
    let hi = ((max / 10.0).ceil() * 10.0).max(10.0);
    let lo = if min.is_finite() && min > hi / 2.0 {
        ((min / 10.0).floor() * 10.0 - 10.0).max(0.0)
    } else {
        0.0
    };
    Scale {
        lo,
        hi,
        unit: Some("dB"),
    }
}

/// SQNR colour bands (colour, legend text), best first.
const BANDS: [(f64, &str, &str); 5] = [
    (IDENTICAL_DB, "#adb5bd", "identical"),
    (40.0, "#2f9e44", "≥ 40 dB"),
    (30.0, "#94d82d", "30–40 dB"),
    (20.0, "#f59f00", "20–30 dB"),
    (f64::NEG_INFINITY, "#e03131", "< 20 dB"),
];

fn band(db: f64) -> (&'static str, &'static str) {
    let db = if db.is_nan() { f64::NEG_INFINITY } else { db };
    BANDS
        .iter()
        .find(|b| db >= b.0)
        .map(|b| (b.1, b.2))
        .expect("invariant: the last band takes everything")
}

fn legend() -> String {
    let mut s = String::from("<p class=\"legend\">");
    for (_, color, text) in BANDS {
        put!(
            s,
            "<span><span class=\"swatch\" style=\"background:{color}\"></span>{text}</span>"
        );
    }
    s.push_str("</p>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_every_value() {
        assert_eq!(band(IDENTICAL_DB).1, "identical");
        assert_eq!(band(35.0).1, "30–40 dB");
        assert_eq!(band(f64::NAN).1, "< 20 dB");
        assert_eq!(band(-5.0).1, "< 20 dB");
    }
}

//! Chart primitives, drawn as inline SVG: horizontal bars with their
//! [`Scale`], vertical columns, and an activation histogram. Hover text is
//! an SVG `<title>`; every coordinate goes through [`finite`], since one NaN
//! breaks a whole drawing.

use std::fmt::Write;

use super::fmt::{esc, finite, num, truncate};
use crate::report::quantize::ActivationSummary;

/// One horizontal bar of [`svg_bar_chart`].
pub(super) struct Bar {
    pub(super) label: String,
    pub(super) value: f64,
    /// Shown right of the bar.
    pub(super) text: String,
    pub(super) color: &'static str,
    /// Hover text.
    pub(super) title: String,
}

/// The value range a bar chart spans, and the unit of its axis; without a
/// unit no axis is drawn (the bars' own texts carry the numbers).
#[derive(Clone, Copy)]
pub(super) struct Scale {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) unit: Option<&'static str>,
}

impl Scale {
    /// From 0 to `max`, no axis.
    pub(super) fn zero_to(max: f64) -> Scale {
        Scale {
            lo: 0.0,
            hi: max,
            unit: None,
        }
    }
}

const ROW: f64 = 18.0;

/// Horizontal bars, one row each: label (truncated, full text on hover),
/// bar over `plot_w` pixels for the scale's range, and its text.
pub(super) fn svg_bar_chart(bars: &[Bar], scale: Scale, label_w: u32, plot_w: u32) -> String {
    let text_w = 150.0;
    let (lw, pw) = (label_w as f64, plot_w as f64);
    let axis_h = if scale.unit.is_some() { 18.0 } else { 0.0 };
    let width = lw + pw + text_w;
    let rows_h = bars.len() as f64 * ROW + 4.0;
    let height = rows_h + axis_h;
    let (lo, hi) = (finite(scale.lo), finite(scale.hi));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let x = |v: f64| ((finite(v) - lo) / (hi - lo)).clamp(0.0, 1.0) * pw;
    let mut s = format!(
        "<svg class=\"bars\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\n"
    );
    if let Some(unit) = scale.unit {
        let step = nice_step(hi - lo, 6);
        let mut t = (lo / step).ceil() * step;
        while t <= hi + step * 1e-6 {
            put!(
                s,
                "<line class=\"gl\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{1:.1}\"/>\
                 <text class=\"axis\" x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>\n",
                lw + x(t),
                rows_h,
                rows_h + 13.0,
                num(t, 4)
            );
            t += step;
        }
        put!(
            s,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            lw + pw + 20.0,
            rows_h + 13.0,
            esc(unit)
        );
    }
    let chars = (label_w as usize / 7).max(4);
    for (i, b) in bars.iter().enumerate() {
        let y = 2.0 + i as f64 * ROW;
        let w = x(b.value);
        put!(
            s,
            "<g><title>{}</title><text class=\"lbl\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{lw}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{}\"/>\
             <text class=\"val\" x=\"{:.1}\" y=\"{:.1}\">{}</text></g>\n",
            esc(&b.title),
            lw - 6.0,
            y + ROW * 0.68,
            esc(&truncate(&b.label, chars)),
            y + 3.0,
            w.max(1.0),
            ROW - 6.0,
            b.color,
            lw + w + 5.0,
            y + ROW * 0.68,
            esc(&b.text)
        );
    }
    s.push_str("</svg>");
    s
}

/// A round tick step (1, 2 or 5 times a power of ten) giving at most
/// `ticks` intervals over `span`.
fn nice_step(span: f64, ticks: usize) -> f64 {
    let raw = (finite(span) / ticks.max(1) as f64).max(1e-12);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * pow)
}

/// One column of [`svg_column_chart`].
pub(super) struct Column {
    pub(super) value: f64,
    pub(super) color: &'static str,
    pub(super) title: String,
}

/// Vertical columns in order, over a 0..`top` axis with gridlines; values
/// above `top` are drawn to the top, below 0 as a short stub.
pub(super) fn svg_column_chart(cols: &[Column], top: f64, plot_h: u32) -> String {
    let (left, bottom, pad_top) = (44.0, 20.0, 8.0);
    let ph = plot_h as f64;
    let bw = (1200.0 / cols.len().max(1) as f64).clamp(2.0, 14.0);
    let width = left + bw * cols.len() as f64 + 10.0;
    let height = pad_top + ph + bottom;
    let y = |v: f64| pad_top + ph - (finite(v) / top).clamp(0.0, 1.0) * ph;
    let mut s = format!(
        "<svg class=\"cols\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\">\n"
    );
    let step = if top > 60.0 { 20.0 } else { 10.0 };
    let mut g = 0.0;
    while g <= top + 1e-9 {
        put!(
            s,
            "<line class=\"gl\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{g}</text>\n",
            width - 6.0,
            y(g),
            y(g),
            left - 6.0,
            y(g) + 4.0
        );
        g += step;
    }
    put!(
        s,
        "<text class=\"axis\" x=\"4\" y=\"{:.1}\" transform=\"rotate(-90 10 {:.1})\">dB</text>\n",
        pad_top + ph / 2.0,
        pad_top + ph / 2.0
    );
    let gap = if bw >= 4.0 { 1.0 } else { 0.0 };
    for (i, c) in cols.iter().enumerate() {
        let x = left + i as f64 * bw;
        let (y0, h) = if finite(c.value) <= 0.0 {
            (pad_top + ph - 3.0, 3.0)
        } else {
            let yv = y(c.value);
            (yv, (pad_top + ph - yv).max(1.0))
        };
        put!(
            s,
            "<rect x=\"{x:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}</title></rect>\n",
            bw - gap,
            c.color,
            esc(&c.title)
        );
    }
    // Index ticks every tenth-ish of the width, at round numbers.
    let every = [1usize, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000]
        .into_iter()
        .find(|&e| cols.len() / e <= 12)
        .unwrap_or(cols.len().max(1));
    for i in (0..cols.len()).step_by(every) {
        put!(
            s,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{i}</text>\n",
            left + (i as f64 + 0.5) * bw,
            pad_top + ph + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

/// An activation histogram: 64 bins over the observed range, log counts,
/// over a domain wide enough for both the observed and the clip range.
pub(super) fn svg_histogram(a: &ActivationSummary) -> String {
    let (w, h, axis) = (232.0, 64.0, 14.0);
    let (o0, o1) = (a.observed.0 as f64, a.observed.1 as f64);
    let (c0, c1) = a.clip;
    let mut d0 = finite(o0.min(c0));
    let mut d1 = finite(o1.max(c1));
    if d1 <= d0 {
        d0 -= 0.5;
        d1 += 0.5;
    }
    // A little air on both sides so edge lines stay visible.
    let pad = (d1 - d0) * 0.02;
    let (d0, d1) = (d0 - pad, d1 + pad);
    let x = |v: f64| ((finite(v) - d0) / (d1 - d0)).clamp(0.0, 1.0) * w;
    let mut s = format!(
        "<svg class=\"hist\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\">\
         <title>{}</title>\n",
        h + axis,
        h + axis,
        esc(&a.tensor)
    );
    put!(
        s,
        "<rect class=\"band\" x=\"{:.2}\" y=\"0\" width=\"{:.2}\" height=\"{h}\"/>\n",
        x(c0),
        (x(c1) - x(c0)).max(0.5)
    );
    let n = a.bins.len();
    let peak = a.bins.iter().copied().max().unwrap_or(0);
    let log_peak = (1.0 + peak as f64).ln();
    let bin_w = if o1 > o0 && n > 0 {
        (o1 - o0) / n as f64
    } else {
        (d1 - d0) / 64.0
    };
    for (i, &count) in a.bins.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let lo = if o1 > o0 {
            o0 + i as f64 * bin_w
        } else {
            o0 - bin_w / 2.0
        };
        let bh = ((1.0 + count as f64).ln() / log_peak * (h - 2.0)).max(1.0);
        let center = bin_center(o0, o1, n, i);
        let class = if center < c0 || center > c1 {
            "out"
        } else {
            "in"
        };
        put!(
            s,
            "<rect class=\"{class}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"><title>[{}, {}): {count}</title></rect>\n",
            x(lo),
            h - bh,
            (x(lo + bin_w) - x(lo)).max(1.0),
            bh,
            num(lo, 4),
            num(lo + bin_w, 4)
        );
    }
    for edge in [c0, c1] {
        put!(
            s,
            "<line class=\"clip\" x1=\"{0:.2}\" x2=\"{0:.2}\" y1=\"0\" y2=\"{h}\"/>\n",
            x(edge)
        );
    }
    put!(
        s,
        "<line class=\"base\" x1=\"0\" x2=\"{w}\" y1=\"{h}\" y2=\"{h}\"/>\n"
    );
    // The zero tick, unless it would collide with an end label.
    if d0 < 0.0 && d1 > 0.0 && x(0.0) > 34.0 && x(0.0) < w - 34.0 {
        put!(
            s,
            "<line class=\"zero\" x1=\"{0:.2}\" x2=\"{0:.2}\" y1=\"{h}\" y2=\"{1}\"/>\
             <text class=\"tick\" x=\"{0:.2}\" y=\"{2}\" text-anchor=\"middle\">0</text>\n",
            x(0.0),
            h + 3.0,
            h + axis - 2.0
        );
    }
    put!(
        s,
        "<text class=\"tick\" x=\"1\" y=\"{0}\">{1}</text><text class=\"tick\" x=\"{2}\" y=\"{0}\" text-anchor=\"end\">{3}</text>\n",
        h + axis - 2.0,
        num(d0 + pad, 3),
        w - 1.0,
        num(d1 - pad, 3)
    );
    s.push_str("</svg>");
    s
}

fn bin_center(o0: f64, o1: f64, n: usize, i: usize) -> f64 {
    if o1 > o0 && n > 0 {
        o0 + (i as f64 + 0.5) * (o1 - o0) / n as f64
    } else {
        o0
    }
}

//! Activation ranges: one small multiple per quantized activation, its
//! histogram with the clip range chosen and how much of it saturates.

use std::fmt::Write;

use super::fmt::{esc, num};
use super::svg::svg_histogram;
use crate::report::quantize::ActivationSummary;

/// The "Activation ranges" section: a grid of [`activation_card`]s.
pub(super) fn activations(acts: &[ActivationSummary]) -> String {
    let mut s = String::from("<section id=\"activations\">\n<h2>Activation ranges</h2>\n");
    if acts.is_empty() {
        s.push_str("<p class=\"empty\">No activation histograms were collected.</p>\n</section>\n");
        return s;
    }
    put!(
        s,
        "<p class=\"caption\">{} quantized activations. Each histogram has 64 bins over the observed \
         range, counts on a log scale. The shaded band between the blue lines is the clip range \
         chosen; <span class=\"clipped\">red</span> bins fall outside it and saturate. The clip range \
         always contains 0 (so that zero is exact), which can widen it past the data.</p>\n",
        acts.len()
    );
    s.push_str("<div class=\"grid\">\n");
    for a in acts {
        s.push_str(&activation_card(a));
    }
    s.push_str("</div>\n</section>\n");
    s
}

/// One small multiple: the histogram and its numbers.
fn activation_card(a: &ActivationSummary) -> String {
    let total: u64 = a.bins.iter().sum();
    let (o0, o1) = (a.observed.0 as f64, a.observed.1 as f64);
    let clipped = match clipped_fraction(a) {
        None => String::new(),
        Some(f) if f <= 0.0 => " · none clipped".to_string(),
        Some(f) if f < 1e-4 => " · &lt;0.01% clipped".to_string(),
        Some(f) => format!(" · ≈{}% clipped", num(f * 100.0, 2)),
    };
    let qtype = a.qtype.name();
    format!(
        "<figure class=\"act\">{}<figcaption><div class=\"tname\" title=\"{}\">{}</div>\
         <div>observed [{}, {}] · n {}</div><div>clip [{}, {}]{}</div>\
         <div>scale {} · zp {} · {}</div></figcaption></figure>\n",
        svg_histogram(a),
        esc(&a.tensor),
        esc(&a.tensor),
        num(o0, 4),
        num(o1, 4),
        total,
        num(a.clip.0, 4),
        num(a.clip.1, 4),
        clipped,
        num(a.scale as f64, 4),
        a.zero_point,
        qtype
    )
}

/// Estimated fraction of the observed values outside the clip range (they
/// saturate), taking each bin's values as spread evenly over the bin.
/// `None` when nothing was observed.
fn clipped_fraction(a: &ActivationSummary) -> Option<f64> {
    let total: u64 = a.bins.iter().sum();
    if total == 0 {
        return None;
    }
    let (o0, o1) = (a.observed.0 as f64, a.observed.1 as f64);
    let (c0, c1) = a.clip;
    if o1 <= o0 {
        // One value: all in or all out.
        return Some(if o0 < c0 || o0 > c1 { 1.0 } else { 0.0 });
    }
    let w = (o1 - o0) / a.bins.len() as f64;
    let outside: f64 = a
        .bins
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let (lo, hi) = (o0 + i as f64 * w, o0 + (i + 1) as f64 * w);
            let below = (c0.min(hi) - lo).max(0.0);
            let above = (hi - c1.max(lo)).max(0.0);
            count as f64 * ((below + above) / w).min(1.0)
        })
        .sum();
    Some(outside / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_fraction_spreads_counts_over_bins() {
        let a = ActivationSummary {
            tensor: "t".into(),
            observed: (0.0, 4.0),
            clip: (0.0, 3.5),
            scale: 1.0,
            zero_point: 0,
            qtype: crate::quant::QType::U8,
            bins: vec![10, 10, 10, 10],
        };
        // Half of the last bin is above 3.5: 5 of 40.
        assert_eq!(clipped_fraction(&a), Some(0.125));
        let none = ActivationSummary {
            bins: vec![0; 4],
            ..a
        };
        assert_eq!(clipped_fraction(&none), None);
    }
}

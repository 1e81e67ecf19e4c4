//! Where the float model spends its time: time per op type as a bar chart
//! and the hotspot table of tract's fused groups.

use std::fmt::Write;

use super::fmt::{esc, finite, human_count, num, pct, shape};
use super::svg::{svg_bar_chart, Bar, Scale};
use crate::analysis::profile::Profile;

/// Hotspot rows shown in the table; the rest are summed in a footer line.
const HOTSPOT_ROWS: usize = 30;

/// The "Time per op type" and "Hotspots" sections (both say so when no
/// profile was collected).
pub(super) fn profile(p: Option<&Profile>) -> String {
    let mut s = String::from("<section id=\"profile\">\n<h2>Time per op type</h2>\n");
    let Some(p) = p else {
        s.push_str(
            "<p class=\"empty\">No profile was collected (it needs validation data).</p>\n\
             </section>\n<section id=\"hotspots\"><h2>Hotspots</h2><p class=\"empty\">No profile.</p></section>\n",
        );
        return s;
    };
    op_types(&mut s, p);
    s.push_str("</section>\n");
    hotspots(&mut s, p);
    s
}

/// What was timed, and one bar per op type.
fn op_types(s: &mut String, p: &Profile) {
    put!(
        s,
        "<p class=\"caption\">The prepared float model on tract, median of {} timed run(s): whole run \
         {} ms; per-node times sum to {} ms ({} of the run — the rest is the plan's bookkeeping \
         between nodes). A fused group's time is split over its members by MACs. Total {} MACs.</p>\n",
        p.runs,
        num(p.whole_run_ms, 4),
        num(p.node_sum_ms, 4),
        pct(p.ratio),
        human_count(p.total_macs)
    );
    let max = p.op_types.iter().map(|o| o.ms).fold(0.0, f64::max);
    let bars: Vec<Bar> = p
        .op_types
        .iter()
        .map(|o| Bar {
            label: format!("{} ×{}", o.op, o.nodes),
            value: o.ms,
            text: format!("{} ms · {}", num(o.ms, 3), pct(o.share)),
            color: "#4c6ef5",
            title: format!(
                "{}: {} node(s), {} ms, {} of node time, {} MACs",
                o.op,
                o.nodes,
                num(o.ms, 4),
                pct(o.share),
                human_count(o.macs)
            ),
        })
        .collect();
    if bars.is_empty() {
        s.push_str("<p class=\"empty\">No timed nodes.</p>\n");
    } else {
        put!(
            s,
            "<div class=\"chart\">{}</div>\n",
            svg_bar_chart(&bars, Scale::zero_to(max), 190, 560)
        );
    }
}

/// The slowest [`HOTSPOT_ROWS`] fused groups, the rest summed in a footer row.
fn hotspots(s: &mut String, p: &Profile) {
    s.push_str("<section id=\"hotspots\">\n<h2>Hotspots</h2>\n");
    put!(
        s,
        "<p class=\"caption\">Fused groups of tract's plan, slowest first ({} of {} shown). Share is of \
         the per-node sum.</p>\n",
        p.rows.len().min(HOTSPOT_ROWS),
        p.rows.len()
    );
    s.push_str(
        "<table class=\"hot\">\n<thead><tr><th class=\"n\">#</th><th>Group</th><th>Op</th>\
         <th>Output shape</th><th class=\"n\">MACs</th><th class=\"n\">median ms</th>\
         <th>share</th><th class=\"n\">cumulative</th></tr></thead>\n<tbody>\n",
    );
    for (i, row) in p.rows.iter().take(HOTSPOT_ROWS).enumerate() {
        put!(
            s,
            "<tr><td class=\"n\">{}</td><td class=\"name\" title=\"{}\"><code>{}</code></td><td>{}</td>\
             <td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"share\"><span class=\"bar\" style=\"width:{:.1}%\"></span>{}</td><td class=\"n\">{}</td></tr>\n",
            i + 1,
            esc(&row.tract_nodes.join(" + ")),
            esc(&row.name),
            esc(&row.op),
            row.output_shape
                .as_ref()
                .map_or("–".into(), |d| esc(&shape(d))),
            human_count(row.macs),
            num(row.median_ms, 3),
            finite(row.share).clamp(0.0, 1.0) * 100.0,
            pct(row.share),
            pct(row.cumulative)
        );
    }
    if p.rows.len() > HOTSPOT_ROWS {
        let rest = &p.rows[HOTSPOT_ROWS..];
        put!(
            s,
            "<tr class=\"rest\"><td></td><td colspan=\"4\">{} more group(s)</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td></td></tr>\n",
            rest.len(),
            num(rest.iter().map(|r| r.median_ms).sum(), 3),
            pct(rest.iter().map(|r| r.share).sum())
        );
    }
    s.push_str("</tbody>\n</table>\n</section>\n");
}

//! Node decisions: why nodes stayed in float, grouped by reason, and every
//! candidate node with its decision.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::fmt::esc;
use crate::report::quantize::QuantizeReport;

/// The "Node decisions" section.
pub(super) fn decisions(r: &QuantizeReport) -> String {
    let mut s = String::from("<section id=\"decisions\">\n<h2>Node decisions</h2>\n");
    let kept: Vec<_> = r.nodes.iter().filter(|d| !d.quantized).collect();
    put!(
        s,
        "<p class=\"caption\">{} candidate nodes: {} quantized, {} kept in float.</p>\n",
        r.nodes.len(),
        r.nodes.len() - kept.len(),
        kept.len()
    );
    if !kept.is_empty() {
        // Reasons by count, most common first; ties by reason text.
        let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for d in &kept {
            by_reason.entry(&d.reason).or_default().push(&d.node);
        }
        let mut reasons: Vec<_> = by_reason.into_iter().collect();
        reasons.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        s.push_str(
            "<h3>Why nodes stayed in float</h3>\n<table>\n<thead><tr><th class=\"n\">nodes</th>\
             <th>reason</th><th>examples</th></tr></thead>\n<tbody>\n",
        );
        for (reason, nodes) in &reasons {
            let mut ex = nodes
                .iter()
                .take(4)
                .map(|n| format!("<code>{}</code>", esc(n)))
                .collect::<Vec<_>>()
                .join(", ");
            if nodes.len() > 4 {
                ex.push_str(", …");
            }
            put!(
                s,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{ex}</td></tr>\n",
                nodes.len(),
                esc(reason)
            );
        }
        s.push_str("</tbody>\n</table>\n");
    }
    put!(
        s,
        "<details><summary>All {} nodes</summary>\n<table class=\"decisions\">\n<thead><tr>\
         <th>Node</th><th>Op</th><th>Decision</th><th>Why</th></tr></thead>\n<tbody>\n",
        r.nodes.len()
    );
    for d in &r.nodes {
        let (class, what) = if d.quantized {
            ("q", "quantized")
        } else {
            ("f", "float")
        };
        put!(
            s,
            "<tr class=\"{class}\"><td><code>{}</code></td><td>{}</td><td><span class=\"pill {class}\">{what}</span></td><td>{}</td></tr>\n",
            esc(&d.node),
            esc(&d.op),
            esc(&d.reason)
        );
    }
    s.push_str("</tbody>\n</table>\n</details>\n</section>\n");
    s
}

//! The page's stylesheet, inlined into its `<head>`.

/// System fonts only: nothing is fetched.
pub(super) const CSS: &str = r#"
:root { --fg:#212529; --dim:#6c757d; --line:#dee2e6; --bg:#f1f3f5; --card:#fff; --accent:#4c6ef5; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1360px; margin:0 auto; padding:20px 24px 40px; }
code, pre, .tname { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace; font-size:12.5px; }
h1 { font-size:24px; margin:0 0 4px; }
h1 .dim { color:var(--dim); font-weight:400; }
h2 { font-size:18px; margin:0 0 8px; }
h3 { font-size:14px; margin:16px 0 6px; }
header, section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:0 0 16px; }
.files { margin:0 0 12px; color:var(--dim); word-break:break-all; }
.arrow { margin:0 6px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; }
.card { flex:1 1 170px; border:1px solid var(--line); border-radius:6px; padding:8px 12px; background:#f8f9fa; }
.card .label { font-size:11px; text-transform:uppercase; letter-spacing:.04em; color:var(--dim); }
.card .value { font-size:17px; white-space:nowrap; font-weight:600; font-variant-numeric:tabular-nums; }
.card .note { font-size:12px; color:var(--dim); }
nav { display:flex; flex-wrap:wrap; gap:6px; margin:0 0 16px; }
nav a { background:var(--card); border:1px solid var(--line); border-radius:14px; padding:3px 12px; color:var(--accent); text-decoration:none; font-size:13px; }
nav a:hover { background:#edf2ff; }
.caption { color:var(--dim); margin:0 0 10px; max-width:1000px; }
.empty { color:var(--dim); font-style:italic; }
.warning { background:#fff9db; border:1px solid #ffe066; border-radius:6px; padding:6px 10px; }
details { margin:8px 0; }
summary { cursor:pointer; color:var(--accent); }
details.pipeline pre { background:#f8f9fa; border:1px solid var(--line); border-radius:6px; padding:8px; white-space:pre-wrap; word-break:break-all; }
ul.remarks { margin:0; padding-left:18px; }
.pill { display:inline-block; font-size:11px; border-radius:9px; padding:0 7px; background:#e9ecef; color:#495057; }
.pill.q { background:#d3f9d8; color:#2b8a3e; }
.pill.f { background:#ffe3e3; color:#c92a2a; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
table.narrow { width:auto; min-width:420px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; color:var(--dim); font-weight:600; background:#f8f9fa; }
tbody tr:nth-child(even) { background:#fbfbfc; }
.n { text-align:right; white-space:nowrap; }
td.name { max-width:420px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
td.share { width:170px; white-space:nowrap; }
td.share .bar { display:inline-block; height:9px; max-width:100px; background:var(--accent); border-radius:2px; margin-right:6px; vertical-align:middle; }
tr.rest td { color:var(--dim); font-style:italic; }
tr.chosen td { background:#ebfbee; font-weight:600; }
tr.f td { background:#fff8f8; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align:baseline; }
.legend { display:flex; gap:16px; font-size:12px; color:var(--dim); margin:0 0 8px; }
.verdict { font-weight:600; padding:1px 8px; border-radius:4px; }
.verdict.ok { background:#d3f9d8; color:#2b8a3e; }
.verdict.bad { background:#ffe3e3; color:#c92a2a; }
pre.cmd { background:#212529; color:#f8f9fa; padding:10px 12px; border-radius:6px; white-space:pre-wrap; word-break:break-all; user-select:all; }
.chart { margin:4px 0 8px; }
.chart.scroll { overflow-x:auto; }
svg text { font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif; }
svg.bars .lbl { font-size:12px; fill:var(--fg); }
svg.bars .val { font-size:11.5px; fill:var(--dim); }
svg.bars g:hover rect { opacity:.75; }
svg .gl { stroke:#e9ecef; stroke-width:1; }
svg .axis { font-size:11px; fill:var(--dim); }
svg.cols rect:hover { opacity:.7; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(244px,1fr)); gap:8px; }
figure.act { margin:0; border:1px solid var(--line); border-radius:6px; padding:6px; background:#fff; }
figure.act figcaption { font-size:11px; color:var(--dim); line-height:1.35; font-variant-numeric:tabular-nums; }
figure.act .tname { color:var(--fg); font-weight:600; font-size:11.5px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
svg.hist { display:block; width:100%; height:auto; }
svg.hist .band { fill:#dbe4ff; }
svg.hist .in { fill:#5c7cfa; }
svg.hist .out, .clipped { fill:#e03131; color:#e03131; font-weight:600; }
svg.hist .clip { stroke:#364fc7; stroke-width:1.25; }
svg.hist .base { stroke:#adb5bd; stroke-width:1; }
svg.hist .zero { stroke:#495057; stroke-width:1; }
svg.hist .tick { font-size:9.5px; fill:var(--dim); }
footer { color:var(--dim); font-size:12px; text-align:center; margin-top:8px; }
"#;

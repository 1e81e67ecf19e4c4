//! The line diff snapshot tests show between the IR before and after a pass.

/// A full-context line diff of `a` → `b`: every line of both, prefixed with
/// `' '` (in both), `'-'` (only in `a`) or `'+'` (only in `b`). Within a
/// change, removals come before additions. Deterministic.
pub fn diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut out = String::new();
    let mut line = |tag: char, s: &str| {
        out.push(tag);
        out.push_str(s);
        out.push('\n');
    };
    for s in &a[..pre] {
        line(' ', s);
    }
    let (n, m) = (am.len(), bm.len());
    if n.saturating_mul(m) > 50_000_000 {
        am.iter().for_each(|s| line('-', s));
        bm.iter().for_each(|s| line('+', s));
    } else {
        // lcs[i][j]: longest common subsequence of am[i..] and bm[j..].
        let w = m + 1;
        let mut lcs = vec![0u32; (n + 1) * w];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * w + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                line(' ', am[i]);
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                line('-', am[i]);
                i += 1;
            } else {
                line('+', bm[j]);
                j += 1;
            }
        }
    }
    for s in &a[a.len() - suf..] {
        line(' ', s);
    }
    out
}

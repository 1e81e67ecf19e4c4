//! Text for the page: HTML escaping, shell quoting, and numbers, sizes and
//! counts written for people.

/// Escapes text for HTML element content and quoted attribute values alike.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Single-quotes a word for a POSIX shell.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let head: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        format!("{head}…")
    }
}

pub(super) fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |f| f.to_string_lossy().into_owned())
}

/// NaN and infinities as 0, for coordinates (one NaN breaks an SVG).
pub(super) fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `digits` significant digits, trailing zeros kept off; scientific
/// notation for very small or large magnitudes.
pub(super) fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-3..6).contains(&mag) {
        return sci(x);
    }
    let decimals = (digits as i32 - 1 - mag).clamp(0, 8) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

pub(super) fn sci(x: f64) -> String {
    format!("{x:.3e}")
}

pub(super) fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{} {}", num(v, 3), UNITS[u])
    }
}

pub(super) fn human_count(n: Option<u64>) -> String {
    let Some(n) = n else { return "–".into() };
    let v = n as f64;
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", num(v / 1e3, 3)),
        1_000_000..=999_999_999 => format!("{}M", num(v / 1e6, 3)),
        _ => format!("{}G", num(v / 1e9, 3)),
    }
}

pub(super) fn shape(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(esc(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(164.5912, 4), "164.6");
        assert_eq!(num(0.0174611, 4), "0.01746");
        assert_eq!(num(2.0, 4), "2");
        assert_eq!(num(5.86e-10, 4), "5.860e-10");
        assert_eq!(human_bytes(585_532), "572 KiB");
        assert_eq!(human_count(Some(16_315_376)), "16.3M");
        assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
    }
}

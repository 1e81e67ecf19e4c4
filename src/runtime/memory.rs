//! The memory guard: what running a model in tract will take, against a
//! limit (`--max-memory`, by default 90% of the memory the system reports
//! available), checked before calibration or validation start.
//!
//! tract loads every weight into memory (external data included: it reads
//! the data file into its own tensors) and keeps the intermediate tensors
//! of each run alive until their last reader; each worker thread runs one
//! sample at a time. The estimate is the float weights once plus, per
//! worker, every intermediate tensor whose shape the file declares (an
//! upper bound: tract frees many sooner). Past the limit the run uses
//! fewer workers (the same result: statistics do not depend on the thread
//! count); when even one does not fit, it stops with what to do instead
//! of dying to the out-of-memory killer half-way.

use crate::ir::Model;

/// Bytes tract holds for `model`: (weights, intermediate tensors of one
/// run, counted where their shapes are declared).
pub fn estimate(model: &Model) -> (u64, u64) {
    let g = &model.graph;
    let (mut weights, mut acts) = (0u64, 0u64);
    for v in g.value_ids() {
        // Initializers and Constant nodes alike.
        if let Some(t) = g.constant(v) {
            weights = weights.saturating_add(t.nbytes() as u64);
            continue;
        }
        let Some(shape) = g.static_shape(v) else {
            continue;
        };
        let bits = crate::proto::dtype_bits(g.elem_type(v)).unwrap_or(32) as u64;
        let n = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .unwrap_or(u64::MAX);
        acts = acts.saturating_add(n.saturating_mul(bits) / 8);
    }
    // Constant nodes hold their tensor in an attribute (before
    // `fold-constants` makes initializers of them).
    for n in g.ops() {
        let node = g.node(n);
        if let Some(t) = node
            .is("Constant")
            .then(|| node.attr("value").and_then(|a| a.t.as_ref()))
            .flatten()
        {
            let dims: Vec<u64> = t.dims.iter().map(|&d| d.max(0) as u64).collect();
            let bits = crate::proto::dtype_bits(t.data_type()).unwrap_or(32) as u64;
            let count = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            weights =
                weights.saturating_add(count.map_or(u64::MAX, |c| c.saturating_mul(bits) / 8));
        }
    }
    (weights, acts)
}

/// `MemAvailable` of /proc/meminfo, in bytes (`None` elsewhere).
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The default limit: 90% of the available memory (unlimited when the
/// system does not say).
pub fn default_limit() -> Option<u64> {
    available().map(|a| a / 10 * 9)
}

/// `512M`, `4G`, `1.5G`, `2048` (bytes), `800K` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("'{s}': expected a size such as 512M or 4G")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}': expected a size such as 512M or 4G"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("'{s}': the size must be positive"));
    }
    Ok((v * mult as f64) as u64)
}

/// Human-readable bytes.
pub fn show(b: u64) -> String {
    let g = b as f64 / (1u64 << 30) as f64;
    if g >= 1.0 {
        format!("{g:.1} GiB")
    } else if b >= 1 << 20 {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b as f64 / 1024.0)
    }
}

/// How many of `threads` workers fit under `limit` for a model of
/// `(weights, acts)` bytes: at least 1 when one fits, else `Err` with the
/// need.
pub fn workers_within(weights: u64, acts: u64, threads: usize, limit: u64) -> Result<usize, u64> {
    let one = weights.saturating_add(acts);
    if one > limit {
        return Err(one);
    }
    let room = (limit - weights) / acts.max(1);
    Ok((room as usize).clamp(1, threads.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
    }

    #[test]
    fn workers_shrink_to_fit_then_refuse() {
        assert_eq!(workers_within(100, 10, 4, 1000), Ok(4));
        assert_eq!(workers_within(100, 400, 4, 1000), Ok(2));
        assert_eq!(workers_within(900, 400, 4, 1000), Err(1300));
    }
}

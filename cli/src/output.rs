//! What the commands print: aligned tables, JSON, sizes, ages, events.

/// A size that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// A unit other than K, M, G, T.
    #[error("`{0}`: unit must be K, M, G or T")]
    Unit(String),
    /// No number.
    #[error("`{0}` is not a size like 512M or 10G")]
    NotANumber(String),
    /// Zero, or too large.
    #[error("`{0}` is not a usable size")]
    Unusable(String),
}

/// Parses `512M`, `2G`, `1T` (binary units) or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(SizeError::Unit(s.to_owned())),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| SizeError::NotANumber(s.to_owned()))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| SizeError::Unusable(s.to_owned()))
}

/// An aligned table: the headers, then one row of cells per item.
pub(crate) fn table<T>(headers: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    out
}

/// Prints a value as JSON, or as the text `text` makes of it.
pub(crate) fn print_item<T: serde::Serialize>(
    json: bool,
    v: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    println!("{}", text(v));
    Ok(())
}

/// Prints a list as JSON, or as a table with these headers and one row per item.
pub(crate) fn print_list<T: serde::Serialize>(
    json: bool,
    items: &[T],
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        return print_json(&items);
    }
    println!("{}", table(headers, items, row));
    Ok(())
}

/// Now, ms since the epoch (this machine's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn ago(ms: Option<i64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) => {
            let d = (now_ms() - ms).max(0) as u64;
            format!("{}s ago", d / 1000)
        }
    }
}

/// Whether structured output is YAML rather than JSON (`-o yaml`), set once at start.
static YAML: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes structured output YAML (`-o yaml`) instead of JSON.
pub(crate) fn use_yaml() {
    YAML.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Prints a value as the structured output asks: pretty JSON, or a YAML document of the
/// same value (the API's JSON, so both carry the same fields).
pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    if YAML.load(std::sync::atomic::Ordering::Relaxed) {
        let value = serde_json::to_value(v)?;
        print!("{}", serde_yaml_ng::to_string(&value)?);
    } else {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(())
}

/// Prints one record of a stream: a JSON line, or a YAML document starting with `---`.
pub(crate) fn print_record<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    if YAML.load(std::sync::atomic::Ordering::Relaxed) {
        let value = serde_json::to_value(v)?;
        print!("---\n{}", serde_yaml_ng::to_string(&value)?);
    } else {
        println!("{}", serde_json::to_string(v)?);
    }
    Ok(())
}

/// Renders one event row (JSON as served by the API) for tables.
pub fn describe_event(e: &serde_json::Value) -> String {
    let kind = &e["kind"];
    if kind == "started" {
        return "started".into();
    }
    if let Some(d) = kind.get("done") {
        return if d["changed"] == true {
            "done (changed)".into()
        } else {
            "done (unchanged)".into()
        };
    }
    if let Some(f) = kind.get("failed") {
        return format!(
            "failed: {} — {}",
            f["kind"].as_str().unwrap_or("?"),
            f["message"].as_str().unwrap_or("")
        );
    }
    if let Some(p) = kind.get("progress") {
        return format!("progress {}/{}", p["done"], p["total"]);
    }
    if let Some(o) = kind.get("output") {
        if let Some(p) = o.get("power") {
            return format!("power {}", if p["on"] == true { "on" } else { "off" });
        }
        if let Some(s) = o.get("sensors").and_then(|s| s.as_array()) {
            return format!("{} sensor readings", s.len());
        }
    }
    kind.to_string()
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_binary_units_and_name_bad_input() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("2X")
                .unwrap_err()
                .to_string()
                .contains("unit must be")
        );
        assert!(parse_size("G").is_err());
        assert!(parse_size("0M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}

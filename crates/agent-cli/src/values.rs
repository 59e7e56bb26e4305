//! Parsers of flag values shared by the commands (clap `value_parser`s).

use std::time::Duration;

use agent_manager::reference::{AgentKind, Platform};

pub(crate) fn parse_kind(s: &str) -> Result<AgentKind, String> {
    s.parse()
        .map_err(|e: agent_manager::RefError| e.to_string())
}

pub(crate) fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse()
        .map_err(|e: agent_manager::RefError| e.to_string())
}

/// `500ms`, `3s`, `2m`, `1h 30m` (humantime).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 500ms, 3s, 2m)"))
}

/// `2GiB`, `500MB`, `1.5G`, `1024` (bytes). Binary units for `KiB`/`MiB`/`GiB`/`TiB`
/// and for the bare `K`/`M`/`G`/`T`; decimal for `kB`/`MB`/`GB`/`TB`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 2GiB, 500MB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ));
        }
    };
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let bytes = (n * mult as f64).round() as u64;
    Ok(bytes)
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_accept_the_documented_forms() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size(" 10 KiB ").unwrap(), 10 << 10);
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("2 parsecs").is_err());
    }
}

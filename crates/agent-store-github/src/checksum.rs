//! Published checksums: the asset's own `digest`, or a checksums file of the release.

use agent_store::Sha256Digest;

/// Whether `name` is a checksums file we read (`SHA256SUMS`, `checksums.txt`,
/// `*_checksums.txt`, `*.sha256sums`), case-insensitively. Also matched: the
/// sidecar `{asset}.sha256`, checked separately by the caller.
pub(crate) fn is_checksums_file(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "sha256sums"
        || n == "sha256sums.txt"
        || n == "checksums.txt"
        || n == "checksums.sha256"
        || n.ends_with("_checksums.txt")
        || n.ends_with("-checksums.txt")
        || n.ends_with(".sha256sums")
}

/// Finds `asset`'s digest in a `sha256sum`-style file: `HEX  NAME`,
/// `HEX *NAME` (binary mode), or a lone `HEX` (a `.sha256` sidecar, when
/// `lone_ok`). Names may carry a leading `./`.
pub(crate) fn find_in_sums(text: &str, asset: &str, lone_ok: bool) -> Option<Sha256Digest> {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(2, char::is_whitespace);
        let hex = parts.next().unwrap_or_default();
        let name = parts.next().map(|n| n.trim_start().trim_start_matches('*'));
        let matches = match name {
            Some(n) => n.trim_start_matches("./") == asset,
            None => lone_ok,
        };
        if matches && let Ok(d) = hex.parse::<Sha256Digest>() {
            return Some(d);
        }
    }
    None
}

/// Parses GitHub's per-asset `digest` (`sha256:HEX`); other algorithms are ignored.
pub(crate) fn parse_asset_digest(digest: &str) -> Option<Sha256Digest> {
    let hex = digest.trim().strip_prefix("sha256:")?;
    hex.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn sums_formats() {
        let text = format!("{A}  other.tar.gz\n{B} *./x_1.0.0_linux_amd64.tar.gz\n");
        assert_eq!(
            find_in_sums(&text, "x_1.0.0_linux_amd64.tar.gz", false)
                .unwrap()
                .to_hex(),
            B
        );
        assert!(find_in_sums(&text, "missing.tar.gz", false).is_none());
        assert_eq!(
            find_in_sums(&format!("{A}\n"), "x", true).unwrap().to_hex(),
            A
        );
        assert!(find_in_sums(&format!("{A}\n"), "x", false).is_none());
    }

    #[test]
    fn names_and_digests() {
        assert!(is_checksums_file("SHA256SUMS"));
        assert!(is_checksums_file("service-echo_1.0.0_checksums.txt"));
        assert!(is_checksums_file("checksums.txt"));
        assert!(!is_checksums_file("service-echo_1.0.0_linux_amd64.tar.gz"));
        assert_eq!(
            parse_asset_digest(&format!("sha256:{A}")).unwrap().to_hex(),
            A
        );
        assert!(parse_asset_digest("sha512:abcd").is_none());
        assert!(parse_asset_digest(A).is_none());
    }
}

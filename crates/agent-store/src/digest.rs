use std::fmt;
use std::str::FromStr;

/// A sha256 digest. Displays as lower-case hex; parses hex with or without a
/// `sha256:` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Lower-case hex, 64 characters.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The OCI form, `sha256:<hex>`.
    #[must_use]
    pub fn to_oci(&self) -> String {
        format!("sha256:{}", self.to_hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix("sha256:").unwrap_or(t);
        let mut out = [0u8; 32];
        hex::decode_to_slice(t, &mut out)
            .map_err(|e| format!("not a sha256 digest ({e}): {s:?}"))?;
        Ok(Sha256Digest(out))
    }
}

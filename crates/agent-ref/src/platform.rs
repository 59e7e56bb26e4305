use std::fmt;
use std::str::FromStr;

use crate::RefError;

/// An OS/architecture pair named as Go names them (`linux`/`darwin`, `amd64`/`arm64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// `linux`, `darwin`, `windows`, `freebsd`…
    pub os: String,
    /// `amd64`, `arm64`, `386`, `arm`…
    pub arch: String,
}

impl Platform {
    /// The platform this program runs on.
    #[must_use]
    pub fn current() -> Self {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        }
    }

    /// `{os}_{arch}`, e.g. `linux_amd64` (the seed's `PlatformSuffix`).
    #[must_use]
    pub fn suffix(&self) -> String {
        format!("{}_{}", self.os, self.arch)
    }

    /// Other spellings of the architecture that release assets commonly use
    /// (`x86_64` for `amd64`, `aarch64` for `arm64`), the Go name first.
    #[must_use]
    pub fn arch_aliases(&self) -> Vec<&str> {
        let mut v = vec![self.arch.as_str()];
        match self.arch.as_str() {
            "amd64" => v.push("x86_64"),
            "arm64" => v.push("aarch64"),
            "386" => v.push("i386"),
            _ => {}
        }
        v
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

impl FromStr for Platform {
    type Err = RefError;

    /// Parses `os/arch` (also `os_arch`); Rust names (`macos`, `x86_64`,
    /// `aarch64`) are normalised to Go names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (os, arch) = s
            .split_once('/')
            .or_else(|| s.split_once('_'))
            .ok_or_else(|| RefError::InvalidPlatform(s.to_owned()))?;
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        let os = match os {
            "macos" => "darwin",
            o => o,
        };
        let arch = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        if !ok(os) || !ok(arch) {
            return Err(RefError::InvalidPlatform(s.to_owned()));
        }
        Ok(Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        })
    }
}

/// The current platform's suffix, e.g. `linux_amd64` (Go: `PlatformSuffix`).
#[must_use]
pub fn platform_suffix() -> String {
    Platform::current().suffix()
}

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
    /// A platform from an OS and an architecture, in Go or Rust spelling
    /// (`macos` → `darwin`, `x86_64` → `amd64`, `aarch64` → `arm64`, `x86`/`i386`/`i686` → `386`).
    ///
    /// # Errors
    /// [`RefError::InvalidPlatform`] when a part is empty or not `[a-z0-9]+`.
    pub fn new(os: &str, arch: &str) -> Result<Self, RefError> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        let (os, arch) = (go_os(os), go_arch(arch));
        if !ok(os) || !ok(arch) {
            return Err(RefError::InvalidPlatform(format!("{os}/{arch}")));
        }
        Ok(Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        })
    }

    /// The platform this program runs on, named as Go names it.
    #[must_use]
    pub fn current() -> Self {
        let arch = match std::env::consts::ARCH {
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            other => go_arch(other),
        };
        Platform {
            os: go_os(std::env::consts::OS).to_owned(),
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

    /// Parses `os/arch` (also `os_arch`, the form of [`Platform::suffix`]);
    /// Rust names (`macos`, `x86_64`, `aarch64`) are normalised to Go names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (os, arch) = s
            .split_once('/')
            .or_else(|| s.split_once('_'))
            .ok_or_else(|| RefError::InvalidPlatform(s.to_owned()))?;
        Platform::new(os, arch).map_err(|_| RefError::InvalidPlatform(s.to_owned()))
    }
}

/// Go's `GOOS` for a Rust `target_os` (identity for names both share).
fn go_os(os: &str) -> &str {
    match os {
        "macos" => "darwin",
        other => other,
    }
}

/// Go's `GOARCH` for a Rust `target_arch` or a common alias.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "loongarch64" => "loong64",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// The current platform's suffix, e.g. `linux_amd64` (Go: `PlatformSuffix`).
#[must_use]
pub fn platform_suffix() -> String {
    Platform::current().suffix()
}

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

    /// `{os}_{arch}`, e.g. `linux_amd64`.
    #[doc(alias = "PlatformSuffix")]
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

/// The current platform's suffix, e.g. `linux_amd64`.
#[doc(alias = "PlatformSuffix")]
#[must_use]
pub fn platform_suffix() -> String {
    Platform::current().suffix()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn current_uses_go_names() {
        let c = Platform::current();
        assert!(!["macos", "x86_64", "aarch64"].contains(&c.os.as_str()));
        assert!(!["x86_64", "aarch64", "x86"].contains(&c.arch.as_str()));
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(c.suffix(), "linux_amd64");
        #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
        assert_eq!(c.suffix(), "linux_arm64");
        #[cfg(all(target_os = "macos", target_arch = "aarch64"))]
        assert_eq!(c.suffix(), "darwin_arm64");
    }

    #[test]
    fn platform_suffix_is_current_suffix() {
        assert_eq!(platform_suffix(), Platform::current().suffix());
        assert_eq!(p("linux/amd64").suffix(), "linux_amd64");
    }

    #[test]
    fn parses_slash_and_underscore_forms() {
        assert_eq!(p("linux/amd64"), p("linux_amd64"));
        assert_eq!(p("darwin/arm64").to_string(), "darwin/arm64");
        assert_eq!(p("darwin_arm64").suffix(), "darwin_arm64");
    }

    #[test]
    fn rust_names_are_normalised() {
        assert_eq!(p("macos/aarch64"), p("darwin/arm64"));
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("linux_x86_64"), p("linux/amd64"));
        assert_eq!(p("linux/i686").arch, "386");
        assert_eq!(
            Platform::new("linux", "loongarch64").unwrap().arch,
            "loong64"
        );
    }

    #[test]
    fn display_parse_round_trip() {
        for s in [
            "linux/amd64",
            "darwin/arm64",
            "windows/386",
            "freebsd/riscv64",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }

    #[test]
    fn invalid_platforms_are_errors() {
        for bad in [
            "linux",
            "",
            "/",
            "linux/",
            "/amd64",
            "Linux/amd64",
            "linux/amd 64",
            "linux/../x",
            "a/b/c",
        ] {
            let e = bad.parse::<Platform>().expect_err(bad);
            assert!(matches!(e, RefError::InvalidPlatform(_)), "{bad}");
            assert_eq!(e.kind(), ErrorKind::InvalidRef);
            assert!(e.to_string().contains("linux/amd64"), "{e}");
        }
    }

    #[test]
    fn arch_aliases_go_name_first() {
        assert_eq!(p("linux/amd64").arch_aliases(), ["amd64", "x86_64"]);
        assert_eq!(p("darwin/arm64").arch_aliases(), ["arm64", "aarch64"]);
        assert_eq!(p("linux/386").arch_aliases(), ["386", "i386"]);
        assert_eq!(p("linux/riscv64").arch_aliases(), ["riscv64"]);
    }

    #[test]
    fn serde_round_trip() {
        let pl = p("linux/arm64");
        let j = serde_json::to_string(&pl).unwrap();
        assert_eq!(j, r#"{"os":"linux","arch":"arm64"}"#);
        assert_eq!(serde_json::from_str::<Platform>(&j).unwrap(), pl);
    }
}

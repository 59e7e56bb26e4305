//! The handshake line an agent prints first on stdout: its strict parser and
//! its canonical formatting.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Longest handshake line accepted, in bytes (newline excluded).
pub const MAX_HANDSHAKE_LEN: usize = 4096;

/// The protocol versions this crate knows (and a host accepts by default).
pub const PROTOCOL_VERSIONS: &[u32] = &[1, 2];

/// How much of a bad line an error quotes, in characters.
const QUOTE_CHARS: usize = 200;

/// Longest unix socket path the kernel accepts: `sun_path` with its NUL is
/// 104 bytes on macOS and the BSDs, 108 on Linux.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub const MAX_UNIX_PATH: usize = 103;
/// Longest unix socket path the kernel accepts: `sun_path` with its NUL is
/// 104 bytes on macOS and the BSDs, 108 on Linux.
#[cfg(not(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
pub const MAX_UNIX_PATH: usize = 107;

/// Where an agent listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// An absolute unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A parsed handshake: the protocol version and where the agent listens.
///
/// Accepted forms, one line, at most [`MAX_HANDSHAKE_LEN`] bytes:
/// `1|PORT`, `1|dns:///127.0.0.1:PORT`, `2|dns:///127.0.0.1:PORT`,
/// `1|unix:/abs/path.sock`, `2|unix:/abs/path.sock`. The host may be any IPv4
/// loopback address, `[::1]` or `localhost` (read as `127.0.0.1`); the port is
/// 1–65535 written without leading zeros.
///
/// `Display` writes the canonical line, which [`Handshake::parse`] reads back
/// to the same value: `1|PORT` for protocol 1 on `127.0.0.1` (the Go loader's form),
/// `V|dns:///ADDR` for other TCP addresses, `V|unix:PATH` for sockets.
///
/// ```
/// use agent_protocol::{Endpoint, Handshake, HandshakeError};
///
/// let h = Handshake::parse("2|dns:///127.0.0.1:50051", &[1, 2])?;
/// assert_eq!(h.version, 2);
/// assert_eq!(h.endpoint, Endpoint::Tcp("127.0.0.1:50051".parse().unwrap()));
/// assert_eq!(Handshake::parse("1|50051", &[1, 2])?.endpoint, h.endpoint);
/// assert_eq!(Handshake::v1_port(50051).to_string(), "1|50051");
///
/// let err = Handshake::parse("2|dns:///10.0.0.1:80", &[1, 2]).unwrap_err();
/// assert!(matches!(err, HandshakeError::Malformed { .. }));
/// # Ok::<(), HandshakeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Protocol version (the field before `|`).
    pub version: u32,
    /// Where to connect.
    pub endpoint: Endpoint,
}

/// Why a line is not an acceptable handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The line is not one of the accepted forms.
    #[error("malformed handshake line {line:?}: {reason}")]
    Malformed {
        /// The line (at most 200 characters of it, `…` when cut).
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The line names a protocol version outside the accepted set.
    #[error(
        "the agent speaks protocol version {version}; this host accepts {}",
        list(accepted)
    )]
    VersionMismatch {
        /// The version in the line.
        version: u32,
        /// The versions accepted.
        accepted: Vec<u32>,
    },
}

impl HandshakeError {
    /// A [`HandshakeError::Malformed`] quoting (a prefix of) `line`.
    #[must_use]
    pub fn malformed(line: &str, reason: &str) -> HandshakeError {
        HandshakeError::Malformed {
            line: quote(line),
            reason: reason.to_owned(),
        }
    }

    /// Whether this is a version mismatch (else the line is malformed).
    #[must_use]
    pub fn is_version_mismatch(&self) -> bool {
        matches!(self, HandshakeError::VersionMismatch { .. })
    }
}

impl Handshake {
    /// A handshake for `endpoint` at protocol `version`.
    #[must_use]
    pub fn new(version: u32, endpoint: Endpoint) -> Handshake {
        Handshake { version, endpoint }
    }

    /// Protocol 1 on `127.0.0.1:port`, printed `1|PORT` (what the Go loader's agents print).
    #[must_use]
    pub fn v1_port(port: u16) -> Handshake {
        Handshake::tcp(1, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }

    /// A TCP handshake, printed `V|dns:///ADDR` (or `1|PORT`, see [`Handshake`]).
    #[must_use]
    pub fn tcp(version: u32, addr: SocketAddr) -> Handshake {
        Handshake::new(version, Endpoint::Tcp(addr))
    }

    /// A unix-socket handshake, printed `V|unix:PATH`.
    #[must_use]
    pub fn unix(version: u32, path: impl Into<PathBuf>) -> Handshake {
        Handshake::new(version, Endpoint::Unix(path.into()))
    }

    /// Parses one handshake line strictly.
    ///
    /// One trailing `\n` and then one trailing `\r` are removed; nothing else is
    /// trimmed. A version outside `accepted` is a version mismatch (checked
    /// before the address, whose form a future version may change); every other
    /// deviation is malformed, quoting the line.
    ///
    /// # Errors
    /// [`HandshakeError::Malformed`] or [`HandshakeError::VersionMismatch`].
    pub fn parse(line: &str, accepted: &[u32]) -> Result<Handshake, HandshakeError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let bad = |reason: &str| HandshakeError::malformed(line, reason);

        if line.len() > MAX_HANDSHAKE_LEN {
            return Err(bad("longer than 4096 bytes"));
        }
        let Some((version, address)) = line.split_once('|') else {
            return Err(bad("expected VERSION|ADDRESS"));
        };
        let version = parse_decimal(version)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("the version is not a decimal number"))?;
        if !accepted.contains(&version) {
            return Err(HandshakeError::VersionMismatch {
                version,
                accepted: accepted.to_vec(),
            });
        }
        if address.contains('|') {
            return Err(bad("too many fields"));
        }
        let endpoint = if let Some(hostport) = address.strip_prefix("dns:///") {
            Endpoint::Tcp(parse_loopback(hostport).map_err(&bad)?)
        } else if let Some(path) = address.strip_prefix("unix:") {
            Endpoint::Unix(parse_unix_path(path).map_err(&bad)?)
        } else if version == 1 && address.bytes().all(|b| b.is_ascii_digit()) {
            let port = parse_port(address).map_err(&bad)?;
            Endpoint::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        } else {
            return Err(bad(
                "expected dns:///127.0.0.1:PORT, unix:/ABSOLUTE/PATH or (protocol 1) PORT",
            ));
        };
        Ok(Handshake { version, endpoint })
    }

    /// The canonical line for this handshake (its `Display`, without newline).
    #[must_use]
    pub fn to_line(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp(addr) if self.version == 1 && addr.ip() == Ipv4Addr::LOCALHOST => {
                write!(f, "1|{}", addr.port())
            }
            Endpoint::Tcp(addr) => write!(f, "{}|dns:///{addr}", self.version),
            Endpoint::Unix(path) => write!(f, "{}|unix:{}", self.version, path.display()),
        }
    }
}

/// At most [`QUOTE_CHARS`] characters of `line`, with `…` when cut.
fn quote(line: &str) -> String {
    match line.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

fn list(versions: &[u32]) -> String {
    let v: Vec<String> = versions.iter().map(u32::to_string).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// A canonical decimal: digits only, no sign, no leading zero (except `0`).
fn parse_decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 10
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

fn parse_port(s: &str) -> Result<u16, &'static str> {
    match parse_decimal(s) {
        Some(p @ 1..=65535) => u16::try_from(p).map_err(|_| "port out of range"),
        _ => Err("the port must be 1-65535"),
    }
}

fn parse_loopback(hostport: &str) -> Result<SocketAddr, &'static str> {
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or("expected HOST:PORT after dns:///")?;
    let port = parse_port(port)?;
    let ip: IpAddr = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        IpAddr::V6(v6.parse().map_err(|_| "not an IP address")?)
    } else {
        IpAddr::V4(host.parse().map_err(|_| "not an IPv4 address")?)
    };
    if !ip.is_loopback() {
        return Err("only loopback addresses are accepted");
    }
    // Only the canonical spelling: no `::0:1`, no `127.000.0.1`.
    let canonical = match ip {
        IpAddr::V4(v4) if host != "localhost" => v4.to_string() == host,
        IpAddr::V6(v6) => format!("[{v6}]") == host,
        IpAddr::V4(_) => true,
    };
    if !canonical {
        return Err("the address is not written canonically");
    }
    Ok(SocketAddr::new(ip, port))
}

fn parse_unix_path(path: &str) -> Result<PathBuf, &'static str> {
    if !path.starts_with('/') {
        return Err("the unix socket path must be absolute");
    }
    if path.len() > MAX_UNIX_PATH {
        return Err("the unix socket path is longer than sun_path allows");
    }
    if path.chars().any(char::is_control) {
        return Err("the unix socket path contains control characters");
    }
    if path.trim_end_matches('/').is_empty() {
        return Err("the unix socket path names no file");
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ACC: &[u32] = &[1, 2];

    fn tcp(s: &str) -> Endpoint {
        Endpoint::Tcp(s.parse().unwrap())
    }

    #[derive(Debug, PartialEq)]
    enum ErrorKind {
        HandshakeMalformed,
        VersionMismatch,
    }

    fn kind_of(err: &HandshakeError) -> ErrorKind {
        if err.is_version_mismatch() {
            ErrorKind::VersionMismatch
        } else {
            ErrorKind::HandshakeMalformed
        }
    }

    fn kind(line: &str) -> ErrorKind {
        kind_of(&Handshake::parse(line, ACC).unwrap_err())
    }

    #[test]
    fn v1_bare_port() {
        let h = Handshake::parse("1|50051", ACC).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.endpoint, tcp("127.0.0.1:50051"));
    }

    #[test]
    fn dns_forms_both_versions() {
        for v in [1, 2] {
            let h = Handshake::parse(&format!("{v}|dns:///127.0.0.1:8080"), ACC).unwrap();
            assert_eq!(h.version, v);
            assert_eq!(h.endpoint, tcp("127.0.0.1:8080"));
        }
    }

    #[test]
    fn unix_forms_both_versions() {
        for v in [1, 2] {
            let h = Handshake::parse(&format!("{v}|unix:/tmp/a b/agent.sock"), ACC).unwrap();
            assert_eq!(h.endpoint, Endpoint::Unix("/tmp/a b/agent.sock".into()));
        }
    }

    #[test]
    fn other_loopbacks() {
        let h = Handshake::parse("2|dns:///[::1]:9", ACC).unwrap();
        assert_eq!(h.endpoint, tcp("[::1]:9"));
        let h = Handshake::parse("2|dns:///localhost:9", ACC).unwrap();
        assert_eq!(h.endpoint, tcp("127.0.0.1:9"));
        let h = Handshake::parse("2|dns:///127.1.2.3:9", ACC).unwrap();
        assert_eq!(h.endpoint, tcp("127.1.2.3:9"));
    }

    #[test]
    fn port_bounds() {
        assert!(Handshake::parse("1|1", ACC).is_ok());
        assert!(Handshake::parse("1|65535", ACC).is_ok());
        for bad in [
            "1|0",
            "1|65536",
            "1|99999999999",
            "2|dns:///127.0.0.1:0",
            "1|080",
        ] {
            assert_eq!(kind(bad), ErrorKind::HandshakeMalformed, "{bad}");
        }
    }

    #[test]
    fn one_trailing_cr_and_lf_are_trimmed() {
        assert!(Handshake::parse("1|80\r", ACC).is_ok());
        assert!(Handshake::parse("1|80\r\n", ACC).is_ok());
        assert!(Handshake::parse("1|80\n", ACC).is_ok());
        assert_eq!(kind("1|80\r\r"), ErrorKind::HandshakeMalformed);
        assert_eq!(kind("1|80\n\n"), ErrorKind::HandshakeMalformed);
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "garbage",
            "hello world",
            "|80",
            "1|",
            "1| 80",
            " 1|80",
            "1|80 ",
            "+1|80",
            "01|80",
            "x|80",
            "2|80",
            "1|80|extra",
            "2|dns:///127.0.0.1:80|x",
            "2|dns:///127.0.0.1:80 trailing",
            "2|dns:///127.0.0.1",
            "2|dns:///127.0.0.1:",
            "2|dns:///:80",
            "2|dns://127.0.0.1:80",
            "2|dns:127.0.0.1:80",
            "2|tcp://127.0.0.1:80",
            "2|127.0.0.1:80",
            "2|dns:///10.1.2.3:80",
            "2|dns:///0.0.0.0:80",
            "2|dns:///example.com:80",
            "2|dns:///[::]:80",
            "2|dns:///[::2]:80",
            "2|dns:///::1:80",
            "2|dns:///[0:0:0:0:0:0:0:1]:80",
            "2|dns:///127.000.0.1:80",
            "2|dns:///127.0.0.1:-1",
            "2|unix:rel.sock",
            "2|unix:",
            "2|unix:/",
            "2|unix:./a.sock",
            "2|unix:/tmp/a\0b",
            "2|unix:/tmp/a\tb",
            "2|UNIX:/tmp/a",
        ] {
            let err = Handshake::parse(bad, ACC).unwrap_err();
            assert_eq!(kind_of(&err), ErrorKind::HandshakeMalformed, "{bad:?}");
        }
    }

    #[test]
    fn long_unix_path_rejected() {
        let path = format!("/{}", "a".repeat(107));
        assert_eq!(
            kind(&format!("2|unix:{path}")),
            ErrorKind::HandshakeMalformed
        );
        let path = format!("/{}", "a".repeat(106));
        assert!(Handshake::parse(&format!("2|unix:{path}"), ACC).is_ok());
    }

    #[test]
    fn version_mismatch_names_accepted() {
        let err = Handshake::parse("9|dns:///127.0.0.1:1", ACC).unwrap_err();
        assert_eq!(kind_of(&err), ErrorKind::VersionMismatch);
        let msg = err.to_string();
        assert!(msg.contains('9') && msg.contains("1, 2"), "{msg}");
        // Checked before the address form.
        assert_eq!(kind("3|whatever"), ErrorKind::VersionMismatch);
        // A restricted set.
        let err = Handshake::parse("1|80", &[2]).unwrap_err();
        assert_eq!(kind_of(&err), ErrorKind::VersionMismatch);
    }

    #[test]
    fn malformed_quotes_the_line_truncated() {
        let err = Handshake::parse("hello world", ACC).unwrap_err();
        assert!(err.to_string().contains("hello world"), "{err}");
        let long = "y".repeat(3000);
        let err = Handshake::parse(&long, ACC).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&"y".repeat(200)) && !msg.contains(&"y".repeat(201)));
        assert!(msg.contains('…'));
    }

    #[test]
    fn overlong_rejected() {
        let line = format!("2|unix:/{}", "a".repeat(5000));
        assert_eq!(kind(&line), ErrorKind::HandshakeMalformed);
    }

    #[test]
    fn endpoint_display() {
        assert_eq!(tcp("127.0.0.1:80").to_string(), "127.0.0.1:80");
        assert_eq!(Endpoint::Unix("/a/b".into()).to_string(), "unix:/a/b");
    }

    #[test]
    fn display_forms() {
        assert_eq!(Handshake::v1_port(80).to_string(), "1|80");
        assert_eq!(
            Handshake::tcp(2, "127.0.0.1:80".parse().unwrap()).to_string(),
            "2|dns:///127.0.0.1:80"
        );
        assert_eq!(
            Handshake::tcp(1, "[::1]:80".parse().unwrap()).to_string(),
            "1|dns:///[::1]:80"
        );
        assert_eq!(
            Handshake::unix(2, "/a/b.sock").to_string(),
            "2|unix:/a/b.sock"
        );
        assert_eq!(
            Handshake::unix(1, "/a/b.sock").to_string(),
            "1|unix:/a/b.sock"
        );
        let h = Handshake::parse("1|dns:///127.0.0.1:80", ACC).unwrap();
        assert_eq!(h, Handshake::v1_port(80));
    }

    fn valid_line() -> impl Strategy<Value = String> {
        prop_oneof![
            (1u16..).prop_map(|p| format!("1|{p}")),
            (1u32..=2, 1u16.., any::<[u8; 3]>())
                .prop_map(|(v, p, [a, b, c])| format!("{v}|dns:///127.{a}.{b}.{c}:{p}")),
            (1u32..=2, 1u16..).prop_map(|(v, p)| format!("{v}|dns:///[::1]:{p}")),
            (1u32..=2, "(/[a-zA-Z0-9._ -]{1,20}){1,4}").prop_map(|(v, p)| format!("{v}|unix:{p}")),
        ]
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = Handshake::parse(&s, ACC);
        }

        #[test]
        fn never_panics_near_valid(s in "[12]\\|(dns:///|unix:)?[\\[\\]0-9a-f:./|\r\n ]{0,30}") {
            let _ = Handshake::parse(&s, ACC);
        }

        #[test]
        fn valid_forms_round_trip(line in valid_line(), cr in any::<bool>()) {
            let input = if cr { format!("{line}\r") } else { line.clone() };
            let h = Handshake::parse(&input, ACC).unwrap();
            let again = Handshake::parse(&h.to_line(), ACC).unwrap();
            prop_assert_eq!(&h, &again);
            prop_assert_eq!(h.to_line(), again.to_line());
        }
    }
}

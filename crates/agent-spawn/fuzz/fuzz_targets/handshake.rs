//! Fuzzes `Handshake::parse`: it never panics; every error is
//! `handshake-malformed` or `version-mismatch`; anything accepted has an
//! accepted version, a loopback TCP address or an absolute unix path, and its
//! canonical line (`to_line`) parses back to the same handshake.
#![no_main]

use agent_ref::ErrorKind;
use agent_spawn::{Endpoint, Handshake, MAX_HANDSHAKE_LEN, SpawnError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the accepted set, the rest is the line.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let accepted: &[u32] = match pick % 4 {
        0 => &[1, 2],
        1 => &[1],
        2 => &[2],
        _ => &[],
    };
    let Ok(line) = std::str::from_utf8(rest) else {
        return;
    };
    let h = match Handshake::parse(line, accepted) {
        Ok(h) => h,
        Err(e) => {
            assert!(
                matches!(
                    SpawnError::from(e.clone()).kind(),
                    ErrorKind::HandshakeMalformed | ErrorKind::VersionMismatch
                ),
                "{line:?}: {e}"
            );
            return;
        }
    };
    assert!(line.len() <= MAX_HANDSHAKE_LEN + 2, "{line:?}");
    assert!(accepted.contains(&h.version), "{line:?}");
    match &h.endpoint {
        Endpoint::Tcp(addr) => {
            assert!(addr.ip().is_loopback(), "{line:?} -> {addr}");
            assert_ne!(addr.port(), 0, "{line:?}");
        }
        Endpoint::Unix(path) => assert!(path.is_absolute(), "{line:?} -> {path:?}"),
    }
    let canonical = h.to_line();
    let again = Handshake::parse(&canonical, accepted)
        .unwrap_or_else(|e| panic!("{line:?} parsed, its canonical {canonical:?} did not: {e}"));
    assert_eq!(again, h, "{line:?} -> {canonical:?}");
    assert_eq!(again.to_line(), canonical);
});

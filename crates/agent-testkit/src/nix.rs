//! The configuration the real `nix` needs to build a test flake on a fresh
//! Debian machine (Debian's `nix-bin`, root, no daemon), and the system name a
//! generated flake must spell out.

use std::process::Command;
use std::sync::OnceLock;

/// Single-user builds without build users, sandbox or binary caches (nothing
/// may be fetched from the network; the flakes have no inputs, and without a
/// flake registry nix never tries to download one).
pub const NIX_CONFIG: &str = "build-users-group =\n\
sandbox = false\n\
substituters =\n\
flake-registry =\n\
warn-dirty = false\n";

/// `builtins.currentSystem` (not available in pure flake evaluation, so a
/// generated flake names it literally).
///
/// # Panics
/// When `nix` is not installed or cannot evaluate.
#[must_use]
pub fn system() -> &'static str {
    static SYSTEM: OnceLock<String> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let out = Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command flakes",
                "eval",
                "--impure",
                "--raw",
                "--expr",
                "builtins.currentSystem",
            ])
            .env("NIX_CONFIG", NIX_CONFIG)
            .output()
            .expect("nix must be installed (Debian: apt install nix-bin)");
        assert!(
            out.status.success(),
            "nix eval failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("a system name is UTF-8")
    })
}

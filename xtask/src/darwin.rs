//! `cargo xtask check-darwin [-p CRATE]...`: type-checks the workspace (every
//! crate and target by default) for `aarch64-apple-darwin` and
//! `x86_64-apple-darwin` on a Linux machine without an Apple SDK.
//!
//! How: Debian's `rustc-web`/`cargo-web`/`rust-web-src` (`/usr/bin/cargo`,
//! `/usr/bin/rustc`, the standard library's source) build `std` for the
//! target (`-Zbuild-std`, allowed by `RUSTC_BOOTSTRAP=1`); `ring`'s C and
//! assembly are compiled by `clang -ffreestanding -nostdlibinc` against the
//! few headers in `xtask/darwin-include/`. Nothing is linked, so no SDK is
//! needed. Its own target directory (`target/darwin`) keeps the host's
//! builds untouched.

use std::process::Command;

use anyhow::{Result, bail};

const TARGETS: [&str; 2] = ["aarch64-apple-darwin", "x86_64-apple-darwin"];

pub(crate) fn check_darwin(args: &[String]) -> Result<()> {
    for tool in ["/usr/bin/cargo", "/usr/bin/rustc", "/usr/bin/clang"] {
        if !std::path::Path::new(tool).exists() {
            bail!(
                "{tool} is missing: install Debian's rustc-web, cargo-web, rust-web-src and clang \
                 (`.ci/run` does)"
            );
        }
    }
    let root = crate::root();
    let include = root.join("xtask").join("darwin-include");
    let cflags = format!(
        "-ffreestanding -nostdlibinc -DRING_CORE_NOSTDLIBINC=1 -I{}",
        include.display()
    );
    let packages: Vec<&str> = if args.is_empty() {
        vec!["--workspace"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    for target in TARGETS {
        let mut c = Command::new("/usr/bin/cargo");
        c.current_dir(&root);
        // The outer cargo's (rustup's) toolchain must not leak in.
        for var in [
            "CARGO",
            "RUSTC",
            "RUSTDOC",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTUP_TOOLCHAIN",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            c.env_remove(var);
        }
        let env_target = target.replace('-', "_");
        c.env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", root.join("target").join("darwin"))
            .env(format!("CC_{env_target}"), "/usr/bin/clang")
            .env(format!("CFLAGS_{env_target}"), &cflags)
            // cc asks `xcrun` for an SDK unless one is named; nothing is linked.
            .env("SDKROOT", &include);
        c.args([
            "check",
            "-Zbuild-std=std,panic_abort",
            "--target",
            target,
            "--all-targets",
            // Every crate's errors in one run, not only the first one's.
            "--keep-going",
        ]);
        c.args(&packages);
        crate::run(&format!("check-darwin ({target})"), c)?;
    }
    Ok(())
}

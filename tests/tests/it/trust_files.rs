//! The files that define trust (`config.toml`, `agents.lock`) are refused
//! when another user could change them, as the cache refuses such binaries.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{Home, ctl_in, run};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A world-writable `config.toml` is `untrusted` naming `chmod go-w`, for
/// every command that reads it; `agentctl doctor` reports it with the fix.
/// One owned by another user is refused naming `chown`.
#[test]
fn a_config_file_others_can_write_is_refused_naming_the_fix() {
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    home.install_echo("0.1.0");
    let config = home.path().join("config.toml");
    std::fs::write(&config, "[stores]\nfallback = \"missing\"\n").unwrap();
    assert_eq!(ctl_in(&home, project.path(), &["load", "echo"]).code, 0);
    chmod(&config, 0o666);
    let r = ctl_in(&home, project.path(), &["load", "echo", "--json"]);
    r.assert_json_kind("untrusted");
    assert!(
        r.stderr
            .contains(&format!("chmod go-w {}", config.display())),
        "{}",
        r.stderr
    );
    let r = ctl_in(&home, project.path(), &["doctor"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stdout
            .contains(&format!("chmod go-w {}", config.display())),
        "{}",
        r.stdout
    );
    chmod(&config, 0o644);
    // A directory others can write (not sticky) is refused too.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("c.toml");
    std::fs::write(&elsewhere, "").unwrap();
    chmod(dir.path(), 0o777);
    let mut c = common::agentctl(&home);
    c.env("CODEFLY_CONFIG", &elsewhere)
        .current_dir(project.path())
        .args(["resolve", "echo"]);
    let r = run(c);
    r.assert_kind("untrusted");
    assert!(
        r.stderr
            .contains(&format!("chmod go-w {}", dir.path().display())),
        "{}",
        r.stderr
    );
    // Sticky (as /tmp): fine for what its owner put there.
    chmod(dir.path(), 0o1777);
    let mut c = common::agentctl(&home);
    c.env("CODEFLY_CONFIG", &elsewhere)
        .current_dir(project.path())
        .args(["resolve", "echo"]);
    assert_eq!(run(c).code, 0);
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(&config, Some(54321), None).unwrap();
        let r = ctl_in(&home, project.path(), &["resolve", "echo"]);
        r.assert_kind("untrusted");
        assert!(r.stderr.contains("chown"), "{}", r.stderr);
    }
}

/// A world-writable `agents.lock` is `untrusted`: nothing is loaded by it.
#[test]
fn a_lock_file_others_can_write_is_refused() {
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    home.install_echo("0.1.0");
    assert_eq!(ctl_in(&home, project.path(), &["lock", "echo"]).code, 0);
    let lockfile = project.path().join("agents.lock");
    chmod(&lockfile, 0o646);
    let r = ctl_in(&home, project.path(), &["--locked", "load", "echo"]);
    r.assert_kind("untrusted");
    assert!(
        r.stderr
            .contains(&format!("chmod go-w {}", lockfile.display())),
        "{}",
        r.stderr
    );
    let r = ctl_in(&home, project.path(), &["doctor"]);
    assert!(
        r.stdout
            .contains(&format!("chmod go-w {}", lockfile.display())),
        "{}",
        r.stdout
    );
    chmod(&lockfile, 0o644);
    assert_eq!(
        ctl_in(&home, project.path(), &["--locked", "load", "echo"]).code,
        0
    );
}

//! The home checked by the installer's permission rule, and the temp files
//! interrupted installs left.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, SystemTime};

use agent_store::{AgentHome, Cache, ErrorKind, check_home};

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_private_home_passes_and_a_missing_one_is_not_created() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("home");
    let report = check_home(&AgentHome::new(&root));
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.root_mode, None);
    assert!(!root.exists(), "a check creates nothing");
    std::fs::create_dir_all(root.join("agents/services")).unwrap();
    chmod(&root, 0o700);
    let report = check_home(&AgentHome::new(&root));
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.root_mode, Some(0o700));
}

#[test]
fn a_writable_cache_directory_is_untrusted_with_its_chmod() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("home");
    let services = root.join("agents/services");
    std::fs::create_dir_all(&services).unwrap();
    chmod(&root, 0o755);
    chmod(&services, 0o777);
    let report = check_home(&AgentHome::new(&root));
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let p = &report.problems[0];
    assert_eq!(p.kind, ErrorKind::Untrusted);
    assert_eq!(p.path, services);
    assert!(
        p.problem.contains("writable by everyone (mode 0777)"),
        "{}",
        p.problem
    );
    assert_eq!(p.fix, format!("chmod go-w {}", services.display()));
    chmod(&services, 0o775);
    let report = check_home(&AgentHome::new(&root));
    assert!(
        report.problems[0].problem.contains("writable by its group"),
        "{report:?}"
    );
    chmod(&services, 0o755);
    assert!(check_home(&AgentHome::new(&root)).problems.is_empty());
}

#[test]
fn a_symlinked_cache_directory_is_untrusted() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("home");
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir_all(root.join("agents")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    chmod(&root, 0o755);
    std::os::unix::fs::symlink(&elsewhere, root.join("agents/modules")).unwrap();
    let report = check_home(&AgentHome::new(&root));
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].kind, ErrorKind::Untrusted);
    assert!(report.problems[0].problem.ends_with("is a symlink"));
    assert!(
        report.problems[0]
            .fix
            .starts_with("replace it with a directory")
    );
}

#[test]
fn stale_temps_are_the_old_temp_files_only() {
    let t = tempfile::tempdir().unwrap();
    let home = AgentHome::new(t.path());
    let dir = home.agents_dir().join("services/acme");
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join(".echo__1.0.0.tmp.1.1");
    let old_record = dir.join(".echo__1.0.0.json.tmp.1.2");
    let fresh = dir.join(".echo__2.0.0.tmp.1.3");
    let old_binary = dir.join("echo__1.0.0");
    for p in [&old, &old_record, &fresh, &old_binary] {
        std::fs::write(p, b"x").unwrap();
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for p in [&old, &old_record, &old_binary] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let mut want = vec![old_record, old];
    want.sort();
    assert_eq!(Cache::new(home).stale_temps(), want);
}

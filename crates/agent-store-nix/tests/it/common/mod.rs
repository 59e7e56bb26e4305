//! A flake with no inputs, generated per test in a temp dir, and the
//! configuration a fresh Debian machine (Debian's `nix-bin`, root, no daemon)
//! needs to build it.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_ref::{AgentHome, AgentRef};
use agent_store::Installer;
use agent_store_nix::NixStore;

pub use agent_testkit::nix::{NIX_CONFIG, system};

/// A package: attribute name and the `/bin/sh -c` script that builds `$out`.
pub struct Package {
    pub attr: String,
    pub script: String,
}

impl Package {
    pub fn new(attr: &str, script: &str) -> Self {
        Package {
            attr: attr.to_owned(),
            script: script.to_owned(),
        }
    }

    /// `$out` is an executable shell script printing `{attr}`.
    pub fn file(attr: &str) -> Self {
        Package::new(
            attr,
            &format!("printf '#!/bin/sh\\necho {attr}\\n' > $out; chmod 755 $out"),
        )
    }
}

pub struct TestFlake {
    pub dir: tempfile::TempDir,
}

impl TestFlake {
    /// Writes `flake.nix` with `packages.{system}` = `packages`. Every
    /// derivation carries a per-flake nonce so each test really builds.
    pub fn new(packages: &[Package]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nix-store-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("flake")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let nonce = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let sys = system();
        let mut body = String::new();
        for (i, p) in packages.iter().enumerate() {
            assert!(!p.script.contains("''") && !p.script.contains("${"));
            body.push_str(&format!(
                "      \"{attr}\" = builtins.derivation {{\n\
                 \x20       name = \"pkg-{i}\";\n\
                 \x20       system = \"{sys}\";\n\
                 \x20       builder = \"/bin/sh\";\n\
                 \x20       PATH = \"/usr/local/bin:/usr/bin:/bin\";\n\
                 \x20       nonce = \"{nonce}\";\n\
                 \x20       args = [ \"-c\" ''{script}'' ];\n\
                 \x20     }};\n",
                attr = p.attr,
                script = p.script,
            ));
        }
        let flake = format!(
            "{{\n  description = \"agent-store-nix test flake\";\n  outputs = {{ self }}: {{\n    packages.\"{sys}\" = {{\n{body}    }};\n  }};\n}}\n"
        );
        std::fs::write(dir.path().join("flake/flake.nix"), flake).unwrap();
        TestFlake { dir }
    }

    pub fn flake_ref(&self) -> String {
        format!("path:{}", self.dir.path().join("flake").display())
    }

    pub fn store(&self) -> NixStore {
        NixStore::new(self.flake_ref())
            .with_nix_config(NIX_CONFIG)
            .with_timeout(Duration::from_secs(300))
    }

    pub fn home(&self) -> AgentHome {
        AgentHome::new(self.dir.path().join("home"))
    }

    pub fn installer(&self) -> Installer {
        Installer::new(self.home())
    }

    /// A scratch path outside the flake (the flake dir is copied into the
    /// store on every evaluation, so builders write elsewhere).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn gc_root(&self, agent: &AgentRef) -> PathBuf {
        NixStore::gc_root(&self.home(), agent).unwrap()
    }
}

pub fn agent(s: &str) -> AgentRef {
    s.parse().unwrap()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        !matches!(state, Some(Some('Z' | 'X')))
    })
}

pub fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

pub fn assert_nothing_cached(flake: &TestFlake, agent: &AgentRef) {
    let path = flake.home().binary_path(agent).unwrap();
    assert!(!path.exists(), "{} exists", path.display());
    let root = flake.gc_root(agent);
    assert!(
        std::fs::symlink_metadata(&root).is_err(),
        "GC root {} left behind",
        root.display()
    );
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

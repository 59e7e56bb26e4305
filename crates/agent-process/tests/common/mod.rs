//! What this crate's test binaries share.

use std::path::Path;

use agent_process::Exec;

/// `program args…`, with a plain `PATH` and nothing else.
pub(crate) fn exec(program: &Path, args: &[&str]) -> Exec {
    Exec {
        program: program.to_path_buf(),
        args: args.iter().map(Into::into).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: None,
        keep_fd: None,
        program_fd: None,
        child_setup: None,
    }
}

/// `/bin/sh -c script`.
#[allow(dead_code)] // not every test binary runs a script
pub(crate) fn sh(script: &str) -> Exec {
    exec(Path::new("/bin/sh"), &["-c", script])
}

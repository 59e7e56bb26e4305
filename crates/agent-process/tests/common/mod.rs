//! What the process-wide test binaries of this crate share.

use std::path::Path;

use agent_process::Exec;

/// `/bin/sh -c script`, with a plain `PATH` and nothing else.
pub(crate) fn sh(script: &str) -> Exec {
    Exec {
        program: Path::new("/bin/sh").to_path_buf(),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: None,
        keep_fd: None,
        program_fd: None,
        child_setup: None,
    }
}

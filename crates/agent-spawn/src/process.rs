//! The adapter to [`agent_process::spawn`], which starts agents (one
//! long-lived spawner thread, only the descriptors named, the platform's
//! backend): an async front end and the host's lifeline.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub(crate) use agent_process::Spawned;
use tokio::sync::oneshot;

/// Everything the child needs. Converts into [`agent_process::Exec`]; either
/// can be passed to [`spawn_in_group`].
pub(crate) struct Exec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<PathBuf>,
    /// A descriptor to keep open across exec (the lifeline's read end).
    pub(crate) keep_fd: Option<RawFd>,
    /// The checked file: executed instead of `program` when set.
    pub(crate) program_fd: Option<OwnedFd>,
    /// Run in the child before exec (the sandbox).
    pub(crate) child_setup: Option<Arc<dyn agent_process::ChildSetup>>,
}

impl From<Exec> for agent_process::Exec {
    fn from(e: Exec) -> Self {
        agent_process::Exec {
            program: e.program,
            args: e.args,
            env: e.env,
            cwd: e.cwd,
            keep_fd: e.keep_fd,
            program_fd: e.program_fd,
            child_setup: e.child_setup,
        }
    }
}

/// Spawns `exec` in its own process group with every descriptor but 0, 1, 2
/// and `keep_fd` closed on exec (see [`agent_process::spawn`]). If the caller
/// stops waiting, the process is killed.
pub(crate) async fn spawn_in_group(exec: impl Into<agent_process::Exec>) -> io::Result<Spawned> {
    let (reply, answer) = oneshot::channel();
    agent_process::spawn_in_group(exec.into(), move |result| {
        if let Err(Ok(spawned)) = reply.send(result) {
            // The caller gave up (its future was dropped): leave nothing behind.
            spawned.process.kill();
        }
    })?;
    answer
        .await
        .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
}

/// The host's lifeline: a pipe whose write end only this process holds
/// (close-on-exec, never given to anyone). Agents get the read end; EOF on it
/// means the host is gone. One pipe serves every agent of the host.
pub(crate) fn lifeline_read_end() -> io::Result<RawFd> {
    static LIFELINE: OnceLock<io::Result<(OwnedFd, OwnedFd)>> = OnceLock::new();
    LIFELINE
        .get_or_init(agent_process::spawn::pipe_cloexec)
        .as_ref()
        .map(|(read, _write)| read.as_raw_fd())
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

//! Confinement of one agent process: the sandbox of [`SpawnOptions::sandbox`](crate::SpawnOptions::sandbox),
//! prepared in the host before every start and applied in the child between fork and exec.

use std::path::Path;
use std::sync::Arc;

use agent_ref::ErrorKind;
use agent_sandbox::{PreparedSandbox, Sandbox, SandboxContext};

use crate::error::{SpawnError, SpawnFailure};

/// What a start needs of its sandbox.
pub(crate) struct Confined {
    /// Held until the agent is reaped: dropping it removes the private `TMPDIR`.
    pub(crate) prepared: Arc<PreparedSandbox>,
}

/// The paths one start is confined around.
pub(crate) struct Paths<'a> {
    pub(crate) program: &'a Path,
    pub(crate) workdir: Option<&'a Path>,
    pub(crate) socket_dir: Option<&'a Path>,
    pub(crate) home: Option<&'a Path>,
}

/// Prepares `sandbox` for one start; `None` when unconfined. A policy this
/// machine (or this process backend) cannot enforce is `admission`, before
/// anything starts.
pub(crate) fn prepare(
    sandbox: &Sandbox,
    paths: &Paths<'_>,
) -> Result<Option<Confined>, SpawnError> {
    if sandbox.policy_ref().is_none() {
        return Ok(None);
    }
    let mut ctx = match paths.workdir {
        Some(w) => SandboxContext::new(paths.program, w),
        None => SandboxContext::without_workdir(paths.program),
    };
    if let Some(d) = paths.socket_dir {
        ctx = ctx.socket_dir(d);
    }
    if let Some(h) = paths.home {
        ctx = ctx.home(h);
    }
    let prepared = sandbox
        .prepare(&ctx)
        .map_err(|source| SpawnFailure::Sandbox {
            program: paths.program.to_owned(),
            source,
        })?;
    if prepared.exec_wrapper().is_none() && agent_process::backend() != "pidfd" {
        return Err(SpawnError::refused(
            ErrorKind::Admission,
            format!(
                "cannot confine {}: the sandbox is applied between fork and exec, which the {} process backend cannot do (posix_spawn has no such step); fix: build for Linux without --cfg agent_portable, or load with Sandbox::unconfined() to run it unconfined deliberately",
                paths.program.display(),
                agent_process::backend()
            ),
            None,
        ));
    }
    Ok(Some(Confined {
        prepared: Arc::new(prepared),
    }))
}

/// The child-setup hook that confines the child (pidfd backend).
pub(crate) struct ConfineChild(pub(crate) Arc<PreparedSandbox>);

impl agent_process::ChildSetup for ConfineChild {
    #[allow(unsafe_code)]
    unsafe fn apply(&self) -> Result<(), i32> {
        // SAFETY: `ChildSetup::apply`'s contract is `apply_in_child`'s (a fresh
        // vforked child that execs or exits), and each start prepares its own sandbox.
        unsafe { self.0.apply_in_child() }
    }
}

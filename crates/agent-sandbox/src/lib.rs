//! Confinement of an agent process: it gets the files and network its policy grants,
//! and nothing else.
//!
//! A [`Sandbox`] is either [`Sandbox::unconfined()`], the explicit opt-out, or
//! [`Sandbox::policy`] with a [`SandboxPolicy`] (the `[publishers."…".sandbox]` table of
//! the config; [`SandboxPolicyPatch::merge`] layers a publisher's table over `"*"`).
//! [`Sandbox::prepare`] checks that this machine can enforce it ([`probe`], [`Support`]),
//! creates the agent's private `TMPDIR`, and builds everything the child needs; the
//! process layer then holds the [`PreparedSandbox`] until exec and calls
//! [`PreparedSandbox::apply_in_child`] between fork (or `CLONE_VM|CLONE_VFORK`) and exec.
//!
//! Always granted: executing the agent's binary; reading the system runtime (`/usr`,
//! `/lib*`, `/bin`, `/sbin`, `/etc`, `/dev/{null,zero,urandom}`, the agent's own
//! `/proc/self`); read-write of its work dir, its unix-socket directory and its private
//! `TMPDIR` (0700, removed when the [`PreparedSandbox`] is dropped). Nothing else of
//! `$HOME`. Every descendant of the agent is under the same policy. (The `/proc/self`
//! grant is the agent's own process directory: a descendant's `/proc/self` is another
//! directory and is not readable by it.)
//!
//! # What gives which guarantee
//!
//! | platform | files | `network = "none"` | missing mechanism |
//! |---|---|---|---|
//! | Linux ≥ 5.13 (Landlock ABI ≥ 1) | Landlock: reads, writes and executes outside the grants fail with `EACCES` | a new user + network namespace: no interface but a down loopback, so TCP and UDP to anything, the host's loopback included, fail (`ENETUNREACH`); abstract unix sockets are per namespace | no Landlock, or user namespaces off (`kernel.unprivileged_userns_clone=0`, `user.max_user_namespaces=0`, an LSM refusing them): `admission`, never silently unconfined |
//! | Linux, Landlock ABI ≥ 6 | also: no signals to, and no abstract unix sockets of, processes outside the sandbox | | |
//! | macOS | a generated `sandbox-exec` profile: deny by default, reads of the system runtime, nothing under `$HOME` but the grants, writes only to the grants | `(deny network*)` except the agent's unix-socket directory | no `/usr/bin/sandbox-exec`: `admission` |
//! | other | — | — | `admission` |
//!
//! Other processes' `/proc/<pid>/environ` (where the host's secrets are) is out of reach
//! because `/proc` is not granted beyond the agent's own directory, and a policy that
//! grants `/`, `/proc` or a process directory under it is refused (`config`). Landlock's
//! ptrace scoping alone would not do: it stops an agent without capabilities, but one
//! holding `CAP_SYS_ADMIN` or `CAP_PERFMON` in the host's user namespace (root with
//! `network = "any"`) may still read another process's `environ` through a `/proc` grant.
//! With `network = "none"` the agent's capabilities live in its own user namespace only.
//!
//! **Note for the host:** with `network = "none"` the agent lives in an empty network
//! namespace, so the host must reach it over its unix socket
//! ([`PreparedSandbox::needs_unix_socket`]): a spawn forces unix-socket mode.
//!
//! The macOS profile is generated and unit-tested everywhere ([`sbpl::profile`]) but only
//! type-checked for darwin here; running it needs a Mac.
//!
//! # Example
//! ```
//! use agent_sandbox::{Network, Sandbox, SandboxPolicyPatch, Support};
//!
//! let star: SandboxPolicyPatch = toml::from_str(r#"read = ["/opt/models"]"#).unwrap();
//! let acme: SandboxPolicyPatch = toml::from_str(r#"network = "any""#).unwrap();
//! let policy = star.merge(&acme).into_policy();
//! assert_eq!(policy.network, Network::Any);
//!
//! // A machine without Landlock refuses the policy instead of running unconfined.
//! let old_kernel = Support::new("linux", None, true, false);
//! let err = old_kernel.admit(&policy).unwrap_err();
//! assert_eq!(err.kind(), agent_ref::ErrorKind::Admission);
//! assert!(Sandbox::unconfined().policy_ref().is_none());
//! ```

mod error;
#[cfg(target_os = "linux")]
mod linux;
mod policy;
pub mod sbpl;
mod support;

use std::path::{Path, PathBuf};

pub use error::SandboxError;
pub use policy::{
    ExpandedPolicy, Network, PathVars, SandboxPolicy, SandboxPolicyPatch, expand_path,
};
pub use support::{Support, probe};

/// How an agent is confined: an explicit choice, never a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// No confinement, chosen deliberately.
    Unconfined,
    /// Confined to this policy.
    Policy(SandboxPolicy),
}

impl Sandbox {
    /// The explicit opt-out: the agent runs with all of its user's authority.
    #[must_use]
    pub fn unconfined() -> Self {
        Sandbox::Unconfined
    }

    /// Confinement to `policy`.
    #[must_use]
    pub fn policy(policy: SandboxPolicy) -> Self {
        Sandbox::Policy(policy)
    }

    /// The policy, or `None` when unconfined.
    #[must_use]
    pub fn policy_ref(&self) -> Option<&SandboxPolicy> {
        match self {
            Sandbox::Unconfined => None,
            Sandbox::Policy(p) => Some(p),
        }
    }

    /// Prepares the confinement of one agent process on this machine ([`probe`]).
    pub fn prepare(&self, ctx: &SandboxContext) -> Result<PreparedSandbox, SandboxError> {
        self.prepare_with(ctx, &probe())
    }

    /// [`prepare`](Self::prepare) against a given [`Support`]: a policy it cannot enforce
    /// is `admission`.
    pub fn prepare_with(
        &self,
        ctx: &SandboxContext,
        support: &Support,
    ) -> Result<PreparedSandbox, SandboxError> {
        let Sandbox::Policy(policy) = self else {
            return Ok(PreparedSandbox {
                tmpdir: None,
                network: None,
                #[cfg(target_os = "linux")]
                linux: None,
                #[cfg(target_os = "macos")]
                profile: None,
            });
        };
        support.admit(policy)?;
        let abs = |what: &'static str, p: &Path| {
            std::path::absolute(p).map_err(|source| SandboxError::Io {
                what,
                path: Some(p.to_owned()),
                source,
            })
        };
        let binary = abs("resolving the agent binary", &ctx.binary)?;
        let workdir = ctx
            .workdir
            .as_deref()
            .map(|w| abs("resolving the work directory", w))
            .transpose()?;
        let socket_dir = ctx
            .socket_dir
            .as_deref()
            .map(|d| abs("resolving the socket directory", d))
            .transpose()?;
        let base = ctx.temp_base.clone().unwrap_or_else(std::env::temp_dir);
        let mut builder = tempfile::Builder::new();
        builder.prefix("agent-sandbox-");
        #[cfg(unix)]
        builder.permissions(private_dir());
        let tmpdir = builder
            .tempdir_in(&base)
            .map_err(|source| SandboxError::Io {
                what: "creating the private TMPDIR in",
                path: Some(base.clone()),
                source,
            })?;
        let home = ctx
            .home
            .clone()
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
        // Without a work directory of its own the agent works in its private TMPDIR.
        let workdir = workdir.unwrap_or_else(|| tmpdir.path().to_owned());
        let expanded = policy.expand(&PathVars {
            home: home.as_deref(),
            workdir: &workdir,
            tmpdir: tmpdir.path(),
        })?;
        expanded.refuse_process_grants()?;
        let mut rw = vec![workdir.clone(), tmpdir.path().to_owned()];
        rw.extend(socket_dir.clone());
        rw.extend(expanded.write.iter().cloned());
        #[cfg(target_os = "linux")]
        let linux = Some(linux::Confinement::prepare(
            support.landlock_abi.unwrap_or(0),
            &linux::Grants {
                binary: &binary,
                rw,
                read: &expanded.read,
                network: expanded.network,
            },
        )?);
        #[cfg(target_os = "macos")]
        let profile = Some(sbpl::profile(&sbpl::ProfileInput {
            binary: &binary,
            workdir: &workdir,
            socket_dir: socket_dir.as_deref(),
            tmpdir: tmpdir.path(),
            home: home.as_deref(),
            read: &expanded.read,
            write: &expanded.write,
            network: expanded.network,
        }));
        #[cfg(not(target_os = "linux"))]
        let _ = rw;
        tracing::debug!(
            binary = %binary.display(),
            network = ?expanded.network,
            tmpdir = %tmpdir.path().display(),
            "sandbox prepared"
        );
        Ok(PreparedSandbox {
            tmpdir: Some(tmpdir),
            network: Some(expanded.network),
            #[cfg(target_os = "linux")]
            linux,
            #[cfg(target_os = "macos")]
            profile,
        })
    }
}

#[cfg(unix)]
fn private_dir() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::Permissions::from_mode(0o700)
}

/// The paths of one agent process that its confinement is built around.
#[derive(Debug, Clone)]
pub struct SandboxContext {
    binary: PathBuf,
    workdir: Option<PathBuf>,
    socket_dir: Option<PathBuf>,
    home: Option<PathBuf>,
    temp_base: Option<PathBuf>,
}

impl SandboxContext {
    /// The agent's binary (executable) and its work directory (read-write, `${WORKDIR}`).
    #[must_use]
    pub fn new(binary: impl Into<PathBuf>, workdir: impl Into<PathBuf>) -> Self {
        SandboxContext {
            binary: binary.into(),
            workdir: Some(workdir.into()),
            socket_dir: None,
            home: None,
            temp_base: None,
        }
    }

    /// The agent's binary, for an agent without a work directory: `${WORKDIR}` then
    /// names its private `TMPDIR`, where it should also be started.
    #[must_use]
    pub fn without_workdir(binary: impl Into<PathBuf>) -> Self {
        SandboxContext {
            binary: binary.into(),
            workdir: None,
            socket_dir: None,
            home: None,
            temp_base: None,
        }
    }

    /// The directory of the agent's unix socket (read-write).
    #[must_use]
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    /// `${HOME}`; defaults to the `HOME` variable.
    #[must_use]
    pub fn home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// Where the private `TMPDIR` is created; defaults to the system temp directory.
    #[must_use]
    pub fn temp_base(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_base = Some(dir.into());
        self
    }
}

/// A sandbox ready for one agent process: hold it until the agent is done (dropping it
/// removes the private `TMPDIR`).
#[derive(Debug)]
pub struct PreparedSandbox {
    tmpdir: Option<tempfile::TempDir>,
    network: Option<Network>,
    #[cfg(target_os = "linux")]
    linux: Option<linux::Confinement>,
    #[cfg(target_os = "macos")]
    profile: Option<String>,
}

impl PreparedSandbox {
    /// The private temp directory to pass as `TMPDIR`; `None` when unconfined.
    #[must_use]
    pub fn tmpdir(&self) -> Option<&Path> {
        self.tmpdir.as_ref().map(tempfile::TempDir::path)
    }

    /// Whether the agent is confined at all.
    #[must_use]
    pub fn is_confined(&self) -> bool {
        self.network.is_some()
    }

    /// True when the agent will have no network: the host must talk to it over its
    /// unix socket.
    #[must_use]
    pub fn needs_unix_socket(&self) -> bool {
        self.network == Some(Network::None)
    }

    /// On macOS, the program and leading arguments to run the agent under
    /// (`sandbox-exec -p PROFILE`); the agent's own argv follows. `None` elsewhere.
    #[must_use]
    pub fn exec_wrapper(&self) -> Option<(&'static str, Vec<String>)> {
        #[cfg(target_os = "macos")]
        {
            self.profile
                .as_ref()
                .map(|p| (sbpl::SANDBOX_EXEC, vec!["-p".to_owned(), p.clone()]))
        }
        #[cfg(not(target_os = "macos"))]
        {
            None
        }
    }

    /// Confines the calling process; call it in the child between fork and exec.
    ///
    /// Makes only async-signal-safe raw system calls (no allocation, no lock, no std I/O),
    /// so it is sound in a `CLONE_VM|CLONE_VFORK` child: with `network = "none"`,
    /// `unshare(CLONE_NEWUSER|CLONE_NEWNET)` and the uid/gid maps; a Landlock rule for the
    /// child's own `/proc/self`; `PR_SET_NO_NEW_PRIVS`; `landlock_restrict_self`. Returns
    /// the errno of the first call that failed; the child must then `_exit` without
    /// exec. Does nothing when unconfined, and nothing on macOS (see
    /// [`exec_wrapper`](Self::exec_wrapper)).
    ///
    /// # Safety
    /// Call only in a freshly forked or vforked child that will exec or `_exit`, and with
    /// one `PreparedSandbox` per agent process (the child's `/proc/self` rule is added to
    /// the ruleset it shares with the parent).
    #[allow(unsafe_code)]
    pub unsafe fn apply_in_child(&self) -> Result<(), i32> {
        #[cfg(target_os = "linux")]
        if let Some(c) = &self.linux {
            // SAFETY: forwarded from the caller's contract.
            return unsafe { c.apply() };
        }
        Ok(())
    }
}

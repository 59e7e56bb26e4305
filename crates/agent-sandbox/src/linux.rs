//! Landlock and a user+network namespace, prepared in the parent and applied in the child.

// The child side must be raw system calls (no allocation between fork and exec), so this
// module is where the crate's unsafe code lives.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, path_beneath_rules,
};

use crate::{Network, SandboxError};

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
const LANDLOCK_ACCESS_FS_READ_FILE: u64 = 1 << 2;
const LANDLOCK_ACCESS_FS_READ_DIR: u64 = 1 << 3;

/// The kernel's `struct landlock_path_beneath_attr`, which is packed.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version, or `None` where the kernel has no Landlock or it is disabled.
pub(crate) fn landlock_abi() -> Option<u32> {
    // SAFETY: the documented version query: no pointer is read, nothing is created.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno; async-signal-safe.
    unsafe { *libc::__errno_location() }
}

/// Writes all of `data` with one `write(2)`, as `/proc/self/{uid,gid}_map` require.
///
/// # Safety
/// Raw system calls only; callable between fork and exec.
unsafe fn write_once(path: &CStr, data: &[u8]) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated, `data` is a valid slice.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let e = errno();
        libc::close(fd);
        if n < 0 {
            return Err(e);
        }
        if n.cast_unsigned() != data.len() {
            return Err(libc::EIO);
        }
    }
    Ok(())
}

/// Enters a new user and network namespace, mapping our own uid and gid.
///
/// # Safety
/// Raw system calls only; callable between fork and exec.
unsafe fn enter_namespaces(uid_map: &[u8], gid_map: &[u8]) -> Result<(), i32> {
    // SAFETY: raw calls on NUL-terminated literals and prepared buffers.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
            return Err(errno());
        }
        write_once(c"/proc/self/setgroups", b"deny")?;
        write_once(c"/proc/self/uid_map", uid_map)?;
        write_once(c"/proc/self/gid_map", gid_map)
    }
}

fn id_map(id: u32) -> Vec<u8> {
    format!("{id} {id} 1\n").into_bytes()
}

/// Whether this process can create a user and network namespace: the sysctls that turn
/// them off, then a real attempt in a forked child (the only answer that also covers
/// LSM policies such as AppArmor's).
pub(crate) fn probe_user_namespaces() -> (bool, Option<String>) {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return (false, Some("sysctl user.max_user_namespaces = 0".into()));
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid != 0 && read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return (
            false,
            Some("sysctl kernel.unprivileged_userns_clone = 0".into()),
        );
    }
    let (um, gm) = (id_map(uid), id_map(gid));
    // SAFETY: the child makes only raw system calls on buffers prepared before the fork,
    // then `_exit`s; the parent reaps it.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return (false, Some(format!("fork failed: errno {}", errno())));
        }
        if pid == 0 {
            let code = match enter_namespaces(&um, &gm) {
                Ok(()) => 0,
                Err(e) => e.clamp(1, 255),
            };
            libc::_exit(code);
        }
        let mut status = 0;
        while libc::waitpid(pid, &raw mut status, 0) < 0 {
            if errno() != libc::EINTR {
                return (false, Some("waitpid failed".into()));
            }
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            (true, None)
        } else if libc::WIFEXITED(status) {
            let e = std::io::Error::from_raw_os_error(libc::WEXITSTATUS(status));
            (
                false,
                Some(format!("creating a user namespace failed: {e}")),
            )
        } else {
            (false, Some("the probe child was killed".into()))
        }
    }
}

/// Everything the child needs, made in the parent.
#[derive(Debug)]
pub(crate) struct Confinement {
    ruleset: OwnedFd,
    namespaces: bool,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

/// The paths of the confinement, expanded and absolute.
pub(crate) struct Grants<'a> {
    pub(crate) binary: &'a Path,
    pub(crate) rw: Vec<PathBuf>,
    pub(crate) read: &'a [PathBuf],
    pub(crate) network: Network,
}

fn ll_err(e: impl std::error::Error + Send + Sync + 'static) -> SandboxError {
    SandboxError::Io {
        what: "building the Landlock ruleset",
        path: None,
        source: std::io::Error::other(e),
    }
}

/// Directories a dynamically linked binary and its loader read and execute from.
const SYSTEM_EXEC: &[&str] = &[
    "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin",
];

impl Confinement {
    pub(crate) fn prepare(abi: u32, g: &Grants<'_>) -> Result<Confinement, SandboxError> {
        let abi = ABI::from(i32::try_from(abi).unwrap_or(i32::MAX));
        let read = AccessFs::ReadFile | AccessFs::ReadDir;
        let mut ruleset = Ruleset::default()
            // Every right we ask for must be enforced, or preparing fails.
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .map_err(ll_err)?;
        if abi >= ABI::V6 {
            // Signals and abstract unix sockets may not cross out of the sandbox.
            ruleset = ruleset.scope(Scope::from_all(abi)).map_err(ll_err)?;
        }
        let mut created = ruleset.create().map_err(ll_err)?;
        created = created
            .add_rules(path_beneath_rules(SYSTEM_EXEC, read | AccessFs::Execute))
            .map_err(ll_err)?
            .add_rules(path_beneath_rules(
                [g.binary],
                AccessFs::ReadFile | AccessFs::Execute,
            ))
            .map_err(ll_err)?
            .add_rules(path_beneath_rules(
                ["/etc", "/dev/zero", "/dev/urandom"],
                read,
            ))
            .map_err(ll_err)?
            .add_rules(path_beneath_rules(
                ["/dev/null"],
                AccessFs::ReadFile | AccessFs::WriteFile,
            ))
            .map_err(ll_err)?;
        for p in g.read.iter().chain(&g.rw) {
            if !p.exists() {
                tracing::warn!(path = %p.display(), "sandbox grant does not exist; it grants nothing");
            }
        }
        created = created
            .add_rules(path_beneath_rules(g.read, read))
            .map_err(ll_err)?
            .add_rules(path_beneath_rules(&g.rw, AccessFs::from_all(abi)))
            .map_err(ll_err)?;
        let ruleset: Option<OwnedFd> = created.into();
        let ruleset = ruleset.ok_or_else(|| SandboxError::Admission {
            missing: "the kernel did not create a Landlock ruleset".into(),
            fix: "enable Landlock, or load with Sandbox::unconfined()".into(),
        })?;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Confinement {
            ruleset,
            namespaces: g.network == Network::None,
            uid_map: id_map(uid),
            gid_map: id_map(gid),
        })
    }

    /// # Safety
    /// See [`crate::PreparedSandbox::apply_in_child`].
    pub(crate) unsafe fn apply(&self) -> Result<(), i32> {
        let ruleset = self.ruleset.as_raw_fd();
        // SAFETY: raw system calls on prepared buffers, NUL-terminated literals and a
        // stack value; no allocation, no lock.
        unsafe {
            if self.namespaces {
                enter_namespaces(&self.uid_map, &self.gid_map)?;
            }
            // `/proc/self` in the parent names the parent: the grant for the child's own
            // directory can only be made here, before the ruleset is sealed.
            let proc_self = libc::open(
                c"/proc/self".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if proc_self < 0 {
                return Err(errno());
            }
            let attr = PathBeneathAttr {
                allowed_access: LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR,
                parent_fd: proc_self,
            };
            let r = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                &raw const attr,
                0u32,
            );
            let e = errno();
            libc::close(proc_self);
            if r != 0 {
                return Err(e);
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(errno());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) != 0 {
                return Err(errno());
            }
        }
        Ok(())
    }
}

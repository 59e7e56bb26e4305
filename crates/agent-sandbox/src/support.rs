use std::sync::OnceLock;

use crate::{Network, SandboxError, SandboxPolicy};

/// What this machine can enforce, as found by [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Support {
    /// The operating system (`std::env::consts::OS`).
    pub os: &'static str,
    /// The Landlock ABI version the kernel offers; `None` where it has none (or not Linux).
    pub landlock_abi: Option<u32>,
    /// Whether this process may create a user and network namespace (tried for real).
    pub user_namespaces: bool,
    /// Why user namespaces are unavailable, when they are: the sysctl or the error seen.
    pub user_namespaces_detail: Option<String>,
    /// Whether `/usr/bin/sandbox-exec` exists (macOS).
    pub sandbox_exec: bool,
}

impl Support {
    /// A value for tests and for `agentctl doctor` to describe another machine.
    #[must_use]
    pub fn new(
        os: &'static str,
        landlock_abi: Option<u32>,
        user_namespaces: bool,
        sandbox_exec: bool,
    ) -> Self {
        Support {
            os,
            landlock_abi,
            user_namespaces,
            user_namespaces_detail: None,
            sandbox_exec,
        }
    }

    /// `Ok` when `policy` can be enforced here; otherwise `admission`, naming what is
    /// missing and the fix. Never a silent downgrade to unconfined.
    pub fn admit(&self, policy: &SandboxPolicy) -> Result<(), SandboxError> {
        let optout = "or load it with Sandbox::unconfined() to run it unconfined deliberately";
        match self.os {
            "linux" => {
                if self.landlock_abi.is_none() {
                    return Err(SandboxError::Admission {
                        missing:
                            "Landlock (filesystem confinement) is not available in this kernel"
                                .into(),
                        fix: format!(
                            "run Linux ≥ 5.13 built with CONFIG_SECURITY_LANDLOCK=y and `landlock` in the `lsm=` boot parameter, {optout}"
                        ),
                    });
                }
                if policy.network == Network::None && !self.user_namespaces {
                    let why = self
                        .user_namespaces_detail
                        .as_deref()
                        .unwrap_or("user namespaces are disabled");
                    return Err(SandboxError::Admission {
                        missing: format!(
                            "network = \"none\" needs a new user and network namespace, and this process cannot create one ({why})"
                        ),
                        fix: format!(
                            "enable unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`, `sysctl user.max_user_namespaces=15000`, or on Ubuntu `sysctl kernel.apparmor_restrict_unprivileged_userns=0`), or set network = \"any\" in the policy, {optout}"
                        ),
                    });
                }
                Ok(())
            }
            "macos" if self.sandbox_exec => Ok(()),
            "macos" => Err(SandboxError::Admission {
                missing: "/usr/bin/sandbox-exec is missing".into(),
                fix: format!("restore the system's sandbox-exec, {optout}"),
            }),
            other => Err(SandboxError::Admission {
                missing: format!("no sandbox mechanism is implemented on {other}"),
                fix: optout.trim_start_matches("or ").to_owned(),
            }),
        }
    }
}

/// What this machine can enforce. Probed once per process (the user-namespace check forks
/// a short-lived child); later calls return the same answer.
#[must_use]
pub fn probe() -> Support {
    static CACHE: OnceLock<Support> = OnceLock::new();
    CACHE.get_or_init(probe_now).clone()
}

#[cfg(target_os = "linux")]
fn probe_now() -> Support {
    let (user_namespaces, user_namespaces_detail) = crate::linux::probe_user_namespaces();
    Support {
        os: std::env::consts::OS,
        landlock_abi: crate::linux::landlock_abi(),
        user_namespaces,
        user_namespaces_detail,
        sandbox_exec: false,
    }
}

#[cfg(not(target_os = "linux"))]
fn probe_now() -> Support {
    Support {
        os: std::env::consts::OS,
        landlock_abi: None,
        user_namespaces: false,
        user_namespaces_detail: None,
        sandbox_exec: std::path::Path::new(crate::sbpl::SANDBOX_EXEC).exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_landlock_is_admission_with_the_fix() {
        let s = Support::new("linux", None, true, false);
        let e = s.admit(&SandboxPolicy::default()).unwrap_err();
        assert_eq!(e.kind(), agent_ref::ErrorKind::Admission);
        let m = e.to_string();
        assert!(
            m.contains("Landlock") && m.contains("5.13") && m.contains("unconfined()"),
            "{m}"
        );
    }

    #[test]
    fn network_none_without_user_namespaces_is_admission_any_is_fine() {
        let s = Support::new("linux", Some(7), false, false);
        let e = s.admit(&SandboxPolicy::default()).unwrap_err();
        assert_eq!(e.kind(), agent_ref::ErrorKind::Admission);
        assert!(e.to_string().contains("unprivileged_userns_clone"), "{e}");
        let any = SandboxPolicy {
            network: Network::Any,
            ..SandboxPolicy::default()
        };
        s.admit(&any).unwrap();
    }

    #[test]
    fn other_systems_are_admission() {
        let e = Support::new("freebsd", None, false, false)
            .admit(&SandboxPolicy::default())
            .unwrap_err();
        assert_eq!(e.kind(), agent_ref::ErrorKind::Admission);
        Support::new("macos", None, false, true)
            .admit(&SandboxPolicy::default())
            .unwrap();
    }
}

//! The environment an agent starts with.

use std::ffi::{OsStr, OsString};

use agent_protocol::{
    HOST_SECRET_ENV, INSECURE_ENV, LIFELINE_ENV, TOKEN_ENV, UDS_PATH_ENV, WORKDIR_ENV, env_allowed,
};

use crate::SpawnOptions;

/// The variables the host controls: never inherited, never taken from `env`.
pub(crate) const HOST_SET: &[&str] = &[
    TOKEN_ENV,
    WORKDIR_ENV,
    UDS_PATH_ENV,
    LIFELINE_ENV,
    INSECURE_ENV,
];

/// The agent's environment by the rules of [`SpawnOptions`], before the
/// variables the host sets.
pub(crate) fn build_env(opts: &SpawnOptions) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = match &opts.env_allowlist {
        Some(extra) => std::env::vars_os()
            .filter(|(name, _)| {
                name.to_str().is_some_and(|n| env_allowed(n, extra))
                    && !opts.env_remove.iter().any(|r| r == name)
            })
            .collect(),
        None => std::env::vars_os()
            .filter(|(name, _)| {
                !HOST_SECRET_ENV.iter().any(|s| OsStr::new(s) == name)
                    && !opts.env_remove.iter().any(|r| r == name)
            })
            .collect(),
    };
    env.retain(|(name, _)| !HOST_SET.iter().any(|h| OsStr::new(h) == name));
    for (name, value) in &opts.env {
        if !HOST_SET.iter().any(|h| OsStr::new(h) == name) {
            set_env(&mut env, name.clone(), value.clone());
        }
    }
    env
}

pub(crate) fn set_env(env: &mut Vec<(OsString, OsString)>, name: OsString, value: OsString) {
    if let Some(slot) = env.iter_mut().find(|(n, _)| *n == name) {
        slot.1 = value;
    } else {
        env.push((name, value));
    }
}

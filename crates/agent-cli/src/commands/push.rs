//! `agentctl push REF FILE…`: publish to an OCI registry, as `oras push`
//! would, optionally signed (the signing half of `--sign`: minisign through
//! `agent_store::trust`, so the reference `minisign` tool verifies it).

use std::path::{Path, PathBuf};

use agent_manager::ErrorKind;
use agent_manager::reference::{AgentRef, Platform};
use agent_manager::store::trust;
use clap::Args;
use serde_json::json;

use crate::commands::not_found_path;
use crate::ctx::Ctx;
use crate::report::{Failure, human_size};
use crate::values::parse_platform;

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The agent, with a concrete version (the tag).
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// The agent binary (or binaries, one per --platform).
    #[arg(value_name = "FILE", required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// The platform of each FILE, in order (os/arch, e.g. linux/amd64).
    #[arg(long, value_name = "OS/ARCH", value_parser = parse_platform)]
    pub(crate) platform: Vec<Platform>,
    /// The registry, `host[:port][/prefix]` (default: $AGENT_REGISTRY).
    #[arg(long, value_name = "R", env = "AGENT_REGISTRY")]
    pub(crate) registry: String,
    /// Sign each binary with this minisign secret key (`agentctl keygen`
    /// or `minisign -G -W`) and push the signature as a second layer.
    #[arg(long, value_name = "KEY")]
    pub(crate) sign: Option<PathBuf>,
}

pub(crate) async fn exec(ctx: &Ctx, args: PushArgs) -> Result<(), Failure> {
    let PushArgs {
        reference,
        files,
        platform: platforms,
        registry,
        sign,
    } = args;
    let agent = ctx.parse_ref(&reference)?;
    if agent.concrete_version().is_none() {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "push needs a concrete version (the tag), e.g. {}/{}:1.2.3",
                agent.publisher(),
                agent.name()
            ),
        ));
    }
    if !platforms.is_empty() && platforms.len() != files.len() {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "{} file(s) but {} --platform(s): give one platform per file, in order",
                files.len(),
                platforms.len()
            ),
        ));
    }
    for f in &files {
        std::fs::metadata(f).map_err(|e| not_found_path(f, &e))?;
    }
    let mut config = agent_manager::stores::oci::RegistryConfig::parse(&registry)?;
    if let Ok(s) = std::env::var("AGENT_REGISTRY_SCHEME") {
        use agent_manager::stores::oci::Scheme;
        match s.trim().to_ascii_lowercase().as_str() {
            "" => {}
            "http" => config = config.with_scheme(Scheme::Http),
            "https" => config = config.with_scheme(Scheme::Https),
            _ => {
                return Err(Failure::new(
                    ErrorKind::InvalidRef,
                    format!("AGENT_REGISTRY_SCHEME={s:?} is neither http nor https"),
                ));
            }
        }
    }
    let config = config.with_env_credentials();
    let key = sign.as_deref().map(SigningKey::read).transpose()?;
    let sig_dir = match &key {
        Some(_) => Some(crate::temp::private_temp_dir("agentctl-push")?),
        None => None,
    };
    let mut push_files = Vec::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        let platform = platforms.get(i).cloned();
        let signature = match (&key, &sig_dir) {
            (Some(k), Some(dir)) => {
                let signed_for = platform
                    .clone()
                    .unwrap_or_else(agent_manager::Platform::current);
                let text = k.sign(&f, &agent, &signed_for)?;
                let p = dir.path().join(format!("{i}.minisig"));
                std::fs::write(&p, text)
                    .map_err(|e| Failure::io(format!("writing {}", p.display()), &e))?;
                Some(p)
            }
            _ => None,
        };
        push_files.push(agent_manager::stores::oci::PushFile {
            path: f,
            platform,
            signature,
        });
    }
    let result = agent_manager::stores::oci::push_files(&config, &agent, &push_files).await?;
    drop(sig_dir);
    if ctx.json {
        outln!("{}", json!(result));
    } else {
        for l in &result.layers {
            let platform = l
                .platform
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            if ctx.chatty() {
                eprintln!(
                    "{}{platform}: {} {}{}",
                    l.path.display(),
                    l.digest,
                    human_size(l.size),
                    if l.reused { ", already there" } else { "" }
                );
            }
        }
        outln!("{}@{}", result.reference, result.digest);
    }
    Ok(())
}

/// The variable holding the password of an encrypted secret key (one made by
/// `minisign -G` without `-W`).
pub(crate) const PASSWORD_ENV: &str = "CODEFLY_SIGN_PASSWORD";

pub(crate) fn trust_failure(e: &trust::TrustError) -> Failure {
    Failure::from_error(e.kind(), e)
}

/// A secret key read from a file, with its password when one is needed.
pub(crate) struct SigningKey {
    text: String,
    password: Option<String>,
    path: PathBuf,
}

impl SigningKey {
    /// Reads `path` (a key made by `agentctl keygen`, `minisign -G -W`, or
    /// `minisign -G` with the password in `$CODEFLY_SIGN_PASSWORD`).
    pub(crate) fn read(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::io(format!("reading the secret key {}", path.display()), &e))?;
        let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
        Ok(SigningKey {
            text,
            password,
            path: path.to_owned(),
        })
    }

    /// The `.minisig` text for `file` as `agent` (concrete) on `platform`,
    /// with the contract's trusted comment.
    pub(crate) fn sign(
        &self,
        file: &Path,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<String, Failure> {
        let comment = trust::trusted_comment(agent, platform);
        trust::sign_file(&self.text, self.password.clone(), file, &comment).map_err(|e| {
            let mut f = trust_failure(&e);
            f.message = format!("signing with {}: {}", self.path.display(), f.message);
            if self.password.is_none() {
                f.causes.push(format!(
                    "an encrypted key (minisign -G without -W) needs its password in {PASSWORD_ENV}"
                ));
            }
            f
        })
    }
}

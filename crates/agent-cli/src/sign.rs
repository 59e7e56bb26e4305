//! `agentctl keygen` and the signing half of `agentctl push --sign`:
//! minisign (Ed25519) keys and signatures through `agent_store::trust`, so
//! what this makes the reference `minisign` tool verifies, and keys made by
//! `minisign -G` sign here too.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use agent_manager::ErrorKind;
use agent_manager::reference::{AgentRef, Platform};
use agent_manager::store::trust::{self, TrustedKey};
use serde_json::json;

use crate::commands::Ctx;
use crate::report::Failure;

/// The variable holding the password of an encrypted secret key (one made by
/// `minisign -G` without `-W`).
pub(crate) const PASSWORD_ENV: &str = "CODEFLY_SIGN_PASSWORD";

fn trust_failure(e: &trust::TrustError) -> Failure {
    Failure::from_error(e.kind(), e)
}

/// The public key file beside a secret key: `agent.key` → `agent.pub`.
pub(crate) fn public_path(secret: &Path) -> PathBuf {
    secret.with_extension("pub")
}

fn write_new(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), Failure> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(mode);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::new(
                ErrorKind::Io,
                format!("{} exists; pass --force to replace it", path.display()),
            )
        } else {
            Failure::io(format!("writing {}", path.display()), &e)
        }
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::io(format!("writing {}", path.display()), &e))
}

/// `agentctl keygen --out FILE`: FILE (secret, 0600) and FILE.pub.
pub(crate) fn keygen(ctx: &Ctx, out: &Path, force: bool) -> Result<(), Failure> {
    let public_file = public_path(out);
    if !force {
        for p in [out, public_file.as_path()] {
            if p.exists() {
                return Err(Failure::new(
                    ErrorKind::Io,
                    format!("{} exists; pass --force to replace it", p.display()),
                ));
            }
        }
    }
    let kp = trust::keygen().map_err(|e| trust_failure(&e))?;
    let key = TrustedKey::parse(&kp.public).map_err(|e| trust_failure(&e))?;
    write_new(out, &kp.secret, 0o600, force)?;
    write_new(&public_file, &kp.public, 0o644, force)?;
    if ctx.json {
        outln!(
            "{}",
            json!({
                "secret_key": out,
                "public_key": public_file,
                "key_id": key.key_id(),
                "public": key.to_base64(),
            })
        );
    } else {
        outln!("{}", key.to_base64());
        if ctx.chatty() {
            eprintln!(
                "wrote {} (secret, keep it private) and {} (key id {})",
                out.display(),
                public_file.display(),
                key.key_id()
            );
            eprintln!(
                "trust it in the config:\n  [publishers.\"PUBLISHER\"]\n  keys = [\"{}\"]",
                key.to_base64()
            );
        }
    }
    Ok(())
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

//! `agentctl keygen`: a minisign (Ed25519) key pair through
//! `agent_store::trust`, so what this makes the reference `minisign` tool
//! verifies, and keys made by `minisign -G` sign here too.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use agent_manager::ErrorKind;
use agent_manager::store::trust::{self, TrustedKey};
use clap::Args;
use serde_json::json;

use crate::commands::push::trust_failure;
use crate::ctx::Ctx;
use crate::report::Failure;

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// The secret key file to write (the public key goes to FILE.pub).
    #[arg(long, value_name = "FILE", default_value = "agent.key")]
    pub(crate) out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub(crate) force: bool,
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
pub(crate) fn exec(ctx: &Ctx, args: &KeygenArgs) -> Result<(), Failure> {
    let (out, force) = (args.out.as_path(), args.force);
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

//! `cargo run --release -p agent-store-oci --example oci -- push REGISTRY REF FILE [os/arch]`
//! or `… -- pull REGISTRY REF HOME [os/arch]`: one push or pull, for
//! measuring (time, peak RSS) and for trying the store by hand.
#![allow(missing_docs)]

use agent_ref::{AgentHome, AgentRef, Platform};
use agent_store::{AgentStore, Installer};
use agent_store_oci::{OciStore, RegistryConfig, push};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, registry, reference, path, rest @ ..] = args.as_slice() else {
        return Err("usage: oci push|pull REGISTRY REF FILE|HOME [os/arch]".into());
    };
    let config = RegistryConfig::parse(registry)?.with_env_credentials();
    let agent = AgentRef::parse(reference)?;
    let platform: Option<Platform> = rest.first().map(|p| p.parse()).transpose()?;
    match cmd.as_str() {
        "push" => {
            let pushed = push(&config, &agent, &[(path.into(), platform)]).await?;
            println!("{}", serde_json::to_string_pretty(&pushed)?);
        }
        "pull" => {
            let store = OciStore::new(config)?;
            let installer = Installer::new(AgentHome::new(path));
            let platform = platform.unwrap_or_else(Platform::current);
            let got = store.pull(&agent, &platform, &installer).await?;
            println!("{} {} {}", got.path.display(), got.size, got.sha256);
        }
        other => return Err(format!("unknown command {other:?}").into()),
    }
    Ok(())
}

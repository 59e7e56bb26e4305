//! `agentctl info REF`: everything known about one agent.

use agent_manager::StoreChain;
use agent_manager::lockfile::LockFile;
use agent_manager::reference::{AgentRef, VersionSpec, error_chain};
use agent_manager::semver::Version;
use serde_json::json;

use clap::Args;

use crate::ctx::Ctx;
use crate::entry::Entry;
use crate::report::{Failure, human_size};

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// The agent.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
}

fn versions_text(v: &[Version]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) async fn exec(ctx: &Ctx, args: &InfoArgs) -> Result<(), Failure> {
    let agent = ctx.parse_ref(&args.reference)?;
    let m = ctx.manager(false)?;
    let platform = m.platform().clone();
    let stores = m.chain_for(&agent).stores().to_vec();
    let trust = trust_text(&m, &agent, &stores);
    let base = AgentRef::new(agent.kind(), agent.publisher(), agent.name(), "latest")?;

    // What each store lists.
    let mut per_store = Vec::new();
    for s in &stores {
        let answer = match s.versions(&base, &platform).await {
            Ok(mut v) => {
                v.sort();
                v.dedup();
                Ok(v)
            }
            Err(e) => Err(format!("error[{}]: {}", e.kind(), error_chain(&e))),
        };
        per_store.push((s.name().to_owned(), answer));
    }
    // Which one is authoritative (the first that lists any version).
    let chain = StoreChain::new(stores.clone()).with_fallback(m.chain().fallback());
    let authority = chain.authoritative_versions(&base, &platform).await;

    // The lock file.
    let lock_path = agent_manager::lockfile::discover(ctx.lockfile.as_deref());
    let lock = match &lock_path {
        Some(p) => LockFile::read_if_exists(p).map_err(|e| Failure::from_error(e.kind(), &e))?,
        None => None,
    };
    let locked = lock
        .as_ref()
        .and_then(|l| l.entry_for_agent(&agent))
        .cloned();

    // Installed versions.
    let installed = Entry::all(
        m.installed(
            &agent_manager::store::CacheQuery::all()
                .agent(&base)
                .hash_unrecorded(true),
        )?,
    );

    // What the ref resolves to, and why.
    let resolved = m.resolve(&agent).await;
    let (resolved_text, why) = match &resolved {
        Ok(r) => {
            let v = r.concrete_version().cloned();
            let why = if matches!(agent.version_spec(), VersionSpec::Exact(_)) {
                "an exact version: used as is".to_owned()
            } else if let (Some(l), Some(p)) = (
                locked.as_ref().filter(|l| Some(&l.version) == v.as_ref()),
                lock_path.as_ref(),
            ) {
                format!(
                    "pinned by the lock file {} (requested {})",
                    p.display(),
                    l.requested
                )
            } else if m.source().is_local() {
                "local cache only (CODEFLY_AGENT_SOURCE=local or --local)".to_owned()
            } else if installed.iter().any(|e| Some(&e.version) == v.as_ref()) {
                "local first: the highest installed version that matches".to_owned()
            } else {
                match &authority {
                    Ok(a) => format!(
                        "the authoritative store {} lists it as the highest match",
                        a.store
                    ),
                    Err(_) => "the stores".to_owned(),
                }
            };
            (r.identifier(), why)
        }
        Err(e) => (format!("error[{}]", e.kind()), error_chain(&e).to_string()),
    };

    let sandbox = m.effective_sandbox(&agent);

    if ctx.json {
        let stores_json: Vec<serde_json::Value> = per_store
            .iter()
            .map(|(name, a)| match a {
                Ok(v) => json!({ "store": name, "versions": v.iter().map(ToString::to_string).collect::<Vec<_>>() }),
                Err(e) => json!({ "store": name, "error": e }),
            })
            .collect();
        let authority_json = match &authority {
            Ok(a) => {
                json!({ "store": a.store, "versions": a.versions.iter().map(ToString::to_string).collect::<Vec<_>>() })
            }
            Err(e) => json!({ "error": format!("error[{}]: {}", e.kind(), error_chain(e)) }),
        };
        outln!(
            "{}",
            json!({
                "ref": base.identifier().trim_end_matches(":latest"),
                "asked": agent.identifier(),
                "platform": platform.to_string(),
                "stores": stores_json,
                "authoritative": authority_json,
                "resolves_to": resolved.as_ref().ok().map(AgentRef::identifier),
                "trust": trust,
                "why": why,
                "installed": installed,
                "sandbox": sandbox,
                "lock": match (&locked, &lock_path) {
                    (Some(l), Some(p)) => json!({
                        "file": p,
                        "version": l.version.to_string(),
                        "requested": l.requested.to_string(),
                    }),
                    _ => serde_json::Value::Null,
                },
            })
        );
        return Ok(());
    }
    outln!(
        "agent        {}/{} ({})",
        agent.publisher(),
        agent.name(),
        agent.kind()
    );
    outln!("platform     {platform}");
    match &authority {
        Ok(a) => outln!(
            "authority    {} (the first store, in order, that lists it)",
            a.store
        ),
        Err(e) => outln!("authority    none: error[{}]: {}", e.kind(), error_chain(e)),
    }
    if per_store.is_empty() {
        outln!("stores       none configured for {}", agent.publisher());
    }
    for (name, a) in &per_store {
        let mark = match &authority {
            Ok(auth) if auth.store == *name => " *",
            _ => "",
        };
        match a {
            Ok(v) => outln!("store {name:<6} {}{mark}", versions_text(v)),
            Err(e) => outln!("store {name:<6} {e}"),
        }
    }
    outln!("trust        {trust}");
    outln!("{:<12} {resolved_text}", agent.version_spec().to_string());
    outln!("  because    {why}");
    match (&locked, &lock_path) {
        (Some(l), Some(p)) => outln!(
            "lock         {} pins {} (requested {})",
            p.display(),
            l.version,
            l.requested
        ),
        (None, Some(p)) if p.exists() => outln!("lock         {} does not list it", p.display()),
        _ => outln!("lock         none"),
    }
    for line in sandbox_text(&sandbox) {
        outln!("{line}");
    }
    if installed.is_empty() {
        outln!("installed    none");
    }
    for e in &installed {
        outln!(
            "installed    {} {:>10}  {}  {}",
            e.version,
            human_size(e.size),
            e.source,
            e.path.display()
        );
    }
    Ok(())
}

/// The effective sandbox, one line per part with where it came from.
fn sandbox_text(s: &agent_manager::EffectiveSandbox) -> Vec<String> {
    let require = format!("require = {} ({})", s.require, s.require_origin);
    let Some(p) = &s.policy else {
        let outcome = if s.require {
            "refused: no policy (error[admission])"
        } else {
            "none: runs unconfined"
        };
        return vec![format!("sandbox      {outcome}; {require}")];
    };
    let list = |l: &[String]| {
        if l.is_empty() {
            "none".to_owned()
        } else {
            l.join(", ")
        }
    };
    let network = match p.network {
        agent_manager::sandbox::Network::None => "none",
        agent_manager::sandbox::Network::Any => "any",
    };
    vec![
        format!("sandbox      network {network}  from {}", s.network_from),
        format!("  read       {}  from {}", list(&p.read), s.read_from),
        format!("  write      {}  from {}", list(&p.write), s.write_from),
        format!("  {require}"),
    ]
}

/// What the trust policy asks of the publisher's binaries, and whether a
/// store (Nix) is trusted in place of a signature.
fn trust_text(
    m: &agent_manager::Manager,
    agent: &AgentRef,
    stores: &[std::sync::Arc<dyn agent_manager::AgentStore>],
) -> String {
    let policy = m.installer().trust();
    let t = policy.for_publisher(agent.publisher());
    let mut text = if t.require_signature {
        let ids: Vec<&str> = t
            .keys
            .iter()
            .map(agent_manager::store::TrustedKey::key_id)
            .collect();
        format!(
            "signature required (keys: {})",
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        )
    } else {
        "no signature required".to_owned()
    };
    let vouching: Vec<&str> = stores
        .iter()
        .map(|s| s.name())
        .filter(|s| policy.store_vouches(s, agent.publisher()))
        .collect();
    if t.require_signature && !vouching.is_empty() {
        text.push_str(&format!(
            "; trusted via {}: its unsigned outputs are trusted as that store verifies them (the publisher's stores list it)",
            vouching.join(", ")
        ));
    }
    text
}

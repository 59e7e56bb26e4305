//! Fuzzes `AgentRef::parse`: anything it accepts must print back to itself
//! (display ∘ parse is the identity) and, when concrete, map to a path inside
//! the agent home with only normal components.
#![no_main]

use std::path::{Component, Path};

use agent_ref::{AgentHome, AgentKind, AgentRef, ErrorKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match AgentRef::parse(input) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidRef, "{input:?}: {e}");
            return;
        }
    };
    let shown = parsed.to_string();
    let again = AgentRef::parse(&shown)
        .unwrap_or_else(|e| panic!("{input:?} parsed, its display {shown:?} did not: {e}"));
    assert_eq!(again, parsed, "{input:?} -> {shown:?}");
    assert_eq!(again.to_string(), shown);

    let root = Path::new("/fuzz/home");
    let home = AgentHome::new(root);
    let agents = root.join("agents");
    for kind in AgentKind::ALL {
        let r = parsed.clone().with_kind(kind);
        match home.binary_path(&r) {
            Ok(path) => {
                let rest = path
                    .strip_prefix(&agents)
                    .unwrap_or_else(|_| panic!("{input:?} escaped: {path:?}"));
                let comps: Vec<_> = rest.components().collect();
                assert_eq!(comps.len(), 3, "{input:?}: {path:?}");
                assert!(
                    comps.iter().all(|c| matches!(c, Component::Normal(_))),
                    "{input:?}: {path:?}"
                );
            }
            Err(_) => assert!(r.concrete_version().is_none(), "{input:?}"),
        }
    }
});

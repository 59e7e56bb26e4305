//! Fuzzes `select_layer` (manifest / image index selection): it never panics;
//! errors are `integrity` or `artifact-missing`; an index answer is the first
//! entry of the asked platform (OS and an alias of the architecture) with its
//! exact digest; a layer answer is a layer of the document, titled
//! `service-echo` when one is, else the only layer.
#![no_main]

use agent_ref::{ErrorKind, Platform};
use agent_store_oci::{Selected, TITLE_ANNOTATION, select_layer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const PLATFORMS: [&str; 4] = ["linux/amd64", "linux/arm64", "darwin/arm64", "windows/386"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, doc)) = data.split_first() else {
        return;
    };
    let platform: Platform = PLATFORMS[usize::from(pick) % PLATFORMS.len()]
        .parse()
        .expect("a valid platform");
    let selected = match select_layer(doc, &platform, "echo") {
        Ok(s) => s,
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::Integrity | ErrorKind::ArtifactMissing),
                "{e}"
            );
            return;
        }
    };
    // serde skips the fields it ignores without validating them (bad UTF-8,
    // lone surrogates), so a document it accepts may not parse as a whole
    // `Value`; check what can be checked.
    let Ok(value) = serde_json::from_str::<Value>(&String::from_utf8_lossy(doc)) else {
        return;
    };
    match selected {
        Selected::Manifest { digest, size } => {
            let entries = value["manifests"]
                .as_array()
                .expect("an index has manifests");
            let aliases = platform.arch_aliases();
            let first = entries
                .iter()
                .find(|e| {
                    e["platform"]["os"].as_str().unwrap_or("") == platform.os
                        && aliases.contains(&e["platform"]["architecture"].as_str().unwrap_or(""))
                        && e["platform"].is_object()
                })
                .expect("the chosen manifest is of the asked platform");
            assert_eq!(first["digest"].as_str(), Some(digest.to_oci().as_str()));
            assert_eq!(first["size"].as_u64(), Some(size));
        }
        Selected::Layer(layer) => {
            let layers = value["layers"].as_array().expect("a manifest has layers");
            let title = |l: &Value| {
                l["annotations"][TITLE_ANNOTATION]
                    .as_str()
                    .map(str::to_owned)
            };
            let titled = layers
                .iter()
                .find(|l| title(l).as_deref() == Some("service-echo"));
            let chosen = match titled {
                Some(l) => l,
                None => {
                    assert_eq!(layers.len(), 1, "an untitled pick must be the only layer");
                    &layers[0]
                }
            };
            assert_eq!(
                chosen["digest"].as_str(),
                Some(layer.digest.to_oci().as_str())
            );
            assert_eq!(chosen["size"].as_u64(), Some(layer.size));
            assert_eq!(title(chosen), layer.title);
        }
    }
});

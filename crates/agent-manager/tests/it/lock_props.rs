//! Property tests of the lock file (`agent_manager::lockfile`), the deterministic
//! counterpart of `crates/agent-manager/fuzz` target `lockfile`:
//!
//! - any text parses or is refused with a `config` error naming the file,
//!   never a panic (arbitrary strings, and lock-shaped text assembled from
//!   real and broken lines so that the validation paths are reached);
//! - whatever parses re-serialises with `to_toml_string()` to text that
//!   parses back to an equal lock, and re-writing gives the same bytes;
//! - a lock built through the API from random valid entries (any kind,
//!   requested spec, versions with pre-releases, platforms, signers) is
//!   written in an order independent of insertion and reads back equal.

use std::collections::BTreeMap;
use std::path::Path;

use agent_manager::lockfile::{LockEntry, LockFile, LockedArtifact};
use agent_manager::reference::{AgentKind, AgentRef, ErrorKind, VersionSpec, semver::Version};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const PATH: &str = "/props/agents.lock";

/// The fuzz target's property, for one input.
fn check_text(text: &str) -> Result<Option<LockFile>, TestCaseError> {
    let path = Path::new(PATH);
    let lock = match LockFile::parse(text, path) {
        Ok(lock) => lock,
        Err(e) => {
            prop_assert_eq!(e.kind(), ErrorKind::Config, "{}", e);
            prop_assert_eq!(e.path(), path);
            prop_assert!(e.to_string().contains(PATH), "names the file: {}", e);
            return Ok(None);
        }
    };
    let written = lock.to_toml_string();
    let back = LockFile::parse(&written, path);
    prop_assert!(
        back.is_ok(),
        "own output refused: {:?}\n--- input\n{}\n--- written\n{}",
        back.err(),
        text,
        written
    );
    let back = back.unwrap();
    prop_assert_eq!(
        &back,
        &lock,
        "--- input\n{}\n--- written\n{}",
        text,
        written
    );
    prop_assert_eq!(
        back.to_toml_string(),
        written,
        "re-writing changes the bytes"
    );
    Ok(Some(lock))
}

/// Lines a lock file is made of, valid and not, to assemble lock-shaped text.
fn line() -> impl Strategy<Value = String> {
    let fixed = prop_oneof![
        Just("version = 1".to_owned()),
        Just("version = 2".to_owned()),
        Just("[[agent]]".to_owned()),
        Just("ref = \"acme/echo\"".to_owned()),
        Just("ref = \"acme.corp/echo\"".to_owned()),
        Just("ref = \"acme/echo:1.0.0\"".to_owned()),
        Just("ref = \"acme/../x\"".to_owned()),
        Just("kind = \"module\"".to_owned()),
        Just("kind = \"service:runtime\"".to_owned()),
        Just("kind = \"robot\"".to_owned()),
        Just("requested = \"latest\"".to_owned()),
        Just("requested = \"^1\"".to_owned()),
        Just("requested = \"~1.0\"".to_owned()),
        Just("requested = \" ^1.0 \"".to_owned()),
        Just("version = \"1.0.0\"".to_owned()),
        Just("version = \"v1.0.0\"".to_owned()),
        Just("version = \"1.0.0-rc.1\"".to_owned()),
        Just("version = \"1.0.0+build\"".to_owned()),
        Just("[agent.platforms.\"linux/amd64\"]".to_owned()),
        Just("[agent.platforms.\"linux/arm64\"]".to_owned()),
        Just("[agent.platforms.\"Linux/AMD64\"]".to_owned()),
        Just("[agent.platforms.linux]".to_owned()),
        Just(format!("sha256 = \"{}\"", "a".repeat(64))),
        Just(format!("sha256 = \"{}\"", "A".repeat(64))),
        Just("size = 42".to_owned()),
        Just("size = -1".to_owned()),
        Just("size = 9223372036854775807".to_owned()),
        Just("store = \"oci\"".to_owned()),
        Just("store = \"\"".to_owned()),
        Just("signer = \"ABCDEF0123456789\"".to_owned()),
        Just("signer = \"\"".to_owned()),
    ];
    prop_oneof![
        8 => fixed,
        1 => "[ -~]{0,30}",
        1 => "[a-z]{1,8} = \"[ -~]{0,20}\"",
    ]
}

fn lock_shaped() -> impl Strategy<Value = String> {
    proptest::collection::vec(line(), 0..24).prop_map(|lines| {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_text(&text)?;
    }

    #[test]
    fn lock_shaped_text_round_trips_or_is_a_config_error(text in lock_shaped()) {
        check_text(&text)?;
    }

    #[test]
    fn lock_shaped_text_after_a_version_line(text in lock_shaped()) {
        // Starting from `version = 1`, many more inputs get past the first check.
        check_text(&format!("version = 1\n{text}"))?;
    }
}

// --------------------------------------------------------------------------
// Random valid entries, built through the API.

fn field() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,10}(\\.[a-z0-9][a-z0-9_-]{0,6}){0,2}"
}

fn version() -> impl Strategy<Value = Version> {
    (
        0u64..50,
        0u64..50,
        0u64..50,
        prop_oneof![
            3 => Just(String::new()),
            1 => "(alpha|beta|rc)(\\.[1-9][0-9]?){0,2}",
        ],
    )
        .prop_map(|(ma, mi, pa, pre)| {
            let text = if pre.is_empty() {
                format!("{ma}.{mi}.{pa}")
            } else {
                format!("{ma}.{mi}.{pa}-{pre}")
            };
            text.parse().unwrap()
        })
}

/// A version spec that accepts `v` (the lock refuses one that does not).
fn requested_for(v: &Version, pick: u8) -> VersionSpec {
    let text = match pick % 5 {
        0 => "latest".to_owned(),
        1 => v.to_string(),
        2 => format!("={v}"),
        3 if v.pre.is_empty() => format!("^{}.{}", v.major, v.minor),
        4 if v.pre.is_empty() => format!(">={}.{}.{}", v.major, v.minor, v.patch),
        _ => format!("~{v}"),
    };
    let spec: VersionSpec = text.parse().unwrap();
    assert!(
        matches!(spec, VersionSpec::Latest) || spec.matches(v),
        "{text} should accept {v}"
    );
    spec
}

fn artifact() -> impl Strategy<Value = LockedArtifact> {
    (
        "[0-9a-f]{64}",
        // Any u64, past i64::MAX too (the toml crate writes and reads those).
        any::<u64>(),
        prop_oneof![
            Just("oci"),
            Just("http"),
            Just("nix"),
            Just("github"),
            Just("local")
        ],
        proptest::option::of("[0-9A-F]{16}"),
    )
        .prop_map(|(sha256, size, store, signer)| LockedArtifact {
            sha256,
            size,
            store: store.to_owned(),
            signer,
        })
}

fn platforms() -> impl Strategy<Value = BTreeMap<String, LockedArtifact>> {
    let platform = prop_oneof![
        Just("linux/amd64"),
        Just("linux/arm64"),
        Just("darwin/amd64"),
        Just("darwin/arm64"),
    ];
    // An entry locks at least one platform (one with none is refused).
    proptest::collection::btree_map(platform.prop_map(str::to_owned), artifact(), 1..4)
}

fn entry() -> impl Strategy<Value = LockEntry> {
    (
        0..AgentKind::ALL.len(),
        field(),
        field(),
        version(),
        any::<u8>(),
        platforms(),
    )
        .prop_map(|(k, publisher, name, v, pick, platforms)| {
            let spec = requested_for(&v, pick);
            let agent =
                AgentRef::parse_as(AgentKind::ALL[k], &format!("{publisher}/{name}:{spec}"))
                    .unwrap();
            let mut e = LockEntry::new(&agent, &v).unwrap();
            e.platforms = platforms;
            e
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn valid_entries_round_trip_in_a_stable_order(entries in proptest::collection::vec(entry(), 0..8)) {
        let mut lock = LockFile::default();
        for e in &entries {
            lock.upsert(e.clone());
        }
        let text = lock.to_toml_string();
        let back = check_text(&text)?;
        prop_assert_eq!(back.as_ref(), Some(&lock), "--- written\n{}", text);
        // The same entries inserted in the other order give the same bytes.
        let mut reversed = LockFile::default();
        for e in entries.iter().rev() {
            reversed.upsert(e.clone());
        }
        // (upsert keeps the last entry of an agent listed twice: compare
        // against a lock built from the entries that survive.)
        let mut survivors = LockFile::default();
        for e in &lock.entries {
            survivors.upsert(e.clone());
        }
        prop_assert_eq!(survivors.to_toml_string(), text.clone());
        if entries.iter().enumerate().all(|(i, a)| entries[i + 1..].iter().all(|b| !b.is_for(&a.reference))) {
            prop_assert_eq!(reversed.to_toml_string(), text);
        }
    }
}

//! Property tests: the fuzz targets' properties, run in the normal suite with
//! modest case counts (`crates/*/fuzz` runs them for longer, `cargo xtask fuzz`).
//!
//! - the handshake parser never panics, errs only with its two kinds, and
//!   round-trips every valid form;
//! - the ref parser (light: `agent-ref` has its own);
//! - manifest / image-index selection never panics and picks only the asked
//!   platform's entry, and the titled (or only) layer;
//! - release-tarball extraction refuses archives with `..`, absolute, symlink
//!   or hard-link entries and never writes outside its directory.

use std::io::Write as _;
use std::path::Path;

use agent_manager::reference::{AgentRef, ErrorKind, Platform};
use agent_manager::spawn::{Endpoint, Handshake, SpawnError};
use agent_manager::stores::oci::{SelectError, Selected, TITLE_ANNOTATION, select_layer};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// --------------------------------------------------------------------------
// Handshake

/// A valid handshake line, with what it must parse to.
fn valid_handshake() -> impl Strategy<Value = (String, u32, Endpoint)> {
    let port = 1u16..=65535;
    let seg = "[A-Za-z0-9._-]{1,12}";
    let unix_path = proptest::collection::vec(seg, 1..6)
        .prop_map(|segs| format!("/{}", segs.join("/")))
        .prop_filter("fits sun_path", |p| p.len() <= 107);
    prop_oneof![
        port.clone().prop_map(|p| (
            format!("1|{p}"),
            1,
            Endpoint::Tcp(format!("127.0.0.1:{p}").parse().unwrap())
        )),
        (
            1u32..=2,
            port.clone(),
            prop_oneof![
                Just("127.0.0.1"),
                Just("localhost"),
                Just("[::1]"),
                Just("127.3.2.1")
            ]
        )
            .prop_map(|(v, p, host)| {
                let ip = if host == "localhost" {
                    "127.0.0.1"
                } else {
                    host
                };
                (
                    format!("{v}|dns:///{host}:{p}"),
                    v,
                    Endpoint::Tcp(format!("{ip}:{p}").parse().unwrap()),
                )
            }),
        (1u32..=2, unix_path).prop_map(|(v, path)| (
            format!("{v}|unix:{path}"),
            v,
            Endpoint::Unix(path.into())
        )),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn handshake_valid_forms_parse_and_round_trip(
        (line, version, endpoint) in valid_handshake(),
        ending in prop_oneof![Just(""), Just("\n"), Just("\r\n")],
    ) {
        let h = Handshake::parse(&format!("{line}{ending}"), &[1, 2]).unwrap();
        prop_assert_eq!(h.version, version);
        prop_assert_eq!(&h.endpoint, &endpoint);
        let again = Handshake::parse(&h.to_line(), &[1, 2]).unwrap();
        prop_assert_eq!(&again, &h);
        // A version outside the accepted set is a mismatch, never malformed.
        let other = if version == 1 { 2 } else { 1 };
        let err = Handshake::parse(&line, &[other]).unwrap_err();
        prop_assert_eq!(SpawnError::from(err).kind(), ErrorKind::VersionMismatch);
    }

    #[test]
    fn handshake_never_panics_and_accepts_only_loopback(line in "\\PC{0,80}|[0-9|:/a-z.\\[\\]]{0,40}") {
        match Handshake::parse(&line, &[1, 2]) {
            Ok(h) => {
                match &h.endpoint {
                    Endpoint::Tcp(a) => prop_assert!(a.ip().is_loopback() && a.port() != 0, "{line:?}"),
                    Endpoint::Unix(p) => prop_assert!(p.is_absolute(), "{line:?}"),
                }
                prop_assert_eq!(Handshake::parse(&h.to_line(), &[1, 2]).unwrap(), h);
            }
            Err(e) => prop_assert!(
                matches!(SpawnError::from(e.clone()).kind(), ErrorKind::HandshakeMalformed | ErrorKind::VersionMismatch),
                "{line:?}: {e}"
            ),
        }
    }

    #[test]
    fn handshake_non_loopback_is_malformed(a in 0u8..=255, b: u8, port in 1u16..=65535, v in 1u32..=2) {
        prop_assume!(a != 127);
        let err = Handshake::parse(&format!("{v}|dns:///{a}.{b}.0.1:{port}"), &[1, 2]).unwrap_err();
        prop_assert_eq!(SpawnError::from(err).kind(), ErrorKind::HandshakeMalformed);
    }

    // Light: agent-ref has its own tests and fuzz target.
    #[test]
    fn ref_parse_never_panics_and_round_trips(s in "\\PC{0,40}|[a-z0-9./:_^~<>=, -]{0,40}") {
        match AgentRef::parse(&s) {
            Ok(r) => prop_assert_eq!(AgentRef::parse(&r.to_string()).unwrap(), r),
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidRef),
        }
    }
}

// --------------------------------------------------------------------------
// Manifest / image-index selection

const OSES: [&str; 3] = ["linux", "darwin", "windows"];
const ARCHES: [&str; 6] = ["amd64", "x86_64", "arm64", "aarch64", "386", "riscv64"];

fn digest_of(n: u64) -> String {
    format!("sha256:{n:064x}")
}

fn index_doc(entries: &[(usize, usize, u64)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|&(os, arch, n)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest_of(n),
                "size": n,
                "platform": {"os": OSES[os], "architecture": ARCHES[arch]},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap()
}

fn manifest_doc(layers: &[(Option<&str>, u64)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|&(title, n)| {
            let mut l = serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_of(n),
                "size": n,
            });
            if let Some(t) = title {
                l["annotations"] = serde_json::json!({ TITLE_ANNOTATION: t });
            }
            l
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(0), "size": 2},
        "layers": layers,
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn index_selection_picks_the_first_entry_of_the_platform(
        entries in proptest::collection::vec((0..OSES.len(), 0..ARCHES.len(), 1u64..1_000_000), 0..8),
        want_os in 0..OSES.len(),
        want_arch in prop_oneof![Just("amd64"), Just("arm64"), Just("386"), Just("riscv64")],
    ) {
        let platform: Platform = format!("{}/{want_arch}", OSES[want_os]).parse().unwrap();
        let aliases = platform.arch_aliases();
        let expected = entries
            .iter()
            .find(|&&(os, arch, _)| os == want_os && aliases.contains(&ARCHES[arch]));
        match (select_layer(&index_doc(&entries), &platform, "echo"), expected) {
            (Ok(Selected::Manifest { digest, size }), Some(&(_, _, n))) => {
                prop_assert_eq!(digest.to_oci(), digest_of(n));
                prop_assert_eq!(size, n);
            }
            (Err(e @ SelectError::NoPlatform { .. }), None) => {
                prop_assert_eq!(e.kind(), ErrorKind::ArtifactMissing);
            }
            (got, want) => prop_assert!(false, "got {got:?}, expected the entry {want:?}"),
        }
    }

    #[test]
    fn manifest_selection_picks_the_titled_or_only_layer(
        layers in proptest::collection::vec(
            (prop_oneof![Just(None), Just(Some("service-echo")), Just(Some("service-other")), Just(Some("README"))], 1u64..1_000_000),
            0..5,
        ),
    ) {
        let got = select_layer(&manifest_doc(&layers), &"linux/amd64".parse().unwrap(), "echo");
        let titled = layers.iter().find(|(t, _)| *t == Some("service-echo"));
        let expected = titled.or(if layers.len() == 1 { layers.first() } else { None });
        match (got, expected) {
            (Ok(Selected::Layer(l)), Some(&(title, n))) => {
                prop_assert_eq!(l.digest.to_oci(), digest_of(n));
                prop_assert_eq!(l.size, n);
                prop_assert_eq!(l.title.as_deref(), title);
            }
            (Err(e @ SelectError::NoLayer { .. }), None) => {
                prop_assert_eq!(e.kind(), ErrorKind::ArtifactMissing);
            }
            (got, want) => prop_assert!(false, "got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn selection_never_panics_on_garbage(
        doc in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            "\\{\"(layers|manifests|mediaType)\": ?(\\[\\]|null|\\{\\}|\"x\"|\\[\\{\"digest\": ?\"sha256:[0-9a-f]{0,66}\", ?\"size\": ?-?[0-9]{1,3}\\}\\])\\}"
                .prop_map(String::into_bytes),
        ],
        os in 0..OSES.len(),
    ) {
        let platform: Platform = format!("{}/amd64", OSES[os]).parse().unwrap();
        if let Err(e) = select_layer(doc.as_ref(), &platform, "echo") {
            prop_assert!(matches!(e.kind(), ErrorKind::Integrity | ErrorKind::ArtifactMissing));
        }
    }
}

// --------------------------------------------------------------------------
// Release tarball extraction.
//
use agent_manager::stores::github::{GithubError, archive};

const BINARY: &str = "service-echo";

/// One tar entry to generate.
#[derive(Debug, Clone)]
enum Entry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    HardLink(String, String),
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::File(p, _) | Entry::Dir(p) | Entry::Symlink(p, _) | Entry::HardLink(p, _) => p,
        }
    }

    fn is_hostile(&self) -> bool {
        let p = self.path();
        p.starts_with('/')
            || p.split('/').any(|c| c == "..")
            || matches!(self, Entry::Symlink(..) | Entry::HardLink(..))
    }
}

/// Writes `bytes` into a header field, NUL-padded (no validation: hostile
/// names are the point).
fn raw_field(field: &mut [u8], bytes: &[u8]) {
    field.fill(0);
    field[..bytes.len()].copy_from_slice(bytes);
}

fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let data: &[u8] = match e {
            Entry::File(_, d) => d,
            _ => &[],
        };
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(match e {
            Entry::File(..) => tar::EntryType::Regular,
            Entry::Dir(_) => tar::EntryType::Directory,
            Entry::Symlink(..) => tar::EntryType::Symlink,
            Entry::HardLink(..) => tar::EntryType::Link,
        });
        let old = h.as_old_mut();
        raw_field(&mut old.name, e.path().as_bytes());
        if let Entry::Symlink(_, target) | Entry::HardLink(_, target) = e {
            raw_field(&mut old.linkname, target.as_bytes());
        }
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Extracts `tar` (gzipped here) in a fresh temp dir; checks nothing but
/// `out/service-echo` was written; returns the result and what was extracted.
fn extract(tar: &[u8]) -> (Result<std::path::PathBuf, GithubError>, Option<Vec<u8>>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let asset = "service-echo_1.0.0_linux_amd64.tar.gz";
    let archive_path = root.join(asset);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&archive_path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(tar).unwrap();
    gz.finish().unwrap();
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap();
    let limits = archive::Limits {
        max_total: 1 << 20,
        max_entries: 64,
    };
    let result = archive::extract_binary(&archive_path, asset, &out, BINARY, limits);
    assert_eq!(names(root), ["out", asset], "{result:?}");
    let inside = names(&out);
    assert!(
        inside.is_empty() || inside == [BINARY],
        "wrote {inside:?} ({result:?})"
    );
    let written = std::fs::symlink_metadata(out.join(BINARY)).ok().map(|m| {
        assert!(m.file_type().is_file(), "{m:?}");
        std::fs::read(out.join(BINARY)).unwrap()
    });
    (result, written)
}

fn safe_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(BINARY.to_owned()),
        Just(format!("pkg/{BINARY}")),
        Just(format!("./{BINARY}")),
        "[a-z]{1,8}",
        "[a-z]{1,8}/[a-z]{1,8}",
        Just(format!("a/b/{BINARY}")),
    ]
}

fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("../{BINARY}")),
        Just(format!("pkg/../../{BINARY}")),
        Just(format!("/tmp/{BINARY}")),
        Just(format!("/{BINARY}")),
        Just("..".to_owned()),
        "[a-z]{1,6}/\\.\\./\\.\\./[a-z]{1,6}",
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let data = proptest::collection::vec(any::<u8>(), 0..64);
    let target = prop_oneof![
        Just("/etc/passwd".to_owned()),
        Just("../outside".to_owned()),
        Just(BINARY.to_owned())
    ];
    prop_oneof![
        4 => (safe_name(), data.clone()).prop_map(|(p, d)| Entry::File(p, d)),
        1 => safe_name().prop_map(Entry::Dir),
        2 => (hostile_name(), data).prop_map(|(p, d)| Entry::File(p, d)),
        1 => (prop_oneof![safe_name(), hostile_name()], target.clone()).prop_map(|(p, t)| Entry::Symlink(p, t)),
        1 => (prop_oneof![safe_name(), hostile_name()], target).prop_map(|(p, t)| Entry::HardLink(p, t)),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn hostile_archives_are_refused_and_write_nothing_outside(
        entries in proptest::collection::vec(entry(), 1..8),
    ) {
        let (result, written) = extract(&tar_bytes(&entries));
        let hostile = entries.iter().any(Entry::is_hostile);
        let binaries: Vec<&Vec<u8>> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::File(p, d) => {
                    let comps: Vec<&str> = p.split('/').filter(|c| *c != ".").collect();
                    let hit = matches!(comps.as_slice(), [b] | [_, b] if *b == BINARY);
                    hit.then_some(d)
                }
                _ => None,
            })
            .collect();
        if hostile {
            prop_assert!(
                matches!(result, Err(GithubError::UnsafeArchive { .. })),
                "{entries:?} -> {result:?}"
            );
        } else if binaries.len() == 1 {
            prop_assert!(result.is_ok(), "{entries:?} -> {result:?}");
            prop_assert_eq!(written.as_ref(), Some(binaries[0]));
        } else if binaries.is_empty() {
            prop_assert!(matches!(result, Err(GithubError::Missing(_))), "{result:?}");
            prop_assert!(written.is_none());
        } else {
            prop_assert!(
                matches!(result, Err(GithubError::UnsafeArchive { .. })),
                "two binaries: {result:?}"
            );
        }
    }

    #[test]
    fn garbage_archives_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        // As a tar (gzipped by `extract`); the checks on disk run inside.
        let _ = extract(&bytes);
    }
}

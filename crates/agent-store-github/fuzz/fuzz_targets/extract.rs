//! Fuzzes the release-tarball extraction of agent-store-github
//! (`src/archive.rs`, `extract_binary`): arbitrary bytes as a `.tar.gz`, or
//! as a `.tar` that the target gzips first (the first input byte picks). It
//! never panics, and never writes anything but `out/service-echo` inside its
//! private temp dir; a success is that one regular file.

#![no_main]

use std::io::Write as _;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

use agent_store_github::archive;

const BINARY: &str = "service-echo";
const ASSET: &str = "service-echo_1.0.0_linux_amd64.tar.gz";

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let archive_path = root.join(ASSET);
    if mode % 2 == 0 {
        std::fs::write(&archive_path, rest).expect("write archive");
    } else {
        let f = std::fs::File::create(&archive_path).expect("create archive");
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        gz.write_all(rest).expect("gzip");
        gz.finish().expect("gzip");
    }
    let out = root.join("out");
    std::fs::create_dir(&out).expect("out dir");
    let limits = archive::Limits {
        max_total: 1 << 20,
        max_entries: 64,
    };
    let result = archive::extract_binary(&archive_path, ASSET, &out, BINARY, limits);

    assert_eq!(names(root), ["out", ASSET], "{result:?}");
    let inside = names(&out);
    assert!(
        inside.is_empty() || inside == [BINARY],
        "extraction wrote {inside:?} ({result:?})"
    );
    if let Ok(path) = &result {
        assert_eq!(path, &out.join(BINARY));
        let meta = std::fs::symlink_metadata(path).expect("the extracted binary");
        assert!(meta.file_type().is_file(), "{meta:?}");
    }
});

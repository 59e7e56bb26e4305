//! Concurrent first loads of a binary placed in the cache without an install
//! record (as the Go loader leaves them): every `agentctl load` succeeds.

use crate::common;

use common::Home;

/// Many processes load one unrecorded binary at once. The first records it
/// under the artifact lock; the others wait for that lock and use the
/// record, instead of taking the held lock as "not installed".
#[test]
fn concurrent_first_loads_of_an_unrecorded_binary_all_load() {
    const N: usize = 16;
    let home = Home::new();
    let bin = home.install_echo("1.0.0");
    let record = bin.with_file_name("echo__1.0.0.json");
    assert!(!record.exists());
    let children: Vec<_> = (0..N)
        .map(|_| {
            let mut c = common::agentctl(&home);
            c.args(["load", "codefly.dev/echo:1.0.0", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut failed = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {N} failed: {failed:#?}",
        failed.len()
    );
    assert!(record.exists(), "the binary was recorded");
}

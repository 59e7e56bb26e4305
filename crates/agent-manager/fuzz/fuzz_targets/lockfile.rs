//! Fuzzes the lock-file parser (`agent_manager::lock::LockFile::parse`):
//! any text parses or is refused with a `config` error naming the file,
//! never a panic; a lock that parses re-serialises with `to_toml_string()`
//! to text that parses back to an equal lock and re-serialises to the same
//! bytes (the writer is deterministic).
#![no_main]

use std::path::Path;

use agent_manager::lock::LockFile;
use agent_manager::reference::ErrorKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz/agents.lock");
    let lock = match LockFile::parse(text, path) {
        Ok(lock) => lock,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            assert_eq!(e.path(), path);
            return;
        }
    };
    let written = lock.to_toml_string();
    let back = match LockFile::parse(&written, path) {
        Ok(back) => back,
        Err(e) => panic!(
            "the writer's own output is refused: {e}\n--- input\n{text}\n--- written\n{written}"
        ),
    };
    assert_eq!(back, lock, "--- input\n{text}\n--- written\n{written}");
    assert_eq!(
        back.to_toml_string(),
        written,
        "re-writing changes the bytes"
    );
});

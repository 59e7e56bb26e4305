//! Fuzzes the `.minisig` and public-key parsers (`agent_store::trust`):
//! any text parses or is refused with an error, never a panic; a key that
//! parses has a 16-hex-digit id and round-trips through its base64 form.
#![no_main]

use agent_store::TrustedKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = agent_store::trust::fuzz_parse(text);
    if let Ok(key) = TrustedKey::parse(text) {
        assert_eq!(key.key_id().len(), 16);
        assert!(key.key_id().chars().all(|c| c.is_ascii_hexdigit()));
        let again = TrustedKey::parse(key.to_base64()).expect("its own base64 parses");
        assert_eq!(again.key_id(), key.key_id());
    }
});

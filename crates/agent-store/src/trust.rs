//! Signatures: who may publish what runs.
//!
//! Agents are signed with minisign (Ed25519). The signature's trusted comment
//! names the artifact, [`trusted_comment`] =
//! `codefly-agent {publisher}/{name}:{version} {os}/{arch}`, so a valid
//! signature of another agent, version or platform is refused. A
//! [`TrustPolicy`] says, per publisher, which keys are trusted and whether a
//! signature is required. The [`crate::Installer`] verifies while the bytes
//! stream (prehashed form; the legacy form is checked by re-reading the temp
//! file), before anything reaches the cache; a refusal is
//! [`StoreError::Untrusted`] and nothing is cached. A cached binary is
//! re-checked against the current policy on every load (its record keeps the
//! signer), so removing a key stops its binaries from loading.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use agent_ref::{AgentRef, ErrorKind, Platform};
use base64::Engine as _;

use crate::{Signer, StoreError};

/// The trusted comment a signature of `agent` for `platform` must carry.
#[must_use]
pub fn trusted_comment(agent: &AgentRef, platform: &Platform) -> String {
    let version = agent
        .concrete_version()
        .map_or_else(|| agent.version_spec().to_string(), ToString::to_string);
    format!(
        "codefly-agent {}/{}:{version} {platform}",
        agent.publisher(),
        agent.name()
    )
}

/// A bad key, signature or secret key (the text is never echoed in full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TrustError {
    /// What was being read (`public key`, `signature`, `secret key`…).
    pub what: String,
    /// Why it was refused.
    pub reason: String,
}

impl TrustError {
    fn new(what: &str, reason: impl Into<String>) -> Self {
        TrustError {
            what: what.to_owned(),
            reason: reason.into(),
        }
    }

    /// `config` (a bad key in the configuration is a configuration error).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Config
    }
}

/// minisign's algorithm ids: `Ed` (legacy, whole message) and `ED` (prehashed).
const ALG_LEGACY: [u8; 2] = *b"Ed";
const ALG_PREHASHED: [u8; 2] = *b"ED";

fn key_id_hex(id: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    format!("{:016X}", u64::from_le_bytes(b))
}

fn b64(what: &str, s: &str) -> Result<Vec<u8>, TrustError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| TrustError::new(what, format!("not base64 ({e})")))
}

/// A trusted minisign public key.
#[derive(Clone)]
pub struct TrustedKey {
    key_id: String,
    base64: String,
    key: minisign_verify::PublicKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({})", self.key_id)
    }
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &Self) -> bool {
        self.base64 == other.base64
    }
}

impl TrustedKey {
    /// Parses a public key: the base64 line (`RWS…`, as in the config's
    /// `keys = [...]`) or a whole `minisign.pub` file (comment line + key).
    ///
    /// # Errors
    /// [`TrustError`] for bad base64, a wrong length or an algorithm id other
    /// than Ed25519 (`Ed`).
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        const WHAT: &str = "minisign public key";
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| TrustError::new(WHAT, "empty"))?;
        let bin = b64(WHAT, line)?;
        if bin.len() != 42 {
            return Err(TrustError::new(
                WHAT,
                format!("{} bytes, a minisign public key is 42", bin.len()),
            ));
        }
        if bin[0..2] != ALG_LEGACY {
            return Err(TrustError::new(
                WHAT,
                format!(
                    "algorithm id {:?}, not Ed25519 (\"Ed\")",
                    String::from_utf8_lossy(&bin[0..2])
                ),
            ));
        }
        let key = minisign_verify::PublicKey::from_base64(line)
            .map_err(|e| TrustError::new(WHAT, e.to_string()))?;
        Ok(TrustedKey {
            key_id: key_id_hex(&bin[2..10]),
            base64: line.to_owned(),
            key,
        })
    }

    /// The key id, 16 upper-case hex digits (as `minisign` prints it).
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The base64 form.
    #[must_use]
    pub fn to_base64(&self) -> &str {
        &self.base64
    }
}

/// What one publisher's binaries must satisfy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublisherTrust {
    /// The keys whose signatures are accepted.
    pub keys: Vec<TrustedKey>,
    /// Whether an unsigned binary is refused (the config's default is true
    /// when keys are listed).
    pub require_signature: bool,
    /// The self-verifying stores (see [`TrustPolicy::self_verifying_store`])
    /// whose own verification this publisher accepts in place of a
    /// signature when one is required. Without it, a self-verifying store
    /// that cannot prove the publisher (a Nix flake attribute names none)
    /// is held to the signature rule like any other.
    pub vouching_stores: BTreeSet<String>,
}

impl PublisherTrust {
    /// Signatures by one of `keys` required.
    #[must_use]
    pub fn keys(keys: Vec<TrustedKey>) -> Self {
        PublisherTrust {
            keys,
            require_signature: true,
            vouching_stores: BTreeSet::new(),
        }
    }

    /// The same trust, also accepting `store`'s own verification (when the
    /// policy counts `store` as self-verifying).
    #[must_use]
    pub fn vouched_by(mut self, store: &str) -> Self {
        self.vouching_stores.insert(store.to_owned());
        self
    }

    /// Whether a binary recorded as signed by `signer` may run under this trust.
    ///
    /// # Errors
    /// The reason it may not.
    pub fn admits(&self, signer: Option<&Signer>) -> Result<(), String> {
        if !self.require_signature {
            return Ok(());
        }
        match signer {
            None => Err("it is unsigned and a signature is required".to_owned()),
            Some(s) if !self.keys.iter().any(|k| k.key_id == s.key_id) => {
                Err(format!("its signing key {} is no longer trusted", s.key_id))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Per-publisher trust, with a default for every publisher not listed (`"*"`).
///
/// Stores that verify their outputs by their own means are exempt when they
/// deliver no signature, for publishers that require none or that accept
/// that store ([`PublisherTrust::vouched_by`]): by default `nix` (its
/// outputs are trusted as the local Nix trusts them: substituter signatures
/// or a local build). A publisher that requires signatures and does not
/// name the store gets nothing unsigned from it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustPolicy {
    publishers: BTreeMap<String, PublisherTrust>,
    default: PublisherTrust,
    self_verifying: BTreeSet<String>,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            publishers: BTreeMap::new(),
            default: PublisherTrust::default(),
            self_verifying: BTreeSet::from(["nix".to_owned()]),
        }
    }
}

impl TrustPolicy {
    /// Nothing required of anyone (the default); `nix` self-verifying.
    #[must_use]
    pub fn new() -> Self {
        TrustPolicy::default()
    }

    /// Whether the store named `store` (`nix`, `oci`, …) counts as verifying
    /// its own outputs: an unsigned artifact from it is accepted whatever
    /// the publisher's policy (a signature it does deliver is still checked).
    #[must_use]
    pub fn self_verifying_store(mut self, store: &str, yes: bool) -> Self {
        if yes {
            self.self_verifying.insert(store.to_owned());
        } else {
            self.self_verifying.remove(store);
        }
        self
    }

    /// Whether `store` is self-verifying (see [`TrustPolicy::self_verifying_store`]).
    #[must_use]
    pub fn is_self_verifying(&self, store: &str) -> bool {
        self.self_verifying.contains(store)
    }

    /// Whether an unsigned artifact of `publisher` from `store` is accepted
    /// on the store's word: `store` is self-verifying and the publisher
    /// requires no signature or accepts that store ([`PublisherTrust::vouched_by`]).
    #[must_use]
    pub fn store_vouches(&self, store: &str, publisher: &str) -> bool {
        let trust = self.for_publisher(publisher);
        self.is_self_verifying(store)
            && (!trust.require_signature || trust.vouching_stores.contains(store))
    }

    /// Sets the trust of `publisher`; `"*"` sets the default for the others.
    #[must_use]
    pub fn publisher(mut self, publisher: &str, trust: PublisherTrust) -> Self {
        if publisher == "*" {
            self.default = trust;
        } else {
            self.publishers.insert(publisher.to_owned(), trust);
        }
        self
    }

    /// The trust that applies to `publisher`.
    #[must_use]
    pub fn for_publisher(&self, publisher: &str) -> &PublisherTrust {
        self.publishers.get(publisher).unwrap_or(&self.default)
    }
}

/// A parsed `.minisig`.
pub(crate) struct ParsedSignature {
    pub(crate) key_id: String,
    /// Whether the signature is over the BLAKE2b-512 of the file (`ED`).
    prehashed: bool,
    /// The signature as minisign-verify checks it. A prehashed one is
    /// relabelled legacy (`Ed`): a prehashed minisign signature *is* Ed25519
    /// over the 64-byte BLAKE2b-512 of the file, and the global signature
    /// covers only the signature bytes and the trusted comment, not the
    /// algorithm id. So checking it as legacy over a BLAKE2b-512 we compute
    /// ourselves ([`PrehashVerifier`]) is the prehashed verification, with
    /// the Ed25519 still minisign-verify's; the hash then runs at the speed
    /// of the `blake2` crate, not of minisign-verify's portable BLAKE2b.
    sig: minisign_verify::Signature,
}

impl ParsedSignature {
    /// Parses the text of a `.minisig` file.
    pub(crate) fn parse(text: &str) -> Result<Self, TrustError> {
        const WHAT: &str = "minisign signature";
        if text.len() > 64 * 1024 {
            return Err(TrustError::new(WHAT, "longer than 64 KiB"));
        }
        let second = text
            .lines()
            .nth(1)
            .ok_or_else(|| TrustError::new(WHAT, "fewer than 4 lines"))?;
        let bin = b64(WHAT, second)?;
        if bin.len() != 74 {
            return Err(TrustError::new(
                WHAT,
                format!("signature line is {} bytes, not 74", bin.len()),
            ));
        }
        let prehashed = match [bin[0], bin[1]] {
            ALG_PREHASHED => true,
            ALG_LEGACY => false,
            other => {
                return Err(TrustError::new(
                    WHAT,
                    format!(
                        "algorithm id {:?}, not Ed25519 (\"ED\" or \"Ed\")",
                        String::from_utf8_lossy(&other)
                    ),
                ));
            }
        };
        let relabelled;
        let text = if prehashed {
            let mut legacy = bin.clone();
            legacy[..2].copy_from_slice(&ALG_LEGACY);
            let line = base64::engine::general_purpose::STANDARD.encode(&legacy);
            relabelled = text
                .lines()
                .enumerate()
                .map(|(i, l)| if i == 1 { line.as_str() } else { l })
                .collect::<Vec<&str>>()
                .join("\n");
            relabelled.as_str()
        } else {
            text
        };
        let sig = minisign_verify::Signature::decode(text)
            .map_err(|e| TrustError::new(WHAT, e.to_string()))?;
        Ok(ParsedSignature {
            key_id: key_id_hex(&bin[2..10]),
            prehashed,
            sig,
        })
    }

    pub(crate) fn trusted_comment(&self) -> &str {
        self.sig.trusted_comment()
    }
}

/// Parses `text` as a `.minisig` and a public key (for fuzzing and tools):
/// whether each parses, never a panic.
#[doc(hidden)]
pub fn fuzz_parse(text: &str) -> (bool, bool) {
    (
        ParsedSignature::parse(text).is_ok(),
        TrustedKey::parse(text).is_ok(),
    )
}

/// A signature check set up for one install: the key, the signature, and
/// the comment it must carry.
pub(crate) struct SigCheck {
    pub(crate) key: TrustedKey,
    pub(crate) sig: ParsedSignature,
}

impl SigCheck {
    /// Decides, before any byte is written, whether `signature` can be
    /// accepted for `agent` on `platform` under `trust`: `Ok(None)` when no
    /// check applies (unsigned and not required, or no keys to check against).
    pub(crate) fn prepare(
        trust: &PublisherTrust,
        agent: &AgentRef,
        platform: &Platform,
        signature: Option<&str>,
    ) -> Result<Option<SigCheck>, StoreError> {
        let what = agent.identifier();
        let refuse = |reason: String, fix: String| StoreError::Untrusted {
            path_or_artifact: what.clone(),
            reason,
            fix,
        };
        let Some(text) = signature else {
            if trust.require_signature {
                return Err(refuse(
                    format!(
                        "it is unsigned, and publisher {} requires a signature",
                        agent.publisher()
                    ),
                    "publish a .minisig beside it (agentctl push --sign), or set require-signature = false for this publisher".to_owned(),
                ));
            }
            return Ok(None);
        };
        if trust.keys.is_empty() {
            if trust.require_signature {
                return Err(refuse(
                    format!(
                        "publisher {} requires a signature but no key is trusted for it",
                        agent.publisher()
                    ),
                    format!(
                        "add the publisher's key to [publishers.\"{}\"] keys",
                        agent.publisher()
                    ),
                ));
            }
            return Ok(None);
        }
        let sig = ParsedSignature::parse(text).map_err(|e| {
            refuse(
                format!("its signature is malformed ({e})"),
                "re-sign it with minisign -S".to_owned(),
            )
        })?;
        let Some(key) = trust.keys.iter().find(|k| k.key_id == sig.key_id) else {
            let ids: Vec<&str> = trust.keys.iter().map(TrustedKey::key_id).collect();
            return Err(refuse(
                format!(
                    "it is signed by key {}, which is not trusted for publisher {} (trusted: {})",
                    sig.key_id,
                    agent.publisher(),
                    ids.join(", ")
                ),
                format!(
                    "if that key is the publisher's, add it to [publishers.\"{}\"] keys",
                    agent.publisher()
                ),
            ));
        };
        let want = trusted_comment(agent, platform);
        if sig.trusted_comment() != want {
            return Err(refuse(
                format!(
                    "its signature is for {:?}, not {want:?} (a signature of another artifact)",
                    sig.trusted_comment()
                ),
                format!("sign this artifact with minisign -S -t \"{want}\""),
            ));
        }
        Ok(Some(SigCheck {
            key: key.clone(),
            sig,
        }))
    }

    /// The signer to record once verified.
    pub(crate) fn signer(&self) -> Signer {
        Signer {
            key_id: self.key.key_id.clone(),
            trusted_comment: self.sig.trusted_comment().to_owned(),
        }
    }

    /// A streaming verifier over the bytes (prehashed signatures only).
    pub(crate) fn stream(&self) -> Option<PrehashVerifier<'_>> {
        use blake2::Digest as _;
        self.sig.prehashed.then(|| PrehashVerifier {
            check: self,
            hasher: blake2::Blake2b512::new(),
        })
    }

    /// Verifies a legacy (whole-message) signature over `bytes`.
    /// A prehashed signature is refused here: its `sig` is relabelled legacy
    /// and holds only over the prehash ([`SigCheck::stream`]).
    pub(crate) fn verify_legacy(&self, bytes: &[u8]) -> Result<(), minisign_verify::Error> {
        if self.sig.prehashed {
            return Err(minisign_verify::Error::UnexpectedAlgorithm);
        }
        self.key.key.verify(bytes, &self.sig.sig, true)
    }
}

/// Verifies a prehashed minisign signature as the bytes stream past:
/// BLAKE2b-512 of everything given to [`PrehashVerifier::update`], then
/// minisign-verify's Ed25519 over that hash (see [`ParsedSignature`]).
pub(crate) struct PrehashVerifier<'a> {
    check: &'a SigCheck,
    hasher: blake2::Blake2b512,
}

impl PrehashVerifier<'_> {
    /// Hashes the next chunk.
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        use blake2::Digest as _;
        self.hasher.update(chunk);
    }

    /// Checks the signature (and the global signature over the trusted
    /// comment) against the hash of every chunk.
    pub(crate) fn finalize(self) -> Result<(), minisign_verify::Error> {
        use blake2::Digest as _;
        let prehash = self.hasher.finalize();
        self.check
            .key
            .key
            .verify(&prehash, &self.check.sig.sig, true)
    }
}

/// A minisign key pair, as the `minisign -G -W` files hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The public key file's text (`untrusted comment: …` + base64 line).
    pub public: String,
    /// The secret key file's text (unencrypted).
    pub secret: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn signing_error(what: &str, e: &impl fmt::Display) -> TrustError {
    TrustError::new(what, e.to_string())
}

/// Generates an unencrypted minisign key pair (what `minisign -G -W` makes).
///
/// # Errors
/// [`TrustError`] when the system's randomness is unavailable.
pub fn keygen() -> Result<KeyPair, TrustError> {
    let kp = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| signing_error("key pair", &e))?;
    let public = kp
        .pk
        .to_box()
        .map_err(|e| signing_error("public key", &e))?
        .into_string();
    let secret = kp
        .sk
        .to_box(None)
        .map_err(|e| signing_error("secret key", &e))?
        .into_string();
    Ok(KeyPair { public, secret })
}

/// Signs the file at `path` (prehashed, as minisign ≥ 0.10 does) with the
/// secret key in `secret_key` (the text of a key file; `password` for an
/// encrypted one, `None` for one made by `minisign -G -W` or [`keygen`]),
/// with `comment` as the trusted comment (use [`trusted_comment`]).
/// Returns the `.minisig` text.
///
/// # Errors
/// [`TrustError`] for an unreadable or encrypted-without-password key, or
/// when the file cannot be read.
pub fn sign_file(
    secret_key: &str,
    password: Option<String>,
    path: &Path,
    comment: &str,
) -> Result<String, TrustError> {
    let sk_box = minisign::SecretKeyBox::from_string(secret_key)
        .map_err(|e| signing_error("secret key", &e))?;
    let sk = match password {
        Some(p) => sk_box.into_secret_key(Some(p)),
        None => sk_box
            .into_unencrypted_secret_key()
            .or_else(|e| unencrypted_key(secret_key).ok_or(e)),
    }
    .map_err(|e| signing_error("secret key", &e))?;
    // Sign with the public half derived from the key, so a damaged key
    // fails here (the global signature is checked against it).
    let pk =
        minisign::PublicKey::from_secret_key(&sk).map_err(|e| signing_error("secret key", &e))?;
    let file = std::fs::File::open(path)
        .map_err(|e| TrustError::new("file to sign", format!("{}: {e}", path.display())))?;
    let sig = minisign::sign(Some(&pk), &sk, file, Some(comment), None)
        .map_err(|e| signing_error("signature", &e))?;
    Ok(sig.into_string())
}

/// An unencrypted key as `minisign -G -W` (0.11) writes it, whose checksum
/// the `minisign` crate computes differently: read as is, then checked by
/// signing against its own public half in [`sign_file`].
fn unencrypted_key(text: &str) -> Option<minisign::SecretKey> {
    let line = text.lines().nth(1)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()?;
    let sk = minisign::SecretKey::from_bytes(&bytes).ok()?;
    (!sk.is_encrypted()).then_some(sk)
}

/// Verifies a detached signature over a whole file that is not itself the
/// installed binary (GitHub's `{asset}.minisig` signs the release tarball
/// the binary is extracted from), with the same key lookup, trusted-comment
/// check and refusals as the installer's streaming path. Hand the result to
/// the installer as [`crate::Expected::verified_signer`]. `None` signature ⇒
/// `Ok(None)` (whether unsigned is acceptable stays the installer's
/// decision); `Ok(None)` too when the publisher has no keys and requires no
/// signature. Blocking.
///
/// # Errors
/// [`StoreError::Untrusted`] for a malformed signature, an untrusted key, a
/// comment naming another artifact, or bytes the signature does not verify;
/// [`StoreError::Io`] when the file cannot be read.
pub fn verify_detached(
    policy: &TrustPolicy,
    agent: &AgentRef,
    platform: &Platform,
    file: &Path,
    signature: Option<&str>,
) -> Result<Option<Signer>, StoreError> {
    use std::io::Read as _;
    let Some(text) = signature else {
        return Ok(None);
    };
    let Some(check) = SigCheck::prepare(
        policy.for_publisher(agent.publisher()),
        agent,
        platform,
        Some(text),
    )?
    else {
        return Ok(None);
    };
    let read_err = |e: std::io::Error| StoreError::io(format!("read {}", file.display()), e);
    let verdict = if let Some(mut v) = check.stream() {
        let mut f = std::fs::File::open(file).map_err(read_err)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            v.update(&buf[..n]);
        }
        v.finalize()
    } else {
        check.verify_legacy(&std::fs::read(file).map_err(read_err)?)
    };
    verdict.map_err(|e| StoreError::Untrusted {
        path_or_artifact: agent.identifier(),
        reason: format!(
            "the signature by key {} does not verify over {} ({e}): tampered or re-signed",
            check.signer().key_id,
            file.display()
        ),
        fix: "fetch it from a store you trust; the publisher must re-sign it if it changed"
            .to_owned(),
    })?;
    Ok(Some(check.signer()))
}

#[cfg(test)]
mod tests {
    use super::key_id_hex;

    #[test]
    fn key_ids_are_sixteen_hex_digits_even_with_leading_zeros() {
        // Little-endian on the wire: the last byte is the most significant.
        let id = [0x9f, 0xa3, 0x76, 0x30, 0x9b, 0x49, 0xda, 0x01];
        assert_eq!(key_id_hex(&id), "01DA499B3076A39F");
    }
}

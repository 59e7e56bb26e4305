//! Writing a cached binary: stream to a temp file while hashing, verify,
//! then commit the binary and its record into place.

use super::*;

impl Installer {
    pub(super) async fn install<R>(
        &self,
        agent: &AgentRef,
        source: &str,
        expected: &Expected,
        reader: R,
        on_read_error: ReadFailure,
    ) -> Result<Installed, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let path = self.home.binary_path(agent)?;
        let platform = expected.platform.clone().unwrap_or_else(Platform::current);
        let pre_verified = expected
            .signature
            .is_none()
            .then_some(expected.verified_signer.as_ref())
            .flatten();
        if let Some(signer) = pre_verified
            && let Err(reason) = self
                .trust
                .for_publisher(agent.publisher())
                .admits(Some(signer))
        {
            return Err(StoreError::Untrusted {
                path_or_artifact: agent.identifier(),
                reason,
                fix: format!(
                    "add the publisher's key to [publishers.\"{}\"] keys",
                    agent.publisher()
                ),
            });
        }
        let check = if expected.signature.is_none()
            && (pre_verified.is_some()
                || self
                    .trust
                    .store_vouches(store_name(source), agent.publisher()))
        {
            None
        } else {
            SigCheck::prepare(
                self.trust.for_publisher(agent.publisher()),
                agent,
                &platform,
                expected.signature.as_deref(),
            )?
        };
        let root = self.home.root().to_path_buf();
        let target = path.clone();
        let (temp_path, file) = tokio::task::spawn_blocking(move || {
            prepare_dir(&root, &target)?;
            refuse_symlink_at(&target)?;
            clean_stale_temps(&target);
            create_temp(&target, "")
        })
        .await
        .map_err(join_error)??;
        let mut guard = TempGuard(Some(temp_path.clone()));

        let cap = expected.max_size.unwrap_or(DEFAULT_MAX_SIZE);
        let store = store_name(source);
        let what = agent.identifier();
        let integrity = |message: String| StoreError::Integrity {
            store: store.to_owned(),
            what: what.clone(),
            message,
        };

        let report = |bytes: u64, done: bool| {
            if let Some(p) = &self.progress {
                p(Progress {
                    agent: agent.clone(),
                    bytes,
                    total: expected.size,
                    done,
                });
            }
        };
        let streamed = stream_to_file(
            reader,
            file,
            cap,
            expected.size,
            &|n| report(n, false),
            check,
        )
        .await;
        if let Ok(s) = &streamed {
            report(s.size, true);
        } else {
            report(0, true);
        }
        let stream::Streamed {
            digest,
            size,
            check,
            verdict,
        } = match streamed {
            Ok(v) => v,
            Err(StreamError::Read(e)) => {
                return Err(match on_read_error {
                    ReadFailure::Store => StoreError::Unavailable {
                        store: store.to_owned(),
                        message: format!("reading {what} from {source} failed"),
                        retry_after: None,
                        source: Some(Box::new(e)),
                    },
                    ReadFailure::Local => StoreError::io(format!("reading {source}"), e),
                });
            }
            Err(StreamError::Write(e)) => {
                return Err(StoreError::io(
                    format!("writing {}", temp_path.display()),
                    e,
                ));
            }
            Err(StreamError::TooLarge { limit, expected }) => {
                return Err(integrity(if expected {
                    format!("more than the expected {limit} bytes")
                } else {
                    format!("more than the {limit}-byte size cap")
                }));
            }
        };
        if let Some(want) = expected.size.filter(|&w| w != size) {
            return Err(integrity(format!("expected {want} bytes, got {size}")));
        }
        if let Some(want) = expected.sha256.filter(|w| *w != digest) {
            return Err(integrity(format!(
                "expected sha256 {want}, got {digest} ({size} bytes)"
            )));
        }
        if let Some(pin) = self.pin.as_deref().filter(|p| p.sha256 != digest) {
            return Err(integrity(format!(
                "its sha256 is {digest} ({size} bytes), but {} pins {}",
                pin.by, pin.sha256
            )));
        }

        let signer = match &check {
            None => pre_verified.cloned(),
            Some(c) => {
                let verdict = match verdict {
                    Some(v) => v,
                    None => {
                        // Legacy (whole-message) signature: re-read the temp file.
                        let t = temp_path.clone();
                        let bytes = tokio::task::spawn_blocking(move || fs::read(&t))
                            .await
                            .map_err(join_error)?
                            .map_err(|e| {
                                StoreError::io(format!("read {}", temp_path.display()), e)
                            })?;
                        c.verify_legacy(&bytes).map_err(|e| e.to_string())
                    }
                };
                if let Err(e) = verdict {
                    return Err(StoreError::Untrusted {
                        path_or_artifact: what.clone(),
                        reason: format!(
                            "its signature by key {} does not verify over the bytes from {source} ({e}): tampered or re-signed",
                            c.signer().key_id
                        ),
                        fix: "fetch it from a store you trust; the publisher must re-sign it if the binary changed".to_owned(),
                    });
                }
                Some(c.signer())
            }
        };
        let record = InstallRecord {
            sha256: digest.to_hex(),
            size,
            source: source.to_owned(),
            installed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            identity: None,
            store: Some(store.to_owned()),
            signer,
        };
        let final_path = path.clone();
        let rec = record.clone();
        let record = tokio::task::spawn_blocking(move || commit(&temp_path, &final_path, rec))
            .await
            .map_err(join_error)??;
        guard.0 = None;
        tracing::info!(
            agent = %what,
            path = %path.display(),
            size,
            sha256 = %record.sha256,
            source,
            "installed"
        );
        Ok(Installed {
            path,
            sha256: record.sha256,
            size,
            source: record.source,
        })
    }
}

#[derive(Clone, Copy)]
pub(super) enum ReadFailure {
    /// The reader is a store's stream: its failure is the store's.
    Store,
    /// The reader is a local file: its failure is ours.
    Local,
}

/// Moves a verified temp file into place with its record, so that no binary
/// is ever at the final path without its record: chmod 0755, rename the
/// binary, take its identity, write the record under a temp name, rename it;
/// if the record cannot be committed the binary is removed again.
fn commit(
    temp: &Path,
    final_path: &Path,
    mut rec: InstallRecord,
) -> Result<InstallRecord, StoreError> {
    refuse_symlink_at(final_path)?;
    fs::set_permissions(temp, fs::Permissions::from_mode(0o755))
        .map_err(|e| StoreError::io(format!("chmod {}", temp.display()), e))?;
    // The identity recorded is that of the file renamed, taken from a
    // descriptor opened on it before the rename: a path looked up after it
    // could name another install's file.
    let renamed = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)
        .map_err(|e| StoreError::io(format!("open {}", temp.display()), e))?;
    fs::rename(temp, final_path).map_err(|e| {
        StoreError::io(
            format!("rename {} to {}", temp.display(), final_path.display()),
            e,
        )
    })?;
    let recorded = renamed
        .metadata()
        .map_err(|e| StoreError::io(format!("stat {}", final_path.display()), e))
        .and_then(|m| {
            rec.identity = Some(FileIdentity::of(&m));
            let temp = write_record_temp(final_path, &rec)?;
            commit_record_temp(temp, &sibling(final_path, "", ".json"))
        });
    if let Err(e) = recorded {
        if let Err(rm) = fs::remove_file(final_path) {
            tracing::warn!(path = %final_path.display(), error = %rm, "could not roll back a binary whose record failed");
        }
        return Err(e);
    }
    sync_dir(final_path)?;
    Ok(rec)
}

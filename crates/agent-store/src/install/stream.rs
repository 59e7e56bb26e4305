//! Streaming: read on the task, hash and write on a blocking thread.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Sha256Digest;
use crate::trust::SigCheck;

/// Bytes per chunk handed from the reading task to the hashing/writing thread.
const CHUNK: usize = 256 * 1024;

/// Chunks in flight between reader and writer (bounds memory to ~1 MiB).
const CHUNKS_IN_FLIGHT: usize = 4;

pub(super) enum StreamError {
    Read(io::Error),
    Write(io::Error),
    TooLarge { limit: u64, expected: bool },
}

/// What a stream produced.
pub(super) struct Streamed {
    pub(super) digest: Sha256Digest,
    pub(super) size: u64,
    /// The signature check, handed back.
    pub(super) check: Option<SigCheck>,
    /// The streaming verification's outcome (prehashed signatures only).
    pub(super) verdict: Option<Result<(), String>>,
}

/// How many written bytes may wait in the page cache before their writeback
/// is started, so the final `fsync` finds little left to do.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Starts (does not wait for) writeback of a written range. Only a hint: the
/// `fsync` before the rename is what makes the file durable.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: the descriptor is open for the duration of the call; the kernel
    // only reads the arguments.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Reads `reader` on this task and hashes + writes on a blocking thread, so
/// network reads, hashing and disk writes overlap. Memory is bounded by
/// `CHUNKS_IN_FLIGHT` buffers of `CHUNK` bytes.
pub(super) async fn stream_to_file<R>(
    mut reader: R,
    file: File,
    cap: u64,
    expected_size: Option<u64>,
    progress: &(dyn Fn(u64) + Sync),
    check: Option<SigCheck>,
) -> Result<Streamed, StreamError>
where
    R: AsyncRead + Unpin + Send,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (back_tx, mut back_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::task::spawn_blocking(move || -> io::Result<_> {
        let mut file = file;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut flushed: u64 = 0;
        // The signature's hash (BLAKE2b for prehashed minisign) runs on a
        // thread of its own, beside sha256 and the writes, reading the same
        // chunks.
        let (result, verdict) = std::thread::scope(|scope| {
            // Chunks are shared with the verifier, not copied: whichever of
            // the two threads is done with a chunk last hands it back to the
            // reader for reuse (`Arc::into_inner` gives it to exactly one).
            let (vtx, vrx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(CHUNKS_IN_FLIGHT);
            let verifier = check.as_ref().and_then(SigCheck::stream).map(|mut v| {
                let back = back_tx.clone();
                scope.spawn(move || {
                    for chunk in vrx {
                        v.update(&chunk);
                        if let Some(buf) = Arc::into_inner(chunk) {
                            let _ = back.send(buf);
                        }
                    }
                    v.finalize().map_err(|e| e.to_string())
                })
            });
            let result = (|| -> io::Result<()> {
                while let Some(buf) = rx.blocking_recv() {
                    let buf = Arc::new(buf);
                    if verifier.is_some() {
                        // Only fails when the verifier thread is gone: its
                        // verdict (an error) is reported below.
                        let _ = vtx.send(Arc::clone(&buf));
                    }
                    hasher.update(&buf[..]);
                    file.write_all(&buf)?;
                    written += buf.len() as u64;
                    if written - flushed >= WRITEBACK_EVERY {
                        start_writeback(&file, flushed, written - flushed);
                        flushed = written;
                    }
                    // The reader may be gone already; then the buffer is just dropped.
                    if let Some(buf) = Arc::into_inner(buf) {
                        let _ = back_tx.send(buf);
                    }
                }
                file.sync_all()
            })();
            drop(vtx);
            let verdict = verifier.map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the signature verifier panicked".to_owned()))
            });
            (result, verdict)
        });
        result?;
        Ok((Sha256Digest(hasher.finalize().into()), verdict, check))
    });

    let limit = expected_size.map_or(cap, |s| s.min(cap));
    let mut total: u64 = 0;
    let read_result: Result<(), StreamError> = async {
        loop {
            let mut buf = back_rx.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            let mut eof = false;
            while filled < CHUNK {
                let n = reader
                    .read(&mut buf[filled..])
                    .await
                    .map_err(StreamError::Read)?;
                if n == 0 {
                    eof = true;
                    break;
                }
                filled += n;
                total += n as u64;
                if total > limit {
                    return Err(StreamError::TooLarge {
                        limit,
                        expected: expected_size.is_some_and(|s| s <= cap),
                    });
                }
            }
            buf.truncate(filled);
            progress(total);
            if filled > 0 && tx.send(buf).await.is_err() {
                // The writer stopped: its error is reported below.
                return Ok(());
            }
            if eof {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| StreamError::Write(io::Error::other(e)))?;
    read_result?;
    let (digest, verdict, check) = written.map_err(StreamError::Write)?;
    Ok(Streamed {
        digest,
        size: total,
        check,
        verdict,
    })
}

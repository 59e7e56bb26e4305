//! Path safety inside the home: no symlinks, private new directories,
//! temp files beside their target, fsync of files and directories.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::{Sha256Digest, StoreError};

/// Removes the temp file unless disarmed (on error, panic or cancellation).
pub(super) struct TempGuard(pub(super) Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove temp file");
        }
    }
}

/// `{dir}/{prefix}{name}__{version}{suffix}` for the binary at `path`.
pub(crate) fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{prefix}{name}{suffix}"))
}

pub(super) fn symlink_refused(path: &Path) -> StoreError {
    StoreError::io(
        format!(
            "refusing to use cache path {}: it is a symlink (a cache path must be a real directory or file)",
            path.display()
        ),
        io::Error::from_raw_os_error(libc::ELOOP),
    )
}

/// What lets a user other than us change a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposure {
    /// Owned by `owner`, neither us (`me`) nor root.
    Owner {
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Writable by its group or by every user (`mode`: its permission bits).
    Writable {
        /// Its permission bits (`& 0o7777`).
        mode: u32,
    },
}

impl Exposure {
    /// `its group`, `every user`, `its group and every user` for a writable mode.
    pub(crate) fn writers(mode: u32) -> &'static str {
        match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        }
    }
}

/// The one rule (OpenSSH StrictModes-style) of who may change what runs:
/// a file or directory is exposed when a user other than us (root excepted)
/// owns it, or when its group or every user may write it. Both findings, owner first.
#[allow(unsafe_code)]
pub(crate) fn exposures(meta: &Metadata) -> Vec<Exposure> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut out = Vec::new();
    let owner = meta.uid();
    if owner != me && owner != 0 {
        out.push(Exposure::Owner { owner, me });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        out.push(Exposure::Writable { mode });
    }
    out
}

/// Refuses (by [`exposures`]) a file or directory that a user other than us
/// could change. The error names the path and the command that fixes it.
pub(super) fn check_trusted(path: &Path, meta: &Metadata, what: &str) -> Result<(), StoreError> {
    match exposures(meta).first() {
        None => Ok(()),
        Some(&Exposure::Owner { owner, me }) => Err(StoreError::Untrusted {
            path_or_artifact: path.display().to_string(),
            reason: format!(
                "the {what} is owned by uid {owner}, not by you (uid {me}) or root, so that user can replace what runs"
            ),
            fix: format!("chown {me} {}", path.display()),
        }),
        Some(&Exposure::Writable { mode }) => Err(StoreError::Untrusted {
            path_or_artifact: path.display().to_string(),
            reason: format!(
                "the {what} is writable by {} (mode {mode:04o}), so they can replace what runs",
                Exposure::writers(mode)
            ),
            fix: format!("chmod go-w {}", path.display()),
        }),
    }
}

/// Refuses a file that defines what runs (a configuration file, a lock
/// file) when a user other than us (root excepted) could change it, by the
/// rule of `check_trusted`, applied to the file and to its directory (and,
/// for a symlink, to the directory of the link too): a sticky directory
/// (`/tmp`) is fine for what its owner put there, and nothing above the
/// directory is looked at. A file that does not exist passes (its reader
/// reports it).
///
/// # Errors
/// [`StoreError::Untrusted`] naming the path and the `chmod`/`chown` that fixes it;
/// [`StoreError::Io`] when it cannot be looked at.
pub fn check_trust_file(path: &Path, what: &str) -> Result<(), StoreError> {
    let real = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(format!("resolve {}", path.display()), e)),
    };
    let meta =
        fs::metadata(&real).map_err(|e| StoreError::io(format!("stat {}", real.display()), e))?;
    check_trusted(&real, &meta, what)?;
    let mut dirs = vec![real.parent().map(Path::to_path_buf)];
    if real != path {
        dirs.push(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .or_else(|| Some(PathBuf::from("."))),
        );
    }
    for dir in dirs.into_iter().flatten() {
        let m =
            fs::metadata(&dir).map_err(|e| StoreError::io(format!("stat {}", dir.display()), e))?;
        if m.mode() & 0o1000 != 0 {
            // Sticky: others may add files but not replace ours.
            continue;
        }
        check_trusted(&dir, &m, &format!("directory of the {what}"))?;
    }
    Ok(())
}

/// Walks the directories from `root` down to `path`'s parent: refuses
/// symlinks and directories others can write ([`check_trusted`]), and creates missing ones 0700 when `create`. Returns whether every
/// directory exists.
pub(super) fn check_parents(root: &Path, path: &Path, create: bool) -> Result<bool, StoreError> {
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    let rel = parent.strip_prefix(root).map_err(|_| {
        StoreError::io(
            format!("cache path {}", path.display()),
            io::Error::other(format!("is outside the home {}", root.display())),
        )
    })?;
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => check_trusted(root, &m, "agent home")?,
        Ok(_) => {
            return Err(StoreError::io(
                format!("agent home {}", root.display()),
                io::Error::other("is not a directory"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !create {
                return Ok(false);
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| StoreError::io(format!("create {}", root.display()), e))?;
        }
        Err(e) => return Err(StoreError::io(format!("stat {}", root.display()), e)),
    }
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        let Component::Normal(c) = comp else {
            return Err(StoreError::io(
                format!("cache path {}", path.display()),
                io::Error::other("has a non-normal component"),
            ));
        };
        cur.push(c);
        // Two tries: a concurrent installer may create the directory between
        // our stat and our mkdir.
        for _ in 0..2 {
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(&cur)),
                Ok(m) if m.is_dir() => {
                    check_trusted(&cur, &m, "cache directory")?;
                    break;
                }
                Ok(_) => {
                    return Err(StoreError::io(
                        format!("cache directory {}", cur.display()),
                        io::Error::other("is not a directory"),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(false);
                    }
                    match fs::DirBuilder::new().mode(0o700).create(&cur) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            return Err(StoreError::io(format!("create {}", cur.display()), e));
                        }
                    }
                }
                Err(e) => return Err(StoreError::io(format!("stat {}", cur.display()), e)),
            }
        }
    }
    Ok(true)
}

pub(super) fn prepare_dir(root: &Path, path: &Path) -> Result<(), StoreError> {
    check_parents(root, path, true).map(|_| ())
}

pub(super) fn refuse_symlink_at(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(path)),
        Ok(m) if m.is_dir() => Err(StoreError::io(
            format!("cache path {}", path.display()),
            io::Error::other("is a directory"),
        )),
        _ => Ok(()),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `.{name}__{version}{kind}.tmp.{pid}.{unique}` beside `path`, mode 0600.
pub(super) fn create_temp(path: &Path, kind: &str) -> Result<(PathBuf, File), StoreError> {
    let pid = std::process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = sibling(path, ".", &format!("{kind}.tmp.{pid}.{nanos:x}{n:x}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
        {
            Ok(f) => return Ok((temp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(format!("create {}", temp.display()), e)),
        }
    }
}

pub(super) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsync {}", dir.display()), e))
}

/// Hashes the file at `path` (not following a symlink) and returns the
/// identity of the file that was hashed, taken from the open descriptor
/// after reading.
pub(crate) fn hash_file_identity(
    path: &Path,
) -> Result<(Sha256Digest, u64, super::record::FileIdentity), StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)
        .map_err(|e| StoreError::io(format!("read {}", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?;
    Ok((
        Sha256Digest(hasher.finalize().into()),
        size,
        super::record::FileIdentity::of(&meta),
    ))
}

/// How recent an install record's last-used mark may be for a load to leave
/// it as it is: the resolution of "last used".
pub(crate) const USED_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

/// Marks an install record used by a load: [`touch_now`], unless its mark
/// (`marked`, its modification time) is under [`USED_RESOLUTION`] old. A
/// host that loads one agent over and over then writes no inode each time;
/// a mark in the future (a clock set back) is always replaced.
pub(crate) fn mark_used(file: &File, marked: std::time::SystemTime) -> io::Result<()> {
    match std::time::SystemTime::now().duration_since(marked) {
        Ok(age) if age < USED_RESOLUTION => Ok(()),
        _ => touch_now(file),
    }
}

/// Sets the modification time of `file` to now (one `futimens`): the
/// last-used mark of an install record.
#[allow(unsafe_code)]
pub(crate) fn touch_now(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: the descriptor is open for the call; `times` is two valid timespecs.
    let rc = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

//! Parity helpers from the Go package, for Rust users porting code that used them.

use std::io;
use std::path::Path;

/// Copies `src` to `dst`, creating or truncating `dst` with `src`'s
/// permissions. Returns the bytes copied.
///
/// # Errors
/// Any I/O error from reading `src` or writing `dst`.
#[doc(alias = "CopyFile")]
pub fn copy_file(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> io::Result<u64> {
    // std::fs::copy copies the permission bits too (and uses copy_file_range on Linux).
    std::fs::copy(src, dst)
}

/// Renames `src` to `dst`; across file systems (`EXDEV`), copies then removes
/// `src`.
///
/// # Errors
/// The rename's error when it is not a cross-device one, else the copy's or removal's.
#[doc(alias = "MoveFile")]
pub fn move_file(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> io::Result<()> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if is_cross_device(&e) => {
            std::fs::copy(src, dst)?;
            std::fs::remove_file(src)
        }
        Err(e) => Err(e),
    }
}

fn is_cross_device(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::CrossesDevices || e.raw_os_error() == Some(libc::EXDEV)
}

/// The current platform's `{os}_{arch}` suffix as Go names them, e.g.
/// `linux_amd64`.
#[doc(alias = "PlatformSuffix")]
#[must_use]
pub fn platform_suffix() -> String {
    agent_ref::platform_suffix()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn copy_keeps_bytes_and_mode() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&a, b"agent bytes").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(copy_file(&a, &b).unwrap(), 11);
        assert_eq!(std::fs::read(&b).unwrap(), b"agent bytes");
        assert_eq!(
            std::fs::metadata(&b).unwrap().permissions().mode() & 0o777,
            0o750
        );
        assert!(a.exists());
    }

    #[test]
    fn move_renames_and_removes_the_source() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        move_file(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
    }

    #[test]
    fn move_across_file_systems_falls_back_to_copy() {
        // /dev/shm is a tmpfs on Linux; the temp dir usually is not.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let Ok(src_dir) = tempfile::tempdir_in(shm) else {
            return;
        };
        let dst_dir = tempfile::tempdir().unwrap();
        let (a, b) = (src_dir.path().join("a"), dst_dir.path().join("b"));
        std::fs::write(&a, b"across").unwrap();
        move_file(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"across");
    }

    #[test]
    fn move_of_a_missing_file_fails() {
        let t = tempfile::tempdir().unwrap();
        let e = move_file(t.path().join("nope"), t.path().join("b")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn suffix_is_os_underscore_arch() {
        let s = platform_suffix();
        assert!(s.starts_with("linux_") || s.starts_with("darwin_"), "{s}");
        assert!(!s.contains("x86_64"));
    }
}

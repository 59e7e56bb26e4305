//! Safe extraction of a release tarball: every entry is checked, only the
//! agent binary is written, and only inside the caller's private temp dir.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::GithubError;

/// Caps applied while reading an archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sum of the sizes the entries claim (and of extension data).
    pub max_total: u64,
    /// Number of tar entries, extension headers included.
    pub max_entries: u64,
}

/// GNU long names and PAX records are read into memory; they are small in
/// every real archive.
const MAX_EXTENSION: u64 = 64 * 1024;

/// Reads the gzip tarball at `archive`, refusing it as a whole if any entry is
/// unsafe, and writes the member `binary` (at the root or in one top-level
/// directory) to `dest_dir/binary`. Returns that path.
///
/// Archive paths are never used to name a file on disk, so even a path the
/// checks missed could not escape `dest_dir`.
///
/// # Errors
/// [`GithubError::UnsafeArchive`] for any unsafe entry or an archive over the
/// limits, [`GithubError::Missing`] when `binary` is not in it, and
/// [`GithubError::Io`] for local file errors.
pub fn extract_binary(
    archive: &Path,
    asset: &str,
    dest_dir: &Path,
    binary: &str,
    limits: Limits,
) -> Result<PathBuf, GithubError> {
    let reject = |reason: String| GithubError::UnsafeArchive {
        asset: asset.to_owned(),
        reason,
    };
    let file = File::open(archive)
        .map_err(|e| GithubError::io(format!("open {}", archive.display()), e))?;
    // Belt and braces: whatever the headers say, never decompress more than
    // the caps allow (headers and padding included).
    let budget = limits
        .max_total
        .saturating_add(limits.max_entries.saturating_mul(2 * 512 + 512))
        .saturating_add(1024 * 1024);
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut tar = tar::Archive::new(CappedReader {
        inner: gz,
        left: budget,
    });
    // Raw mode: we handle GNU long names and PAX headers ourselves so their
    // size is checked before anything is read into memory.
    let entries = tar
        .entries()
        .map_err(|e| reject(format!("not a tar archive: {e}")))?
        .raw(true);

    let mut count: u64 = 0;
    let mut total: u64 = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut found: Option<PathBuf> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| reject(format!("unreadable entry: {e}")))?;
        count += 1;
        if count > limits.max_entries {
            return Err(reject(format!("more than {} entries", limits.max_entries)));
        }
        let header = entry.header();
        let ty = header.entry_type();
        let size = header
            .size()
            .map_err(|e| reject(format!("bad size field: {e}")))?;
        total = total.saturating_add(size);
        if total > limits.max_total {
            return Err(reject(format!(
                "entries claim more than {} bytes (an entry claims {size})",
                limits.max_total
            )));
        }
        match ty {
            EntryType::GNULongName | EntryType::XHeader => {
                if size > MAX_EXTENSION {
                    return Err(reject(format!("extension header of {size} bytes")));
                }
                let mut data = Vec::new();
                (&mut entry)
                    .take(MAX_EXTENSION)
                    .read_to_end(&mut data)
                    .map_err(|e| reject(format!("unreadable extension header: {e}")))?;
                if ty == EntryType::GNULongName {
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    long_name = Some(data);
                } else {
                    for (key, value) in pax_records(&data).map_err(&reject)? {
                        match key {
                            b"path" => long_name = Some(value.to_vec()),
                            b"size" => {
                                return Err(reject(
                                    "PAX size override (entries over 8 GiB) is not supported"
                                        .to_owned(),
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                continue;
            }
            EntryType::XGlobalHeader | EntryType::GNULongLink => {
                if size > MAX_EXTENSION {
                    return Err(reject(format!("extension header of {size} bytes")));
                }
                // Its data is skipped by the iterator; a long link name only
                // matters to links, which are refused below.
                continue;
            }
            _ => {}
        }
        let raw_path = long_name
            .take()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let parts =
            safe_components(&raw_path).map_err(|why| reject(format!("{shown:?}: {why}")))?;
        match ty {
            EntryType::Regular | EntryType::Continuous => {}
            EntryType::Directory => continue,
            EntryType::Symlink => {
                return Err(reject(format!("{shown:?} is a symbolic link")));
            }
            EntryType::Link => return Err(reject(format!("{shown:?} is a hard link"))),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(reject(format!("{shown:?} is a device or fifo")));
            }
            other => {
                return Err(reject(format!(
                    "{shown:?} has unsupported entry type {other:?}"
                )));
            }
        }
        let is_binary = match parts.as_slice() {
            [only] => only == binary,
            [_dir, file] => file == binary,
            _ => false,
        };
        if !is_binary {
            continue; // validated; its data is skipped, never written
        }
        if found.is_some() {
            return Err(reject(format!("more than one {binary} in the archive")));
        }
        let out = dest_dir.join(binary);
        let mut f = create_private(&out)
            .map_err(|e| GithubError::io(format!("create {}", out.display()), e))?;
        let copied = io::copy(&mut (&mut entry).take(size), &mut f)
            .map_err(|e| reject(format!("reading {shown:?}: {e}")))?;
        if copied != size {
            return Err(reject(format!(
                "{shown:?} is truncated ({copied} of {size} bytes)"
            )));
        }
        f.sync_all()
            .map_err(|e| GithubError::io(format!("sync {}", out.display()), e))?;
        found = Some(out);
    }
    found.ok_or_else(|| {
        GithubError::Missing(format!(
            "{binary} in {asset} (the archive holds no such file at its root or in one top-level directory)"
        ))
    })
}

/// The normal components of an archive path; refuses absolute paths, `..`
/// and anything that is not plain UTF-8 names.
fn safe_components(raw: &[u8]) -> Result<Vec<String>, &'static str> {
    let s = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8")?;
    if s.is_empty() {
        return Err("empty path");
    }
    if s.starts_with('/') || s.starts_with('\\') {
        return Err("absolute path");
    }
    if s.contains('\\') {
        return Err("backslash in path");
    }
    let mut out = Vec::new();
    for c in Path::new(s).components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err("'..' in path"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// PAX records: `"%d %s=%s\n"`, length included.
/// One PAX record, `key=value`.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

fn pax_records(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("malformed PAX record".to_owned());
        }
        let record = &data[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("malformed PAX record")?;
        out.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o700);
    }
    opts.open(path)
}

/// Errors once more than `left` bytes have been read.
struct CappedReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One probe byte tells a stream that ends exactly at the cap from
            // one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("archive expands beyond the size cap")),
            };
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert_eq!(safe_components(b"./a/b").unwrap(), vec!["a", "b"]);
        assert!(safe_components(b"/etc/passwd").is_err());
        assert!(safe_components(b"a/../../b").is_err());
        assert!(safe_components(b"..").is_err());
        assert!(safe_components(b"a\\..\\b").is_err());
        assert!(safe_components(b"").is_err());
    }

    #[test]
    fn pax() {
        let data = b"20 path=a/very/long\n11 uid=100\n";
        let r = pax_records(data).unwrap();
        assert_eq!(r[0], (&b"path"[..], &b"a/very/long"[..]));
        assert_eq!(r[1], (&b"uid"[..], &b"100"[..]));
        assert!(pax_records(b"99 path=x\n").is_err());
        assert!(pax_records(b"x").is_err());
    }
}

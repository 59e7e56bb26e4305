#![allow(dead_code, unreachable_pub)]
//! Release tarballs for the tests, good and hostile. Hostile headers are
//! written byte by byte, since `tar::Builder` refuses to make them.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    /// A regular-file header whose name bytes are written as-is (`../x`, `/etc/x`).
    RawName(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    CharDevice(&'a str),
    /// A header claiming `size` bytes, followed by none of them.
    Claims(&'a str, u64),
    /// `n` empty directories.
    ManyDirs(usize),
}

pub fn tgz(entries: &[Entry<'_>]) -> Vec<u8> {
    let enc = GzEncoder::new(Vec::new(), Compression::default());
    let mut b = tar::Builder::new(enc);
    for e in entries {
        match e {
            Entry::File(path, data) => {
                let mut h = Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o755);
                h.set_entry_type(EntryType::Regular);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Entry::Dir(path) => {
                let mut h = Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o755);
                h.set_entry_type(EntryType::Directory);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            Entry::RawName(name, data) => {
                let h = raw_header(name, EntryType::Regular, data.len() as u64, None);
                b.append(&h, *data).unwrap();
            }
            Entry::Symlink(name, target) => {
                let h = raw_header(name, EntryType::Symlink, 0, Some(target));
                b.append(&h, &[][..]).unwrap();
            }
            Entry::HardLink(name, target) => {
                let h = raw_header(name, EntryType::Link, 0, Some(target));
                b.append(&h, &[][..]).unwrap();
            }
            Entry::CharDevice(name) => {
                let h = raw_header(name, EntryType::Char, 0, None);
                b.append(&h, &[][..]).unwrap();
            }
            Entry::Claims(name, size) => {
                let h = raw_header(name, EntryType::Regular, *size, None);
                // Header only: the data it promises never comes.
                b.get_mut().write_all(h.as_bytes()).unwrap();
            }
            Entry::ManyDirs(n) => {
                for i in 0..*n {
                    let name = format!("d{i}/");
                    let h = raw_header(&name, EntryType::Directory, 0, None);
                    b.append(&h, &[][..]).unwrap();
                }
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn raw_header(name: &str, ty: EntryType, size: u64, link: Option<&str>) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_mode(0o755);
    h.set_size(size);
    h.set_entry_type(ty);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

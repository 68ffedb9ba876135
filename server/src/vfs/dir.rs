//! Directory listing with getdents64. The cookie of an entry is the kernel's
//! `d_off` for it (the position just after it), so a listing resumes exactly
//! where the client left off, as with telldir/seekdir. Cookie 0 is the start.

use std::os::fd::OwnedFd;

use super::sys::{self, SysResult};

/// Bytes asked of the kernel by a listing's first getdents64 call; each
/// further call asks twice as much, up to `DIRENT_BUF_BYTES`. The kernel
/// reads (and on ext4 hashes) as many entries as fit, and a reply page holds
/// only a few hundred: a first read of the whole 32 KiB made every page of a
/// large directory read about a thousand entries to return two hundred.
const DIRENT_FIRST_BYTES: usize = 4 * 1024;
/// Most bytes asked of the kernel per getdents64 call.
const DIRENT_BUF_BYTES: usize = 32 * 1024;
/// getdents64 calls per listing; with the reply-size bound this is never
/// reached, it only guarantees the loop ends.
const DIRENT_CALLS_MAX: u32 = 4096;
/// Offset of d_name inside struct linux_dirent64.
const DIRENT_NAME_OFFSET: usize = 19;

const _: () = assert!(DIRENT_FIRST_BYTES >= 512 && DIRENT_FIRST_BYTES <= DIRENT_BUF_BYTES);

/// One entry, its name borrowed from the listing's buffer.
pub struct DirEntry<'a> {
    pub ino: u64,
    pub name: &'a [u8],
    pub cookie: u64,
}

/// What the consumer says about an entry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Take {
    /// Taken; go on.
    More,
    /// Did not fit: stop before it.
    Full,
}

/// List the open directory `dir` from `cookie`, feeding entries to `take`
/// until it reports `Full` (returns false) or the directory ends (returns true).
pub fn list(dir: &OwnedFd, cookie: u64, mut take: impl FnMut(DirEntry<'_>) -> Take) -> SysResult<bool> {
    sys::seek_dir(dir, cookie)?;
    let mut buf = vec![0u8; DIRENT_BUF_BYTES];
    let mut ask = DIRENT_FIRST_BYTES;
    for _ in 0..DIRENT_CALLS_MAX {
        let n = sys::getdents(dir, buf.get_mut(..ask).unwrap_or_default())?;
        ask = ask.saturating_mul(2).min(DIRENT_BUF_BYTES);
        if n == 0 {
            return Ok(true);
        }
        let mut pos = 0usize;
        while pos < n {
            let rec = buf.get(pos..n).ok_or(sys::Errno(libc::EIO))?;
            let (entry, reclen) = parse(rec).ok_or(sys::Errno(libc::EIO))?;
            if take(entry) == Take::Full {
                return Ok(false);
            }
            pos += reclen;
        }
    }
    Err(sys::Errno(libc::EIO))
}

/// Parse one linux_dirent64 record: d_ino u64, d_off i64, d_reclen u16,
/// d_type u8, d_name NUL-terminated.
fn parse(rec: &[u8]) -> Option<(DirEntry<'_>, usize)> {
    let ino = u64::from_ne_bytes(rec.get(0..8)?.try_into().ok()?);
    let off = i64::from_ne_bytes(rec.get(8..16)?.try_into().ok()?);
    let reclen = usize::from(u16::from_ne_bytes(rec.get(16..18)?.try_into().ok()?));
    if reclen <= DIRENT_NAME_OFFSET {
        return None;
    }
    let name_area = rec.get(DIRENT_NAME_OFFSET..reclen)?;
    let len = name_area.iter().position(|b| *b == 0)?;
    let name = name_area.get(..len)?;
    Some((DirEntry { ino, name, cookie: off as u64 }, reclen))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::fd::OwnedFd;

    use super::*;

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        std::fs::File::open(p).expect("open dir").into()
    }

    #[test]
    fn resumes_from_any_cookie_and_lists_each_name_once() {
        let dir = std::env::temp_dir().join(format!("hanfs-dir-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..300 {
            std::fs::write(dir.join(format!("n{i}")), b"").unwrap();
        }
        let fd = open_dir(&dir);
        let mut seen: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        let mut cookie = 0u64;
        let mut eof = false;
        for _ in 0..1000 {
            // Take 7 entries per "reply", then resume from the last cookie.
            let mut taken = 0;
            eof = list(&fd, cookie, |e| {
                if taken == 7 {
                    return Take::Full;
                }
                taken += 1;
                *seen.entry(e.name.to_vec()).or_insert(0) += 1;
                cookie = e.cookie;
                Take::More
            })
            .unwrap();
            if eof {
                break;
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(eof);
        assert_eq!(seen.len(), 302, "300 names plus . and ..");
        assert!(seen.values().all(|n| *n == 1));
    }

    #[test]
    fn rejects_malformed_records() {
        assert!(parse(&[0u8; 10]).is_none());
        let mut rec = vec![0u8; 24];
        rec[16] = 24; // reclen 24, but the name has no NUL
        rec[19..24].copy_from_slice(b"abcde");
        assert!(parse(&rec).is_none());
        rec[23] = 0;
        let (e, len) = parse(&rec).unwrap();
        assert_eq!((e.name, len), (b"abcd".as_slice(), 24));
    }
}

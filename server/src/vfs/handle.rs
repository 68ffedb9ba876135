//! NFSv3 file handle format and the identity check behind it.
//!
//! `[version u8 = 1][export_id u32][ino u64][ident u64]`, big-endian, 21 bytes.
//! `ident` is the birth time (statx STATX_BTIME, seconds and nanoseconds folded)
//! or, where the filesystem has none, the inode generation (FS_IOC_GETVERSION),
//! so a reused inode number never matches an old handle. Never st_dev, never
//! anything process-local: handles must survive failover.

use std::os::fd::OwnedFd;
use std::sync::Once;

use nfs3_types::nfs3::nfsstat3;

use super::sys::{self, Stat};

pub const FH_VERSION: u8 = 1;
/// Encoded length of a version-1 handle.
pub const FH_V1_BYTES: usize = 21;
/// NFSv3 handles are at most 64 bytes (RFC 1813 NFS3_FHSIZE).
pub const FH_BYTES_MAX: usize = 64;
const _: () = assert!(FH_V1_BYTES <= FH_BYTES_MAX);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    pub export_id: u32,
    pub ino: u64,
    pub ident: u64,
}

impl FileHandle {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FH_V1_BYTES);
        v.push(FH_VERSION);
        v.extend_from_slice(&self.export_id.to_be_bytes());
        v.extend_from_slice(&self.ino.to_be_bytes());
        v.extend_from_slice(&self.ident.to_be_bytes());
        v
    }

    /// Wrong length or version → NFS3ERR_BADHANDLE (as knfsd for a malformed fh).
    pub fn decode(b: &[u8]) -> Result<FileHandle, nfsstat3> {
        if b.len() != FH_V1_BYTES {
            return Err(nfsstat3::NFS3ERR_BADHANDLE);
        }
        let (ver, rest) = b.split_first().ok_or(nfsstat3::NFS3ERR_BADHANDLE)?;
        if *ver != FH_VERSION {
            return Err(nfsstat3::NFS3ERR_BADHANDLE);
        }
        let (e, rest) = rest.split_at(4);
        let (i, d) = rest.split_at(8);
        let be4 = |s: &[u8]| s.try_into().map(u32::from_be_bytes);
        let be8 = |s: &[u8]| s.try_into().map(u64::from_be_bytes);
        Ok(FileHandle {
            export_id: be4(e).map_err(|_| nfsstat3::NFS3ERR_BADHANDLE)?,
            ino: be8(i).map_err(|_| nfsstat3::NFS3ERR_BADHANDLE)?,
            ident: be8(d).map_err(|_| nfsstat3::NFS3ERR_BADHANDLE)?,
        })
    }
}

/// Fold a birth time into 64 bits. The top bit marks "birth time" so a
/// generation number can never collide with it.
fn fold_btime(sec: i64, nsec: u32) -> u64 {
    const BTIME_TAG: u64 = 1 << 63;
    (((sec as u64) << 30) ^ u64::from(nsec)) | BTIME_TAG
}

static NO_IDENT_WARNING: Once = Once::new();

/// The identity of the object behind `fd` (whose statx is `st`).
pub fn ident_of(fd: &OwnedFd, st: &Stat) -> u64 {
    if let Some((sec, nsec)) = st.btime {
        return fold_btime(sec, nsec);
    }
    match sys::generation(fd, st) {
        Ok(g) if g != 0 => g & !(1 << 63),
        _ => {
            NO_IDENT_WARNING.call_once(|| {
                tracing::warn!(
                    "filesystem reports neither birth time nor inode generation: \
                     a reused inode number cannot be told apart from the old object"
                );
            });
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let fh = FileHandle { export_id: 7, ino: 1 << 40, ident: u64::MAX - 3 };
        let b = fh.encode();
        assert_eq!(b.len(), FH_V1_BYTES);
        assert_eq!(FileHandle::decode(&b), Ok(fh));
    }

    #[test]
    fn bad_length_and_version() {
        let fh = FileHandle { export_id: 1, ino: 2, ident: 3 }.encode();
        assert_eq!(FileHandle::decode(&fh[..20]), Err(nfsstat3::NFS3ERR_BADHANDLE));
        assert_eq!(FileHandle::decode(&[]), Err(nfsstat3::NFS3ERR_BADHANDLE));
        let mut long = fh.clone();
        long.push(0);
        assert_eq!(FileHandle::decode(&long), Err(nfsstat3::NFS3ERR_BADHANDLE));
        let mut v2 = fh;
        v2[0] = 2;
        assert_eq!(FileHandle::decode(&v2), Err(nfsstat3::NFS3ERR_BADHANDLE));
    }

    #[test]
    fn btime_fold_differs_by_nsec() {
        assert_ne!(fold_btime(100, 1), fold_btime(100, 2));
        assert_ne!(fold_btime(100, 0), fold_btime(101, 0));
    }
}

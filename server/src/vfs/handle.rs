//! The NFSv3 file handle: self-resolving and authenticated.
//!
//! `[version u8 = 2][export_id u32 BE][fs handle type u8][fs handle bytes][MAC, 8 bytes]`
//!
//! The fs handle is the shared filesystem's own (`fhandle::handle_of`: inode
//! and generation on ext4 and XFS), so any node that mounts the filesystem
//! opens the object from the handle alone (`open_by_handle_at`), with no table
//! of objects: a renamed object keeps its handle, a deleted one or a reused
//! inode number gives NFS3ERR_STALE, and nothing depends on st_dev. The MAC is
//! HMAC-SHA256 over everything before it, truncated, keyed by the cluster's
//! handle key (drawn once at random and held in the replicated state, so every
//! node checks the same handles). A client therefore cannot forge a handle,
//! nor take the fs handle of an object out of one export and present it under
//! another: hanfs only issues handles for objects it reached inside the export.
//! A wrong length or version is NFS3ERR_BADHANDLE; a wrong MAC (a forged
//! handle, or one from another cluster) is NFS3ERR_STALE, as knfsd answers an
//! unknown fsid.

use hmac::{Hmac, Mac};
use nfs3_types::nfs3::nfsstat3;
use sha2::Sha256;

use super::fhandle::FsHandle;

pub const FH_VERSION: u8 = 2;
/// NFSv3 handles are at most 64 bytes (RFC 1813 NFS3_FHSIZE).
pub const FH_BYTES_MAX: usize = 64;
/// Version, export id, fs handle type.
const HEADER_BYTES: usize = 1 + 4 + 1;
/// The truncated MAC: 64 bits, so guessing one takes 2^63 tries on average.
pub const MAC_BYTES: usize = 8;
/// The largest fs handle that fits: 50 bytes (ext4 uses 8, XFS 8 or 12, btrfs up to 40).
pub const FS_BYTES_MAX: usize = FH_BYTES_MAX - HEADER_BYTES - MAC_BYTES;
const _: () = assert!(FS_BYTES_MAX >= 40);

/// Why a filesystem object cannot be given a handle.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error("the filesystem's handle has {bytes} bytes; an NFSv3 handle has room for {FS_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error("the filesystem's handle type {kind} does not fit in one byte")]
    Type { kind: i32 },
}

/// A decoded handle: the export and the object's fs handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    pub export_id: u32,
    pub fs: FsHandle,
}

/// The handle key, ready to MAC (the keyed hash state is computed once).
#[derive(Clone)]
pub struct HandleKey(Hmac<Sha256>);

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}

impl HandleKey {
    pub fn new(key: &[u8; hanfs_state::HANDLE_KEY_BYTES]) -> HandleKey {
        // HMAC takes keys of any length: this never fails.
        HandleKey(<Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()))
    }

    fn tag(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(body);
        mac
    }
}

/// Whether an fs handle fits in an NFSv3 handle.
pub fn check_fit(fs: &FsHandle) -> Result<(), FitError> {
    fit(fs.kind, fs.bytes.len()).map(drop)
}

/// Whether an fs handle of this type and length fits in an NFSv3 handle.
pub fn fits(kind: i32, bytes: usize) -> bool {
    fit(kind, bytes).is_ok()
}

/// The handle type as its one byte, if an fs handle of this type and length fits.
fn fit(kind: i32, bytes: usize) -> Result<u8, FitError> {
    if bytes > FS_BYTES_MAX || bytes == 0 {
        return Err(FitError::TooLong { bytes });
    }
    u8::try_from(kind).map_err(|_| FitError::Type { kind })
}

/// Bytes of the wire handle of an fs handle of `fs_bytes` bytes.
pub const fn wire_len(fs_bytes: usize) -> usize {
    HEADER_BYTES + fs_bytes + MAC_BYTES
}

/// Append the wire handle of fs handle (`kind`, `fs`) in `export_id` to
/// `out` (`wire_len(fs.len())` bytes), without building a `FileHandle`: a
/// listing encodes one per entry straight into its reply. One that does not
/// fit is NFS3ERR_SERVERFAULT and appends nothing.
pub fn encode_into(export_id: u32, kind: i32, fs: &[u8], key: &HandleKey, out: &mut Vec<u8>) -> Result<(), nfsstat3> {
    let kind = fit(kind, fs.len()).map_err(|e| {
        tracing::error!(export_id, error = %e, "cannot hand out a handle");
        nfsstat3::NFS3ERR_SERVERFAULT
    })?;
    let start = out.len();
    out.push(FH_VERSION);
    out.extend_from_slice(&export_id.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(fs);
    let tag = key.tag(out.get(start..).unwrap_or_default()).finalize().into_bytes();
    out.extend_from_slice(tag.get(..MAC_BYTES).unwrap_or_default());
    Ok(())
}

impl FileHandle {
    /// The wire handle. An fs handle that does not fit (checked for the export
    /// root at start; another object of the same filesystem could in theory
    /// be larger) is NFS3ERR_SERVERFAULT.
    pub fn encode(&self, key: &HandleKey) -> Result<Vec<u8>, nfsstat3> {
        let mut v = Vec::with_capacity(wire_len(self.fs.bytes.len()));
        encode_into(self.export_id, self.fs.kind, &self.fs.bytes, key, &mut v)?;
        Ok(v)
    }

    /// The export id a wire handle claims, unchecked (no MAC): only for
    /// choosing how to run a call whose handle `decode` checks afterwards.
    pub fn claimed_export_id(b: &[u8]) -> Option<u32> {
        match b.get(..HEADER_BYTES)? {
            [version, e0, e1, e2, e3, _] if *version == FH_VERSION => Some(u32::from_be_bytes([*e0, *e1, *e2, *e3])),
            _ => None,
        }
    }

    /// Wrong length or version → NFS3ERR_BADHANDLE; a MAC that does not match
    /// → NFS3ERR_STALE (compared in constant time).
    pub fn decode(b: &[u8], key: &HandleKey) -> Result<FileHandle, nfsstat3> {
        if b.len() < HEADER_BYTES + 1 + MAC_BYTES || b.len() > FH_BYTES_MAX {
            return Err(nfsstat3::NFS3ERR_BADHANDLE);
        }
        let (body, mac) = b.split_at(b.len() - MAC_BYTES);
        let (header, fs) = body.split_at(HEADER_BYTES);
        let [version, e0, e1, e2, e3, kind] = header else { return Err(nfsstat3::NFS3ERR_BADHANDLE) };
        if *version != FH_VERSION {
            return Err(nfsstat3::NFS3ERR_BADHANDLE);
        }
        key.tag(body).verify_truncated_left(mac).map_err(|_| nfsstat3::NFS3ERR_STALE)?;
        Ok(FileHandle {
            export_id: u32::from_be_bytes([*e0, *e1, *e2, *e3]),
            fs: FsHandle { kind: i32::from(*kind), bytes: fs.to_vec() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> HandleKey {
        HandleKey::new(&[n; 32])
    }

    fn fh() -> FileHandle {
        FileHandle { export_id: 7, fs: FsHandle { kind: 1, bytes: vec![1, 2, 3, 4, 5, 6, 7, 8] } }
    }

    #[test]
    fn roundtrip() {
        let b = fh().encode(&key(1)).unwrap();
        assert_eq!(b.len(), HEADER_BYTES + 8 + MAC_BYTES);
        assert_eq!(FileHandle::decode(&b, &key(1)), Ok(fh()));
        let big = FileHandle { export_id: u32::MAX, fs: FsHandle { kind: 255, bytes: vec![9; FS_BYTES_MAX] } };
        let b = big.encode(&key(1)).unwrap();
        assert_eq!(b.len(), FH_BYTES_MAX);
        assert_eq!(FileHandle::decode(&b, &key(1)), Ok(big));
    }

    #[test]
    fn forged_or_foreign_handles_are_stale() {
        let b = fh().encode(&key(1)).unwrap();
        // Another cluster's key.
        assert_eq!(FileHandle::decode(&b, &key(2)), Err(nfsstat3::NFS3ERR_STALE));
        // Every single-bit change anywhere after the version byte.
        for i in 1..b.len() {
            for bit in 0..8 {
                let mut f = b.clone();
                f[i] ^= 1 << bit;
                assert_eq!(FileHandle::decode(&f, &key(1)), Err(nfsstat3::NFS3ERR_STALE), "byte {i} bit {bit}");
            }
        }
        // Another export id over the same fs handle, MAC recomputed without the key: stale.
        let mut other = b.clone();
        other[4] = 8;
        assert_eq!(FileHandle::decode(&other, &key(1)), Err(nfsstat3::NFS3ERR_STALE));
    }

    #[test]
    fn bad_length_and_version() {
        let b = fh().encode(&key(1)).unwrap();
        assert_eq!(FileHandle::decode(&[], &key(1)), Err(nfsstat3::NFS3ERR_BADHANDLE));
        assert_eq!(FileHandle::decode(&b[..HEADER_BYTES + MAC_BYTES], &key(1)), Err(nfsstat3::NFS3ERR_BADHANDLE));
        assert_eq!(FileHandle::decode(&[0; FH_BYTES_MAX + 1], &key(1)), Err(nfsstat3::NFS3ERR_BADHANDLE));
        let mut v1 = b.clone();
        v1[0] = 1;
        assert_eq!(FileHandle::decode(&v1, &key(1)), Err(nfsstat3::NFS3ERR_BADHANDLE));
        // A version-1 handle of the old format (21 bytes) is refused, not misread.
        let mut old = vec![1u8];
        old.extend_from_slice(&[0; 20]);
        assert_eq!(FileHandle::decode(&old, &key(1)), Err(nfsstat3::NFS3ERR_BADHANDLE));
    }

    #[test]
    fn handles_that_do_not_fit_are_refused() {
        let long = FileHandle { export_id: 1, fs: FsHandle { kind: 1, bytes: vec![0; FS_BYTES_MAX + 1] } };
        assert_eq!(long.encode(&key(1)), Err(nfsstat3::NFS3ERR_SERVERFAULT));
        assert_eq!(check_fit(&long.fs), Err(FitError::TooLong { bytes: FS_BYTES_MAX + 1 }));
        assert_eq!(check_fit(&FsHandle { kind: 256, bytes: vec![1] }), Err(FitError::Type { kind: 256 }));
        assert_eq!(check_fit(&FsHandle { kind: -1, bytes: vec![1] }), Err(FitError::Type { kind: -1 }));
    }
}

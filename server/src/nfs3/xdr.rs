//! Checked decoders for NFSv3 call arguments (RFC 1813), on the bounded
//! `rpc::xdr::Reader`. A decode failure is GARBAGE_ARGS. A name or path that
//! decodes but may not be used is returned as `Err(nfsstat3)` inside `Ok`, so
//! the handler can answer with the procedure's own failure body.
//!
//! Limits: a handle is at most 64 bytes, a name at most 255 bytes with no `/`
//! or NUL, and byte counts are clamped to what FSINFO advertises.

use nfs3_types::nfs3::{nfsstat3, nfstime3};

use crate::rpc::xdr::{DecodeError, Reader};
use crate::vfs::handle::FH_BYTES_MAX;

/// Largest READ/WRITE transfer (FSINFO rtmax/wtmax).
pub const IO_BYTES_MAX: u32 = 1024 * 1024;
/// Preferred (and largest served) READDIR/READDIRPLUS reply (FSINFO dtpref).
pub const DIR_BYTES_MAX: u32 = 64 * 1024;
/// Longest usable file name (Linux NAME_MAX).
pub const NAME_BYTES_MAX: usize = 255;
/// Longest name accepted on the wire; longer ones are garbage, shorter ones
/// over NAME_BYTES_MAX get NFS3ERR_NAMETOOLONG.
pub const NAME_WIRE_BYTES_MAX: usize = 8192;
/// Longest symlink target (Linux PATH_MAX without the NUL).
pub const PATH_BYTES_MAX: usize = 4095;
/// Longest symlink target accepted on the wire.
pub const PATH_WIRE_BYTES_MAX: usize = 8192;
const _: () = assert!(NAME_BYTES_MAX < NAME_WIRE_BYTES_MAX);
const _: () = assert!(PATH_BYTES_MAX < PATH_WIRE_BYTES_MAX);
const _: () = assert!(DIR_BYTES_MAX <= IO_BYTES_MAX);

pub type Fh = Vec<u8>;

/// What a name is going to be used for: `.` and `..` are fine to look up but
/// not to create or remove.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NameUse {
    Lookup,
    Create,
    Remove,
}

pub fn fh(r: &mut Reader) -> Result<Fh, DecodeError> {
    Ok(r.opaque(FH_BYTES_MAX)?.to_vec())
}

/// Check a file name the way the Linux VFS would answer for it.
pub fn check_name(name: &[u8], usage: NameUse) -> Result<Vec<u8>, nfsstat3> {
    if name.len() > NAME_BYTES_MAX {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    let dot = name == b"." || name == b"..";
    match (dot, usage) {
        // mkdir(".") / link to "." give EEXIST on Linux.
        (true, NameUse::Create) => Err(nfsstat3::NFS3ERR_EXIST),
        // unlink/rmdir/rename of "." or ".." give EINVAL/EBUSY on Linux.
        (true, NameUse::Remove) => Err(nfsstat3::NFS3ERR_INVAL),
        _ => Ok(name.to_vec()),
    }
}

pub type Name = Result<Vec<u8>, nfsstat3>;

pub fn name(r: &mut Reader, usage: NameUse) -> Result<Name, DecodeError> {
    let raw = r.opaque(NAME_WIRE_BYTES_MAX)?;
    Ok(check_name(raw, usage))
}

/// diropargs3: directory handle and a checked name.
pub fn dirop(r: &mut Reader, usage: NameUse) -> Result<(Fh, Name), DecodeError> {
    Ok((fh(r)?, name(r, usage)?))
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SetTime {
    DontChange,
    ServerTime,
    ClientTime(nfstime3),
}

/// sattr3: the attributes a client asks to set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sattr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl Sattr {
    pub fn is_empty(&self) -> bool {
        *self == Sattr::default()
    }
}

fn opt_u32(r: &mut Reader) -> Result<Option<u32>, DecodeError> {
    Ok(if r.bool()? { Some(r.u32()?) } else { None })
}

fn time(r: &mut Reader) -> Result<nfstime3, DecodeError> {
    Ok(nfstime3 { seconds: r.u32()?, nseconds: r.u32()? })
}

fn set_time(r: &mut Reader) -> Result<Option<SetTime>, DecodeError> {
    match r.u32()? {
        0 => Ok(None),
        1 => Ok(Some(SetTime::ServerTime)),
        2 => Ok(Some(SetTime::ClientTime(time(r)?))),
        _ => Err(DecodeError::BadValue),
    }
}

pub fn sattr(r: &mut Reader) -> Result<Sattr, DecodeError> {
    Ok(Sattr {
        mode: opt_u32(r)?,
        uid: opt_u32(r)?,
        gid: opt_u32(r)?,
        size: if r.bool()? { Some(r.u64()?) } else { None },
        atime: set_time(r)?,
        mtime: set_time(r)?,
    })
}

/// SETATTR3args.
pub fn setattr(r: &mut Reader) -> Result<(Fh, Sattr, Option<nfstime3>), DecodeError> {
    let f = fh(r)?;
    let s = sattr(r)?;
    let guard = if r.bool()? { Some(time(r)?) } else { None };
    Ok((f, s, guard))
}

/// A byte count clamped to `max` (as knfsd clamps to its max payload).
pub fn count(r: &mut Reader, max: u32) -> Result<u32, DecodeError> {
    Ok(r.u32()?.min(max))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateHow {
    Unchecked(Sattr),
    Guarded(Sattr),
    Exclusive([u8; 8]),
}

pub fn createhow(r: &mut Reader) -> Result<CreateHow, DecodeError> {
    match r.u32()? {
        0 => Ok(CreateHow::Unchecked(sattr(r)?)),
        1 => Ok(CreateHow::Guarded(sattr(r)?)),
        2 => {
            let v = r.fixed(8)?;
            let mut verf = [0u8; 8];
            verf.copy_from_slice(v);
            Ok(CreateHow::Exclusive(verf))
        }
        _ => Err(DecodeError::BadValue),
    }
}

/// mknoddata3. Regular files, directories and symlinks are not made by MKNOD:
/// NFS3ERR_BADTYPE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mknod {
    Chr(Sattr, u32, u32),
    Blk(Sattr, u32, u32),
    Sock(Sattr),
    Fifo(Sattr),
    BadType,
}

pub fn mknod(r: &mut Reader) -> Result<Mknod, DecodeError> {
    match r.u32()? {
        1..=2 | 5 => Ok(Mknod::BadType),
        3 => Ok(Mknod::Blk(sattr(r)?, r.u32()?, r.u32()?)),
        4 => Ok(Mknod::Chr(sattr(r)?, r.u32()?, r.u32()?)),
        6 => Ok(Mknod::Sock(sattr(r)?)),
        7 => Ok(Mknod::Fifo(sattr(r)?)),
        _ => Err(DecodeError::BadValue),
    }
}

/// Symlink target: at most PATH_BYTES_MAX, no NUL.
pub fn symlink_target(r: &mut Reader) -> Result<Name, DecodeError> {
    let raw = r.opaque(PATH_WIRE_BYTES_MAX)?;
    if raw.len() > PATH_BYTES_MAX {
        return Ok(Err(nfsstat3::NFS3ERR_NAMETOOLONG));
    }
    if raw.is_empty() || raw.contains(&0) {
        return Ok(Err(nfsstat3::NFS3ERR_INVAL));
    }
    Ok(Ok(raw.to_vec()))
}

/// WRITE3args: the data must be exactly `count` bytes (as knfsd checks).
pub struct WriteArgs {
    pub fh: Fh,
    pub offset: u64,
    pub stable: u32,
    /// Where the data lies in the argument bytes (borrowed, not copied: a
    /// WRITE carries up to `IO_BYTES_MAX`).
    pub data: std::ops::Range<usize>,
}

pub fn write(r: &mut Reader) -> Result<WriteArgs, DecodeError> {
    let fh = fh(r)?;
    let offset = r.u64()?;
    let count = r.u32()?;
    let stable = r.u32()?;
    if stable > 2 {
        return Err(DecodeError::BadValue);
    }
    // The data follows its 4-byte length.
    let start = r.position() + 4;
    let data = r.opaque(IO_BYTES_MAX as usize)?;
    if data.len() != count as usize {
        return Err(DecodeError::BadValue);
    }
    Ok(WriteArgs { fh, offset, stable, data: start..start + data.len() })
}

/// Decode with `f` and require that every byte was used.
pub fn decode_all<T>(args: &[u8], f: impl FnOnce(&mut Reader) -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    let mut r = Reader::new(args);
    let v = f(&mut r)?;
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opaque(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v.resize(v.len() + (4 - b.len() % 4) % 4, 0);
        v
    }

    fn decode_name(b: &[u8], u: NameUse) -> Result<Name, DecodeError> {
        decode_all(&opaque(b), |r| name(r, u))
    }

    #[test]
    fn names() {
        assert_eq!(decode_name(b"abc", NameUse::Create), Ok(Ok(b"abc".to_vec())));
        assert_eq!(decode_name(b"a/b", NameUse::Lookup), Ok(Err(nfsstat3::NFS3ERR_INVAL)));
        assert_eq!(decode_name(b"a\0b", NameUse::Lookup), Ok(Err(nfsstat3::NFS3ERR_INVAL)));
        assert_eq!(decode_name(b"", NameUse::Lookup), Ok(Err(nfsstat3::NFS3ERR_INVAL)));
        assert_eq!(decode_name(&[b'x'; 255], NameUse::Create).map(|n| n.is_ok()), Ok(true));
        assert_eq!(decode_name(&[b'x'; 256], NameUse::Create), Ok(Err(nfsstat3::NFS3ERR_NAMETOOLONG)));
        assert_eq!(decode_name(&[b'x'; 4096], NameUse::Lookup), Ok(Err(nfsstat3::NFS3ERR_NAMETOOLONG)));
        assert_eq!(decode_name(&[b'x'; 9000], NameUse::Lookup), Err(DecodeError::TooLong));
        assert_eq!(decode_name(b"..", NameUse::Lookup), Ok(Ok(b"..".to_vec())));
        assert_eq!(decode_name(b".", NameUse::Create), Ok(Err(nfsstat3::NFS3ERR_EXIST)));
        assert_eq!(decode_name(b"..", NameUse::Remove), Ok(Err(nfsstat3::NFS3ERR_INVAL)));
    }

    #[test]
    fn handles_over_64_bytes_are_garbage() {
        assert_eq!(decode_all(&opaque(&[1; 65]), fh), Err(DecodeError::TooLong));
        assert_eq!(decode_all(&opaque(&[1; 64]), fh).map(|f| f.len()), Ok(64));
        // Trailing bytes are garbage too.
        let mut b = opaque(&[1; 8]);
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decode_all(&b, fh), Err(DecodeError::BadValue));
    }

    #[test]
    fn counts_are_clamped() {
        let b = u32::MAX.to_be_bytes();
        assert_eq!(decode_all(&b, |r| count(r, IO_BYTES_MAX)), Ok(IO_BYTES_MAX));
    }

    #[test]
    fn write_count_must_match_data() {
        let mut b = opaque(&[1; 21]);
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&5u32.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        let ok = [b.clone(), opaque(b"hello")].concat();
        assert_eq!(decode_all(&ok, write).map(|w| ok[w.data].to_vec()), Ok(b"hello".to_vec()));
        let bad = [b, opaque(b"hell")].concat();
        assert!(decode_all(&bad, write).is_err());
    }

    #[test]
    fn sattr_and_createhow() {
        let mut b = 2u32.to_be_bytes().to_vec(); // EXCLUSIVE
        b.extend_from_slice(&[9; 8]);
        assert_eq!(decode_all(&b, createhow), Ok(CreateHow::Exclusive([9; 8])));
        let mut s = vec![];
        for w in [1u32, 0o644, 0, 0, 0, 0, 2, 5, 6] {
            s.extend_from_slice(&w.to_be_bytes());
        }
        let got = decode_all(&s, sattr).unwrap();
        assert_eq!(got.mode, Some(0o644));
        assert_eq!(got.atime, None);
        assert_eq!(got.mtime, Some(SetTime::ClientTime(nfstime3 { seconds: 5, nseconds: 6 })));
        assert!(decode_all(&[0, 0, 0, 3], createhow).is_err());
    }
}

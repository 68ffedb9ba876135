//! The one table from errno to nfsstat3 (as knfsd's `nfserrno`). An errno not in
//! the table becomes NFS3ERR_IO and is logged once.

use std::sync::Once;

use nfs3_types::nfs3::nfsstat3;

use super::sys::Errno;

const TABLE: &[(i32, nfsstat3)] = &[
    (libc::EPERM, nfsstat3::NFS3ERR_PERM),
    (libc::ENOENT, nfsstat3::NFS3ERR_NOENT),
    (libc::EIO, nfsstat3::NFS3ERR_IO),
    (libc::ENXIO, nfsstat3::NFS3ERR_NXIO),
    (libc::EFBIG, nfsstat3::NFS3ERR_FBIG),
    (libc::EACCES, nfsstat3::NFS3ERR_ACCES),
    (libc::EEXIST, nfsstat3::NFS3ERR_EXIST),
    (libc::EXDEV, nfsstat3::NFS3ERR_XDEV),
    (libc::EMLINK, nfsstat3::NFS3ERR_MLINK),
    (libc::ENODEV, nfsstat3::NFS3ERR_NODEV),
    (libc::ENOTDIR, nfsstat3::NFS3ERR_NOTDIR),
    (libc::EISDIR, nfsstat3::NFS3ERR_ISDIR),
    (libc::EINVAL, nfsstat3::NFS3ERR_INVAL),
    (libc::ENOSPC, nfsstat3::NFS3ERR_NOSPC),
    (libc::EROFS, nfsstat3::NFS3ERR_ROFS),
    (libc::ENAMETOOLONG, nfsstat3::NFS3ERR_NAMETOOLONG),
    (libc::ENOTEMPTY, nfsstat3::NFS3ERR_NOTEMPTY),
    (libc::EDQUOT, nfsstat3::NFS3ERR_DQUOT),
    (libc::ESTALE, nfsstat3::NFS3ERR_STALE),
    (libc::ETXTBSY, nfsstat3::NFS3ERR_ACCES),
    (libc::EAGAIN, nfsstat3::NFS3ERR_JUKEBOX),
    (libc::EWOULDBLOCK, nfsstat3::NFS3ERR_JUKEBOX),
    (libc::ENOMEM, nfsstat3::NFS3ERR_IO),
    (libc::E2BIG, nfsstat3::NFS3ERR_FBIG),
    (libc::EBUSY, nfsstat3::NFS3ERR_ACCES),
    (libc::ENOTSUP, nfsstat3::NFS3ERR_NOTSUPP),
    (libc::EOPNOTSUPP, nfsstat3::NFS3ERR_NOTSUPP),
    (libc::EOVERFLOW, nfsstat3::NFS3ERR_INVAL),
    (libc::ELOOP, nfsstat3::NFS3ERR_ACCES),
    (libc::EBADF, nfsstat3::NFS3ERR_IO),
    (libc::ESPIPE, nfsstat3::NFS3ERR_INVAL),
];

static UNKNOWN_WARNING: Once = Once::new();

pub fn to_nfs(e: Errno) -> nfsstat3 {
    match TABLE.iter().find(|(n, _)| *n == e.0) {
        Some((_, s)) => *s,
        None => {
            UNKNOWN_WARNING.call_once(|| {
                tracing::warn!(errno = e.0, "errno with no NFSv3 equivalent; answering NFS3ERR_IO");
            });
            nfsstat3::NFS3ERR_IO
        }
    }
}

impl From<Errno> for nfsstat3 {
    fn from(e: Errno) -> nfsstat3 {
        to_nfs(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown() {
        assert_eq!(to_nfs(Errno(libc::ENOENT)), nfsstat3::NFS3ERR_NOENT);
        assert_eq!(to_nfs(Errno(libc::ENOTEMPTY)), nfsstat3::NFS3ERR_NOTEMPTY);
        assert_eq!(to_nfs(Errno(libc::EHOSTDOWN)), nfsstat3::NFS3ERR_IO);
    }
}

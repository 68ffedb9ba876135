//! statx → NFSv3 attributes. fsid is the export's cluster-assigned id, never
//! st_dev; fileid is the inode number.

use nfs3_types::nfs3::{fattr3, ftype3, nfstime3, specdata3, wcc_attr};

use super::sys::Stat;

/// st_blocks counts 512-byte units.
const BLOCK_BYTES: u64 = 512;

pub fn nfstime(t: (i64, u32)) -> nfstime3 {
    let seconds = u32::try_from(t.0.max(0)).unwrap_or(u32::MAX);
    nfstime3 { seconds, nseconds: t.1 }
}

pub fn ftype(mode: u32) -> ftype3 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => ftype3::NF3DIR,
        libc::S_IFBLK => ftype3::NF3BLK,
        libc::S_IFCHR => ftype3::NF3CHR,
        libc::S_IFLNK => ftype3::NF3LNK,
        libc::S_IFSOCK => ftype3::NF3SOCK,
        libc::S_IFIFO => ftype3::NF3FIFO,
        _ => ftype3::NF3REG,
    }
}

pub fn fattr(st: &Stat, export_id: u32) -> fattr3 {
    fattr3 {
        type_: ftype(st.mode),
        mode: st.mode & 0o7777,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        size: st.size,
        used: st.blocks.saturating_mul(BLOCK_BYTES),
        rdev: specdata3 { specdata1: st.rdev_major, specdata2: st.rdev_minor },
        fsid: u64::from(export_id),
        fileid: st.ino,
        atime: nfstime(st.atime),
        mtime: nfstime(st.mtime),
        ctime: nfstime(st.ctime),
    }
}

pub fn wcc(st: &Stat) -> wcc_attr {
    wcc_attr { size: st.size, mtime: nfstime(st.mtime), ctime: nfstime(st.ctime) }
}

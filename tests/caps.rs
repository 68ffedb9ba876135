//! Root's capabilities stay out of a caller's operations (issue 11 item 6):
//! the data of a WRITE (and a truncate) moves under the caller's ids without
//! CAP_FSETID and CAP_SYS_RESOURCE, so the kernel clears set-id bits (pjdfstest
//! chmod/12.t) and keeps ext4's root-reserved blocks for root, as for a local
//! process; a root caller on a no_root_squash export keeps both powers.
//!
//! The reserved-block tests build a small ext4 image with `mkfs.ext4 -m 50`,
//! attach it with `losetup` and mount it for the test (`Ext4`), and detach it
//! on drop.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nfs3_types::nfs3::*;

use crate::nfs3_ops::*;
use crate::util::*;

/// The ids of the file owner and of another user in these tests.
const OWNER: u32 = 1000;
const OTHER: u32 = 2000;
/// The image the reserved-block tests format: small, so filling it is quick.
const IMAGE_BYTES: u64 = 32 * 1024 * 1024;
/// Half of it reserved for root (`mkfs.ext4 -m`).
const RESERVED_PERCENT: u32 = 50;
/// One WRITE while filling the file system.
const CHUNK_BYTES: usize = 256 * 1024;
/// WRITEs a fill may take at most (the whole image, twice over).
const FILL_WRITES_MAX: u64 = 2 * IMAGE_BYTES / CHUNK_BYTES as u64;
/// umount attempts on drop (the server may still be closing its fds).
const UMOUNT_TRIES_MAX: u32 = 50;
const UMOUNT_RETRY_MS: u64 = 100;

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A file `name` in `dir` owned by `uid`:`uid` with `mode` (set after the
/// chown, which clears set-id bits).
fn owned_file(dir: &Path, name: &str, uid: u32, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b"0123456789").expect("write file");
    std::os::unix::fs::chown(&p, Some(uid), Some(uid)).expect("chown");
    set_mode(&p, mode);
    assert_eq!(mode_of(&p), mode, "set-up mode of {name}");
    p
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").mode() & 0o7777
}

/// Write one byte at the start of `name` (in the export root) as `uid`.
async fn write_as(s: &TestServer, uid: u32, name: &str) -> Result<(), nfsstat3> {
    let mut c = s.connect_as(uid, uid, &[]).await;
    let root = c.root_nfs_fh3();
    let (f, _) = lookup(&mut c, &root, name).await?;
    write(&mut c, &f, 0, b"x", stable_how::FILE_SYNC).await.map(drop)
}

#[tokio::test]
async fn non_owner_write_clears_set_id_bits() {
    // pjdfstest chmod/12.t #3,4 (set-uid), #7,8 (set-gid), #11,12 (both):
    // a write by someone else to a file it may write clears the bits.
    let export = tempdir("caps-nonowner");
    let p = export.path();
    set_mode(p, 0o777);
    let cases = [("suid", 0o4777), ("sgid", 0o2777), ("both", 0o6777)];
    for (name, mode) in cases {
        owned_file(p, name, OWNER, mode);
    }
    let s = TestServer::start(p, "*(rw,insecure)");
    for (name, mode) in cases {
        write_as(&s, OTHER, name).await.unwrap_or_else(|e| panic!("{name}: WRITE as {OTHER}: {e:?}"));
        assert_eq!(mode_of(&p.join(name)), 0o777, "{name} ({mode:o}) after a non-owner's write");
        assert_eq!(std::fs::read(p.join(name)).unwrap(), b"x123456789");
    }
}

#[tokio::test]
async fn owner_write_clears_set_id_bits() {
    // A non-root writer loses set-uid on its own file too (the kernel clears
    // it unless the writer holds CAP_FSETID), and set-gid with group execute.
    let export = tempdir("caps-owner");
    let p = export.path();
    set_mode(p, 0o777);
    owned_file(p, "f", OWNER, 0o6777);
    let s = TestServer::start(p, "*(rw,insecure)");
    write_as(&s, OWNER, "f").await.expect("owner's WRITE");
    assert_eq!(mode_of(&p.join("f")), 0o777);
}

#[tokio::test]
async fn owner_truncate_past_the_mode_clears_set_uid() {
    // SETATTR size on an owner's 04444 file: the owner override opens it at
    // the server's ids, but the truncate runs at the caller's and clears
    // set-uid like any non-root truncate.
    let export = tempdir("caps-truncate");
    let p = export.path();
    set_mode(p, 0o777);
    owned_file(p, "f", OWNER, 0o4444);
    let s = TestServer::start(p, "*(rw,insecure)");
    let mut c = s.connect_as(OWNER, OWNER, &[]).await;
    let root = c.root_nfs_fh3();
    let (f, _) = lookup(&mut c, &root, "f").await.unwrap();
    let size = sattr3 { size: Nfs3Option::Some(3), ..Default::default() };
    let r = c.setattr(&SETATTR3args { object: f, new_attributes: size, guard: Nfs3Option::None }).await.unwrap();
    assert!(matches!(r, Nfs3Result::Ok(_)), "{r:?}");
    assert_eq!(std::fs::metadata(p.join("f")).unwrap().len(), 3);
    assert_eq!(mode_of(&p.join("f")), 0o444);
}

#[tokio::test]
async fn root_write_keeps_set_id_bits() {
    // no_root_squash root keeps CAP_FSETID, as with knfsd and locally.
    let export = tempdir("caps-root");
    let p = export.path();
    owned_file(p, "f", OWNER, 0o6777);
    let s = TestServer::start(p, RW_NO_SQUASH);
    write_as(&s, 0, "f").await.expect("root's WRITE");
    assert_eq!(mode_of(&p.join("f")), 0o6777);
}

// ------------------------------------------------------------ reserved blocks

/// A tool by name from PATH or the sbin directories, or the reason it is missing.
fn tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    dirs.iter()
        .chain(sbin.iter())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is missing: install e2fsprogs and mount (./test.sh does)"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A freshly made ext4 file system with `RESERVED_PERCENT` reserved for
/// root, loop-mounted at `mnt` (mode 0777) until drop.
struct Ext4 {
    /// Holds the image and the mount point; removed after the umount.
    _dir: TempDir,
    mnt: PathBuf,
    dev: Option<String>,
    mounted: bool,
}

impl Ext4 {
    fn new(label: &str) -> Ext4 {
        let (mkfs, losetup) = (tool("mkfs.ext4"), tool("losetup"));
        let dir = tempdir(label);
        let (img, mnt) = (dir.path().join("fs.img"), dir.path().join("mnt"));
        std::fs::create_dir(&mnt).expect("mount point");
        std::fs::File::create(&img).and_then(|f| f.set_len(IMAGE_BYTES)).expect("image file");
        run(Command::new(mkfs)
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal", "-m"])
            .arg(RESERVED_PERCENT.to_string())
            .arg(&img));
        let mut fs = Ext4 { _dir: dir, mnt, dev: None, mounted: false };
        fs.dev = Some(run(Command::new(losetup).args(["--find", "--show"]).arg(&img)));
        let dev = fs.dev.clone().unwrap_or_default();
        run(Command::new(tool("mount")).args(["-t", "ext4", &dev]).arg(&fs.mnt));
        fs.mounted = true;
        set_mode(&fs.mnt, 0o777);
        fs
    }

    fn statvfs(&self) -> libc::statvfs {
        let c = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: zeroed statvfs is a valid out-parameter for statvfs(3).
        let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid C string and sv a valid statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut sv) }, 0, "statvfs {}", self.mnt.display());
        sv
    }

    /// Bytes free, and of those available to a non-root user.
    fn free_avail(&self) -> (u64, u64) {
        let sv = self.statvfs();
        #[allow(clippy::useless_conversion)]
        let (frsize, bfree, bavail) = (u64::from(sv.f_frsize), u64::from(sv.f_bfree), u64::from(sv.f_bavail));
        (bfree * frsize, bavail * frsize)
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            let umount = tool("umount");
            for _ in 0..UMOUNT_TRIES_MAX {
                if Command::new(&umount).arg(&self.mnt).status().is_ok_and(|s| s.success()) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(UMOUNT_RETRY_MS));
            }
        }
        if let Some(dev) = &self.dev {
            let _ = Command::new(tool("losetup")).args(["-d", dev]).status();
        }
    }
}

/// Write `name` (created as `uid`) in `CHUNK_BYTES` FILE_SYNC writes until
/// `limit` bytes or the first error. Returns the bytes written and the error.
async fn fill(s: &TestServer, uid: u32, name: &str, limit: u64) -> (u64, Option<nfsstat3>) {
    let mut c = s.connect_as(uid, uid, &[]).await;
    let root = c.root_nfs_fh3();
    let f = create(&mut c, &root, name).await.unwrap_or_else(|e| panic!("CREATE {name} as {uid}: {e:?}"));
    let chunk = vec![0x5a_u8; CHUNK_BYTES];
    let mut done = 0u64;
    for _ in 0..FILL_WRITES_MAX {
        if done >= limit {
            return (done, None);
        }
        let n = (limit - done).min(CHUNK_BYTES as u64) as usize;
        match write(&mut c, &f, done, &chunk[..n], stable_how::FILE_SYNC).await {
            Ok(ok) => done += u64::from(ok.count),
            Err(e) => return (done, Some(e)),
        }
    }
    panic!("{FILL_WRITES_MAX} writes of {CHUNK_BYTES} bytes did not fill a {IMAGE_BYTES}-byte file system");
}

#[tokio::test]
async fn non_root_cannot_use_root_reserved_blocks() {
    let fs = Ext4::new("caps-reserved");
    let (free, avail) = fs.free_avail();
    let reserved = free - avail;
    assert!(reserved >= IMAGE_BYTES / 4, "mkfs -m {RESERVED_PERCENT}: {reserved} bytes reserved of {free} free");
    let s = TestServer::start(&fs.mnt, "*(rw,insecure)");
    let (written, err) = fill(&s, OWNER, "user", u64::MAX).await;
    assert_eq!(err, Some(nfsstat3::NFS3ERR_NOSPC), "after {written} bytes");
    let (free_after, avail_after) = fs.free_avail();
    assert!(written <= avail, "uid {OWNER} wrote {written} bytes with {avail} available to it");
    // The reserved blocks are all still free (ext4 counts a few metadata
    // blocks against them at most).
    assert!(
        free_after >= reserved - reserved / 10,
        "{free_after} bytes free after uid {OWNER} filled the disk; {reserved} are reserved for root \
         (available now {avail_after})"
    );
    drop(s);
}

#[tokio::test]
async fn root_without_squash_writes_into_reserved_blocks() {
    let fs = Ext4::new("caps-reserved-root");
    let (free, avail) = fs.free_avail();
    let reserved = free - avail;
    let s = TestServer::start(&fs.mnt, RW_NO_SQUASH);
    let (written, err) = fill(&s, OWNER, "user", u64::MAX).await;
    assert_eq!(err, Some(nfsstat3::NFS3ERR_NOSPC), "uid {OWNER} after {written} bytes");
    // Everything a user may have is taken; root may still write half of
    // what is reserved for it.
    let want = reserved / 2;
    let (root_written, err) = fill(&s, 0, "root", want).await;
    assert_eq!((root_written, err), (want, None), "root's writes into the {reserved} reserved bytes");
    let m = std::fs::metadata(fs.mnt.join("root")).unwrap();
    assert_eq!((m.len(), m.uid()), (want, 0));
    drop(s);
}

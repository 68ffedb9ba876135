//! Every NFSv3 procedure at least once, with asserted results (wcc data,
//! EXCLUSIVE create retransmission, guarded SETATTR, stable WRITE modes and the
//! COMMIT verifier). Also the NFSv3 client helpers the handles, perms and
//! readdir tests share.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use nfs3_client::tokio::TokioIo;
use nfs3_client::Nfs3Connection;
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;

use crate::util::*;

pub type Conn = Nfs3Connection<TokioIo<tokio::net::TcpStream>>;

/// Export options for tests that act as root and want root to stay root.
pub const RW_NO_SQUASH: &str = "*(rw,no_root_squash,insecure)";

pub fn name(n: &str) -> filename3<'static> {
    filename3(Opaque::owned(n.as_bytes().to_vec()))
}

pub fn fh_of(bytes: Vec<u8>) -> nfs_fh3 {
    nfs_fh3 { data: Opaque::owned(bytes) }
}

pub fn diropargs(dir: &nfs_fh3, n: &str) -> diropargs3<'static> {
    diropargs3 { dir: dir.clone(), name: name(n) }
}

pub fn mode_attr(mode: u32) -> sattr3 {
    sattr3 { mode: Nfs3Option::Some(mode), ..Default::default() }
}

pub async fn getattr(c: &mut Conn, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
    match c.getattr(&GETATTR3args { object: fh.clone() }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn lookup(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    match c.lookup(&LOOKUP3args { what: diropargs(dir, n) }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok((ok.object, ok.obj_attributes.unwrap())),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn create_how(c: &mut Conn, dir: &nfs_fh3, n: &str, how: createhow3) -> Result<nfs_fh3, nfsstat3> {
    match c.create(&CREATE3args { where_: diropargs(dir, n), how }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok(ok.obj.unwrap()),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn create(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<nfs_fh3, nfsstat3> {
    create_how(c, dir, n, createhow3::GUARDED(mode_attr(0o644))).await
}

pub async fn mkdir(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<nfs_fh3, nfsstat3> {
    let args = MKDIR3args { where_: diropargs(dir, n), attributes: mode_attr(0o755) };
    match c.mkdir(&args).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok(ok.obj.unwrap()),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn remove(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(), nfsstat3> {
    match c.remove(&REMOVE3args { object: diropargs(dir, n) }).await.expect("rpc") {
        Nfs3Result::Ok(_) => Ok(()),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn rename(c: &mut Conn, from: &nfs_fh3, f: &str, to: &nfs_fh3, t: &str) -> Result<(), nfsstat3> {
    let args = RENAME3args { from: diropargs(from, f), to: diropargs(to, t) };
    match c.rename(&args).await.expect("rpc") {
        Nfs3Result::Ok(_) => Ok(()),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn write(
    c: &mut Conn,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<WRITE3resok, nfsstat3> {
    let args = WRITE3args { file: fh.clone(), offset, count: data.len() as u32, stable, data: Opaque::borrowed(data) };
    match c.write(&args).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

pub async fn read(c: &mut Conn, fh: &nfs_fh3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
    match c.read(&READ3args { file: fh.clone(), offset, count }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok((ok.data.to_vec(), ok.eof)),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

fn wcc_ok(w: &wcc_data) {
    assert!(w.before.is_some(), "pre-op attributes present");
    assert!(w.after.is_some(), "post-op attributes present");
}

fn server(label: &str) -> (TempDir, TestServer) {
    let export = tempdir(label);
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    (export, s)
}

#[tokio::test]
async fn null_getattr_lookup_access_fsstat_fsinfo_pathconf() {
    let (export, s) = server("ops-read");
    std::fs::write(export.path().join("f"), b"hello").unwrap();
    let mut c = s.connect().await;
    c.null().await.expect("NULL");
    let root = c.root_nfs_fh3();
    let ra = getattr(&mut c, &root).await.unwrap();
    assert_eq!(ra.type_, ftype3::NF3DIR);
    assert_eq!(ra.fsid, u64::from(EXPORT_ID), "fsid is the export id, not st_dev");
    assert_eq!(ra.fileid, std::fs::metadata(export.path()).unwrap().ino());

    let (f, fa) = lookup(&mut c, &root, "f").await.unwrap();
    assert_eq!(fa.size, 5);
    assert_eq!(fa.type_, ftype3::NF3REG);
    assert_eq!(lookup(&mut c, &root, "missing").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT);

    let all = ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_EXECUTE | ACCESS3_LOOKUP | ACCESS3_DELETE;
    let Nfs3Result::Ok(acc) = c.access(&ACCESS3args { object: f.clone(), access: all }).await.unwrap() else {
        panic!("ACCESS failed")
    };
    // 0644 file as root: read and write, no execute; LOOKUP/DELETE mean nothing on a file.
    assert_eq!(acc.access, ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND);

    let Nfs3Result::Ok(st) = c.fsstat(&FSSTAT3args { fsroot: root.clone() }).await.unwrap() else { panic!() };
    assert!(st.tbytes > 0 && st.tbytes >= st.fbytes && st.fbytes >= st.abytes);
    assert!(st.tfiles > 0);
    let Nfs3Result::Ok(fi) = c.fsinfo(&FSINFO3args { fsroot: root.clone() }).await.unwrap() else { panic!() };
    assert_eq!(fi.rtmax, 1024 * 1024);
    assert_eq!(fi.wtmax, 1024 * 1024);
    assert_eq!(fi.dtpref, 64 * 1024);
    assert_eq!(fi.time_delta, nfstime3 { seconds: 0, nseconds: 1 });
    assert_eq!(fi.properties, FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
    let Nfs3Result::Ok(pc) = c.pathconf(&PATHCONF3args { object: root.clone() }).await.unwrap() else { panic!() };
    assert_eq!(pc.name_max, 255);
    assert!(pc.linkmax > 1 && pc.no_trunc && pc.case_preserving && !pc.case_insensitive);
}

#[tokio::test]
async fn create_modes_write_read_commit() {
    let (export, s) = server("ops-write");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();

    // UNCHECKED, then GUARDED on the same name → EXIST.
    let f = create_how(&mut c, &root, "f", createhow3::UNCHECKED(mode_attr(0o640))).await.unwrap();
    assert_eq!(std::fs::metadata(export.path().join("f")).unwrap().mode() & 0o7777, 0o640, "mode exact (no umask)");
    assert_eq!(create(&mut c, &root, "f").await.unwrap_err(), nfsstat3::NFS3ERR_EXIST);
    // UNCHECKED on an existing file succeeds and returns the same object.
    let again = create_how(&mut c, &root, "f", createhow3::UNCHECKED(mode_attr(0o600))).await.unwrap();
    assert_eq!(again, f);

    // Stable modes: all three answer with the same verifier as COMMIT.
    let w1 = write(&mut c, &f, 0, b"abcdef", stable_how::UNSTABLE).await.unwrap();
    assert_eq!((w1.count, w1.committed), (6, stable_how::UNSTABLE));
    wcc_ok(&w1.file_wcc);
    let Nfs3Option::Some(before) = w1.file_wcc.before else { unreachable!() };
    assert_eq!(before.size, 0, "pre-op size");
    assert_eq!(w1.file_wcc.after.unwrap().size, 6, "post-op size");
    let w2 = write(&mut c, &f, 6, b"gh", stable_how::DATA_SYNC).await.unwrap();
    assert_eq!(w2.committed, stable_how::DATA_SYNC);
    let w3 = write(&mut c, &f, 8, b"ij", stable_how::FILE_SYNC).await.unwrap();
    assert_eq!(w3.committed, stable_how::FILE_SYNC);
    assert_eq!(w1.verf, w2.verf);
    assert_eq!(w2.verf, w3.verf);
    let Nfs3Result::Ok(cm) = c.commit(&COMMIT3args { file: f.clone(), offset: 0, count: 0 }).await.unwrap() else {
        panic!("COMMIT failed")
    };
    assert_eq!(cm.verf, w1.verf, "COMMIT verifier equals WRITE's");
    wcc_ok(&cm.file_wcc);

    assert_eq!(read(&mut c, &f, 0, 4).await.unwrap(), (b"abcd".to_vec(), false));
    assert_eq!(read(&mut c, &f, 4, 100).await.unwrap(), (b"efghij".to_vec(), true));
    assert_eq!(read(&mut c, &f, 100, 10).await.unwrap(), (Vec::new(), true));
    assert_eq!(std::fs::read(export.path().join("f")).unwrap(), b"abcdefghij");
    // READ of a directory.
    assert_eq!(read(&mut c, &root, 0, 10).await.unwrap_err(), nfsstat3::NFS3ERR_ISDIR);

    // The verifier changes after a restart (new epoch).
    drop(c);
    let mut s = s;
    s.restart();
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let (f, _) = lookup(&mut c, &root, "f").await.unwrap();
    let w4 = write(&mut c, &f, 0, b"x", stable_how::UNSTABLE).await.unwrap();
    assert_ne!(w4.verf, w1.verf, "a new epoch gives a new write verifier");
}

/// An export on tmpfs, whose files refuse no-wait reads (RWF_NOWAIT gives
/// EOPNOTSUPP), serves READs: every one once failed with NFS3ERR_NOTSUPP.
#[tokio::test]
async fn reads_work_on_a_tmpfs_export() {
    let shm = std::path::Path::new("/dev/shm");
    let export = TempDir::new_in(shm, "ops-tmpfs");
    let magic = std::process::Command::new("stat").args(["-f", "-c", "%t"]).arg(shm).output().expect("stat -f");
    assert_eq!(String::from_utf8_lossy(&magic.stdout).trim(), "1021994", "this test needs /dev/shm on tmpfs");
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let f = create(&mut c, &root, "f").await.unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for (i, chunk) in data.chunks(65_536).enumerate() {
        write(&mut c, &f, (i * 65_536) as u64, chunk, stable_how::UNSTABLE).await.unwrap();
    }
    assert_eq!(read(&mut c, &f, 0, 10).await.unwrap(), (data[..10].to_vec(), false));
    let (got, eof) = read(&mut c, &f, 70_000, 200_000).await.unwrap();
    assert_eq!((got.as_slice(), eof), (&data[70_000..], true), "a large READ to the end of the file");
    assert_eq!(std::fs::read(export.path().join("f")).unwrap(), data);
}

/// Large READs (read straight into the reply, `io::read_into`) return exactly
/// the file's bytes at any offset and length, short only at the end of the
/// file, and what the file holds now after it changed on the disk.
#[tokio::test]
async fn large_reads_match_the_file_at_any_offset() {
    let (export, s) = server("ops-large-read");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let size = 3 * 1024 * 1024 + 12_345;
    let content: Vec<u8> = (0..size).map(|i: usize| (i.wrapping_mul(31) % 253) as u8).collect();
    std::fs::write(export.path().join("big"), &content).unwrap();
    let (fh, _) = lookup(&mut c, &root, "big").await.unwrap();
    let cases: [(u64, u32); 7] = [
        (0, 1 << 20),
        (1, 65_537),
        (4093, 65_536),
        ((1 << 20) + 3, (1 << 20) - 1),
        (size as u64 - 70_001, 1 << 20),
        (size as u64, 1 << 20),
        (17, 100),
    ];
    for (offset, count) in cases {
        let (data, eof) = read(&mut c, &fh, offset, count).await.unwrap();
        let from = (offset as usize).min(size);
        let to = (from + count as usize).min(size);
        assert_eq!(data.len(), to - from, "length at {offset}+{count}");
        assert!(data == content[from..to], "bytes at {offset}+{count}");
        assert_eq!(eof, to == size, "eof at {offset}+{count}");
    }
    // Not in the page cache (the server's no-wait read finds nothing there
    // and reads again on a blocking thread): the same bytes.
    let f = std::fs::File::open(export.path().join("big")).unwrap();
    f.sync_all().unwrap();
    // SAFETY: advice on an open fd; it only drops clean cached pages.
    let rc = unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    let (data, _) = read(&mut c, &fh, 12_345, 1 << 20).await.unwrap();
    assert!(data == content[12_345..12_345 + (1 << 20)], "bytes read from the disk");
    // A read of data changed since: the new bytes.
    std::fs::write(export.path().join("big"), vec![9u8; 200_000]).unwrap();
    let (data, eof) = read(&mut c, &fh, 100_000, 1 << 20).await.unwrap();
    assert_eq!((data.len(), eof), (100_000, true));
    assert!(data.iter().all(|b| *b == 9));
}

#[tokio::test]
async fn exclusive_create_retransmit_and_mismatch() {
    let (export, s) = server("ops-excl");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let v1 = createverf3([1, 2, 3, 4, 5, 6, 7, 8]);
    let a = create_how(&mut c, &root, "x", createhow3::EXCLUSIVE(v1)).await.unwrap();
    // Retransmission with the same verifier: the same file, success.
    let b = create_how(&mut c, &root, "x", createhow3::EXCLUSIVE(v1)).await.unwrap();
    assert_eq!(a, b);
    // Another client's verifier: EXIST.
    let v2 = createverf3([9; 8]);
    assert_eq!(create_how(&mut c, &root, "x", createhow3::EXCLUSIVE(v2)).await.unwrap_err(), nfsstat3::NFS3ERR_EXIST);
    // The client's follow-up SETATTR fixes mode and times.
    let s3 = sattr3 {
        mode: Nfs3Option::Some(0o644),
        atime: set_atime::SET_TO_SERVER_TIME,
        mtime: set_mtime::SET_TO_SERVER_TIME,
        ..Default::default()
    };
    let r = c.setattr(&SETATTR3args { object: a.clone(), new_attributes: s3, guard: Nfs3Option::None }).await.unwrap();
    assert!(matches!(r, Nfs3Result::Ok(_)));
    assert_eq!(std::fs::metadata(export.path().join("x")).unwrap().mode() & 0o7777, 0o644);
}

#[tokio::test]
async fn setattr_guard_size_mode_times() {
    let (export, s) = server("ops-setattr");
    std::fs::write(export.path().join("f"), b"0123456789").unwrap();
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let (f, fa) = lookup(&mut c, &root, "f").await.unwrap();

    // Guard with a wrong ctime → NOT_SYNC, nothing changed.
    let wrong = nfstime3 { seconds: fa.ctime.seconds.wrapping_sub(100), nseconds: 0 };
    let set = sattr3 { size: Nfs3Option::Some(3), ..Default::default() };
    let r = c
        .setattr(&SETATTR3args { object: f.clone(), new_attributes: set.clone(), guard: Nfs3Option::Some(wrong) })
        .await
        .unwrap();
    let Nfs3Result::Err((st, fail)) = r else { panic!("guard mismatch must fail") };
    assert_eq!(st, nfsstat3::NFS3ERR_NOT_SYNC);
    assert!(fail.obj_wcc.after.is_some());
    assert_eq!(std::fs::metadata(export.path().join("f")).unwrap().len(), 10);

    // Guard with the right ctime: size, mode and client times applied; wcc before/after.
    let set = sattr3 {
        mode: Nfs3Option::Some(0o600),
        size: Nfs3Option::Some(3),
        atime: set_atime::SET_TO_CLIENT_TIME(nfstime3 { seconds: 1_000_000, nseconds: 5 }),
        mtime: set_mtime::SET_TO_CLIENT_TIME(nfstime3 { seconds: 2_000_000, nseconds: 7 }),
        ..Default::default()
    };
    let r = c
        .setattr(&SETATTR3args { object: f.clone(), new_attributes: set, guard: Nfs3Option::Some(fa.ctime) })
        .await
        .unwrap();
    let Nfs3Result::Ok(ok) = r else { panic!("guarded SETATTR failed: {r:?}") };
    wcc_ok(&ok.obj_wcc);
    let after = ok.obj_wcc.after.unwrap();
    assert_eq!(after.size, 3);
    assert_eq!(after.mode, 0o600);
    assert_eq!(after.mtime, nfstime3 { seconds: 2_000_000, nseconds: 7 });
    assert_eq!(after.atime, nfstime3 { seconds: 1_000_000, nseconds: 5 });
    let Nfs3Option::Some(before) = ok.obj_wcc.before else { unreachable!() };
    assert_eq!(before.size, 10);
    // Size on a directory.
    let r = c
        .setattr(&SETATTR3args {
            object: root.clone(),
            new_attributes: sattr3 { size: Nfs3Option::Some(0), ..Default::default() },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert!(matches!(r, Nfs3Result::Err((nfsstat3::NFS3ERR_ISDIR, _))));
}

#[tokio::test]
async fn mkdir_symlink_readlink_mknod_link_rename_remove_rmdir() {
    let (export, s) = server("ops-dir");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let p = export.path();

    // MKDIR with wcc.
    let args = MKDIR3args { where_: diropargs(&root, "d"), attributes: mode_attr(0o750) };
    let Nfs3Result::Ok(mk) = c.mkdir(&args).await.unwrap() else { panic!("MKDIR") };
    wcc_ok(&mk.dir_wcc);
    let d = mk.obj.unwrap();
    assert_eq!(std::fs::metadata(p.join("d")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(mkdir(&mut c, &root, "d").await.unwrap_err(), nfsstat3::NFS3ERR_EXIST);

    // SYMLINK + READLINK; READLINK of a non-link is INVAL.
    let args = SYMLINK3args {
        where_: diropargs(&d, "l"),
        symlink: symlinkdata3 {
            symlink_attributes: sattr3::default(),
            symlink_data: nfspath3(Opaque::borrowed(b"../target")),
        },
    };
    let Nfs3Result::Ok(sl) = c.symlink(&args).await.unwrap() else { panic!("SYMLINK") };
    wcc_ok(&sl.dir_wcc);
    let l = sl.obj.unwrap();
    assert_eq!(std::fs::read_link(p.join("d/l")).unwrap().as_os_str(), "../target");
    let Nfs3Result::Ok(rl) = c.readlink(&READLINK3args { symlink: l.clone() }).await.unwrap() else { panic!() };
    assert_eq!(rl.data.0.as_ref(), b"../target");
    let r = c.readlink(&READLINK3args { symlink: d.clone() }).await.unwrap();
    assert!(matches!(r, Nfs3Result::Err((nfsstat3::NFS3ERR_INVAL, _))));

    // MKNOD: FIFO and socket; a regular file type is BADTYPE.
    let args = MKNOD3args { where_: diropargs(&d, "fifo"), what: mknoddata3::NF3FIFO(mode_attr(0o600)) };
    let Nfs3Result::Ok(mn) = c.mknod(&args).await.unwrap() else { panic!("MKNOD fifo") };
    wcc_ok(&mn.dir_wcc);
    assert!(std::fs::symlink_metadata(p.join("d/fifo")).unwrap().file_type().is_fifo());
    let args = MKNOD3args { where_: diropargs(&d, "sock"), what: mknoddata3::NF3SOCK(mode_attr(0o600)) };
    assert!(matches!(c.mknod(&args).await.unwrap(), Nfs3Result::Ok(_)));
    assert!(std::fs::symlink_metadata(p.join("d/sock")).unwrap().file_type().is_socket());
    // Root without squash may make a device node.
    let dev = devicedata3 { dev_attributes: mode_attr(0o600), spec: specdata3 { specdata1: 1, specdata2: 3 } };
    let args = MKNOD3args { where_: diropargs(&d, "null"), what: mknoddata3::NF3CHR(dev) };
    let Nfs3Result::Ok(cd) = c.mknod(&args).await.unwrap() else { panic!("MKNOD chr as root") };
    let ca = cd.obj_attributes.unwrap();
    assert_eq!((ca.type_, ca.rdev.specdata1, ca.rdev.specdata2), (ftype3::NF3CHR, 1, 3));

    // LINK: nlink goes to 2.
    let f = create(&mut c, &root, "f").await.unwrap();
    let args = LINK3args { file: f.clone(), link: diropargs(&d, "f2") };
    let Nfs3Result::Ok(lk) = c.link(&args).await.unwrap() else { panic!("LINK") };
    assert_eq!(lk.file_attributes.unwrap().nlink, 2);
    wcc_ok(&lk.linkdir_wcc);

    // RENAME with both wccs; the handle still works afterwards.
    let args = RENAME3args { from: diropargs(&root, "f"), to: diropargs(&d, "g") };
    let Nfs3Result::Ok(rn) = c.rename(&args).await.unwrap() else { panic!("RENAME") };
    wcc_ok(&rn.fromdir_wcc);
    wcc_ok(&rn.todir_wcc);
    assert!(p.join("d/g").exists() && !p.join("f").exists());
    assert_eq!(getattr(&mut c, &f).await.unwrap().nlink, 2);

    // REMOVE, RMDIR (not empty, then empty).
    let Nfs3Result::Ok(rm) = c.remove(&REMOVE3args { object: diropargs(&d, "g") }).await.unwrap() else { panic!() };
    wcc_ok(&rm.dir_wcc);
    assert_eq!(remove(&mut c, &d, "g").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT);
    let r = c.rmdir(&RMDIR3args { object: diropargs(&root, "d") }).await.unwrap();
    assert!(matches!(r, Nfs3Result::Err((nfsstat3::NFS3ERR_NOTEMPTY, _))));
    for n in ["l", "fifo", "sock", "null", "f2"] {
        remove(&mut c, &d, n).await.unwrap();
    }
    let Nfs3Result::Ok(rd) = c.rmdir(&RMDIR3args { object: diropargs(&root, "d") }).await.unwrap() else { panic!() };
    wcc_ok(&rd.dir_wcc);
    assert!(!p.join("d").exists());
}

#[tokio::test]
async fn readdir_and_readdirplus_small_directory() {
    let (export, s) = server("ops-readdir");
    for n in ["a", "b", "c"] {
        std::fs::write(export.path().join(n), n).unwrap();
    }
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let args = READDIR3args { dir: root.clone(), cookie: 0, cookieverf: cookieverf3::default(), count: 8192 };
    let Nfs3Result::Ok(rd) = c.readdir(&args).await.unwrap() else { panic!("READDIR") };
    assert!(rd.reply.eof);
    let mut names: Vec<Vec<u8>> = rd.reply.entries.0.iter().map(|e| e.name.0.to_vec()).collect();
    names.sort();
    assert_eq!(names, vec![b".".to_vec(), b"..".to_vec(), b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let root_ino = std::fs::metadata(export.path()).unwrap().ino();
    let dotdot = rd.reply.entries.0.iter().find(|e| e.name.0.as_ref() == b"..").unwrap();
    assert_eq!(dotdot.fileid, root_ino, "`..` of the export root is the root");

    let args = READDIRPLUS3args {
        dir: root.clone(),
        cookie: 0,
        cookieverf: cookieverf3::default(),
        dircount: 8192,
        maxcount: 32768,
    };
    let Nfs3Result::Ok(rp) = c.readdirplus(&args).await.unwrap() else { panic!("READDIRPLUS") };
    assert!(rp.reply.eof);
    for e in rp.reply.entries.0.iter().filter(|e| e.name.0.len() == 1 && e.name.0[0] != b'.') {
        let fh = e.name_handle.clone().unwrap();
        let a = getattr(&mut c, &fh).await.unwrap();
        assert_eq!(a.fileid, e.fileid);
        assert_eq!(a.size, 1);
    }
    // A reply too small for even one entry.
    let args = READDIR3args { dir: root.clone(), cookie: 0, cookieverf: cookieverf3::default(), count: 50 };
    assert!(matches!(c.readdir(&args).await.unwrap(), Nfs3Result::Err((nfsstat3::NFS3ERR_TOOSMALL, _))));
}

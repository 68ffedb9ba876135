//! Handles (DESIGN.md invariants 1, 2 and 8): they survive a restart, follow
//! renames (over NFS and on the disk itself), go STALE when the object is
//! deleted or its inode number reused, and forged or malformed handles and
//! names get errors without hurting the server.

use std::os::unix::fs::MetadataExt;

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;

use crate::nfs3_ops::*;
use crate::util::*;

/// Most files created while waiting for an inode number to be reused.
const REUSE_TRIES_MAX: u32 = 2000;

fn server(label: &str) -> (TempDir, TestServer) {
    let export = tempdir(label);
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    (export, s)
}

/// A handle of the old format (version 1: export id, inode, ident), 21 bytes.
fn old_format(export_id: u32, ino: u64, ident: u64) -> nfs_fh3 {
    let mut b = vec![1u8];
    b.extend_from_slice(&export_id.to_be_bytes());
    b.extend_from_slice(&ino.to_be_bytes());
    b.extend_from_slice(&ident.to_be_bytes());
    fh_of(b)
}

/// `fh` with byte `i` changed.
fn flipped(fh: &nfs_fh3, i: usize) -> nfs_fh3 {
    let mut b = fh.data.to_vec();
    b[i] ^= 0x41;
    fh_of(b)
}

#[tokio::test]
async fn handles_from_every_procedure_survive_restart() {
    let (export, mut s) = server("handles-restart");
    std::fs::create_dir(export.path().join("pre")).unwrap();
    std::fs::write(export.path().join("pre/listed"), b"x").unwrap();
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let mut held: Vec<(&str, nfs_fh3)> = Vec::new();

    let (pre, _) = lookup(&mut c, &root, "pre").await.unwrap();
    held.push(("lookup", pre.clone()));
    held.push(("create", create(&mut c, &root, "file").await.unwrap()));
    let d = mkdir(&mut c, &root, "dir").await.unwrap();
    held.push(("mkdir", d.clone()));
    let args = SYMLINK3args {
        where_: diropargs(&d, "sym"),
        symlink: symlinkdata3 {
            symlink_attributes: sattr3::default(),
            symlink_data: nfspath3(Opaque::borrowed(b"file")),
        },
    };
    let Nfs3Result::Ok(sl) = c.symlink(&args).await.unwrap() else { panic!("SYMLINK") };
    held.push(("symlink", sl.obj.unwrap()));
    let args = MKNOD3args { where_: diropargs(&d, "fifo"), what: mknoddata3::NF3FIFO(mode_attr(0o644)) };
    let Nfs3Result::Ok(mn) = c.mknod(&args).await.unwrap() else { panic!("MKNOD") };
    held.push(("mknod", mn.obj.unwrap()));
    let linked = create(&mut c, &d, "orig").await.unwrap();
    let Nfs3Result::Ok(_) = c.link(&LINK3args { file: linked.clone(), link: diropargs(&root, "hard") }).await.unwrap()
    else {
        panic!("LINK")
    };
    held.push(("link", linked));
    let args = READDIRPLUS3args {
        dir: pre.clone(),
        cookie: 0,
        cookieverf: cookieverf3::default(),
        dircount: 4096,
        maxcount: 16384,
    };
    let Nfs3Result::Ok(rp) = c.readdirplus(&args).await.unwrap() else { panic!("READDIRPLUS") };
    let listed = rp.reply.entries.0.iter().find(|e| e.name.0.as_ref() == b"listed").expect("listed entry");
    held.push(("readdirplus", listed.name_handle.clone().unwrap()));

    let mut before = Vec::new();
    for (what, fh) in &held {
        before.push(getattr(&mut c, fh).await.unwrap_or_else(|e| panic!("{what}: {e:?}")).fileid);
    }
    drop(c);
    s.restart();
    let mut c = s.connect().await;
    for ((what, fh), ino) in held.iter().zip(before) {
        let a = getattr(&mut c, fh).await.unwrap_or_else(|e| panic!("{what} handle after restart: {e:?}"));
        assert_eq!(a.fileid, ino, "{what}");
    }
}

#[tokio::test]
async fn renamed_objects_resolve_after_restart() {
    let (export, mut s) = server("handles-rename");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let d = mkdir(&mut c, &root, "d1").await.unwrap();
    let inner = create(&mut c, &d, "inner").await.unwrap();
    let f = create(&mut c, &root, "f1").await.unwrap();
    write(&mut c, &inner, 0, b"inside", stable_how::FILE_SYNC).await.unwrap();
    let e = mkdir(&mut c, &root, "e").await.unwrap();
    rename(&mut c, &root, "f1", &e, "f2").await.unwrap();
    rename(&mut c, &root, "d1", &e, "d2").await.unwrap();
    assert!(export.path().join("e/d2/inner").exists());
    // Renamed and created on the disk itself, not over NFS.
    let local = create(&mut c, &root, "local").await.unwrap();
    std::fs::create_dir(export.path().join("made-on-disk")).unwrap();
    std::fs::write(export.path().join("made-on-disk/x"), b"disk").unwrap();
    let (on_disk, _) = lookup(&mut c, &root, "made-on-disk").await.unwrap();
    let (x, _) = lookup(&mut c, &on_disk, "x").await.unwrap();
    std::fs::rename(export.path().join("local"), export.path().join("e/d2/local-moved")).unwrap();
    std::fs::rename(export.path().join("made-on-disk"), export.path().join("e/moved-on-disk")).unwrap();
    drop(c);
    s.restart();
    let mut c = s.connect().await;
    assert_eq!(getattr(&mut c, &f).await.unwrap().type_, ftype3::NF3REG);
    assert_eq!(getattr(&mut c, &d).await.unwrap().type_, ftype3::NF3DIR);
    assert_eq!(read(&mut c, &inner, 0, 100).await.unwrap().0, b"inside", "file inside a renamed directory");
    assert_eq!(getattr(&mut c, &local).await.unwrap().type_, ftype3::NF3REG, "renamed on the disk");
    assert_eq!(read(&mut c, &x, 0, 100).await.unwrap().0, b"disk", "inside a directory renamed on the disk");
    assert_eq!(getattr(&mut c, &on_disk).await.unwrap().type_, ftype3::NF3DIR);
}

#[tokio::test]
async fn deleted_object_is_stale() {
    let (export, mut s) = server("handles-deleted");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let f = create(&mut c, &root, "gone").await.unwrap();
    let local = create(&mut c, &root, "gone-locally").await.unwrap();
    remove(&mut c, &root, "gone").await.unwrap();
    assert_eq!(getattr(&mut c, &f).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    // Deleted behind the server's back: still STALE, also after a restart.
    std::fs::remove_file(export.path().join("gone-locally")).unwrap();
    assert_eq!(getattr(&mut c, &local).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    drop(c);
    s.restart();
    let mut c = s.connect().await;
    assert_eq!(getattr(&mut c, &f).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    assert_eq!(getattr(&mut c, &local).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
}

#[tokio::test]
async fn reused_inode_number_never_resolves_to_the_new_file() {
    let (export, s) = server("handles-reuse");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let old = create(&mut c, &root, "victim").await.unwrap();
    write(&mut c, &old, 0, b"old", stable_how::FILE_SYNC).await.unwrap();
    let old_ino = getattr(&mut c, &old).await.unwrap().fileid;
    // Delete locally, then recreate "victim" (and others) until the inode
    // number comes back: the old handle names that inode with the old generation.
    let p = export.path();
    std::fs::remove_file(p.join("victim")).unwrap();
    let mut reused = false;
    for i in 0..REUSE_TRIES_MAX {
        std::fs::write(p.join("victim"), b"new").unwrap();
        if std::fs::metadata(p.join("victim")).unwrap().ino() == old_ino {
            reused = true;
            break;
        }
        std::fs::rename(p.join("victim"), p.join(format!("filler-{i}"))).unwrap();
    }
    assert!(reused, "the filesystem did not reuse inode {old_ino} within {REUSE_TRIES_MAX} files");
    // Same path, same inode number, different object: STALE, never the new data.
    assert_eq!(getattr(&mut c, &old).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    assert_eq!(read(&mut c, &old, 0, 10).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    // The new file has its own handle, which works.
    let (new, _) = lookup(&mut c, &root, "victim").await.unwrap();
    assert_ne!(new, old);
    assert_eq!(read(&mut c, &new, 0, 10).await.unwrap().0, b"new");
    assert_eq!(getattr(&mut c, &old).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
}

#[tokio::test]
async fn forged_handles() {
    let (export, s) = server("handles-forged");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    // Wrong length, and a right length with an unknown version.
    assert_eq!(getattr(&mut c, &fh_of(vec![1; 10])).await.unwrap_err(), nfsstat3::NFS3ERR_BADHANDLE);
    assert_eq!(getattr(&mut c, &fh_of(Vec::new())).await.unwrap_err(), nfsstat3::NFS3ERR_BADHANDLE);
    let mut v9 = root.data.to_vec();
    v9[0] = 9;
    assert_eq!(getattr(&mut c, &fh_of(v9)).await.unwrap_err(), nfsstat3::NFS3ERR_BADHANDLE);
    // The old format (version 1, 21 bytes) is not misread.
    let ino = std::fs::metadata(export.path()).unwrap().ino();
    assert_eq!(getattr(&mut c, &old_format(EXPORT_ID, ino, 0)).await.unwrap_err(), nfsstat3::NFS3ERR_BADHANDLE);
    // Any byte changed after the version (another export id, another fs
    // handle, say of a file outside the export, or the MAC itself): the MAC
    // no longer matches, STALE.
    let f = create(&mut c, &root, "f").await.unwrap();
    for i in 1..f.data.len() {
        assert_eq!(getattr(&mut c, &flipped(&f, i)).await.unwrap_err(), nfsstat3::NFS3ERR_STALE, "byte {i}");
        assert_eq!(read(&mut c, &flipped(&f, i), 0, 1).await.unwrap_err(), nfsstat3::NFS3ERR_STALE, "byte {i}");
    }
    // Still served.
    assert!(getattr(&mut c, &root).await.is_ok());
}

#[tokio::test]
async fn bad_names_get_errors_and_the_server_keeps_serving() {
    let (export, s) = server("handles-names");
    std::fs::write(export.path().join("ok"), b"ok").unwrap();
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let cases: [(&[u8], nfsstat3); 4] = [
        (b"a/b", nfsstat3::NFS3ERR_INVAL),
        (b"a\0b", nfsstat3::NFS3ERR_INVAL),
        (&[b'n'; 4096], nfsstat3::NFS3ERR_NAMETOOLONG),
        (b"../../etc", nfsstat3::NFS3ERR_INVAL),
    ];
    for (bad, want) in cases {
        let what = diropargs3 { dir: root.clone(), name: filename3(Opaque::owned(bad.to_vec())) };
        let r = c.lookup(&LOOKUP3args { what }).await.unwrap();
        assert!(
            matches!(r, Nfs3Result::Err((s, _)) if s == want),
            "LOOKUP {:?}",
            String::from_utf8_lossy(&bad[..bad.len().min(16)])
        );
        let args = CREATE3args {
            where_: diropargs3 { dir: root.clone(), name: filename3(Opaque::owned(bad.to_vec())) },
            how: createhow3::UNCHECKED(sattr3::default()),
        };
        let r = c.create(&args).await.unwrap();
        assert!(matches!(r, Nfs3Result::Err((s, _)) if s == want), "CREATE");
        // Served afterwards.
        assert_eq!(lookup(&mut c, &root, "ok").await.unwrap().1.size, 2);
    }
    // `..` at the export root is the root itself, never its parent.
    let (up, _) = lookup(&mut c, &root, "..").await.unwrap();
    assert_eq!(up, root);
    let (upup, _) = lookup(&mut c, &up, "..").await.unwrap();
    assert_eq!(upup, root);
    // `.` and `..` cannot be created or removed.
    assert_eq!(mkdir(&mut c, &root, "..").await.unwrap_err(), nfsstat3::NFS3ERR_EXIST);
    assert_eq!(remove(&mut c, &root, ".").await.unwrap_err(), nfsstat3::NFS3ERR_INVAL);
    // `..` below the root is the real parent.
    let d = mkdir(&mut c, &root, "sub").await.unwrap();
    assert_eq!(lookup(&mut c, &d, "..").await.unwrap().0, root);
    assert!(getattr(&mut c, &root).await.is_ok());
}

#[tokio::test]
async fn symlink_pointing_outside_is_not_followed() {
    let (export, s) = server("handles-symlink");
    let outside = tempdir("outside");
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), export.path().join("escape")).unwrap();
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let (l, a) = lookup(&mut c, &root, "escape").await.unwrap();
    assert_eq!(a.type_, ftype3::NF3LNK, "LOOKUP returns the link itself");
    // Looking a name up "through" the link fails: it is not a directory.
    assert_eq!(lookup(&mut c, &l, "secret").await.unwrap_err(), nfsstat3::NFS3ERR_NOTDIR);
    assert_eq!(read(&mut c, &l, 0, 10).await.unwrap_err(), nfsstat3::NFS3ERR_INVAL);
    assert_eq!(create(&mut c, &l, "x").await.unwrap_err(), nfsstat3::NFS3ERR_NOTDIR);
    assert!(!outside.path().join("x").exists());
}

#[tokio::test]
async fn hard_link_keeps_the_handle_when_the_recorded_name_goes() {
    let (_export, mut s) = server("handles-links");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let sub = mkdir(&mut c, &root, "sub").await.unwrap();
    let f = create(&mut c, &root, "a").await.unwrap();
    write(&mut c, &f, 0, b"linked", stable_how::FILE_SYNC).await.unwrap();
    for (dir, n) in [(&root, "b"), (&sub, "c")] {
        let r = c.link(&LINK3args { file: f.clone(), link: diropargs(dir, n) }).await.unwrap();
        assert!(matches!(r, Nfs3Result::Ok(_)), "LINK {n}");
    }
    // The recorded name goes; another link in the same directory takes over.
    remove(&mut c, &root, "a").await.unwrap();
    assert_eq!(getattr(&mut c, &f).await.unwrap().nlink, 2);
    drop(c);
    s.restart();
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    assert_eq!(read(&mut c, &f, 0, 10).await.unwrap().0, b"linked", "after restart");
    // The last link in this directory goes; the one in sub/ is found again by LOOKUP.
    remove(&mut c, &root, "b").await.unwrap();
    let (sub, _) = lookup(&mut c, &root, "sub").await.unwrap();
    let (c_fh, _) = lookup(&mut c, &sub, "c").await.unwrap();
    assert_eq!(c_fh, f, "one object, one handle");
    assert_eq!(getattr(&mut c, &f).await.unwrap().nlink, 1);
    // The last link: STALE.
    remove(&mut c, &sub, "c").await.unwrap();
    assert_eq!(getattr(&mut c, &f).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
}

#[tokio::test]
async fn over_long_handle_and_trailing_bytes_are_garbage_args() {
    let (_export, s) = server("handles-garbage");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let cred = auth_sys_body(0, 0, &[]);
    // GETATTR with a 65-byte handle (NFS3_FHSIZE is 64).
    let mut args = Vec::new();
    put_opaque(&mut args, &[1u8; 65]);
    let reply = tcp_call(s.nfs_port, &call_msg(41, 100_003, 3, 1, (1, &cred), &args)).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 41, stat: GARBAGE_ARGS, body: vec![] });
    // A valid GETATTR followed by junk.
    let mut args = Vec::new();
    put_opaque(&mut args, root.data.as_ref());
    put_u32(&mut args, 7);
    let reply = tcp_call(s.nfs_port, &call_msg(42, 100_003, 3, 1, (1, &cred), &args)).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 42, stat: GARBAGE_ARGS, body: vec![] });
    // A WRITE whose count disagrees with its data.
    let mut args = Vec::new();
    put_opaque(&mut args, root.data.as_ref());
    args.extend_from_slice(&0u64.to_be_bytes());
    put_u32(&mut args, 100);
    put_u32(&mut args, 2);
    put_opaque(&mut args, b"abc");
    let reply = tcp_call(s.nfs_port, &call_msg(43, 100_003, 3, 7, (1, &cred), &args)).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 43, stat: GARBAGE_ARGS, body: vec![] });
    assert!(getattr(&mut c, &root).await.is_ok(), "still served");
}

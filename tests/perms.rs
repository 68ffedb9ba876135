//! Credentials (issue 2 item 6): every operation runs with the caller's
//! (squashed) AUTH_SYS ids, so the kernel does the permission checks and sets
//! ownership. Root is squashed by default.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nfs3_types::nfs3::*;

use crate::nfs3_ops::*;
use crate::util::*;

const NOBODY: u32 = 65534;

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &std::path::Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

#[tokio::test]
async fn root_is_squashed_by_default() {
    let export = tempdir("perms-squash");
    let p = export.path();
    std::fs::create_dir(p.join("open")).unwrap();
    chmod(&p.join("open"), 0o777);
    chmod(p, 0o755);
    let s = TestServer::start(p, "*(rw,insecure)");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    // Root-owned 0755 directory: squashed root may not create.
    assert_eq!(create(&mut c, &root, "denied").await.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
    assert!(!p.join("denied").exists());
    let excl = createhow3::EXCLUSIVE(createverf3([3; 8]));
    assert_eq!(create_how(&mut c, &root, "denied", excl).await.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
    // World-writable directory: the file belongs to nobody.
    let (open, _) = lookup(&mut c, &root, "open").await.unwrap();
    let f = create(&mut c, &open, "mine").await.unwrap();
    let m = std::fs::metadata(p.join("open/mine")).unwrap();
    assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY));
    assert_eq!(getattr(&mut c, &f).await.unwrap().uid, NOBODY);
    // A uid/gid in the create request is not applied for the creator (knfsd).
    let with_ids = sattr3 {
        mode: Nfs3Option::Some(0o644),
        uid: Nfs3Option::Some(0),
        gid: Nfs3Option::Some(0),
        ..Default::default()
    };
    create_how(&mut c, &open, "ids", createhow3::GUARDED(with_ids)).await.unwrap();
    assert_eq!(std::fs::metadata(p.join("open/ids")).unwrap().uid(), NOBODY);
}

#[tokio::test]
async fn ownership_and_non_owner_write() {
    let export = tempdir("perms-owner");
    let p = export.path();
    chmod(p, 0o777);
    let s = TestServer::start(p, "*(rw,insecure)");
    let mut u1000 = s.connect_as(1000, 1000, &[]).await;
    let root = u1000.root_nfs_fh3();
    let f = create(&mut u1000, &root, "by1000").await.unwrap();
    let m = std::fs::metadata(p.join("by1000")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000), "created by uid 1000 → owned by 1000");
    write(&mut u1000, &f, 0, b"mine", stable_how::FILE_SYNC).await.unwrap();

    let mut u1001 = s.connect_as(1001, 1001, &[]).await;
    assert_eq!(write(&mut u1001, &f, 0, b"theirs", stable_how::FILE_SYNC).await.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
    assert_eq!(std::fs::read(p.join("by1000")).unwrap(), b"mine");
    // Non-owner may not chmod either (EPERM from the kernel).
    let r = u1001
        .setattr(&SETATTR3args { object: f.clone(), new_attributes: mode_attr(0o777), guard: Nfs3Option::None })
        .await
        .unwrap();
    assert!(matches!(r, Nfs3Result::Err((nfsstat3::NFS3ERR_PERM, _))), "{r:?}");
    // But it may read a 0644 file.
    assert_eq!(read(&mut u1001, &f, 0, 10).await.unwrap().0, b"mine");
    // And the owner may write its own file even at mode 0444 (knfsd's owner override).
    chmod(&p.join("by1000"), 0o444);
    write(&mut u1000, &f, 0, b"MINE", stable_how::UNSTABLE).await.unwrap();
    assert_eq!(std::fs::read(p.join("by1000")).unwrap(), b"MINE");
}

async fn access_of(c: &mut Conn, fh: &nfs_fh3) -> u32 {
    let all = ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE | ACCESS3_EXECUTE;
    match c.access(&ACCESS3args { object: fh.clone(), access: all }).await.unwrap() {
        Nfs3Result::Ok(ok) => ok.access,
        Nfs3Result::Err((s, _)) => panic!("ACCESS: {s:?}"),
    }
}

#[tokio::test]
async fn access_bits_match_mode_owner_and_groups() {
    let export = tempdir("perms-access");
    let p = export.path();
    std::fs::write(p.join("f"), b"x").unwrap();
    chown(&p.join("f"), 1000, 1000);
    chmod(&p.join("f"), 0o750);
    std::fs::create_dir(p.join("d")).unwrap();
    chown(&p.join("d"), 1000, 1000);
    chmod(&p.join("d"), 0o750);
    let s = TestServer::start(p, "*(rw,insecure)");
    let rw = ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND;
    let dir_all = ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE;
    let cases: [(u32, u32, &[u32], u32, u32); 4] = [
        (1000, 1000, &[], rw | ACCESS3_EXECUTE, dir_all), // owner: rwx
        (1001, 1000, &[], ACCESS3_READ | ACCESS3_EXECUTE, ACCESS3_READ | ACCESS3_LOOKUP), // group: r-x
        (1002, 7, &[1000], ACCESS3_READ | ACCESS3_EXECUTE, ACCESS3_READ | ACCESS3_LOOKUP), // supplementary group
        (1003, 7, &[8], 0, 0),                            // other: ---
    ];
    for (uid, gid, gids, want_file, want_dir) in cases {
        let mut c = s.connect_as(uid, gid, gids).await;
        let root = c.root_nfs_fh3();
        let (f, _) = lookup(&mut c, &root, "f").await.unwrap();
        let (d, _) = lookup(&mut c, &root, "d").await.unwrap();
        assert_eq!(access_of(&mut c, &f).await, want_file, "file, uid {uid}");
        assert_eq!(access_of(&mut c, &d).await, want_dir, "dir, uid {uid}");
    }
    // Squashed root is "other" too.
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let (f, _) = lookup(&mut c, &root, "f").await.unwrap();
    assert_eq!(access_of(&mut c, &f).await, 0);
}

#[tokio::test]
async fn all_squash_anonuid_and_read_only() {
    let export = tempdir("perms-allsquash");
    let p = export.path();
    chmod(p, 0o777);
    let s = TestServer::start(p, "*(rw,all_squash,anonuid=4242,anongid=4343,insecure)");
    let mut c = s.connect_as(1000, 1000, &[]).await;
    let root = c.root_nfs_fh3();
    create(&mut c, &root, "anon").await.unwrap();
    let m = std::fs::metadata(p.join("anon")).unwrap();
    assert_eq!((m.uid(), m.gid()), (4242, 4343));
    drop(c);
    drop(s);

    let s = TestServer::start(p, "*(ro,no_root_squash,insecure)");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    assert_eq!(create(&mut c, &root, "nope").await.unwrap_err(), nfsstat3::NFS3ERR_ROFS);
    let (f, _) = lookup(&mut c, &root, "anon").await.unwrap();
    assert_eq!(write(&mut c, &f, 0, b"x", stable_how::FILE_SYNC).await.unwrap_err(), nfsstat3::NFS3ERR_ROFS);
    assert_eq!(access_of(&mut c, &f).await & ACCESS3_MODIFY, 0, "no MODIFY on a read-only export");
    assert_eq!(read(&mut c, &f, 0, 1).await.unwrap().0, b"");
}

#[tokio::test]
async fn device_nodes_need_privilege() {
    let export = tempdir("perms-mknod");
    let p = export.path();
    chmod(p, 0o777);
    let s = TestServer::start(p, "*(rw,insecure)");
    let mut c = s.connect_as(1000, 1000, &[]).await;
    let root = c.root_nfs_fh3();
    let dev = devicedata3 { dev_attributes: mode_attr(0o600), spec: specdata3 { specdata1: 1, specdata2: 3 } };
    let args = MKNOD3args { where_: diropargs(&root, "null"), what: mknoddata3::NF3CHR(dev) };
    let r = c.mknod(&args).await.unwrap();
    assert!(matches!(r, Nfs3Result::Err((nfsstat3::NFS3ERR_PERM, _))), "{r:?}");
    assert!(!p.join("null").exists());
    // A FIFO is fine for anyone who may write the directory.
    let args = MKNOD3args { where_: diropargs(&root, "fifo"), what: mknoddata3::NF3FIFO(mode_attr(0o600)) };
    assert!(matches!(c.mknod(&args).await.unwrap(), Nfs3Result::Ok(_)));
    assert_eq!(std::fs::metadata(p.join("fifo")).unwrap().uid(), 1000);
}

#[tokio::test]
async fn secure_export_refuses_unprivileged_ports() {
    let export = tempdir("perms-secure");
    let s = TestServer::start(export.path(), "*(rw,no_root_squash,secure)");
    // nfs3_client connects from a reserved port (the tests run as root).
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    assert!(getattr(&mut c, &root).await.is_ok());
    // The same GETATTR from an ephemeral port: NFS3ERR_PERM, as knfsd.
    let mut args = Vec::new();
    put_opaque(&mut args, root.data.as_ref());
    let cred = auth_sys_body(0, 0, &[]);
    let reply = tcp_call(s.nfs_port, &call_msg(77, 100_003, 3, 1, (1, &cred), &args)).expect("reply");
    let RpcReply::Accepted { stat, body, .. } = parse_reply(&reply) else { panic!("not accepted") };
    assert_eq!(stat, SUCCESS);
    assert_eq!(words(&body).first(), Some(&(nfsstat3::NFS3ERR_PERM as u32)));
    assert!(getattr(&mut c, &root).await.is_ok(), "still served");
}

#[tokio::test]
async fn concurrent_callers_never_share_credentials() {
    const USERS: u32 = 4;
    const FILES_EACH: u32 = 25;
    let export = tempdir("perms-concurrent");
    let p = export.path().to_path_buf();
    chmod(&p, 0o777);
    let s = TestServer::start(&p, "*(rw,insecure)");
    let mut tasks = Vec::new();
    for u in 0..USERS {
        let uid = 2000 + u;
        let mut c = s.connect_as(uid, uid, &[]).await;
        tasks.push(tokio::spawn(async move {
            let root = c.root_nfs_fh3();
            for i in 0..FILES_EACH {
                create(&mut c, &root, &format!("u{uid}-{i}")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for u in 0..USERS {
        let uid = 2000 + u;
        for i in 0..FILES_EACH {
            let m = std::fs::metadata(p.join(format!("u{uid}-{i}"))).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, uid), "u{uid}-{i}");
        }
    }
}

//! MOUNT v3 (and v1 DUMP/EXPORT, which showmount uses) over the wire:
//! MNT, DUMP, UMNT, UMNTALL, EXPORT, refusals, and rmtab across a restart.

use nfs3_client::MountError;
use nfs3_types::mount::{dirpath, mountstat3};
use nfs3_types::xdr_codec::Opaque;

use crate::util::*;

const MOUNT_PROGRAM: u32 = 100_005;

fn path(p: &str) -> dirpath<'static> {
    dirpath(Opaque::owned(p.as_bytes().to_vec()))
}

async fn dump_rows(port: u16) -> Vec<(String, String)> {
    let mut c = mount_client(port, false).await;
    let list = c.dump().await.expect("DUMP");
    list.into_inner()
        .into_iter()
        .map(|b| {
            (
                String::from_utf8_lossy(&b.ml_hostname.0 .0).into_owned(),
                String::from_utf8_lossy(&b.ml_directory.0 .0).into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn mnt_dump_umnt_umntall_export() {
    let export = tempdir("mount");
    let s = TestServer::start(export.path(), "*(rw,insecure) 10.0.0.0/8(ro)");
    let mut c = mount_client(s.mount_port, false).await;
    c.null().await.expect("NULL");
    let ok = c.mnt(path("/export")).await.expect("MNT");
    assert!(!ok.fhandle.0 .0.is_empty() && ok.fhandle.0 .0.len() <= 64, "handle of 1..=64 bytes");
    assert_eq!(ok.auth_flavors, vec![1], "AUTH_SYS offered");
    // A trailing slash names the same export and records the same row.
    c.mnt(path("/export/")).await.expect("MNT with trailing slash");
    assert_eq!(dump_rows(s.mount_port).await, vec![("127.0.0.1".to_string(), "/export".to_string())]);

    let exports = c.export().await.expect("EXPORT").into_inner();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].ex_dir.0 .0.as_ref(), b"/export");
    let groups: Vec<Vec<u8>> = exports[0].ex_groups.0.iter().map(|g| g.0 .0.to_vec()).collect();
    assert_eq!(groups, vec![b"*".to_vec(), b"10.0.0.0/8".to_vec()]);

    c.umnt(path("/export")).await.expect("UMNT");
    assert!(dump_rows(s.mount_port).await.is_empty(), "UMNT removes the row");
    c.mnt(path("/export")).await.expect("MNT again");
    c.umntall().await.expect("UMNTALL");
    assert!(dump_rows(s.mount_port).await.is_empty(), "UMNTALL removes the rows");
}

#[tokio::test]
async fn the_root_handle_works_for_nfs() {
    let export = tempdir("mount-nfs");
    std::fs::write(export.path().join("hello"), b"hi").expect("write");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    let mut conn = s.connect().await;
    let root = conn.root_nfs_fh3();
    let args = nfs3_types::nfs3::GETATTR3args { object: root };
    match conn.getattr(&args).await.expect("GETATTR") {
        nfs3_types::nfs3::Nfs3Result::Ok(_) => {}
        other => panic!("GETATTR of the root failed: {other:?}"),
    }
}

#[tokio::test]
async fn refused_client_gets_acces_and_unknown_path_noent() {
    let export = tempdir("mount-refused");
    let s = TestServer::start(export.path(), "10.9.9.9(rw,insecure) 192.168.0.0/16(rw,insecure)");
    let mut c = mount_client(s.mount_port, false).await;
    match c.mnt(path("/export")).await {
        Err(MountError::Denied(mountstat3::MNT3ERR_ACCES)) => {}
        other => panic!("expected MNT3ERR_ACCES, got {other:?}"),
    }
    match c.mnt(path("/nonexistent")).await {
        Err(MountError::Denied(mountstat3::MNT3ERR_NOENT)) => {}
        other => panic!("expected MNT3ERR_NOENT, got {other:?}"),
    }
    assert!(dump_rows(s.mount_port).await.is_empty(), "a refused mount records nothing");
}

#[tokio::test]
async fn secure_export_refuses_unprivileged_ports() {
    let export = tempdir("mount-secure");
    let s = TestServer::start(export.path(), "*(rw,secure)");
    let mut c = mount_client(s.mount_port, false).await;
    match c.mnt(path("/export")).await {
        Err(MountError::Denied(mountstat3::MNT3ERR_ACCES)) => {}
        other => panic!("expected MNT3ERR_ACCES from port >= 1024, got {other:?}"),
    }
    let mut c = mount_client(s.mount_port, true).await;
    c.mnt(path("/export")).await.expect("MNT from a privileged port");
}

#[tokio::test]
async fn rmtab_survives_restart() {
    let export = tempdir("mount-restart");
    let mut s = TestServer::start(export.path(), "*(rw,insecure)");
    let mut c = mount_client(s.mount_port, false).await;
    c.mnt(path("/export")).await.expect("MNT");
    drop(c);
    s.restart();
    assert_eq!(dump_rows(s.mount_port).await, vec![("127.0.0.1".to_string(), "/export".to_string())]);
}

#[test]
fn v1_dump_and_export_answer_like_v3() {
    let export = tempdir("mount-v1");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    // MNT over v3 (UDP, as mount.nfs does), then v1 DUMP over UDP and TCP.
    let mut args = Vec::new();
    put_opaque(&mut args, b"/export");
    let reply =
        udp_call(s.mount_port, &call_msg(1, MOUNT_PROGRAM, 3, 1, (1, &auth_sys_body(0, 0, &[])), &args)).expect("MNT");
    match parse_reply(&reply) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => assert_eq!(words(&body)[0], 0, "MNT3_OK"),
        other => panic!("{other:?}"),
    }
    let mut expected = Vec::new();
    put_u32(&mut expected, 1);
    put_opaque(&mut expected, b"127.0.0.1");
    put_opaque(&mut expected, b"/export");
    put_u32(&mut expected, 0);
    for reply in [
        udp_call(s.mount_port, &call_msg(2, MOUNT_PROGRAM, 1, 2, CRED_NONE, &[])).expect("v1 DUMP udp"),
        tcp_call(s.mount_port, &call_msg(3, MOUNT_PROGRAM, 1, 2, CRED_NONE, &[])).expect("v1 DUMP tcp"),
    ] {
        match parse_reply(&reply) {
            RpcReply::Accepted { stat: SUCCESS, body, .. } => assert_eq!(body, expected),
            other => panic!("{other:?}"),
        }
    }
    let mut expected = Vec::new();
    put_u32(&mut expected, 1);
    put_opaque(&mut expected, b"/export");
    put_u32(&mut expected, 1);
    put_opaque(&mut expected, b"*");
    put_u32(&mut expected, 0);
    put_u32(&mut expected, 0);
    let reply = udp_call(s.mount_port, &call_msg(4, MOUNT_PROGRAM, 1, 5, CRED_NONE, &[])).expect("v1 EXPORT");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 4, stat: SUCCESS, body: expected });
    // v1 MNT: the NFSv2 mount hanfs does not serve.
    let reply = udp_call(s.mount_port, &call_msg(5, MOUNT_PROGRAM, 1, 1, CRED_NONE, &args)).expect("v1 MNT");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 5, stat: SUCCESS, body: 95u32.to_be_bytes().to_vec() });
}

/// GETATTR's fileid of the NFS handle `fh`.
async fn fileid_of(s: &TestServer, fh: &[u8]) -> u64 {
    let mut conn = s.connect().await;
    let object = nfs3_types::nfs3::nfs_fh3 { data: Opaque::owned(fh.to_vec()) };
    match conn.getattr(&nfs3_types::nfs3::GETATTR3args { object }).await.expect("GETATTR") {
        nfs3_types::nfs3::Nfs3Result::Ok(ok) => ok.obj_attributes.fileid,
        other => panic!("GETATTR of a mounted subdirectory failed: {other:?}"),
    }
}

/// The refusal MNT of `p` gets (as its number: mountstat3 has no `==`).
async fn mnt_err<IO>(c: &mut nfs3_client::MountClient<IO>, p: &str) -> u32
where
    IO: nfs3_client::io::AsyncRead + nfs3_client::io::AsyncWrite + Send,
{
    match c.mnt(path(p)).await {
        Err(MountError::Denied(stat)) => stat as u32,
        other => panic!("MNT {p}: expected a refusal, got {other:?}"),
    }
}

/// Any directory below an export mounts (knfsd's behaviour) with the
/// export's client list; the rmtab shows the path asked for; `..`, a
/// symlink out, a file, a missing directory and a mere name prefix are
/// refused; a symlink that stays inside is followed.
#[tokio::test]
async fn a_subdirectory_mounts_and_escapes_are_refused() {
    use std::os::unix::fs::MetadataExt;
    let export = tempdir("mount-sub");
    let sub = export.path().join("projects/a");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(sub.join("file"), b"x").expect("write");
    std::os::unix::fs::symlink("/", export.path().join("out-abs")).expect("symlink");
    std::os::unix::fs::symlink("../..", export.path().join("out-rel")).expect("symlink");
    std::os::unix::fs::symlink("projects/a", export.path().join("inside")).expect("symlink");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    let mut c = mount_client(s.mount_port, false).await;

    let ok = c.mnt(path("/export/projects/a")).await.expect("MNT of a subdirectory");
    let ino = std::fs::metadata(&sub).expect("stat").ino();
    assert_eq!(fileid_of(&s, &ok.fhandle.0 .0).await, ino, "the handle is the subdirectory's");
    c.mnt(path("/export/./projects//a/")).await.expect("the same directory spelled differently");
    let row = |p: &str| ("127.0.0.1".to_string(), p.to_string());
    // (fileid_of's NFS connection mounted the export root too.)
    assert_eq!(dump_rows(s.mount_port).await, vec![row("/export"), row("/export/projects/a")]);
    let via_link = c.mnt(path("/export/inside")).await.expect("a symlink inside the export is followed");
    assert_eq!(fileid_of(&s, &via_link.fhandle.0 .0).await, ino);

    for escape in ["/export/..", "/export/projects/../..", "/export/out-abs", "/export/out-rel", "/export/out-abs/etc"]
    {
        assert_eq!(mnt_err(&mut c, escape).await, mountstat3::MNT3ERR_ACCES as u32, "{escape} leaves the export");
    }
    assert_eq!(mnt_err(&mut c, "/export/projects/a/file").await, mountstat3::MNT3ERR_NOTDIR as u32);
    assert_eq!(mnt_err(&mut c, "/export/missing").await, mountstat3::MNT3ERR_NOENT as u32);
    assert_eq!(mnt_err(&mut c, "/exportx").await, mountstat3::MNT3ERR_NOENT as u32, "a name prefix is not a parent");

    c.umnt(path("/export/projects/a/")).await.expect("UMNT");
    let rows = dump_rows(s.mount_port).await;
    assert_eq!(rows, vec![row("/export"), row("/export/inside")], "UMNT removed the subdirectory's row");
}

/// A client the export refuses is refused below it too, before anything is
/// looked up (it cannot probe which directories exist).
#[tokio::test]
async fn a_refused_client_is_refused_below_the_export_too() {
    let export = tempdir("mount-sub-refused");
    std::fs::create_dir_all(export.path().join("a")).expect("mkdir");
    let s = TestServer::start(export.path(), "10.9.9.9(rw,insecure)");
    let mut c = mount_client(s.mount_port, false).await;
    assert_eq!(mnt_err(&mut c, "/export/a").await, mountstat3::MNT3ERR_ACCES as u32);
    assert_eq!(mnt_err(&mut c, "/export/missing").await, mountstat3::MNT3ERR_ACCES as u32);
}

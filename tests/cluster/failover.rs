//! Kill -9 failover: held handles (files, directories, a symlink, objects
//! renamed just before) keep working on the new active with zero STALE; the
//! mount recorded on the old active is in the new active's MOUNT DUMP and in
//! `showmount -a` (portmap on 111 of the service address; ignored, as the
//! tools tests are: ./test.sh runs it in a network namespace of its own); a
//! REMOVE whose reply was never read gets the original NFS3_OK when
//! retransmitted to the new active (DRC); the WRITE verifier changes.

use std::io::Write;

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;

use super::harness::*;
use crate::nfs3_ops::*;
use crate::util::*;

/// NFSv3 REMOVE procedure number.
const NFSPROC3_REMOVE: u32 = 12;
/// nfsstat3 values checked on the wire.
const NFS3_OK: u32 = 0;
const NFS3ERR_NOENT: u32 = 2;

/// Objects a client holds handles to across a failover.
pub struct Held {
    /// (what, handle, expected file content if a regular file)
    pub handles: Vec<(String, nfs_fh3, Option<Vec<u8>>)>,
    /// (what, directory handle, a name that must LOOKUP inside it)
    pub lookups: Vec<(String, nfs_fh3, String)>,
    pub symlink: nfs_fh3,
}

/// Build a tree through `c` and rename some of it last, so the renames are
/// the newest committed changes when the active dies.
pub async fn make_tree(c: &mut Conn) -> Held {
    let root = c.root_nfs_fh3();
    let mut handles = Vec::new();
    let mut lookups = Vec::new();
    let dir = mkdir(c, &root, "dir").await.expect("mkdir dir");
    let sub = mkdir(c, &dir, "sub").await.expect("mkdir sub");
    for (what, parent, name) in [("file", &root, "file"), ("nested", &sub, "nested"), ("to-rename", &dir, "old-name")] {
        let fh = create(c, parent, name).await.unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        let data = format!("content of {what}").into_bytes();
        write(c, &fh, 0, &data, stable_how::FILE_SYNC).await.unwrap_or_else(|e| panic!("write {name}: {e:?}"));
        handles.push((what.to_string(), fh, Some(data)));
    }
    let args = SYMLINK3args {
        where_: diropargs(&dir, "link"),
        symlink: symlinkdata3 {
            symlink_attributes: sattr3::default(),
            symlink_data: nfspath3(Opaque::borrowed(b"sub/nested")),
        },
    };
    let Nfs3Result::Ok(sl) = c.symlink(&args).await.expect("rpc") else { panic!("SYMLINK") };
    let symlink = sl.obj.unwrap();
    handles.push(("symlink".to_string(), symlink.clone(), None));
    let moved_dir = mkdir(c, &root, "dir-before").await.expect("mkdir dir-before");
    create(c, &moved_dir, "inside").await.expect("create inside");
    // The renames, just before the failover.
    rename(c, &dir, "old-name", &sub, "new-name").await.expect("rename file");
    rename(c, &root, "dir-before", &dir, "dir-after").await.expect("rename dir");
    handles.push(("root".to_string(), root.clone(), None));
    handles.push(("dir".to_string(), dir.clone(), None));
    handles.push(("sub".to_string(), sub.clone(), None));
    handles.push(("renamed dir".to_string(), moved_dir.clone(), None));
    lookups.push(("root".to_string(), root, "file".to_string()));
    lookups.push(("dir".to_string(), dir.clone(), "dir-after".to_string()));
    lookups.push(("sub".to_string(), sub.clone(), "new-name".to_string()));
    lookups.push(("sub".to_string(), sub, "nested".to_string()));
    lookups.push(("renamed dir".to_string(), moved_dir, "inside".to_string()));
    Held { handles, lookups, symlink }
}

/// GETATTR every handle, READ every file, LOOKUP every expected name and
/// READLINK the symlink through `c`; panics listing every failure and the
/// count of NFS3ERR_STALE among them.
pub async fn check_tree(c: &mut Conn, held: &Held, when: &str) {
    let mut failures = Vec::new();
    let mut stale = 0u32;
    let mut note = |what: String, e: nfsstat3, failures: &mut Vec<String>| {
        if e == nfsstat3::NFS3ERR_STALE {
            stale += 1;
        }
        failures.push(format!("{what}: {e:?}"));
    };
    for (what, fh, content) in &held.handles {
        if let Err(e) = getattr(c, fh).await {
            note(format!("GETATTR {what}"), e, &mut failures);
        }
        if let Some(expected) = content {
            match read(c, fh, 0, 4096).await {
                Ok((data, _)) => assert_eq!(&data, expected, "{when}: READ {what}"),
                Err(e) => note(format!("READ {what}"), e, &mut failures),
            }
        }
    }
    for (what, dir, name) in &held.lookups {
        if let Err(e) = lookup(c, dir, name).await {
            note(format!("LOOKUP {name} in {what}"), e, &mut failures);
        }
    }
    match c.readlink(&READLINK3args { symlink: held.symlink.clone() }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => assert_eq!(ok.data.0.as_ref(), b"sub/nested", "{when}: READLINK"),
        Nfs3Result::Err((e, _)) => note("READLINK symlink".to_string(), e, &mut failures),
    }
    assert!(failures.is_empty(), "{when}: {stale} STALE among {} failures: {failures:?}", failures.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_handles_survive_kill9_of_the_active() {
    let mut cl = Cluster::start("handles");
    let old = cl.wait_serving(&[]);
    let mut c = cl.connect().await;
    let held = make_tree(&mut c).await;
    check_tree(&mut c, &held, "before the failover").await;
    drop(c);
    cl.kill9(old);
    let new = cl.wait_serving(&[old]);
    assert_eq!(new, Cluster::other_storage(old), "the other storage node took over");
    let mut c = cl.connect().await;
    check_tree(&mut c, &held, "after the failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rmtab_mount_is_listed_on_the_new_active() {
    let mut cl = Cluster::start("rmtab");
    let old = cl.wait_serving(&[]);
    let c = cl.connect().await;
    let before = cl.mount_dump().await;
    assert!(before.iter().any(|(_, dir)| dir == EXPORT_NAME), "DUMP on the old active lists the mount: {before:?}");
    drop(c);
    cl.kill9(old);
    cl.wait_serving(&[old]);
    let after = cl.mount_dump().await;
    for row in &before {
        assert!(after.contains(row), "row {row:?} from the old active missing on the new one: {after:?}");
    }
}

/// Hosts in `showmount -a SERVER` output that mounted `/export`.
fn showmount_hosts(server: &str) -> Vec<String> {
    let out = std::process::Command::new("showmount")
        .args(["-a", server])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run showmount (package nfs-common)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("$ showmount -a {server}\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "showmount -a {server}: {:?}", out.status);
    text.lines().skip(1).filter_map(|l| l.strip_suffix(&format!(":{EXPORT_NAME}"))).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs port 111 free and rpcbind installed: ./test.sh runs them in a network namespace of its own"]
async fn cluster_showmount_a_on_the_new_active_lists_the_old_mount() {
    crate::tools::require_tool("showmount", "nfs-common");
    let mut cl = Cluster::start_portmap_111("showmount");
    let old = cl.wait_serving(&[]);
    let server = cl.service.to_string();
    let c = cl.connect().await;
    let before = showmount_hosts(&server);
    assert!(!before.is_empty(), "showmount -a on the old active lists the mount");
    drop(c);
    cl.kill9(old);
    cl.wait_serving(&[old]);
    let after = showmount_hosts(&server);
    for host in &before {
        assert!(after.contains(host), "{host} missing from showmount -a on the new active: {after:?}");
    }
}

/// REMOVE3args (diropargs3: handle, name) on the wire.
fn remove_args(dir: &nfs_fh3, name: &str) -> Vec<u8> {
    let mut a = Vec::new();
    put_opaque(&mut a, dir.data.as_ref());
    put_opaque(&mut a, name.as_bytes());
    a
}

/// The nfsstat3 of a REMOVE reply message.
fn remove_status(reply: &[u8], xid: u32) -> u32 {
    match parse_reply(reply) {
        RpcReply::Accepted { xid: got, stat: SUCCESS, body } => {
            assert_eq!(got, xid, "reply xid");
            words(&body).first().copied().expect("REMOVE3res status")
        }
        other => panic!("REMOVE not accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_drc_retransmitted_remove_gets_the_original_ok() {
    let mut cl = Cluster::start("drc");
    let old = cl.wait_serving(&[]);
    let mut c = cl.connect().await;
    let root = c.root_nfs_fh3();
    create(&mut c, &root, "victim").await.expect("create victim");
    drop(c);
    let cred = auth_sys_body(0, 0, &[]);
    let xid = 0x0d0c_0001;
    let call =
        frame(&call_msg(xid, NFS_PROGRAM, NFS_VERSION, NFSPROC3_REMOVE, (1, &cred), &remove_args(&root, "victim")));
    let mut first = cl.raw_connect(cl.ports.nfs);
    first.write_all(&call).expect("send REMOVE");
    // The reply is never read: peek only tells that it was sent (so the
    // removal and its cached reply are committed) before the active dies.
    assert!(wait_readable(&first), "the old active answered the REMOVE");
    assert!(!cl.export.join("victim").exists(), "the REMOVE took effect");
    cl.kill9(old);
    drop(first);
    cl.wait_serving(&[old]);
    let mut again = cl.raw_connect(cl.ports.nfs);
    again.write_all(&call).expect("retransmit REMOVE");
    let reply = read_record(&mut again).expect("the new active answers the retransmission");
    assert_eq!(remove_status(&reply, xid), NFS3_OK, "retransmission gets the original NFS3_OK, not NOENT");
    // Control: the same REMOVE under a new xid is a new request and finds nothing.
    let fresh =
        frame(&call_msg(xid + 1, NFS_PROGRAM, NFS_VERSION, NFSPROC3_REMOVE, (1, &cred), &remove_args(&root, "victim")));
    again.write_all(&fresh).expect("send fresh REMOVE");
    let reply = read_record(&mut again).expect("fresh REMOVE answered");
    assert_eq!(remove_status(&reply, xid + 1), NFS3ERR_NOENT, "a new xid is executed, not replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_write_verifier_changes_after_failover() {
    let mut cl = Cluster::start("verifier");
    let old = cl.wait_serving(&[]);
    let mut c = cl.connect().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "unstable").await.expect("create");
    let w1 = write(&mut c, &fh, 0, b"before", stable_how::UNSTABLE).await.expect("WRITE before");
    let w1b = write(&mut c, &fh, 6, b"again", stable_how::UNSTABLE).await.expect("second WRITE before");
    assert_eq!(w1.verf, w1b.verf, "the verifier is stable while one active serves");
    drop(c);
    cl.kill9(old);
    cl.wait_serving(&[old]);
    let mut c = cl.connect().await;
    let w2 = write(&mut c, &fh, 0, b"after!", stable_how::UNSTABLE).await.expect("WRITE after");
    assert_ne!(w1.verf, w2.verf, "a client must see a new write verifier after the failover and resend");
    let Nfs3Result::Ok(commit) = c.commit(&COMMIT3args { file: fh, offset: 0, count: 0 }).await.expect("rpc") else {
        panic!("COMMIT")
    };
    assert_eq!(commit.verf, w2.verf, "COMMIT returns the new active's verifier");
}

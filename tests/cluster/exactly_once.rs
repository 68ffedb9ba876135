//! Exactly once across a failover (DESIGN.md invariant 6): the active of a
//! three-node cluster aborts right after executing a CREATE or a REMOVE and
//! before recording its reply (`HANFS_TEST_CRASH_AFTER_EXECUTE`, on every
//! node; the recovery path never reaches it); the client's retransmission
//! (same xid, address and credential) goes to the new active, which finds
//! the call's intent in the replicated state, sees on the shared disk that
//! the original ran, and answers NFS3_OK (with the file's handle for
//! CREATE) instead of EEXIST or ENOENT.

use std::io::Write;
use std::time::Duration;

use nfs3_types::nfs3::*;

use super::harness::*;
use crate::exactly_once::{pack, returned_handle, status, CRASH_ENV, CREATE, NFS3_OK, REMOVE, XID};
use crate::nfs3_ops::*;
use crate::util::*;

/// Send `proc_(args)` to the active `old`, which must abort without
/// answering; wait for the other storage node to serve and send the same
/// call again; the body of its answer.
fn retransmit_across_the_crash(cl: &mut Cluster, old: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let cred = auth_sys_body(0, 0, &[]);
    let call = frame(&call_msg(XID, NFS_PROGRAM, NFS_VERSION, proc_, (1, &cred), args));
    let mut first = cl.raw_connect(cl.ports.nfs);
    first.write_all(&call).expect("send the call");
    assert!(read_record(&mut first).is_none(), "the active aborts before answering");
    for _ in 0..SERVE_POLLS_MAX {
        if !cl.node(old).running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    assert!(!cl.node(old).running(), "node {old} aborted at the crash point");
    cl.kill9(old);
    let new = cl.wait_serving(&[old]);
    assert_eq!(new, Cluster::other_storage(old), "the other storage node took over");
    let mut again = cl.raw_connect(cl.ports.nfs);
    again.write_all(&call).expect("retransmit");
    let reply = read_record(&mut again).expect("the new active answers the retransmission");
    match parse_reply(&reply) {
        RpcReply::Accepted { xid, stat: SUCCESS, body } => {
            assert_eq!(xid, XID, "reply xid");
            body
        }
        other => panic!("retransmission not accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_create_whose_active_died_before_the_record_gets_the_original_ok() {
    let mut cl = Cluster::start_with_env("once-create", &[(CRASH_ENV, "CREATE")]);
    let old = cl.wait_serving(&[]);
    let root = cl.connect().await.root_nfs_fh3();
    let args = pack(&CREATE3args { where_: diropargs(&root, "made"), how: createhow3::GUARDED(mode_attr(0o644)) });
    let body = retransmit_across_the_crash(&mut cl, old, CREATE, &args);
    assert_eq!(status(&body), NFS3_OK, "the retransmission gets the original NFS3_OK, not EEXIST");
    let mut c = cl.connect().await;
    let (fh, _) = lookup(&mut c, &root, "made").await.expect("LOOKUP made on the new active");
    assert_eq!(returned_handle(&body), fh.data.as_ref(), "the answer carries the file's handle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_remove_whose_active_died_before_the_record_gets_the_original_ok() {
    let mut cl = Cluster::start_with_env("once-remove", &[(CRASH_ENV, "REMOVE")]);
    let old = cl.wait_serving(&[]);
    let mut c = cl.connect().await;
    let root = c.root_nfs_fh3();
    create(&mut c, &root, "victim").await.expect("create victim");
    drop(c);
    let args = pack(&REMOVE3args { object: diropargs(&root, "victim") });
    let body = retransmit_across_the_crash(&mut cl, old, REMOVE, &args);
    assert_eq!(status(&body), NFS3_OK, "the retransmission gets the original NFS3_OK, not NOENT");
    assert!(!cl.export.join("victim").exists(), "the file is gone");
}

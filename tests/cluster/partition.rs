//! Fencing: a leader cut off from both peers by transport fault injection
//! stops serving, the other storage node takes over, and the old leader
//! acknowledges no request on the connection it had accepted before; after
//! `heal` it rejoins as a follower and service stays with the new leader.

use std::io::Write;

use super::harness::*;
use crate::util::*;

/// NFSv3 GETATTR procedure number.
const NFSPROC3_GETATTR: u32 = 1;

fn getattr_call(xid: u32, fh: &[u8]) -> Vec<u8> {
    let mut args = Vec::new();
    put_opaque(&mut args, fh);
    frame(&call_msg(xid, NFS_PROGRAM, NFS_VERSION, NFSPROC3_GETATTR, (1, &auth_sys_body(0, 0, &[])), &args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_partitioned_leader_is_fenced() {
    let mut cl = Cluster::start("partition");
    let old = cl.wait_serving(&[]);
    let other = Cluster::other_storage(old);
    let c = cl.connect().await;
    let root = c.root_nfs_fh3().data.as_ref().to_vec();
    drop(c);
    // A connection accepted by the old leader before the partition.
    let mut held = cl.raw_connect(cl.ports.nfs);
    held.write_all(&getattr_call(1, &root)).expect("send GETATTR");
    assert!(read_record(&mut held).is_some(), "the leader answers before the partition");

    cl.faults(old, &["block", &other.to_string()]);
    cl.faults(old, &["block", &WITNESS.to_string()]);
    let new = cl.wait_serving(&[old]);
    assert_eq!(new, other, "the other storage node took over");

    // The new leader has opened its listeners; the old one must not answer.
    let sent = held.write_all(&getattr_call(2, &root)).is_ok();
    let answered = sent && read_record(&mut held).is_some();
    assert!(!answered, "the fenced old leader answered a GETATTR after the new leader opened its listeners");
    // New connections reach the new leader, which answers.
    let mut fresh = cl.raw_connect(cl.ports.nfs);
    fresh.write_all(&getattr_call(3, &root)).expect("send GETATTR");
    let reply = read_record(&mut fresh).expect("the new leader answers");
    assert!(matches!(parse_reply(&reply), RpcReply::Accepted { stat: SUCCESS, .. }));
    // openraft 0.9 keeps a cut-off leader in state Leader until it sees a
    // higher term, so its `leader:` line may still name itself; what fences it
    // is that it no longer serves.
    let st = cl.status(old).expect("status of the partitioned node");
    assert_eq!(st.get("serving_here").map(String::as_str), Some("no"), "the partitioned node still serves:\n{st:?}");

    cl.faults(old, &["heal"]);
    let mut rejoined = false;
    for _ in 0..SERVE_POLLS_MAX {
        if cl.leader_seen_by(old) == Some(new) {
            rejoined = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
    }
    assert!(rejoined, "after heal the old leader follows the new one:\n{}", cl.status_text(old));
    assert_eq!(cl.wait_serving(&[]), new, "service stays with the new leader after heal");
}

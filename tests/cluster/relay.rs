//! The witness relay through the real binary: the active commits a CREATE's
//! handle with the witness alone (its link to the other storage node is cut
//! by fault injection), then is killed with -9. The other storage node lacks
//! that entry, so only the witness can give it; the other storage node must
//! still take over and serve the new file's handle, with no STALE.

use super::harness::*;
use crate::nfs3_ops::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_entry_only_the_witness_has_survives_the_active() {
    let mut cl = Cluster::start("relay");
    let old = cl.wait_serving(&[]);
    let other = Cluster::other_storage(old);
    let mut c = cl.connect().await;
    let root = c.root_nfs_fh3();
    cl.wait_caught_up(other, old);

    // Cut the two storage nodes apart; the witness still hears the active.
    cl.faults(old, &["block", &other.to_string()]);
    cl.faults(other, &["block", &old.to_string()]);
    let before = cl.applied(other).expect("applied index of the other storage node");
    let fh = create(&mut c, &root, "only-on-the-witness").await.expect("CREATE through the active");
    let data = b"acknowledged before the kill".to_vec();
    write(&mut c, &fh, 0, &data, nfs3_types::nfs3::stable_how::FILE_SYNC).await.expect("WRITE");
    assert_eq!(
        cl.applied(other),
        Some(before),
        "the other storage node must lack the CREATE for this test to mean anything"
    );
    drop(c);

    let killed = std::time::Instant::now();
    cl.kill9(old);
    cl.faults(other, &["heal"]);
    let new = cl.wait_serving(&[old]);
    println!("relay: node {new} serves {:?} after the kill", killed.elapsed());
    assert_eq!(new, other);
    let mut c = cl.connect().await;
    getattr(&mut c, &fh).await.unwrap_or_else(|e| panic!("GETATTR of the handle only the witness had: {e:?}"));
    let (read_back, _) = read(&mut c, &fh, 0, 4096).await.unwrap_or_else(|e| panic!("READ: {e:?}"));
    assert_eq!(read_back, data);
    lookup(&mut c, &root, "only-on-the-witness").await.unwrap_or_else(|e| panic!("LOOKUP: {e:?}"));

    // The witness led only for the hand-over: it follows the new active and
    // never served.
    let st = cl.status(WITNESS).expect("witness status");
    assert_eq!(st.get("state").map(String::as_str), Some("Follower"), "{st:?}");
    assert_eq!(st.get("serving_here").map(String::as_str), Some("no"), "{st:?}");
}

//! A node never serves an export from the wrong filesystem (DESIGN.md
//! invariant 1, issue 10 item 2). Handles carry the filesystem's own object
//! handles, so an export whose directory is not the filesystem the cluster
//! recorded for it (the shared disk not mounted, another disk mounted there)
//! would hand out wrong objects. The export directory (the same path on every
//! node: it comes from the replicated export table) is replaced by another
//! directory while the passive restarts, the active is killed: the passive
//! refuses to serve and says why in `status`; with the right directory back
//! it serves, and a handle from before resolves.

use std::time::Duration;

use nfs3_types::nfs3::*;

use super::harness::*;
use crate::nfs3_ops::*;

/// Status polls while waiting for the refusal to show.
const REFUSAL_POLLS_MAX: u32 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_an_export_on_the_wrong_filesystem() {
    let mut cl = Cluster::start("wrongdisk");
    let active = cl.wait_serving(&[]);
    let passive = Cluster::other_storage(active);
    let fh = {
        let mut c = cl.connect().await;
        let root = c.root_nfs_fh3();
        let fh = create(&mut c, &root, "before").await.expect("create");
        write(&mut c, &fh, 0, b"right disk", stable_how::FILE_SYNC).await.expect("write");
        fh
    };
    // Another directory where the export's is (as if the shared disk were
    // not mounted there), the real one kept aside.
    let export = cl.export.clone();
    let aside = export.with_file_name("the-shared-disk");
    cl.kill9(passive);
    std::fs::rename(&export, &aside).expect("move the export aside");
    std::fs::create_dir_all(&export).expect("wrong dir");
    std::fs::write(export.join("before"), b"wrong disk").expect("decoy");
    cl.restart(passive);
    cl.wait_caught_up(passive, active);
    cl.kill9(active);

    let mut refused = None;
    for _ in 0..REFUSAL_POLLS_MAX {
        let text = cl.status_text(passive);
        if text.contains("is not the filesystem this cluster serves") {
            refused = Some(text);
            break;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    let text = refused.unwrap_or_else(|| panic!("no refusal in status:\n{}", cl.status_text(passive)));
    assert!(text.contains("last_error: promotion failed"), "{text}");
    assert!(
        !cl.null_answers(cl.ports.nfs, NFS_PROGRAM, NFS_VERSION),
        "the node with the wrong disk answers NFS:\n{text}"
    );

    // The right disk again: it serves, and the old handle reads the right data.
    cl.kill9(passive);
    std::fs::remove_dir_all(&export).expect("remove the wrong dir");
    std::fs::rename(&aside, &export).expect("put the export back");
    cl.restart(passive);
    assert_eq!(cl.wait_serving(&[active]), passive);
    let mut c = cl.connect().await;
    assert_eq!(read(&mut c, &fh, 0, 100).await.expect("read").0, b"right disk");
}

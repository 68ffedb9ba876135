//! What an operator reads across failovers (issue 11 item 8): `took` of a
//! promotion counts from that promotion's own start (its election, or its
//! demotion when it regains the lease in the same term), never from the
//! cluster's first election; `status` names the new active as serving as
//! soon as it answers NFS (and `status --json` says the same as JSON); peers
//! closing connections are never logged as failed authentication.

use std::time::{Duration, Instant};

use super::harness::*;

/// The `took N ms` of `last_failover` in node `id`'s status.
fn last_failover_took_ms(cl: &mut Cluster, id: u32) -> Option<(u64, u64)> {
    let status = cl.status(id)?;
    let line = status.get("last_failover")?;
    // "node 2 at unix_ms 1764..., took 812 ms"
    let node = first_number(line)?;
    let took = line.rsplit_once("took ")?.1;
    Some((node, first_number(took)?))
}

/// Kill -9 the active and wait for the other storage node; check what
/// `status` says the moment it answers. Returns the new active and when the
/// kill happened.
fn fail_over(cl: &mut Cluster, active: u32) -> (u32, Instant) {
    let killed = Instant::now();
    cl.kill9(active);
    let new = cl.wait_serving(&[active]);
    assert_eq!(new, Cluster::other_storage(active), "the other storage node took over");
    // It answers NFS now: every node that can tell must say it serves.
    for id in [new, WITNESS] {
        let status = cl.status(id).unwrap_or_else(|| panic!("status of node {id}"));
        assert_eq!(
            status.get("serving").map(String::as_str),
            Some(format!("node {new}").as_str()),
            "node {id}'s status right after node {new} answered:\n{}",
            cl.status_text(id)
        );
    }
    (new, killed)
}

/// Polls while waiting for the cut-off active to stop serving: 10 s.
const DEMOTE_POLLS_MAX: u32 = 200;
/// The cluster runs this long before the cut, so a `took` counted from its
/// first election would be at least that.
const SETTLE_MS: u64 = 3_000;

#[test]
fn cluster_took_of_a_repromotion_counts_from_the_lease_loss_not_the_first_election() {
    let mut cl = Cluster::start("operator-lease");
    let active = cl.wait_serving(&[]);
    std::thread::sleep(Duration::from_millis(SETTLE_MS));
    // Cut the active off from both peers until it stops serving, then heal:
    // either it regains its lease in the same term (a re-promotion without a
    // new election) or the other storage node took over meanwhile.
    let cut = Instant::now();
    cl.faults(active, &["block", &Cluster::other_storage(active).to_string()]);
    cl.faults(active, &["block", &WITNESS.to_string()]);
    let mut demoted = false;
    for _ in 0..DEMOTE_POLLS_MAX {
        if cl.status(active).and_then(|s| s.get("serving_here").cloned()).as_deref() == Some("no") {
            demoted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    cl.faults(active, &["heal"]);
    assert!(demoted, "node {active} still serves while cut off from every peer");
    let now_active = cl.wait_serving(&[]);
    let since_cut_ms = u64::try_from(cut.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (node, took_ms) = last_failover_took_ms(&mut cl, WITNESS).expect("last_failover in the witness's status");
    assert_eq!(u64::from(now_active), node, "last_failover names the node serving now");
    // A relation, not a time limit: this promotion began after the cut.
    assert!(
        took_ms <= since_cut_ms,
        "node {node}: took {took_ms} ms, but it was cut off only {since_cut_ms} ms ago: counted from an older election"
    );
}

#[test]
fn cluster_took_counts_from_the_nodes_own_election_and_status_shows_the_new_active() {
    let mut cl = Cluster::start("operator");
    let first = cl.wait_serving(&[]);
    let (second, _) = fail_over(&mut cl, first);
    cl.restart(first);
    cl.wait_caught_up(first, second);
    // `first` promotes again, its second election.
    let (again, killed) = fail_over(&mut cl, second);
    assert_eq!(again, first);
    let since_kill_ms = u64::try_from(killed.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (node, took_ms) = last_failover_took_ms(&mut cl, WITNESS).expect("last_failover in the witness's status");
    assert_eq!(u64::from(again), node, "last_failover names the re-promoted node");
    // A relation, not a time limit: the promotion began after the kill.
    assert!(
        took_ms <= since_kill_ms,
        "took {took_ms} ms, but node {again} was killed only {since_kill_ms} ms ago: counted from an older election"
    );
    // `status --json` (for monitoring scripts) says what `status` says, as JSON.
    let json = cl.cli(WITNESS, &["status", "--json"]);
    assert!(json.status.success(), "status --json failed");
    let checked = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import json,sys; d=json.load(sys.stdin); print(d['role']); print(d['node'])"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(&json.stdout)?;
            child.wait_with_output()
        })
        .expect("python3 json");
    assert!(checked.status.success(), "status --json is not JSON: {}", String::from_utf8_lossy(&json.stdout));
    let parsed = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert_eq!(parsed.lines().collect::<Vec<_>>(), ["witness", WITNESS.to_string().as_str()], "{parsed}");
    // Connections closed by killed peers are not authentication failures.
    for id in NODE_IDS {
        let log = std::fs::read_to_string(&cl.node(id).log).unwrap_or_default();
        let refused: Vec<&str> = log.lines().filter(|l| l.contains("authentication failed")).collect();
        assert!(refused.is_empty(), "node {id} logged peers as failing authentication:\n{}", refused.join("\n"));
    }
}

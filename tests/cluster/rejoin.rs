//! A killed storage node's rejoin must not depose the active (the soak's
//! false failover of 2026-11-27): under the same CPU hog and NFS load as
//! `load`, the passive is killed with `kill -9`, stays down while the active
//! commits on with the witness, and is restarted; it catches up on a loaded
//! machine, where its log fsyncs are slow: for `SLOW_MS` after its restart
//! it answers every AppendEntries `SLOW_APPENDS_MS` late (`debug faults
//! slow-appends`), longer than its election timer. A restarted node that campaigned
//! while it was still catching up (its log behind the leader's) used to make
//! the leader step down on seeing the higher term, although the leader
//! refused it the vote. Every round the active must stay the active: no
//! `demoted` line on it, the same term, the same node serving. Then, with
//! the passive still answering late, the active is killed: the passive must
//! still take over (the election gate holds a campaign back only while an
//! append is in hand, and briefly after).
//! `HANFS_REJOIN_ROUNDS` runs more rounds than CI's.

use std::time::{Duration, Instant};

use super::harness::*;
use super::load::{demotion_lines, env_count, LoadDone, LoadRun, SNAPSHOT_EVERY_ENTRIES};

/// Kill-and-rejoin rounds in CI; `HANFS_REJOIN_ROUNDS` overrides it.
const ROUNDS_DEFAULT: u64 = 3;
/// Most rounds `HANFS_REJOIN_ROUNDS` may ask for.
const ROUNDS_MAX: u64 = 200;
/// How long the passive stays down: the entries it must fetch on rejoin.
const DOWN_MS: u64 = 4_000;
/// How late the rejoined node answers AppendEntries, and for how long:
/// longer than its election timer (`election_timeout_max` + up to
/// `election_timeout_max` more, 1.2 s by default), for several answers.
const SLOW_APPENDS_MS: &str = "1500";
/// How long the rejoined node answers late.
const SLOW_MS: u64 = 5_000;
/// Load after the rejoined node caught up, before the next kill.
const SETTLE_MS: u64 = 2_000;
/// Upper bound of one round (kill, down, restart, catch-up, settle), for the
/// load's deadline.
const ROUND_BOUND_S: u64 = 30;

fn rounds() -> u64 {
    env_count("HANFS_REJOIN_ROUNDS", ROUNDS_DEFAULT, ROUNDS_MAX)
}

#[test]
fn a_killed_node_rejoining_under_load_does_not_depose_the_active() {
    let rounds = rounds();
    let mut cl = Cluster::start_with_env("rejoin", &[("HANFS_TEST_SNAPSHOT_EVERY", SNAPSHOT_EVERY_ENTRIES)]);
    let active = cl.wait_serving(&[]);
    let passive = Cluster::other_storage(active);
    let term_before = cl.term(active);
    let deadline = Instant::now() + Duration::from_secs(rounds * ROUND_BOUND_S);
    let run = LoadRun::start(&cl, deadline);
    let mut caught_up = Vec::new();
    for round in 1..=rounds {
        assert!(Instant::now() < deadline, "round {round} started after the load's deadline");
        cl.kill9(passive);
        std::thread::sleep(Duration::from_millis(DOWN_MS));
        let restarted = Instant::now();
        cl.restart(passive);
        cl.faults(passive, &["slow-appends", SLOW_APPENDS_MS]);
        std::thread::sleep(Duration::from_millis(SLOW_MS));
        cl.faults(passive, &["heal"]);
        let (applied, target) = cl.wait_caught_up(passive, active);
        caught_up.push(format!("round {round}: caught up to {applied} (leader {target}) in {:?}", restarted.elapsed()));
        std::thread::sleep(Duration::from_millis(SETTLE_MS));
        if !demotion_lines(&mut cl, active).is_empty() {
            break;
        }
    }
    let LoadDone { ops, errors, .. } = run.finish();
    for line in &caught_up {
        println!("{line}");
    }
    let demotions = demotion_lines(&mut cl, active);
    let term_after = cl.term(active);
    println!(
        "{rounds} rejoin rounds under load: {ops} NFS ops, {errors} errors, {} demotion lines on the active, term {term_before:?} -> {term_after:?}",
        demotions.len()
    );
    assert!(ops > 0, "the load made no progress ({errors} errors)");
    assert!(demotions.is_empty(), "the active was deposed during a rejoin:\n{}", demotions.join("\n"));
    assert_eq!(term_before, term_after, "the term changed: a rejoining node started an election that counted");
    assert_eq!(cl.wait_serving(&[]), active, "the same active serves after the rejoins");

    // The gate must not hold up a real failover: with the passive answering
    // late, the active dies; the passive still takes over.
    cl.faults(passive, &["slow-appends", SLOW_APPENDS_MS]);
    std::thread::sleep(Duration::from_millis(SETTLE_MS));
    let killed = Instant::now();
    cl.kill9(active);
    let serving = cl.wait_serving(&[active]);
    println!(
        "kill -9 of the active with the passive answering late: node {serving} serves after {:?}",
        killed.elapsed()
    );
    assert_eq!(serving, passive, "the passive takes over");
}

//! The admin socket of a cluster member: `init`, `status`, `switchover
//! [--to N]`, `exports`, `clients`, `locks` (these three from this node's
//! applied state, on any node), `exports add|update|remove|reload` (checked
//! here, run on the leader: forwarded there unless this node leads; see
//! `crate::exports_admin`), `stats` (the serving node's call counts: a
//! node that does not serve forwards it to the leader, and the answer says
//! which node answered), and `debug faults block N | unblock N |
//! slow-appends MS | heal` and `debug snapshot` (only when started with
//! `HANFS_TEST_FAULTS=1`).
//!
//! `debug snapshot` builds a snapshot now (`RaftNode::snapshot_now`), waits
//! for it (at most `DEBUG_SNAPSHOT_WAIT_MS`) and purges the log up to it, so a
//! test can make a wiped node catch up by InstallSnapshot instead of by log
//! replay (snapshots are otherwise built every `SNAPSHOT_EVERY_ENTRIES`).
//!
//! Switchover (the Raft library has no leadership transfer): asked on the
//! leader,
//! 1. check the target is another storage node and its replication matches
//!    the leader's last log index (`RaftNode::switchover_target`, then
//!    `wait_caught_up`: at most `SWITCHOVER_CATCHUP_MS`);
//! 2. stand down (`lifecycle::stand_down`): the lifecycle demotes at once
//!    (VIP, listeners, connections, `on_demote`), and the fence refuses every
//!    reply from then on;
//! 3. switch this node's heartbeats and elections off
//!    (`RaftNode::step_aside`): the followers' leader lease runs out, the
//!    witness never campaigns, so the target is the only candidate; it wins
//!    (its log is complete) and promotes itself through its own lifecycle;
//! 4. once another leader is seen (at most `SWITCHOVER_WAIT_MS`), or on
//!    timeout, switch heartbeats/elections back on and stop standing down.
//!
//! The bounds live in `hanfs_raft::timing`.
//!
//! With two storage nodes `--to` can only name the other one; it is checked.
//! Asked on a follower, `switchover` is forwarded to the leader over the
//! peer transport (`RaftNode::forward_to_leader`) and its answer relayed.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Instant;

use hanfs_raft::commit::Commit;
use hanfs_raft::membership::MembershipError;
use hanfs_raft::timing::SWITCHOVER_WAIT_MS;
use hanfs_raft::types::{NodeId, Role};

use super::lifecycle::stand_down;
use super::shared::Shared;
use crate::admin::{self, Handler};

/// Environment variable that enables `debug faults` on the admin socket
/// (value `1`), for tests only.
pub const FAULTS_ENV: &str = "HANFS_TEST_FAULTS";
/// Bound on waiting for a `debug snapshot` to be built.
pub const DEBUG_SNAPSHOT_WAIT_MS: u64 = 10_000;
/// Longest hold `debug faults slow-appends` accepts (a minute).
pub const SLOW_APPENDS_MS_MAX: u64 = 60_000;

/// The admin handler of a cluster member.
pub(crate) struct Control {
    shared: Weak<Shared>,
}

impl Control {
    pub fn new(shared: &Arc<Shared>) -> Self {
        Control { shared: Arc::downgrade(shared) }
    }
}

impl Handler for Control {
    fn answer(&self, line: String) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            let Some(shared) = self.shared.upgrade() else {
                return "error: node is stopping\n".to_string();
            };
            if let Some(parsed) = admin::exports_change(&line) {
                return exports_from_here(&shared, parsed).await;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["init"] => init(&shared).await,
                ["status"] => status(&shared).await,
                ["switchover", rest @ ..] => match parse_switchover(rest) {
                    Ok(to) => switchover_from_here(&shared, to).await,
                    Err(e) => format!("error: {e}\n"),
                },
                ["exports"] | ["exports", "table"] | ["clients"] | ["locks"] => {
                    let state = shared.raft.commit.state();
                    let vfs = shared.serving.get();
                    let guard = state.read().unwrap_or_else(|p| p.into_inner());
                    admin::answer(&guard, &line, vfs.as_deref())
                }
                ["stats"] => stats_from_here(&shared).await,
                ["debug", "faults", rest @ ..] => faults(&shared, rest),
                ["debug", "snapshot"] => debug_snapshot(&shared).await,
                _ => format!(
                    "error: unknown command `{}` (try init, status, switchover [--to N], exports [add|update|remove|reload], clients, locks, stats)\n",
                    line.trim()
                ),
            }
        })
    }
}

async fn init(shared: &Shared) -> String {
    let _op = shared.admin_op.lock().await;
    match shared.raft.bootstrap(shared.config_members()).await {
        Ok(()) => {
            tracing::info!(members = shared.setup.cluster.peers.len(), "cluster initialized");
            format!(
                "initialized cluster {} with {} members\n",
                shared.setup.cluster.name,
                shared.setup.cluster.peers.len()
            )
        }
        Err(MembershipError::InitOnWitness) => "error: init must run on a storage node, this is the witness\n".into(),
        Err(e) => format!("error: {e}\n"),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Storage => "storage",
        Role::Witness => "witness",
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// `status`: `key: value` lines in two parts. The cluster part — leader,
/// term, commit index, members, lag, VIP and its holder, exports, clients,
/// epoch, last failover — comes from the leader's `ClusterView` (fetched from
/// it when this node follows) and the replicated state, so every node prints
/// the same; `view:` says where it came from. The node part (`node:` onwards)
/// is this node's own: role, Raft state, its indexes, whether it serves.
async fn status(shared: &Shared) -> String {
    let view = shared.raft.cluster_view().await;
    let m = shared.raft.status();
    let active = shared.active();
    let mut out = String::new();
    let _ = writeln!(out, "cluster: {}", shared.setup.cluster.name);
    match &view {
        Ok(v) if v.leader == m.id && !v.lease_held => {
            // The Raft library keeps a cut-off leader in state Leader; without
            // a quorum acknowledgement inside the lease it leads nobody.
            let _ = writeln!(out, "leader: none (this node is Raft leader without a quorum lease)");
        }
        Ok(v) => {
            let _ = writeln!(out, "leader: {}", v.leader);
        }
        Err(_) => {
            let _ = writeln!(out, "leader: {}", opt(m.current_leader));
        }
    }
    let _ = writeln!(out, "term: {}", view.as_ref().map_or(m.current_term, |v| v.term));
    // The Raft library's metrics carry no commit index; the leader applies
    // an entry as soon as it is committed, so its applied index is the commit
    // index (a follower without the view knows only its own).
    let commit = match &view {
        Ok(v) => v.commit_index,
        Err(_) => m.last_applied_index,
    };
    let _ = writeln!(out, "commit_index: {}", opt(commit));
    let list: Vec<String> = m.members.iter().map(|(id, n)| format!("{id}={}/{}", n.addr, role_name(n.role))).collect();
    let _ =
        writeln!(out, "members: {}", if list.is_empty() { "none (not initialized)".into() } else { list.join(" ") });
    match &view {
        Ok(v) => {
            let lag: Vec<String> = v.lag().iter().map(|(id, n)| format!("{id}={n}")).collect();
            let _ = writeln!(out, "lag: {}", lag.join(" "));
            if v.extra.is_empty() {
                let _ = writeln!(out, "vip: unknown (the leader reports none)");
            }
            for (k, val) in &v.extra {
                let _ = writeln!(out, "{k}: {val}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "lag: unknown ({e})");
            let _ = writeln!(out, "vip: {}", vip_text(shared));
            let _ = writeln!(out, "vip_owner: unknown ({e})");
        }
    }
    {
        let state = shared.raft.commit.state();
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        let exports: Vec<String> = guard.served_exports().map(|(id, p, _)| format!("{id}:{p}")).collect();
        let _ = writeln!(out, "exports: {}", if exports.is_empty() { "none".into() } else { exports.join(" ") });
        let _ = writeln!(out, "clients: {}", guard.rmtab_len());
        let _ = writeln!(out, "epoch: {}", guard.epoch());
        // Replicated (`RecordPromotion`), so the same on every node.
        match guard.last_promotion() {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "last_failover: node {} at unix_ms {}, took {} ms",
                    p.node_id, p.at_unix_ms, p.took_ms
                );
            }
            None => {
                let _ = writeln!(out, "last_failover: none");
            }
        }
    }
    match &view {
        Ok(v) if v.leader == m.id => {
            let _ = writeln!(out, "view: this node leads");
        }
        Ok(v) => {
            let _ = writeln!(out, "view: from the leader, node {}", v.leader);
        }
        Err(e) => {
            let _ = writeln!(out, "view: this node only ({e})");
        }
    }
    let _ = writeln!(out, "node: {}", m.id);
    let _ = writeln!(out, "role: {}", role_name(shared.raft.role));
    let _ = writeln!(out, "state: {:?}", m.state);
    let _ = writeln!(out, "applied_index: {}", opt(m.last_applied_index));
    let _ = writeln!(out, "last_log_index: {}", opt(m.last_log_index));
    // Where this node's log starts: a node caught up by InstallSnapshot has a
    // snapshot and a purged prefix even when few entries were ever written.
    let _ = writeln!(out, "snapshot_index: {}", opt(m.snapshot_index));
    let _ = writeln!(out, "purged_index: {}", opt(m.purged_index));
    let _ = writeln!(out, "vip_held_here: {}", if active.vip_held { "yes" } else { "no" });
    let _ = writeln!(out, "serving_here: {}", if active.serving { "yes" } else { "no" });
    if let Some(e) = active.last_error {
        let _ = writeln!(out, "last_error: {e}");
    }
    out
}

/// This node's `[vip]`, as text.
fn vip_text(shared: &Shared) -> String {
    shared.setup.vip.as_ref().map_or_else(|| "none configured on this node".to_string(), |v| v.to_string())
}

/// The lines this node adds to the cluster view it serves as leader: its VIP,
/// whether it holds it, and whether it serves.
pub(crate) fn view_extra(shared: &Shared) -> Vec<(String, String)> {
    let active = shared.active();
    let me = shared.raft.id;
    let here = |yes: bool| if yes { format!("node {me}") } else { "none".to_string() };
    vec![
        ("vip".to_string(), vip_text(shared)),
        ("vip_owner".to_string(), here(active.vip_held)),
        ("serving".to_string(), here(active.serving)),
    ]
}

/// `debug snapshot`: build a snapshot of everything applied, then purge the
/// log up to it. Answers `ok snapshot_index N`.
async fn debug_snapshot(shared: &Shared) -> String {
    if !shared.faults_enabled {
        return format!("error: debug commands are off (start the node with {}=1)\n", FAULTS_ENV);
    }
    let index = match shared.raft.snapshot_now(DEBUG_SNAPSHOT_WAIT_MS).await {
        Ok(index) => index,
        Err(e) => return format!("error: {e}\n"),
    };
    tracing::warn!(index, "debug snapshot built; log purged up to it");
    format!("ok snapshot_index {index}\n")
}

/// One `debug faults` request.
#[derive(Debug, PartialEq, Eq)]
enum FaultOp {
    Block(NodeId),
    Unblock(NodeId),
    SlowAppends(u64),
    Heal,
}

/// `debug faults`' arguments; `Err` is the error line answered (nothing changes).
fn parse_faults(args: &[&str]) -> Result<FaultOp, String> {
    let peer = |s: &str| s.parse::<NodeId>().map_err(|_| format!("error: `{s}` is not a node id\n"));
    match args {
        ["block", p] => peer(p).map(FaultOp::Block),
        ["unblock", p] => peer(p).map(FaultOp::Unblock),
        ["slow-appends", ms] => match ms.parse::<u64>() {
            Ok(ms) if ms <= SLOW_APPENDS_MS_MAX => Ok(FaultOp::SlowAppends(ms)),
            _ => Err(format!("error: slow-appends wants milliseconds 0..={SLOW_APPENDS_MS_MAX}\n")),
        },
        ["heal"] => Ok(FaultOp::Heal),
        _ => Err("error: debug faults block N | unblock N | slow-appends MS | heal\n".to_string()),
    }
}

fn faults(shared: &Shared, args: &[&str]) -> String {
    if !shared.faults_enabled {
        return format!("error: fault injection is off (start the node with {}=1)\n", FAULTS_ENV);
    }
    let f = &shared.raft.faults;
    match parse_faults(args) {
        Ok(op) => {
            match op {
                FaultOp::Block(p) => f.block(p),
                FaultOp::Unblock(p) => f.unblock(p),
                FaultOp::SlowAppends(ms) => f.slow_appends(ms),
                FaultOp::Heal => f.heal(),
            }
            tracing::warn!(?args, "fault injection");
            "ok\n".into()
        }
        Err(e) => e,
    }
}

/// `switchover [--to N]`'s arguments.
fn parse_switchover(args: &[&str]) -> Result<Option<NodeId>, SwitchoverArgsError> {
    match args {
        [] => Ok(None),
        ["--to", n] => n.parse::<NodeId>().map(Some).map_err(|_| SwitchoverArgsError::NotANodeId(n.to_string())),
        _ => Err(SwitchoverArgsError::Usage),
    }
}

/// `switchover`'s arguments are wrong; shown as the answer's `error:` line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum SwitchoverArgsError {
    #[error("switchover --to: `{0}` is not a node id")]
    NotANodeId(String),
    #[error("usage: switchover [--to N]")]
    Usage,
}

/// `switchover` asked on this node: run it here if this node leads, else
/// forward it to the leader over the peer transport and relay its answer.
async fn switchover_from_here(shared: &Shared, to: Option<NodeId>) -> String {
    if shared.raft.status().leads() {
        return switchover(shared, to).await;
    }
    let line = match to {
        Some(t) => format!("switchover --to {t}"),
        None => "switchover".to_string(),
    };
    match shared.raft.forward_to_leader(line).await {
        Ok((leader, answer)) => format!("{} [run on the leader, node {leader}]\n", answer.trim_end()),
        Err(e) => format!("error: switchover: this node does not lead and the leader cannot be asked: {e}\n"),
    }
}

/// An `exports` change asked on this node: checked here, then run here if
/// this node leads, else forwarded to the leader.
async fn exports_from_here(
    shared: &Shared,
    parsed: Result<crate::exports_admin::Request, crate::exports_admin::ExportsAdminError>,
) -> String {
    let req = match parsed.and_then(|r| r.check()) {
        Ok(req) => req,
        Err(e) => return format!("error: {e}\n"),
    };
    if shared.raft.status().leads() {
        return exports_here(shared, &req).await;
    }
    match shared.raft.forward_to_leader(req.to_line()).await {
        Ok((leader, answer)) => format!("{}\n[run on the leader, node {leader}]\n", answer.trim_end()),
        Err(e) => format!("error: exports: this node does not lead and the leader cannot be asked: {e}\n"),
    }
}

/// Run an `exports` change on this node (the leader).
async fn exports_here(shared: &Shared, req: &crate::exports_admin::Request) -> String {
    let _op = shared.admin_op.lock().await;
    let commit: Arc<dyn Commit> = shared.raft.commit.clone();
    crate::exports_admin::run(&commit, shared.serving.live(), req).await
}

/// `stats` asked on this node: its own counts while it serves, else the
/// leader's (forwarded); the first line says which node answered.
async fn stats_from_here(shared: &Shared) -> String {
    let me = shared.raft.id;
    if shared.active().serving {
        return admin::stats_answer(&shared.metrics, &format!("node {me} (serving)"));
    }
    match shared.raft.forward_to_leader("stats".to_string()).await {
        Ok((_, answer)) => answer,
        Err(e) => format!("error: stats: node {me} does not serve and the leader cannot be asked: {e}\n"),
    }
}

/// A command another node forwarded to this one: `switchover` or an
/// `exports` change, run here (never forwarded again: a node that no longer
/// leads refuses it), or `stats`, answered with this node's counts.
pub(crate) async fn forwarded(shared: &Shared, line: &str) -> String {
    if let Some(parsed) = admin::exports_change(line) {
        if !shared.raft.status().leads() {
            return format!("error: node {} no longer leads; ask again\n", shared.raft.id);
        }
        return match parsed.and_then(|r| r.check()) {
            Ok(req) => exports_here(shared, &req).await,
            Err(e) => format!("error: {e}\n"),
        };
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["stats"] => {
            let me = shared.raft.id;
            let serving = if shared.active().serving { "serving" } else { "not serving" };
            admin::stats_answer(&shared.metrics, &format!("node {me} (the leader, {serving}; forwarded)"))
        }
        ["switchover", rest @ ..] => match parse_switchover(rest) {
            Ok(to) => switchover(shared, to).await,
            Err(e) => format!("error: {e}\n"),
        },
        _ => format!("error: `{}` cannot be forwarded\n", line.trim()),
    }
}

async fn switchover(shared: &Shared, to: Option<NodeId>) -> String {
    let _op = shared.admin_op.lock().await;
    let target = match shared.raft.switchover_target(to) {
        Ok(target) => target,
        Err(e) => return format!("error: {e}\n"),
    };
    if let Err(e) = shared.raft.wait_caught_up(target).await {
        return format!("error: {e}\n");
    }
    let started = Instant::now();
    tracing::info!(target, "switchover: standing down");
    match stand_down(shared, Some(target), SWITCHOVER_WAIT_MS).await {
        Some(leader) => {
            let took = started.elapsed().as_millis();
            tracing::info!(leader, took_ms = took, "switchover done");
            format!("switched over: leader {leader} (took {took} ms)\n")
        }
        None => {
            shared.update_active(|a| a.last_error = Some("switchover: no other leader; resumed".into()));
            format!("error: no other node became leader within {SWITCHOVER_WAIT_MS} ms; this node resumed\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every malformed `debug faults` request is refused with an error line
    /// (and so changes nothing); the bounds are inclusive.
    #[test]
    fn malformed_fault_requests_are_refused() {
        assert_eq!(parse_faults(&["slow-appends", "0"]), Ok(FaultOp::SlowAppends(0)));
        let max = SLOW_APPENDS_MS_MAX.to_string();
        assert_eq!(parse_faults(&["slow-appends", &max]), Ok(FaultOp::SlowAppends(SLOW_APPENDS_MS_MAX)));
        assert_eq!(parse_faults(&["block", "2"]), Ok(FaultOp::Block(2)));
        assert_eq!(parse_faults(&["heal"]), Ok(FaultOp::Heal));
        let over = (SLOW_APPENDS_MS_MAX + 1).to_string();
        for bad in [
            &["slow-appends", over.as_str()][..],
            &["slow-appends", "-1"],
            &["slow-appends", "1.5"],
            &["slow-appends", "abc"],
            &["slow-appends", "99999999999999999999999"],
            &["slow-appends"],
            &["slow-appends", "10", "20"],
            &["block", "x"],
            &["block"],
            &["unblock", "-3"],
            &["heal", "now"],
            &[],
            &["nonsense"],
        ] {
            let answer = parse_faults(bad).expect_err(&format!("{bad:?} refused"));
            assert!(answer.starts_with("error: ") && answer.ends_with('\n'), "{bad:?}: {answer:?}");
        }
    }
}

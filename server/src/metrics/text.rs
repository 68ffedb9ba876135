//! The Prometheus text exposition format 0.0.4 of a `Metrics` registry:
//! every family with its `# HELP` and `# TYPE` line, names prefixed
//! `hanfs_`, label values escaped (`\\`, `\"`, `\n`), latencies in seconds,
//! histograms as cumulative `_bucket{le=...}` lines with `+Inf`, `_sum` and
//! `_count`.
//!
//! Series whose subject does not exist on this node are left out: the Raft
//! families on a single node, the lag on a follower (only the leader knows
//! it), a last promotion before there was one. Every procedure has its
//! `hanfs_rpc_calls_total`; its errors and latency histogram appear once it
//! has been called (as client libraries create a series on first use), which
//! keeps an idle node's exposition small.

use std::fmt::Write as _;

use hanfs_raft::stats::HistogramSnapshot;
use hanfs_raft::status::RaftState;
use hanfs_raft::types::Role;

use super::{ErrorKind, Metrics, Refusal};

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Microseconds per second, for latencies kept in µs and shown in seconds.
const US_PER_S: f64 = 1_000_000.0;

/// The whole exposition of `metrics` now.
pub fn render(metrics: &Metrics) -> String {
    let mut out = String::with_capacity(64 * 1024);
    rpc(&mut out, metrics);
    drc(&mut out, metrics);
    let sample = metrics.sample();
    family(&mut out, "hanfs_serving", "1 while this node serves NFS (listeners open).", "gauge");
    line(&mut out, "hanfs_serving", &[], u64::from(sample.serving));
    if let Some(c) = &sample.commit {
        family(
            &mut out,
            "hanfs_commit_duration_seconds",
            "Time one commit waited: queue and durable write.",
            "histogram",
        );
        histogram(&mut out, "hanfs_commit_duration_seconds", &[], &c.latency_us.snapshot(), Some(US_PER_S));
        let help = "Callers whose commands were grouped into one log entry.";
        family(&mut out, "hanfs_commit_batch_callers", help, "histogram");
        histogram(&mut out, "hanfs_commit_batch_callers", &[], &c.batch_callers.snapshot(), None);
        family(&mut out, "hanfs_commit_commands_total", "Commands committed.", "counter");
        line(&mut out, "hanfs_commit_commands_total", &[], c.commands.load(std::sync::atomic::Ordering::Relaxed));
        family(&mut out, "hanfs_commit_failures_total", "Commits answered with an error.", "counter");
        line(&mut out, "hanfs_commit_failures_total", &[], c.failed.load(std::sync::atomic::Ordering::Relaxed));
    }
    if let Some(r) = &sample.raft {
        let node = r.node_id.to_string();
        let role = match r.role {
            Role::Storage => "storage",
            Role::Witness => "witness",
        };
        family(&mut out, "hanfs_node_info", "This cluster member: node id and role.", "gauge");
        line(&mut out, "hanfs_node_info", &[("node", &node), ("role", role)], 1);
        family(&mut out, "hanfs_raft_state", "1 for this node's Raft state, 0 for the others.", "gauge");
        for s in [RaftState::Learner, RaftState::Follower, RaftState::Candidate, RaftState::Leader, RaftState::Shutdown]
        {
            let name = format!("{s:?}");
            line(&mut out, "hanfs_raft_state", &[("state", &name)], u64::from(s == r.state));
        }
        family(&mut out, "hanfs_raft_term", "Current Raft term.", "gauge");
        line(&mut out, "hanfs_raft_term", &[], r.term);
        if let Some(leader) = r.leader {
            family(&mut out, "hanfs_raft_leader", "Node id of the Raft leader this node knows.", "gauge");
            line(&mut out, "hanfs_raft_leader", &[], leader);
        }
        if let Some(applied) = r.applied_index {
            family(&mut out, "hanfs_raft_applied_index", "Last log index applied here.", "gauge");
            line(&mut out, "hanfs_raft_applied_index", &[], applied);
        }
        if let Some(lag) = &r.lag {
            let help = "On the leader: log entries each other member is behind.";
            family(&mut out, "hanfs_raft_commit_lag_entries", help, "gauge");
            for (peer, n) in lag {
                line(&mut out, "hanfs_raft_commit_lag_entries", &[("peer", &peer.to_string())], *n);
            }
        }
    }
    promotions(&mut out, metrics, &sample.last_failover);
    family(
        &mut out,
        "hanfs_connections",
        "Open TCP connections per client address (top clients; rest as other).",
        "gauge",
    );
    for (client, n) in metrics.connections() {
        line(&mut out, "hanfs_connections", &[("client", &client)], n);
    }
    transport(&mut out, metrics);
    family(&mut out, "hanfs_nlm_locks_held", "NLM locks held (replicated lock table).", "gauge");
    line(&mut out, "hanfs_nlm_locks_held", &[], sample.locks.held);
    family(&mut out, "hanfs_nlm_lock_waiters", "Blocked NLM LOCK requests waiting.", "gauge");
    line(&mut out, "hanfs_nlm_lock_waiters", &[], sample.locks.waiting);
    family(&mut out, "hanfs_nlm_grants_pending", "Granted waiters whose GRANTED callback is unacknowledged.", "gauge");
    line(&mut out, "hanfs_nlm_grants_pending", &[], sample.locks.granting);
    out
}

fn rpc(out: &mut String, metrics: &Metrics) {
    let programs = metrics.programs();
    let labels = |name: &'static str, vers: &str, proc_: &'static str| -> [(&'static str, String); 3] {
        [("program", name.to_string()), ("version", vers.to_string()), ("procedure", proc_.to_string())]
    };
    family(out, "hanfs_rpc_calls_total", "RPC calls per program, version and procedure.", "counter");
    for p in &programs {
        let vers = p.vers.to_string();
        for s in p.procs.iter() {
            line_owned(out, "hanfs_rpc_calls_total", &labels(p.name, &vers, s.name), s.calls());
        }
    }
    let help = "Failed RPC calls by kind: garbage_args, system_err, status (NFSv3 nfsstat3 not OK), unanswered.";
    family(out, "hanfs_rpc_errors_total", help, "counter");
    for p in &programs {
        let vers = p.vers.to_string();
        for s in p.procs.iter().filter(|s| s.calls() > 0) {
            for kind in ErrorKind::ALL {
                let [a, b, c] = labels(p.name, &vers, s.name);
                line_owned(
                    out,
                    "hanfs_rpc_errors_total",
                    &[a, b, c, ("kind", kind.label().to_string())],
                    s.errors(kind),
                );
            }
        }
    }
    family(out, "hanfs_rpc_refused_total", "RPC calls refused before a procedure was found.", "counter");
    for why in Refusal::ALL {
        line(out, "hanfs_rpc_refused_total", &[("reason", why.label())], metrics.refused(why));
    }
    family(out, "hanfs_rpc_duration_seconds", "Time from a call's arrival to its outcome.", "histogram");
    for p in &programs {
        let vers = p.vers.to_string();
        for s in p.procs.iter().filter(|s| s.calls() > 0) {
            let l = labels(p.name, &vers, s.name);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            histogram(out, "hanfs_rpc_duration_seconds", &l, &s.latency().snapshot(), Some(US_PER_S));
        }
    }
}

fn drc(out: &mut String, metrics: &Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let d = &metrics.drc;
    family(out, "hanfs_drc_hits_total", "Retransmissions answered from the duplicate-request cache.", "counter");
    line(out, "hanfs_drc_hits_total", &[], d.hits.load(Relaxed));
    let help = "Retransmissions found as an intent only, answered by recovery from the disk.";
    family(out, "hanfs_drc_recovered_total", help, "counter");
    line(out, "hanfs_drc_recovered_total", &[], d.recovered.load(Relaxed));
    let help = "Retransmissions dropped while the original call still ran.";
    family(out, "hanfs_drc_in_progress_dropped_total", help, "counter");
    line(out, "hanfs_drc_in_progress_dropped_total", &[], d.in_progress.load(Relaxed));
}

/// The connection limits: what was hit (counters, over the node's life),
/// the memory held now and each limit (gauges, while a period is attached).
fn transport(out: &mut String, metrics: &Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &metrics.conn;
    let help = "TCP connections refused at accept: per_address (its address at its limit), total (node at its limit, none idle).";
    family(out, "hanfs_rpc_connections_refused_total", help, "counter");
    line(out, "hanfs_rpc_connections_refused_total", &[("reason", "per_address")], c.refused_per_address.load(Relaxed));
    line(out, "hanfs_rpc_connections_refused_total", &[("reason", "total")], c.refused_total.load(Relaxed));
    let help = "TCP connections closed by the node: idle (idle timeout), evicted (least recently active idle one, for a new one).";
    family(out, "hanfs_rpc_connections_closed_total", help, "counter");
    line(out, "hanfs_rpc_connections_closed_total", &[("reason", "idle")], c.idle_closed.load(Relaxed));
    line(out, "hanfs_rpc_connections_closed_total", &[("reason", "evicted")], c.evicted.load(Relaxed));
    let help = "Calls read but not started when their connection closed: dropped, not run.";
    family(out, "hanfs_rpc_calls_dropped_total", help, "counter");
    line(out, "hanfs_rpc_calls_dropped_total", &[], c.calls_dropped.load(Relaxed));
    let help = "Times a connection stopped starting calls until its unread replies drained.";
    family(out, "hanfs_rpc_reply_waits_total", help, "counter");
    line(out, "hanfs_rpc_reply_waits_total", &[], c.reply_waits.load(Relaxed));
    let help = "Times a connection waited for the node-wide request memory budget.";
    family(out, "hanfs_rpc_request_waits_total", help, "counter");
    line(out, "hanfs_rpc_request_waits_total", &[], c.request_waits.load(Relaxed));
    let Some(t) = metrics.transport() else { return };
    let help = "Reply bytes held: reserved for running calls or not yet written to their connection.";
    family(out, "hanfs_rpc_reply_bytes", help, "gauge");
    line(out, "hanfs_rpc_reply_bytes", &[], t.reply_bytes);
    let help = "Request bytes held: large records being read and arguments of calls not finished.";
    family(out, "hanfs_rpc_request_bytes", help, "gauge");
    line(out, "hanfs_rpc_request_bytes", &[], t.request_bytes);
    family(out, "hanfs_rpc_connections_open", "Open TCP connections (all listeners).", "gauge");
    line(out, "hanfs_rpc_connections_open", &[], t.connections);
    let help = "The transport's limits: connections, seconds (idle_timeout_seconds) and bytes.";
    family(out, "hanfs_rpc_limit", help, "gauge");
    for (name, value) in t.limits {
        line(out, "hanfs_rpc_limit", &[("limit", name)], value);
    }
}

fn promotions(out: &mut String, metrics: &Metrics, last_failover: &Option<hanfs_state::Promotion>) {
    let (count, last_ms) = metrics.promotions();
    family(out, "hanfs_promotions_total", "Times this node was promoted to serve (failovers to it).", "counter");
    line(out, "hanfs_promotions_total", &[], count);
    if let Some(ms) = last_ms {
        let help = "How long this node's last promotion took (elected to listeners open).";
        family(out, "hanfs_promotion_last_duration_seconds", help, "gauge");
        line_f64(out, "hanfs_promotion_last_duration_seconds", ms as f64 / 1000.0);
    }
    if let Some(p) = last_failover {
        let help = "How long the cluster's last recorded failover took (replicated).";
        family(out, "hanfs_failover_last_duration_seconds", help, "gauge");
        line_f64(out, "hanfs_failover_last_duration_seconds", p.took_ms as f64 / 1000.0);
        family(out, "hanfs_failover_last_node", "Node id promoted in the cluster's last recorded failover.", "gauge");
        line(out, "hanfs_failover_last_node", &[], p.node_id);
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    let _ = writeln!(out, "{name}{} {value}", labels_text(labels));
}

fn line_owned(out: &mut String, name: &str, labels: &[(&'static str, String)], value: u64) {
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    line(out, name, &l, value);
}

fn line_f64(out: &mut String, name: &str, value: f64) {
    let _ = writeln!(out, "{name} {value}");
}

/// `_bucket` lines (cumulative, then `+Inf`), `_sum` and `_count`; bounds
/// and sum divided by `scale` when given (µs to seconds).
fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot, scale: Option<f64>) {
    let value = |v: u64| match scale {
        Some(s) => format!("{}", v as f64 / s),
        None => v.to_string(),
    };
    for (bound, n) in h.bounds.iter().zip(&h.cumulative) {
        let le = value(*bound);
        let mut l = labels.to_vec();
        l.push(("le", &le));
        let _ = writeln!(out, "{name}_bucket{} {n}", labels_text(&l));
    }
    let mut l = labels.to_vec();
    l.push(("le", "+Inf"));
    let _ = writeln!(out, "{name}_bucket{} {}", labels_text(&l), h.count);
    let _ = writeln!(out, "{name}_sum{} {}", labels_text(labels), value(h.sum));
    let _ = writeln!(out, "{name}_count{} {}", labels_text(labels), h.count);
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn families_have_help_and_type_and_histograms_are_cumulative() {
        let m = Metrics::default();
        let nfs = m.program("nfs", 100_003, 3, &["NULL", "GETATTR"]);
        let getattr = nfs.proc_(1).unwrap();
        getattr.called();
        getattr.took(Instant::now());
        nfs.check_status(getattr, &[0, 0, 0, 70]);
        m.refuse(Refusal::ProgUnavail);
        let text = render(&m);
        assert!(text.contains("hanfs_rpc_calls_total{program=\"nfs\",version=\"3\",procedure=\"GETATTR\"} 1\n"));
        assert!(text.contains(
            "hanfs_rpc_errors_total{program=\"nfs\",version=\"3\",procedure=\"GETATTR\",kind=\"status\"} 1\n"
        ));
        assert!(text.contains("hanfs_rpc_refused_total{reason=\"prog_unavail\"} 1\n"));
        assert!(text.contains(
            "hanfs_rpc_duration_seconds_bucket{program=\"nfs\",version=\"3\",procedure=\"GETATTR\",le=\"+Inf\"} 1\n"
        ));
        assert!(text.contains("le=\"0.00005\"}"), "bounds in seconds");
        // Every sample's family was declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                assert!(declared.contains(name) || declared.contains(base), "undeclared {name}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

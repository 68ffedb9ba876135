//! `hanfs-server stats`: the counts of a `Metrics` registry in the layout of
//! `nfsstat -s` (nfs-utils), so eyes and scripts used to it read it as is:
//!
//! ```text
//! Server rpc stats:
//! calls      badcalls   badfmt     badauth    badclnt
//! 6          0          0          0          0
//!
//! Server nfs v3:
//! null         getattr      setattr      lookup       access       readlink
//! 0         0% 3        60% 0         0% 1        20% 0         0% 0         0%
//! ...
//! ```
//!
//! Then one such block per other program served, by program number
//! (`portmap v2`, `mount v1`, `mount v3`, `nlm v4`, `nsm v1`). Procedure names are the tables' own,
//! lower-cased; six per row; each count is followed by its integer share of
//! the program's calls. Lines carry no trailing blanks.
//!
//! `calls` counts every call record, refused ones included; `badfmt` the
//! calls refused for their form (undecodable header, RPC version, unknown
//! program, version or procedure, GARBAGE_ARGS), `badauth` those refused for
//! their credential; `badclnt` is always 0 (as on Linux);
//! `badcalls` is their sum.

use std::fmt::Write as _;

use super::{ErrorKind, Metrics, ProgramStats, Refusal, NFS_PROGRAM};

/// Procedures per row, as nfsstat prints them.
const PER_ROW: usize = 6;

/// The whole `stats` text.
pub fn render(metrics: &Metrics) -> String {
    let mut programs = metrics.programs();
    // NFS first, as nfsstat has it; then by program number and version.
    programs.sort_by_key(|p| (p.prog != NFS_PROGRAM, p.prog, p.vers));
    let refused: u64 = Refusal::ALL.iter().map(|r| metrics.refused(*r)).sum();
    let calls = programs.iter().map(|p| p.calls()).fold(refused, u64::saturating_add);
    let garbage: u64 = programs.iter().flat_map(|p| p.procs.iter()).map(|s| s.errors(ErrorKind::GarbageArgs)).sum();
    let badauth = metrics.refused(Refusal::Auth);
    let badfmt = (refused - badauth).saturating_add(garbage);
    let badclnt = 0u64;
    let mut out = String::new();
    out.push_str("Server rpc stats:\n");
    out.push_str(&row(&["calls", "badcalls", "badfmt", "badauth", "badclnt"], 11));
    let numbers = [calls, badfmt + badauth + badclnt, badfmt, badauth, badclnt].map(|n| n.to_string());
    out.push_str(&row(&numbers, 11));
    for p in &programs {
        out.push('\n');
        program(&mut out, p);
    }
    out
}

fn program(out: &mut String, p: &ProgramStats) {
    let _ = writeln!(out, "Server {} v{}:", p.name, p.vers);
    let total = p.calls().max(1);
    let procs: Vec<&super::ProcStats> = p.procs.iter().collect();
    for chunk in procs.chunks(PER_ROW) {
        let names: Vec<String> = chunk.iter().map(|s| s.name.to_lowercase()).collect();
        out.push_str(&row(&names, 13));
        let mut counts = String::new();
        for s in chunk {
            let n = s.calls();
            let pct = u128::from(n) * 100 / u128::from(total);
            let _ = write!(counts, "{n:<8}{pct:>3}% ");
        }
        out.push_str(counts.trim_end());
        out.push('\n');
    }
}

/// `cells` left-aligned in columns of `width`, without trailing blanks.
fn row<S: AsRef<str>>(cells: &[S], width: usize) -> String {
    let mut line = String::new();
    for c in cells {
        let _ = write!(line, "{:<width$}", c.as_ref());
    }
    let mut line = line.trim_end().to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfsstat_layout() {
        let m = Metrics::default();
        m.program("portmap", 100_000, 2, &["NULL"]);
        let names = ["NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ"];
        let nfs = m.program("nfs", 100_003, 3, &names);
        for i in [1, 1, 1, 3, 6] {
            nfs.proc_(i).unwrap().called();
        }
        m.refuse(Refusal::ProgUnavail);
        m.refuse(Refusal::Auth);
        let text = render(&m);
        let expected = "Server rpc stats:\n\
            calls      badcalls   badfmt     badauth    badclnt\n\
            7          2          1          1          0\n\
            \n\
            Server nfs v3:\n\
            null         getattr      setattr      lookup       access       readlink\n\
            0         0% 3        60% 0         0% 1        20% 0         0% 0         0%\n\
            read\n\
            1        20%\n\
            \n\
            Server portmap v2:\n\
            null\n\
            0         0%\n";
        assert_eq!(text, expected);
    }
}

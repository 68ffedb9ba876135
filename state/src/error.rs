//! Why `State::apply` refused a command (`ApplyError`; a refused command
//! changes nothing), and which invariant a state breaks (`InvariantError`).

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("batch nested deeper than {max}")]
    BatchTooDeep { max: u32 },
    #[error("export {export_id} is already registered as {existing:?}")]
    ExportIdConflict { export_id: u32, existing: String },
    #[error("export path {path:?} is already registered as export {existing_id}")]
    ExportPathConflict { path: String, existing_id: u32 },
    #[error("export path invalid (empty, NUL, or too long)")]
    ExportPathInvalid,
    #[error("export {export_id}: filesystem identity invalid (handle or UUID too long)")]
    ExportFsInvalid { export_id: u32 },
    #[error("export table full ({max} exports, removed ones included: their ids are never reused)")]
    ExportsFull { max: u64 },
    #[error("export directory invalid (not absolute, NUL, or too long)")]
    ExportDirInvalid,
    #[error("export client list invalid (empty, NUL, or longer than {max} bytes)")]
    ExportClientsInvalid { max: u64 },
    #[error("export client lists would exceed {max} bytes in total")]
    ExportClientsFull { max: u64 },
    #[error("export {export_id} is not served")]
    ExportNotServed { export_id: u32 },
    #[error("client name invalid (empty, NUL, or too long)")]
    ClientInvalid,
    #[error("mount path invalid (empty, NUL, or too long)")]
    MountPathInvalid,
    #[error("rmtab full ({max} rows)")]
    RmtabFull { max: u64 },
    #[error("DRC reply of {bytes} bytes exceeds {max}")]
    DrcReplyTooLarge { bytes: u64, max: u64 },
    #[error("epoch overflow")]
    EpochOverflow,
    #[error("TCP connection invalid (mixed families, port 0 or unspecified address)")]
    ConnInvalid,
    #[error("connection table full ({max} connections)")]
    ConnsFull { max: u64 },
}

/// A table of the state, as named by `InvariantError::OverBound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Exports,
    /// Total bytes of the served exports' client lists.
    ExportClientsBytes,
    Rmtab,
    /// Entries of the duplicate-request cache.
    Drc,
    /// Total reply bytes of the duplicate-request cache.
    DrcBytes,
    /// Client TCP connections recorded for tickling.
    Conns,
}

/// Which invariant of the state is broken: what `State::check_invariants`
/// finds, and why a snapshot was refused (`CodecError::Invalid`). Only a bug
/// or a corrupt snapshot produces one; `apply` panics on it (see `invariants.rs`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    #[error("{table:?} holds {count}, over its bound {max}")]
    OverBound { table: Table, count: u64, max: u64 },
    #[error("export {export_id}: invalid path")]
    ExportPathInvalid { export_id: u32 },
    #[error("export path {path:?} registered twice")]
    ExportPathTwice { path: String },
    #[error("export index sizes differ: {by_id} by id, {by_path} by path")]
    ExportIndexSize { by_id: u64, by_path: u64 },
    #[error("export {export_id}: path index disagrees")]
    ExportIndexDisagrees { export_id: u32 },
    #[error("export {export_id}: invalid filesystem identity")]
    ExportFsInvalid { export_id: u32 },
    #[error("export {export_id}: invalid served name, directory or client list")]
    ExportSpecInvalid { export_id: u32 },
    #[error("export {export_id} served but the table is not seeded")]
    ExportServedUnseeded { export_id: u32 },
    #[error("export client byte count {counted} disagrees with the sum of client lists {sum}")]
    ExportClientsBytes { counted: u64, sum: u64 },
    #[error("rmtab row {client:?} {path:?} invalid")]
    RmtabRowInvalid { client: String, path: String },
    #[error("DRC age index holds {by_age} entries, the cache {entries}")]
    DrcAgeIndexSize { entries: u64, by_age: u64 },
    #[error("DRC reply of {bytes} bytes over its bound {max}")]
    DrcReplyTooLarge { bytes: u64, max: u64 },
    #[error("DRC age index disagrees at (time {time_ms} ms, seq {seq})")]
    DrcAgeIndex { time_ms: u64, seq: u64 },
    #[error("DRC sequence number {seq} at or past the next one, {next_seq}")]
    DrcSeqFromFuture { seq: u64, next_seq: u64 },
    #[error("DRC byte count {counted} disagrees with the sum of replies {sum}")]
    DrcBytes { counted: u64, sum: u64 },
    #[error("TCP connection {client} -> {server} (epoch {epoch}) invalid or from a future epoch")]
    ConnInvalid { client: std::net::SocketAddr, server: std::net::SocketAddr, epoch: u64 },
    #[error("NLM/NSM table: {0}")]
    Nlm(String),
}

//! Every bound of the replicated state, in one place, with the relations
//! between them checked at compile time.

/// Deepest nesting of `Command::Batch` (top level is depth 0). Group commit
/// uses two levels (entry → caller → commands); the rest is headroom.
pub const BATCH_DEPTH_MAX: u32 = 8;

/// Longest export or mount path (Linux PATH_MAX).
pub const PATH_BYTES_MAX: u64 = 4096;
/// Longest client name (host name or address) in rmtab or a DRC key.
pub const CLIENT_BYTES_MAX: u64 = 1024;
/// Longest filesystem object handle (Linux MAX_HANDLE_SZ), as recorded for an
/// export root in `FsIdentity`.
pub const FS_HANDLE_BYTES_MAX: u64 = 128;
/// Longest filesystem UUID (Linux UUID_SIZE).
pub const FS_UUID_BYTES_MAX: u64 = 16;

/// Most registered exports.
pub const EXPORTS_MAX: u64 = 4096;
/// Longest client list (exports(5) syntax) of one export.
pub const EXPORT_CLIENTS_BYTES_MAX: u64 = 64 * 1024;
/// Total bytes of every served export's client list.
pub const EXPORT_CLIENTS_TOTAL_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most (client, path) rows in rmtab.
pub const RMTAB_ROWS_MAX: u64 = 100_000;

/// Most duplicate-request-cache entries; the oldest are evicted beyond this.
pub const DRC_ENTRIES_MAX: u64 = 32_768;
/// Entries older than this (relative to the inserting command's `now_ms`) are evicted.
pub const DRC_WINDOW_MS: u64 = 300_000;
/// Largest single cached reply; a bigger one is rejected.
pub const DRC_REPLY_BYTES_MAX: u64 = 64 * 1024;
/// Total bytes of cached replies; the oldest are evicted beyond this.
pub const DRC_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Most client TCP connections recorded for tickling after a failover
/// (`conns.rs`); beyond it a new connection is not recorded. Above the
/// server's total connection limit, so only a bug fills it.
pub const CONNS_MAX: u64 = 16_384;

/// Largest encoded `Command` (one log entry) the codec writes or reads.
pub const COMMAND_BYTES_MAX: u64 = 64 * 1024 * 1024;

const _: () = assert!(DRC_REPLY_BYTES_MAX <= DRC_BYTES_MAX);
const _: () = assert!(DRC_ENTRIES_MAX > 0);
const _: () = assert!(DRC_REPLY_BYTES_MAX < COMMAND_BYTES_MAX);
const _: () = assert!(BATCH_DEPTH_MAX >= 2);
const _: () = assert!(EXPORT_CLIENTS_BYTES_MAX <= EXPORT_CLIENTS_TOTAL_BYTES_MAX);
// The largest `ExportSet` fits one log entry.
const _: () = assert!(EXPORT_CLIENTS_BYTES_MAX + 2 * PATH_BYTES_MAX < COMMAND_BYTES_MAX);

// NLM and NSM (see `locks/`). Worst-case lock table: LOCKS_MAX locks, each
// carrying an owner of up to CALLER_NAME_BYTES_MAX + NETOBJ_BYTES_MAX bytes.

/// Longest NLM caller_name or NSM mon_name/my_name (LM_MAXSTRLEN, SM_MAXSTRLEN).
pub const CALLER_NAME_BYTES_MAX: u64 = 1024;
/// Longest NLM netobj (owner handle `oh`, cookie) (MAXNETOBJ_SZ).
pub const NETOBJ_BYTES_MAX: u64 = 1024;
/// Longest file key of a lock: an NFSv3 file handle (NFS3_FHSIZE).
pub const FILE_ID_BYTES_MAX: u64 = 64;
/// Most granted locks (after merging) on one file.
pub const LOCKS_PER_FILE_MAX: u64 = 4096;
/// Most granted locks held by one client host (caller_name).
pub const LOCKS_PER_HOST_MAX: u64 = 16_384;
/// Most granted locks in total.
pub const LOCKS_MAX: u64 = 65_536;
/// Most blocked waiters queued on one file.
pub const WAITERS_MAX: u64 = 256;
/// Most blocked waiters in total.
pub const WAITERS_TOTAL_MAX: u64 = 4096;
/// Most granted waiters remembered as awaiting their GRANTED callback's
/// reply; beyond it the oldest is forgotten (the client's re-polling LOCK
/// still gets GRANTED).
pub const GRANTS_PENDING_MAX: u64 = 4096;
/// Most NSM monitor registrations, and most hosts whose NSM state is remembered.
pub const MONITORS_MAX: u64 = 4096;
/// Most share reservations on one file.
pub const SHARES_PER_FILE_MAX: u64 = 256;
/// Most share reservations in total.
pub const SHARES_MAX: u64 = 16_384;

const _: () = assert!(LOCKS_PER_FILE_MAX <= LOCKS_PER_HOST_MAX);
const _: () = assert!(LOCKS_PER_HOST_MAX <= LOCKS_MAX);
const _: () = assert!(WAITERS_MAX <= WAITERS_TOTAL_MAX);
const _: () = assert!(GRANTS_PENDING_MAX >= WAITERS_TOTAL_MAX);
const _: () = assert!(SHARES_PER_FILE_MAX <= SHARES_MAX);
const _: () = assert!(FILE_ID_BYTES_MAX <= NETOBJ_BYTES_MAX);
const _: () = assert!(CALLER_NAME_BYTES_MAX <= CLIENT_BYTES_MAX);
// One lock command (file key + owner) always fits a log entry.
const _: () = assert!(FILE_ID_BYTES_MAX + CALLER_NAME_BYTES_MAX + NETOBJ_BYTES_MAX < COMMAND_BYTES_MAX);

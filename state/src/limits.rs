//! Every bound of the replicated state, in one place, with the relations
//! between them checked at compile time.

/// Deepest nesting of `Command::Batch` (top level is depth 0). Group commit
/// uses two levels (entry → caller → commands); the rest is headroom.
pub const BATCH_DEPTH_MAX: u32 = 8;

/// Longest file name in a handle entry (Linux NAME_MAX).
pub const NAME_BYTES_MAX: u64 = 255;
/// Longest export or mount path (Linux PATH_MAX).
pub const PATH_BYTES_MAX: u64 = 4096;
/// Longest client name (host name or address) in rmtab or a DRC key.
pub const CLIENT_BYTES_MAX: u64 = 1024;
/// Most components `State::path_of` walks before giving up (also breaks cycles).
pub const PATH_DEPTH_MAX: u32 = 4096;

/// Most registered exports.
pub const EXPORTS_MAX: u64 = 4096;
/// Most handle entries; `PutHandles` beyond this is rejected.
pub const HANDLES_MAX: u64 = 50_000_000;
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

/// Largest encoded `Command` (one log entry) the codec writes or reads.
pub const COMMAND_BYTES_MAX: u64 = 64 * 1024 * 1024;

const _: () = assert!(DRC_REPLY_BYTES_MAX <= DRC_BYTES_MAX);
const _: () = assert!(DRC_ENTRIES_MAX > 0);
const _: () = assert!(NAME_BYTES_MAX < PATH_BYTES_MAX);
const _: () = assert!(DRC_REPLY_BYTES_MAX < COMMAND_BYTES_MAX);
const _: () = assert!(BATCH_DEPTH_MAX >= 2);

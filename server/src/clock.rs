//! The wall clock, read only here: the leader stamps its time into replicated
//! commands (DRC records, lock commands, promotions) so `apply` never reads one.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it, `u64::MAX` past 2^64 ms).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}
